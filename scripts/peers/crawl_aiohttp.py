"""A Python crawl handler for multiloop: `supervisor --python crawl_aiohttp:crawl`.

Each task is {"url": URL} (the seed line too, with `--key url`, so that the
links back to it are known as seen). The handler fetches it with aiohttp (redirects not
followed: a Location is one more link), reads the page's <title>, its
<a href>/<area href> links and <base href> with the standard library's HTML
tokenizer (html.parser), and keeps the links as `fetch --follow` does: not
rel=nofollow; resolved against the <base href> (itself resolved against the
page) or the page, with yarl, the URL parser aiohttp uses (RFC 3986: dot
segments resolved, scheme and host lowercased, the default port dropped,
characters percent-encoded); the fragment dropped and `/` for an empty path
(the canonical form, the dedupe key); http(s) only; on the host of the URL
the task asked for (`--scope host`: the scope is transitive from the seed).
Each is added as a new task with `multiloop.add({"url": url}, key=url)`; the
supervisor's seen-set makes each URL run once. This is the Python crawl that
`fetch --follow` is compared with in scripts/bench_crawl.py.

Settings: `--set per_host=N`, the connections per host of each worker's
aiohttp session (opened by the kind's setup, closed by its teardown); the
benchmark gives each of W workers P/W, so all of them together hold the
same P connections to the site as the other contenders.

Timeouts count socket time only (peer_http.SOCKET_TIME): 10 s to
connect, 30 s between reads. A task waits for one of its session's pooled
connections for as long as it takes (the supervisor dispatches far more
tasks than there are connections), as a request waits in `fetch`'s
per-host queue; aiohttp's `total` and `connect` timeouts would count that
wait too and fail pages that never reached the network.
"""

import hashlib

import aiohttp
from peer_http import SOCKET_TIME, TitleScan, client_session
from yarl import URL

import multiloop

class LinkScan(TitleScan):
    """First <title>, <base href>, and the (href, nofollow) of every link."""

    def __init__(self):
        super().__init__()
        self.base = None
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag in ("a", "area"):
            attrs = dict(attrs)
            if "href" in attrs:
                rel = (attrs.get("rel") or "").lower().split()
                self.links.append((attrs["href"] or "", "nofollow" in rel))
        elif tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "title" and self.title is None:
            self.start_title()


def canonical(base, href):
    """The link ``href`` on a page at ``base`` (a yarl URL) in canonical
    form, or None when it does not parse or is not http(s)."""
    try:
        url = base.join(URL(href.strip())).with_fragment(None)
    except (ValueError, TypeError):
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    if not url.raw_path:
        url = url.with_path("/")
    return url


async def open_session(settings):
    per_host = int(settings.get("per_host", "8"))
    return client_session("aiohttp-crawl", SOCKET_TIME, limit=0, limit_per_host=per_host)


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
    page = URL(url)
    title, hrefs, base = None, [], page
    if 300 <= status < 400 and location:
        hrefs = [(location, False)]
    elif content_type.split(";")[0].strip().lower() == "text/html":
        scan = LinkScan()
        scan.feed(body.decode("utf-8", "replace"))
        scan.close()
        title = scan.clean_title()
        hrefs = scan.links
        if scan.base:
            # A <base href> that does not parse is ignored, as browsers do.
            base = canonical(page, scan.base) or page
    added, seen = 0, set()
    for href, nofollow in hrefs:
        if nofollow:
            continue
        link = canonical(base, href)
        if link is None or link.host != page.host:
            continue
        text = str(link)
        if text in seen:
            continue
        seen.add(text)
        multiloop.add({"url": text}, key=text)
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
