#!/usr/bin/env python3
"""Python peer of multiloop's `fetch` kind, on aiohttp (`pip install aiohttp`).

    fetch_aiohttp.py URLS [-o OUT] [--concurrency 1024] [--pool N]

URLS has one bare URL per line (what `supervisor --lines` reads). Each page
is fetched (gzip decoded by aiohttp), then the same CPU work as `fetch`:
<title> and <a href> count through the standard library's HTML tokenizer
(html.parser), and a content hash (hashlib.blake2b; blake3 is not in the
standard library). Records have multiloop's shape:
{"seq":N,"worker":W,"attempts":1,"ms":F,"ok":{"status":..,"url":..,"bytes":..,
 "content_type":..,"title":..,"links":..,"hash":..}}

Without --pool: one event loop, at most --concurrency requests in flight,
records written as requests finish. With --pool N: the pattern multiloop
replaces, N processes of a ProcessPoolExecutor, each running asyncio.run
over one static, contiguous batch (results come back per whole batch).
Each event loop has its own aiohttp session whose connector allows
--concurrency connections (aiohttp's default is only 100).
"""

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import aiohttp
from peer_http import WHOLE_REQUEST, TitleScan, client_session


class PageScan(TitleScan):
    """First <title>'s text and the number of <a> tags with an href."""

    def __init__(self):
        super().__init__()
        self.links = 0

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            if any(name == "href" for name, _ in attrs):
                self.links += 1
        elif tag == "title" and self.title is None:
            self.start_title()


def scan(body, content_type):
    essence = (content_type or "text/html").split(";")[0].strip().lower()
    if essence not in ("text/html", "application/xhtml+xml"):
        return None, 0
    parser = PageScan()
    parser.feed(body.decode("utf-8", "replace"))
    parser.close()
    return parser.clean_title(), parser.links


def record(seq, worker, ms, ok=None, error=None):
    out = {"seq": seq, "worker": worker, "attempts": 1, "ms": round(ms, 3)}
    if ok is not None:
        out["ok"] = ok
    else:
        out["error"] = error
    return json.dumps(out, separators=(",", ":")) + "\n"


async def fetch_one(session, seq, url, worker):
    started = time.perf_counter()
    try:
        async with session.get(url, max_redirects=10) as response:
            first_byte = time.perf_counter()
            body = await response.read()
            content_type = response.headers.get("Content-Type")
            status, final_url = response.status, str(response.url)
        total = time.perf_counter()
    except asyncio.TimeoutError:
        return record(seq, worker, 0, error={"kind": "timeout", "message": "timed out"})
    except aiohttp.ClientError as err:
        return record(seq, worker, 0, error={"kind": "failed", "message": str(err)})
    title, links = scan(body, content_type)
    ok = {
        "status": status,
        "url": final_url,
        "bytes": len(body),
        "content_type": content_type,
        "title": title,
        "links": links,
        "hash": hashlib.blake2b(body, digest_size=32).hexdigest(),
        "timings": {
            "first_byte_ms": round((first_byte - started) * 1000, 3),
            "total_ms": round((total - started) * 1000, 3),
        },
    }
    return record(seq, worker, (time.perf_counter() - started) * 1000, ok=ok)


def session(concurrency):
    return client_session("aiohttp-peer", WHOLE_REQUEST, limit=concurrency, limit_per_host=0)


def read_urls(path):
    with open(path) as f:
        return [(seq, line.strip()) for seq, line in enumerate(f, 1) if line.strip()]


async def single_loop(urls, concurrency, sink):
    limit = asyncio.Semaphore(concurrency)
    pending = set()
    async with session(concurrency) as s:

        async def one(seq, url):
            try:
                sink.write(await fetch_one(s, seq, url, 0))
            finally:
                limit.release()

        for seq, url in urls:
            await limit.acquire()
            task = asyncio.create_task(one(seq, url))
            pending.add(task)
            task.add_done_callback(pending.discard)
        while pending:
            await asyncio.gather(*list(pending))


async def batch_loop(batch, concurrency, worker):
    limit = asyncio.Semaphore(concurrency)
    async with session(concurrency) as s:

        async def one(seq, url):
            async with limit:
                return await fetch_one(s, seq, url, worker)

        return await asyncio.gather(*(one(seq, url) for seq, url in batch))


def run_batch(batch, concurrency, worker):
    """Runs in a child process: its own event loop over its static batch."""
    return asyncio.run(batch_loop(batch, concurrency, worker))


async def pool(urls, concurrency, processes, sink):
    size, extra = divmod(len(urls), processes)
    batches, start = [], 0
    for k in range(processes):
        end = start + size + (1 if k < extra else 0)
        batches.append(urls[start:end])
        start = end
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=processes) as executor:
        futures = [
            loop.run_in_executor(executor, run_batch, batch, concurrency, k)
            for k, batch in enumerate(batches)
        ]
        for done in asyncio.as_completed(futures):
            sink.writelines(await done)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("urls", help="file with one URL per line")
    p.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    p.add_argument("--concurrency", type=int, default=1024, help="requests in flight per event loop")
    p.add_argument("--pool", type=int, default=0, metavar="N", help="N processes with static batches")
    args = p.parse_args()
    urls = read_urls(args.urls)
    if args.output == "-":
        sink = open(sys.stdout.fileno(), "w", buffering=1 << 18, closefd=False)
    else:
        sink = open(args.output, "w", buffering=1 << 18)
    started = time.perf_counter()
    if args.pool > 0:
        asyncio.run(pool(urls, args.concurrency, args.pool, sink))
        mode = f"{args.pool} processes, static batches"
    else:
        asyncio.run(single_loop(urls, args.concurrency, sink))
        mode = "1 loop"
    sink.flush()
    secs = time.perf_counter() - started
    print(
        f"fetch_aiohttp: {len(urls)} URLs in {secs:.3f} s = {len(urls) / max(secs, 1e-9):.0f} pages/s "
        f"({mode}, concurrency {args.concurrency} each)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
