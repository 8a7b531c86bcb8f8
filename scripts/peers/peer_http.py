"""What the aiohttp peers (fetch_aiohttp.py, crawl_aiohttp.py) share: their
aiohttp session (a connector of the peer's limits, the peer's timeouts and
its User-Agent) and the <title> half of their HTML scan.

The two timeouts differ on purpose. The fetch peer holds no more requests
in flight than its connector has connections, so nothing waits for a
pooled connection: it counts the whole request, as the `fetch` kind's
defaults do (`timeout_ms` 30 s, `connect_timeout_ms` 10 s). The crawl
peer's tasks do wait for a pooled connection (the supervisor dispatches far
more tasks than there are connections, as a request waits in `fetch`'s
per-host queue), so it counts socket time only: `total` and `connect` would
count that wait too and fail pages that never reached the network.
"""

from html.parser import HTMLParser

import aiohttp

#: Whole request 30 s, a connection 10 s: the `fetch` kind's defaults.
WHOLE_REQUEST = aiohttp.ClientTimeout(total=30, connect=10)
#: Socket time only: 10 s to connect, 30 s between reads; no `total`.
SOCKET_TIME = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=10, sock_read=30)


def client_session(user_agent, timeout, limit, limit_per_host):
    """A session whose connector holds at most `limit` connections and
    `limit_per_host` to one host (0: no limit). Made inside the event loop
    that uses it."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit_per_host)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers={"User-Agent": user_agent})


class TitleScan(HTMLParser):
    """The standard library's HTML tokenizer keeping the first <title>'s
    text. A peer's scan adds its own tags to `handle_starttag` and calls
    `start_title` for a <title> while `title` is None (there, not through
    super(), so that other tags cost the peer no extra call)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.title = None
        self._in_title = False

    def start_title(self):
        self.title = ""
        self._in_title = True

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def clean_title(self):
        """The title with its white space folded; None without a <title>."""
        return " ".join(self.title.split()) if self.title is not None else None
