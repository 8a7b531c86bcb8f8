#!/usr/bin/env python3
"""Scrapy peer of `supervisor --task fetch --follow` (`pip install scrapy`).

    crawl_scrapy.py SEED_URL -o OUT.jsonl [--per-host 8]

A CrawlSpider from SEED_URL over the seed's host only (allowed_domains, and
a LinkExtractor whose allow_domains is the seed's host:port, which is how
it compares: <a href> and <area href>, as fetch
--follow reads), rel=nofollow links dropped, no delay, CONCURRENT_REQUESTS
and CONCURRENT_REQUESTS_PER_DOMAIN both --per-host, robots.txt, cookies and
the telnet console off, every status passed to the callback (404s are
pages too). Scrapy follows redirects itself and filters requests already
seen by their fingerprint; the seed goes through that filter too. Each page is one JSON line with the fields
fetch gives: status, url, bytes, title, links, hash (blake2b).
"""

import argparse
import hashlib
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.crawler import CrawlerProcess
from scrapy.linkextractors import LinkExtractor
from scrapy.spiders import CrawlSpider, Rule


def make_spider(seed):
    host = urlsplit(seed).hostname
    # The LinkExtractor compares allow_domains with the URL's netloc, port
    # included; the offsite filter compares allowed_domains with the host.
    netloc = urlsplit(seed).netloc.lower()

    class Site(CrawlSpider):
        name = "site"
        allowed_domains = [host]
        rules = (
            Rule(
                LinkExtractor(allow_domains=[netloc], tags=("a", "area"), attrs=("href",)),
                callback="parse_page",
                follow=True,
                process_links=lambda links: [link for link in links if not link.nofollow],
            ),
        )

        async def start(self):
            # Through the duplicate filter (start URLs skip it by default),
            # so that the links back to the seed do not fetch it again.
            yield Request(seed)

        def parse_start_url(self, response):
            return self.parse_page(response)

        def parse_page(self, response):
            is_html = b"html" in (response.headers.get("Content-Type") or b"text/html")
            yield {
                "status": response.status,
                "url": response.url,
                "bytes": len(response.body),
                "title": response.css("title::text").get() if is_html else None,
                "links": len(response.css("a[href], area[href]")) if is_html else 0,
                "hash": hashlib.blake2b(response.body, digest_size=32).hexdigest(),
            }

    return Site


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("seed")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--per-host", type=int, default=8)
    args = p.parse_args()
    process = CrawlerProcess(settings={
        "CONCURRENT_REQUESTS": args.per_host,
        "CONCURRENT_REQUESTS_PER_DOMAIN": args.per_host,
        "DOWNLOAD_DELAY": 0,
        "ROBOTSTXT_OBEY": False,
        "COOKIES_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "HTTPERROR_ALLOW_ALL": True,
        "RETRY_ENABLED": True,
        "LOG_LEVEL": "WARNING",
        "FEEDS": {args.output: {"format": "jsonlines", "overwrite": True}},
    })
    process.crawl(make_spider(args.seed))
    process.start()


if __name__ == "__main__":
    main()
