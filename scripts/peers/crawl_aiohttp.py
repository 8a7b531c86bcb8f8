"""A Python crawl handler for multiloop: `supervisor --python crawl_aiohttp:crawl`.

Each task is {"url": URL} (the seed line too, with `--key url`, so that the
links back to it are known as seen). The handler fetches it with aiohttp (redirects not
followed: a Location is one more link), reads the page's <title>, its
<a href>/<area href> links and <base href> with the standard library's HTML
tokenizer (html.parser), resolves them, drops the fragment, keeps http(s)
links on the page's own host that are not rel=nofollow, and adds each as a
new task with `multiloop.add({"url": url}, key=url)`; the supervisor's seen-set makes
each URL run once. This is the Python crawl that `fetch --follow` is
compared with in scripts/bench_crawl.py.

Settings: `--set per_host=N`, the connections per host of each worker's
aiohttp session (opened by the kind's setup, closed by its teardown).
"""

import hashlib
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp

import multiloop

class LinkScan(HTMLParser):
    """First <title>, <base href>, and the (href, nofollow) of every link."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.title = None
        self.base = None
        self.links = []
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in ("a", "area"):
            attrs = dict(attrs)
            if "href" in attrs:
                rel = (attrs.get("rel") or "").lower().split()
                self.links.append((attrs["href"] or "", "nofollow" in rel))
        elif tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "title" and self.title is None:
            self.title = ""
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def canonical(url):
    """Scheme and host lowercased, default port and fragment dropped; None
    for a URL that is not http(s) or does not parse."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", parts.query, ""))


async def open_session(settings):
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=int(settings.get("per_host", "8")))
    timeout = aiohttp.ClientTimeout(total=30, connect=10)
    return aiohttp.ClientSession(connector=connector, timeout=timeout,
                                 headers={"User-Agent": "aiohttp-crawl"})


async def close_session(session):
    await session.close()


@multiloop.kind(setup=open_session, teardown=close_session)
async def crawl(task: dict, session: aiohttp.ClientSession) -> dict:
    url = task["url"]
    async with session.get(url, allow_redirects=False) as response:
        body = await response.read()
        status = response.status
        location = response.headers.get("Location")
        content_type = response.headers.get("Content-Type") or "text/html"
    host = urlsplit(url).hostname
    title, hrefs, base = None, [], url
    if 300 <= status < 400 and location:
        hrefs = [(location, False)]
    elif content_type.split(";")[0].strip().lower() == "text/html":
        scan = LinkScan()
        scan.feed(body.decode("utf-8", "replace"))
        scan.close()
        title = " ".join(scan.title.split()) if scan.title is not None else None
        hrefs = scan.links
        if scan.base:
            base = urljoin(url, scan.base)
    added, seen = 0, set()
    for href, nofollow in hrefs:
        if nofollow:
            continue
        try:
            link = canonical(urljoin(base, href))
        except ValueError:
            continue
        if link is None or link in seen or urlsplit(link).hostname != host:
            continue
        seen.add(link)
        multiloop.add({"url": link}, key=link)
        added += 1
    return {
        "status": status,
        "url": url,
        "bytes": len(body),
        "title": title,
        "links": len(hrefs),
        "added": added,
        "hash": hashlib.blake2b(body, digest_size=32).hexdigest(),
    }
