#!/usr/bin/env python3
"""fetch benchmark: pages/s of `supervisor --task fetch` against aiohttp peers.

    scripts/bench_fetch.py [--count 20000] [--delay-ms 20] [--repeat 3] [--quick]

A local server (crates/tasks/examples/fetch_bench_server, Rust/hyper, on
127.0.0.1) answers every GET /page/N after a fixed delay with a small HTML
page, gzip-compressed once at start. All contenders fetch the same list of
--count URLs (one per line, as `supervisor --lines` reads them) and do the
same CPU work per page (decompress, find <title>, count <a href>, hash):

  supervisor --workers 1 --per-host 0      one worker process, one event loop
  supervisor --workers auto --per-host 0   one worker per core, no per-host limit
  supervisor --workers auto --per-host auto  the adaptive per-host limit
  supervisor --workers auto                default flags (8 per host: polite, slow
                                           on one host by design; shown for scale)
  fetch in-process, 1 thread               the same Fetcher with no supervisor and
                                           no worker protocol (examples/fetch_inprocess):
                                           the floor of the HTTP client, scan and hash
  aiohttp, 1 loop              scripts/peers/fetch_aiohttp.py
  aiohttp, pool of N           ... --pool N (ProcessPoolExecutor + asyncio.run
                               per static batch)

Every aiohttp event loop gets --concurrency requests in flight (default
1024); the supervisor runs with its own defaults (tasks in flight 10,000 per
worker, requests in flight bounded by its connection budget, 1,024 per
worker). A dirty git tree is
marked "(dirty)" in the results header.

The server shares the cores with the clients: its own CPU time per request
(from /proc, over all runs) is printed, so its share can be told apart.

Outputs go to scripts/data/, the table is appended to
scripts/results/fetch-<date>.txt. Build first:
  cargo build --release --bins
  cargo build --release -p multiloop-tasks --example fetch_bench_server --example fetch_inprocess
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
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a live process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Server:
    def __init__(self, binary, delay_ms, threads, pages):
        self.proc = subprocess.Popen(
            [str(binary), "--delay-ms", str(delay_ms), "--threads", str(threads), "--pages", str(pages)],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise SystemExit(f"fetch_bench_server did not start: {line!r}")
        self.base = line.split()[-1]

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def verify(path, count):
    """Every seq 1..count exactly once, status 200, a title, links > 0."""
    seen, problems = set(), []
    try:
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                seq = rec["seq"]
                if seq in seen:
                    problems.append(f"seq {seq} twice")
                seen.add(seq)
                ok = rec.get("ok")
                if not ok or ok["status"] != 200 or not (ok["title"] or "").startswith("Page ") or ok["links"] < 20:
                    problems.append(f"seq {seq}: {json.dumps(rec)[:160]}")
    except (OSError, ValueError, KeyError) as err:
        problems.append(f"unreadable output: {err}")
    if len(seen) != count:
        problems.append(f"{len(seen)} records for {count} URLs")
    return problems[:3]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=20_000, help="URLs (default 20,000)")
    p.add_argument("--delay-ms", type=int, default=20, help="server delay per request (default 20)")
    p.add_argument("--pages", type=int, default=1000, help="distinct pages served (default 1000)")
    p.add_argument("--concurrency", type=int, default=1024, help="requests in flight per event loop")
    p.add_argument("--server-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=3, help="runs per contender, interleaved (default 3)")
    p.add_argument("--quick", action="store_true", help="5,000 URLs, nothing saved")
    p.add_argument("--no-save", action="store_true", help="do not append to scripts/results/")
    p.add_argument("--bin-dir", default=str(ROOT / "target" / "release"))
    p.add_argument("--data-dir", default=str(SCRIPTS / "data"))
    p.add_argument("--allow-dirty", action="store_true",
                   help="run on a tree with uncommitted changes; results are marked DIRTY (not for the README)")
    args = p.parse_args()
    # machine_info() (from bench.py) reports the label checked here.
    bench.GIT_LABEL = provenance.check_tree(ROOT, args.allow_dirty)
    if args.quick:
        args.count, args.no_save = 5_000, True
    bin_dir = Path(args.bin_dir).resolve()
    supervisor = bin_dir / "supervisor"
    server_bin = bin_dir / "examples" / "fetch_bench_server"
    inprocess = bin_dir / "examples" / "fetch_inprocess"
    for path in (supervisor, bin_dir / "worker", server_bin, inprocess):
        if not path.exists():
            raise SystemExit(f"{path} is not built; see the build lines in {Path(__file__).name} --help")
    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    nproc = os.cpu_count() or 1

    log = []

    def say(text=""):
        print(text, flush=True)
        log.append(text)

    m = machine_info()
    say(f"=== fetch  {m['date']}  git {m['git']}")
    say(f"machine: {m['host']}")
    say(f"loadavg before: {m['load']}")
    server = Server(server_bin, args.delay_ms, args.server_threads, args.pages)
    try:
        urls = data / f"fetch-urls-{args.count}.txt"
        with open(urls, "w") as f:
            f.writelines(f"{server.base}/page/{i}\n" for i in range(args.count))
        say(
            f"{args.count:,} URLs, {args.pages} distinct pages (3-6 KB HTML, gzip), server delay "
            f"{args.delay_ms} ms, {args.server_threads} server threads, aiohttp concurrency {args.concurrency} "
            f"per event loop, supervisor defaults (1,024 connections per worker), median of {args.repeat}"
        )
        conc = str(args.concurrency)
        sup = [str(supervisor), "--task", "fetch", "--lines", "-i", str(urls), "-q"]
        peer = [PY, str(SCRIPTS / "peers" / "fetch_aiohttp.py"), str(urls), "--concurrency", conc]
        contenders = [
            ("supervisor --workers 1 --per-host 0", sup + ["--workers", "1", "--per-host", "0", "-o"], "sup-1"),
            ("supervisor --workers auto --per-host 0", sup + ["--per-host", "0", "-o"], "sup-auto"),
            ("supervisor --workers auto --per-host auto", sup + ["--per-host", "auto", "-o"], "sup-adaptive"),
            ("supervisor (default flags: --per-host 8)", sup + ["-o"], "sup-default"),
            ("fetch in-process, 1 thread (no supervisor)", [str(inprocess), str(urls)], "inprocess"),
            ("aiohttp, 1 loop", peer + ["-o"], "aiohttp-1"),
            (f"aiohttp, pool of {nproc}", peer + ["--pool", str(nproc), "-o"], "aiohttp-pool"),
        ]
        results = {label: [] for label, _, _ in contenders}
        problems = {label: [] for label, _, _ in contenders}
        server_total = [0.0, 0]  # server CPU s, requests
        for r in range(args.repeat):
            for label, cmd, name in contenders:
                out = data / f"out-fetch-{name}.jsonl"
                out.unlink(missing_ok=True)
                cmd = cmd + [str(out)]
                if r == 0:
                    say(f"  {label}: {fmt_cmd(cmd)}")
                server_before, client_before = server.cpu(), children_cpu()
                run = run_timed(label, cmd)
                server_cpu, client_cpu = server.cpu() - server_before, children_cpu() - client_before
                server_total[0] += server_cpu
                server_total[1] += args.count
                results[label].append((run.wall, client_cpu, server_cpu))
                if run.rc != 0:
                    problems[label].append(f"exit {run.rc}: {run.summary(2)}")
                elif r == 0:
                    problems[label] += verify(out, args.count)
        rows = []
        for label, runs in results.items():
            if problems[label]:
                rows.append([label, "-", "-", "-", "-", "-", "FAILED: " + "; ".join(problems[label])[:140]])
                continue
            wall = statistics.median(w for w, _, _ in runs)
            client = statistics.median(c for _, c, _ in runs)
            srv = statistics.median(s for _, _, s in runs)
            spread = f"{min(w for w, _, _ in runs):.3f}-{max(w for w, _, _ in runs):.3f}"
            rows.append([
                label, f"{wall:.3f}", spread, f"{args.count / wall:,.0f}",
                f"{client * 1e6 / args.count:.0f}", f"{srv / wall * 100:.0f}%", "ok",
            ])
        say(table(["contender", "median wall s", "min-max s", "pages/s", "client CPU us/page", "server CPU (of 1 core)", "output"], rows))

        # The server's own cost per request: its capacity per core.
        us_per_request = server_total[0] * 1e6 / max(server_total[1], 1)
        say(
            f"server: {us_per_request:.1f} us CPU per request over all runs "
            f"= {1e6 / max(us_per_request, 1e-9):,.0f} requests/s per core"
        )
        bound = args.concurrency * 1000 / max(args.delay_ms, 1)
        say(f"latency bound of one event loop: {args.concurrency} requests in flight / {args.delay_ms} ms = {bound:,.0f} pages/s")
    finally:
        server.stop()
    if not args.no_save:
        results_dir = SCRIPTS / "results"
        results_dir.mkdir(exist_ok=True)
        path = results_dir / f"fetch-{datetime.date.today().isoformat()}.txt"
        with open(path, "a") as f:
            f.write("\n".join(log) + "\n\n")
        print(f"(appended to {path.relative_to(ROOT)})")
    return 0 if not any(problems.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
