#!/usr/bin/env python3
"""crawl benchmark: a generated site crawled from one seed URL, by
`supervisor --task fetch --follow`, by a Python crawl handler under
multiloop, and by Scrapy; and the same pages fetched as a list.

    scripts/bench_crawl.py [--pages 100000] [--delay-ms 10] [--per-host 32]
                           [--repeat 1] [--quick] [--no-save] [--allow-dirty]
    scripts/bench_crawl.py --frontier 5000000 [--repeat 1] [--no-save] [--allow-dirty]

The site is crates/tasks/examples/site_graph_server (the module of
tests/site_graph, which the crawl tests use too): --pages pages of 2-4 KB
HTML (gzip), 4-10 links each, among them relative and <base> links,
redirects, 404s, a redirect loop, links to another host and rel=nofollow
links; it answers each request after --delay-ms. The server writes the
URLs a breadth-first crawl from the home page reaches (its --list), which
is what each crawl must fetch, once each. Contenders, in one run:

  fetch --follow     supervisor --task fetch --follow --per-host P
  python handler     supervisor --python crawl_aiohttp:crawl (scripts/peers/
                     crawl_aiohttp.py: aiohttp + html.parser, multiloop.add),
                     a per-host limit of P/workers in each worker's session
  scrapy             scripts/peers/crawl_scrapy.py: a CrawlSpider with a
                     LinkExtractor on the seed's host, CONCURRENT_REQUESTS
                     and _PER_DOMAIN = P, no delay
  fetch, as a list   supervisor --task fetch --lines on the reachable URLs
                     (--set max_redirects=0, so the same requests as the
                     crawl): what the crawl costs over a list

Reported per contender: pages (records), wall time, pages/s, client CPU
(all its processes, from rusage of the reaped children) per page, and a
check of the output against the reachable set (Scrapy follows redirects
itself, so its pages are the reachable set less the redirecting URLs).
With --repeat N the contenders take turns N times (A B C D, A B C D, ...)
and each figure is the median [min-max] of its N runs; the ratios are
those of the medians.

Python packages (scrapy, aiohttp) go into a virtualenv this script makes
at scripts/data/venv-crawl (or --venv); the multiloop Python package is
taken from python/ of this checkout. Build first:
  cargo build --release --bins
  cargo build --release -p multiloop-tasks --example site_graph_server
Results are appended to scripts/results/crawl-<date>.txt; a dirty tree is
refused unless --allow-dirty (then the results are marked DIRTY).

--frontier N is another benchmark: the memory of a crawl's frontier. No
site: `supervisor --task tree` from a few roots (fanout 20, so each node
adds 0-20 children, and itself again, kept out as seen) discovers about N
tasks breadth first, so the frontier peaks at most of them. Reported per
run: tasks recorded (checked: each node once), how many waited on disk
(past --frontier-memory), wall time, and the supervisor's peak RSS (VmHWM
from /proc) and that over the tasks (goal: under 256 MiB at 5 million).
The output (about 1 KB per task: each record lists what it added) goes to
DATA/out-frontier.jsonl and is removed after each run. Needs only
`cargo build --release --bins`.
"""

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))
import bench  # noqa: E402
import provenance  # noqa: E402
from bench import fmt_cmd, machine_info, run_timed, table  # noqa: E402

PY = sys.executable or "python3"


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def venv_python(venv):
    """The venv's python, made (with scrapy and aiohttp) when missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"making {venv} (scrapy, aiohttp) ...", flush=True)
        subprocess.run([PY, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "scrapy", "aiohttp"], check=True)
    return python


class Server:
    def __init__(self, binary, pages, delay_ms, listing):
        self.proc = subprocess.Popen(
            [str(binary), "--pages", str(pages), "--delay-ms", str(delay_ms), "--list", str(listing)],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise SystemExit(f"site_graph_server did not start: {line!r}")
        self.base = line.split()[-1]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def read_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def check(records, reachable, redirecting, url_of, follows_redirects=False):
    """Each expected URL once, nothing else; '' when so."""
    expected = reachable - redirecting if follows_redirects else reachable
    urls = [url_of(r) for r in records]
    twice = len(urls) - len(set(urls))
    missing = len(expected - set(urls))
    extra = len(set(urls) - expected)
    problems = []
    if twice:
        problems.append(f"{twice} fetched twice")
    if missing:
        problems.append(f"{missing} missing")
    if extra:
        problems.append(f"{extra} not in the reachable set")
    return "; ".join(problems)


def spread(values, fmt):
    """The median, and [min-max] when there is more than one run."""
    text = format(statistics.median(values), fmt)
    if len(values) > 1:
        text += f" [{min(values):{fmt}}-{max(values):{fmt}}]"
    return text


FRONTIER_FANOUT = 20


def tree_shape(tasks):
    """Roots and levels of `tree`s (fanout 20: 10 children a node on
    average) that hold about `tasks` nodes together."""
    levels, size = 0, 1
    while size * 10 + 1 <= tasks:
        levels, size = levels + 1, size * 10 + 1
    return max(1, round(tasks / size)), levels


def check_tree_output(path):
    """(records, distinct nodes, problem or "") of a tree crawl's output,
    read without parsing every record as JSON (millions of them)."""
    marker = '"ok":{"node":"'
    nodes, records, problem = set(), 0, ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            records += 1
            at = line.find(marker)
            if at < 0:
                problem = problem or f"not an ok record: {line[:200]}"
                continue
            start = at + len(marker)
            nodes.add(line[start:line.index('"', start)])
    if len(nodes) != records:
        problem = problem or f"{records - len(nodes)} nodes recorded more than once"
    return records, len(nodes), problem


def frontier_bench(args, supervisor, data, say):
    """The --frontier benchmark; returns whether it found problems."""
    roots, levels = tree_shape(args.frontier)
    seed_file = data / "frontier-roots.jsonl"
    seed_file.write_text("".join(
        json.dumps({"node": f"r{r}", "levels": levels, "fanout": FRONTIER_FANOUT, "seed": 11}) + "\n"
        for r in range(roots)))
    out = data / "out-frontier.jsonl"
    cmd = [str(supervisor), "--task", "tree", "--key", "node", "-i", str(seed_file), "-o", str(out)]
    say(f"frontier: {roots} tree(s) of {levels} levels, fanout {FRONTIER_FANOUT} (about "
        f"{args.frontier:,} tasks), --frontier-memory at its default")
    say(f"  {fmt_cmd(cmd)}")
    rows, problems = [], False
    for _ in range(args.repeat):
        out.unlink(missing_ok=True)
        run = run_timed("frontier", cmd, poll_rss=True)
        spilled = next((line.split()[1] for line in run.stderr.splitlines()
                        if "added tasks waited on disk" in line), "0")
        if run.rc != 0:
            rows.append(["-", "-", "-", "-", "-", f"FAILED: exit {run.rc}: {run.summary(2)[:140]}"])
            problems = True
            continue
        records, nodes, problem = check_tree_output(out)
        out.unlink(missing_ok=True)
        problems = problems or bool(problem)
        peak = run.hwm_kib or 0
        rows.append([f"{records:,}", spilled, f"{run.wall:.1f}", f"{peak / 1024:.1f}",
                     f"{peak * 1024 / max(records, 1):.1f}", problem or "ok, each node once"])
    say(table(["tasks", "on disk", "wall s", "peak RSS MiB", "bytes/task", "output"], rows))
    say("goal: supervisor peak RSS under 256 MiB for 5,000,000 tasks")
    return problems




def crawl_over_list(rounds, repeat):
    """The crawl's client CPU per page over the list's, of the runs each
    round made back to back: the median, and [min-max] over the rounds
    with more than one."""
    ratios = sorted(
        rounds[("fetch --follow", r)] / rounds[("fetch, the same pages as a list", r)]
        for r in range(repeat)
        if ("fetch --follow", r) in rounds and ("fetch, the same pages as a list", r) in rounds
    )
    if not ratios:
        return "-"
    middle = len(ratios) // 2
    median = ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2
    text = f"{median:.2f}x"
    if len(ratios) > 1:
        text += f" [{ratios[0]:.2f}-{ratios[-1]:.2f}] over {len(ratios)} rounds"
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pages", type=int, default=100_000, help="pages of the site (default 100,000)")
    p.add_argument("--delay-ms", type=int, default=10, help="server delay per request (default 10)")
    p.add_argument("--per-host", type=int, default=32, help="requests in flight to the site (default 32)")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per contender, interleaved; figures are median [min-max] (default 1)")
    p.add_argument("--quick", action="store_true", help="2,000 pages, nothing saved")
    p.add_argument("--no-save", action="store_true", help="do not append to scripts/results/")
    p.add_argument("--bin-dir", default=str(ROOT / "target" / "release"))
    p.add_argument("--data-dir", default=str(SCRIPTS / "data"))
    p.add_argument("--venv", default=None, help="virtualenv for scrapy and aiohttp (default DATA/venv-crawl)")
    p.add_argument("--allow-dirty", action="store_true",
                   help="run on a tree with uncommitted changes; results are marked DIRTY (not for the README)")
    p.add_argument("--only", default=None, metavar="NAMES",
                   help="comma-separated contenders to run: follow,python,scrapy,list (default all)")
    p.add_argument("--frontier", type=int, metavar="N", default=None,
                   help="instead: the frontier memory benchmark, a tree crawl of about N tasks")
    args = p.parse_args()
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    bench.GIT_LABEL = provenance.check_tree(ROOT, args.allow_dirty)
    if args.quick:
        args.pages, args.no_save = 2_000, True
    bin_dir = Path(args.bin_dir).resolve()
    supervisor = bin_dir / "supervisor"
    server_bin = bin_dir / "examples" / "site_graph_server"
    needed = (supervisor, bin_dir / "worker") if args.frontier is not None else (supervisor, bin_dir / "worker", server_bin)
    for path in needed:
        if not path.exists():
            raise SystemExit(f"{path} is not built; see the build lines in {Path(__file__).name} --help")
    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    if args.frontier is not None:
        return frontier_main(args, supervisor, data)
    python = venv_python(Path(args.venv).resolve() if args.venv else data / "venv-crawl")
    workers = os.cpu_count() or 1

    log = []

    def say(text=""):
        print(text, flush=True)
        log.append(text)

    m = machine_info()
    say(f"=== crawl  {m['date']}  git {m['git']}")
    say(f"machine: {m['host']}")
    say(f"loadavg before: {m['load']}")
    listing = data / f"crawl-reachable-{args.pages}.txt"
    server = Server(server_bin, args.pages, args.delay_ms, listing)
    problems = False
    try:
        reachable_list = listing.read_text().split()
        reachable = set(reachable_list)
        redirecting = {u for u in reachable if "/r/" in u or "/loop/" in u}
        seed = f"{server.base}/"
        seed_file = data / "crawl-seed.jsonl"
        # An object keyed by its URL, so that the links back to the seed
        # are known as seen.
        seed_file.write_text(json.dumps({"url": seed}) + "\n")
        say(
            f"site: {args.pages:,} pages, {len(reachable):,} URLs reachable from {seed} "
            f"({len(redirecting):,} of them redirect), server delay {args.delay_ms} ms; "
            f"per-host limit {args.per_host} for every contender; {workers} workers"
        )
        # The Python handler's modules: the peer, and multiloop from this checkout.
        os.environ["PYTHONPATH"] = os.pathsep.join([str(SCRIPTS / "peers"), str(ROOT / "python")])
        python_per_host = str(max(1, -(-args.per_host // workers)))
        per_host = str(args.per_host)
        sup = [str(supervisor), "-q", "--per-host", per_host]
        contenders = [
            ("fetch --follow", "follow", sup + ["--task", "fetch", "--follow", "--key", "url", "-i", str(seed_file), "-o"],
             lambda r: r["ok"]["url"], False),
            ("python handler (aiohttp, multiloop.add)", "python",
             [str(supervisor), "-q", "--python", "crawl_aiohttp:crawl", "--python-interpreter", str(python),
              "--set", f"per_host={python_per_host}", "--key", "url", "-i", str(seed_file), "-o"],
             lambda r: r["ok"]["url"], False),
            ("scrapy (CrawlSpider)", "scrapy",
             [str(python), str(SCRIPTS / "peers" / "crawl_scrapy.py"), seed, "--per-host", per_host, "-o"],
             lambda r: r["url"], True),
            ("fetch, the same pages as a list", "list",
             sup + ["--task", "fetch", "--lines", "--set", "max_redirects=0", "-i", str(listing), "-o"],
             lambda r: r["ok"]["url"], False),
        ]
        if args.only:
            wanted = set(args.only.split(","))
            unknown = wanted - {name for _, name, *_ in contenders}
            if unknown:
                p.error(f"--only: no contender named {', '.join(sorted(unknown))}")
            contenders = [c for c in contenders if c[1] in wanted]
        rows = {label: [] for label, *_ in contenders}
        # Client CPU per page of each contender in each round, for the
        # crawl/list ratio of runs made back to back.
        rounds = {}
        notes = {label: "" for label, *_ in contenders}
        for r in range(args.repeat):
            for label, name, cmd, url_of, follows_redirects in contenders:
                out = data / f"out-crawl-{name}.jsonl"
                out.unlink(missing_ok=True)
                cmd = cmd + [str(out)]
                if r == 0:
                    say(f"  {label}: {fmt_cmd(cmd)}")
                before = children_cpu()
                run = run_timed(label, cmd)
                cpu = children_cpu() - before
                if run.rc != 0:
                    # The line that says why, not the warnings after it.
                    lines = [line for line in run.stderr.splitlines() if "rror" in line]
                    notes[label] = f"exit {run.rc}: " + (lines[-1].strip() if lines else run.summary(2))
                    continue
                try:
                    records = read_records(out)
                    problem = check(records, reachable, redirecting, url_of, follows_redirects)
                except (OSError, ValueError, KeyError, TypeError) as err:
                    records, problem = [], f"unreadable output: {err}"
                if problem:
                    notes[label] = problem
                rows[label].append((run.wall, cpu, len(records)))
                rounds[(label, r)] = cpu / max(len(records), 1)
        table_rows = []
        per_page = {}
        for label, runs in rows.items():
            if not runs:
                table_rows.append([label, "-", "-", "-", "-", "FAILED: " + notes[label][:140]])
                problems = True
                continue
            if len(runs) < args.repeat:
                notes[label] = f"{args.repeat - len(runs)} of {args.repeat} runs failed: {notes[label]}"
            pages_seen = sorted({pages for _, _, pages in runs})
            if len(pages_seen) > 1 and not notes[label]:
                notes[label] = "pages differ between runs: " + ", ".join(f"{n:,}" for n in pages_seen)
            pages = runs[0][2]
            walls = [wall for wall, _, _ in runs]
            rates = [n / wall for wall, _, n in runs]
            cpu_us = [cpu * 1e6 / max(n, 1) for _, cpu, n in runs]
            per_page[label] = statistics.median(cpu_us)
            status = notes[label] or "ok"
            problems = problems or bool(notes[label])
            table_rows.append([
                label, f"{pages:,}", spread(walls, ".2f"), spread(rates, ",.0f"), spread(cpu_us, ".0f"), status,
            ])
        if args.repeat > 1:
            say(f"each figure: median [min-max] of {args.repeat} runs, interleaved")
        say(table(["contender", "pages", "wall s", "pages/s", "client CPU us/page", "output"], table_rows))
        crawl, listed, scrapy, python_crawl = (per_page.get(k) for k in (
            "fetch --follow", "fetch, the same pages as a list", "scrapy (CrawlSpider)",
            "python handler (aiohttp, multiloop.add)"))
        if crawl and listed:
            say(f"crawl / list, client CPU per page: {crawl_over_list(rounds, args.repeat)} (goal: at most 1.3x)")
        if crawl and scrapy:
            say(f"scrapy / fetch --follow, client CPU per page: {scrapy / crawl:.1f}x (goal: at least 10x)")
        if python_crawl and scrapy:
            say(f"scrapy / python handler, client CPU per page: {scrapy / python_crawl:.1f}x")
    finally:
        server.stop()
    if not args.no_save:
        save(log)
    return 1 if problems else 0


def frontier_main(args, supervisor, data):
    log = []

    def say(text=""):
        print(text, flush=True)
        log.append(text)

    m = machine_info()
    say(f"=== crawl frontier  {m['date']}  git {m['git']}")
    say(f"machine: {m['host']}")
    say(f"loadavg before: {m['load']}")
    problems = frontier_bench(args, supervisor, data, say)
    if not args.no_save:
        save(log)
    return 1 if problems else 0


def save(log):
    results_dir = SCRIPTS / "results"
    results_dir.mkdir(exist_ok=True)
    path = results_dir / f"crawl-{datetime.date.today().isoformat()}.txt"
    with open(path, "a") as f:
        f.write("\n".join(log) + "\n\n")
    print(f"(appended to {path.relative_to(ROOT)})")


if __name__ == "__main__":
    sys.exit(main())
