#!/usr/bin/env python3
"""multiloop benchmarks. Entry point: scripts/bench.sh NAME... (see --help).

  trivial  1M trivial tasks, file in -> file out: supervisor --workers 2 vs
           the in-process baseline (one multi-thread tokio runtime).
  cpu      20k CPU-bound tasks (~1 ms each, sleep 0): supervisor --workers 2
           vs --workers 1 (target >= 1.9x); the baseline with 2 threads vs 1
           shows the machine's own scaling ceiling.
  demo     the demo batch (10k tasks, sleep 200-1000 ms, iters 1M-5M):
           supervisor --workers auto / 1 and the baseline on the full list;
           then all of them plus the Python peers on the same list with iters
           scaled (default x0.01), since a Python loop is ~100x slower.
  rss      supervisor peak RSS on 1M vs 10M trivial tasks streamed from
           gen_tasks.py through a pipe (target < 64 MiB, flat).
  keeporder supervisor peak RSS with --keep-order on 2M trivial tasks and a
           15 s straggler on line 2, from a file and from stdin.
  all      all of the above, in that order.

Each prints a table and appends it to scripts/results/<name>-<date>.txt.
Task lists are generated once into scripts/data/ (override with --data-dir).
Contenders whose binary is missing are reported as "pending", not skipped.
"""

import argparse
import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))
import check_output  # noqa: E402
import gen_tasks  # noqa: E402
import provenance  # noqa: E402

# The commit measured, set by main() once the tree is checked.
GIT_LABEL = "unchecked"

PY = sys.executable or "python3"
MIB = 1 << 20


# ---------------------------------------------------------------- utilities


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - informational only
        return ""


def machine_info():
    model = sh("lscpu | grep 'Model name'").partition(":")[2].strip() or platform.processor()
    mem = sh("grep MemTotal /proc/meminfo").split()
    mem_gib = f"{int(mem[1]) / (1 << 20):.1f} GiB" if len(mem) >= 2 else "?"
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": f"nproc={sh('nproc')} cpu={model!r} mem={mem_gib} kernel={platform.release()}",
        "git": GIT_LABEL,
        "load": sh("cat /proc/loadavg"),
    }


def read_hwm_kib(pid):
    """VmHWM (peak RSS) of a live process in KiB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def child_pids(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


class Run:
    """One timed execution of a command."""

    def __init__(self, label, cmd, wall, rc, stderr, hwm_kib=None, child_hwm_kib=None):
        self.label, self.cmd, self.wall, self.rc, self.stderr = label, cmd, wall, rc, stderr
        self.hwm_kib, self.child_hwm_kib = hwm_kib, child_hwm_kib

    def summary(self, lines=2):
        tail = [l for l in self.stderr.splitlines() if l.strip()]
        return " | ".join(tail[-lines:])


GNU_TIME = "/usr/bin/time"
TIME_TAG = "multiloop-bench-maxrss-kib="


def run_timed(label, cmd, stdout_path=None, stdin_path=None, stdin_cmd=None, poll_rss=False):
    """Runs cmd, timing it with perf_counter from spawn to reap.

    stdin_cmd: a producer whose stdout is piped into cmd (timed together).
    poll_rss: sample VmHWM of cmd and of its children every 20 ms; if GNU
    time is installed, cmd also runs under it, which adds an unsampled
    figure: the max RSS over cmd and its children (ru_maxrss).
    """
    err = tempfile.TemporaryFile()
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    wrapped = poll_rss and os.access(GNU_TIME, os.X_OK)
    argv = [GNU_TIME, "-f", TIME_TAG + "%M", *cmd] if wrapped else cmd
    producer = None
    started = time.perf_counter()
    if stdin_cmd:
        producer = subprocess.Popen(stdin_cmd, stdout=subprocess.PIPE)
        stdin = producer.stdout
    proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err)
    if producer:
        producer.stdout.close()  # only cmd holds the read end now
    peak = {"self": None, "children": {}}
    stop = threading.Event()

    def sample():
        target = None if wrapped else proc.pid
        while not stop.is_set():
            if target is None:  # under time: cmd is time's only child
                kids = child_pids(proc.pid)
                target = kids[0] if kids else None
            if target is not None:
                hwm = read_hwm_kib(target)
                if hwm is not None:
                    peak["self"] = max(peak["self"] or 0, hwm)
                for c in child_pids(target):
                    chwm = read_hwm_kib(c)
                    if chwm is not None:
                        peak["children"][c] = max(peak["children"].get(c, 0), chwm)
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True) if poll_rss else None
    if sampler:
        sampler.start()
    rc = proc.wait()
    wall = time.perf_counter() - started
    stop.set()
    if sampler:
        sampler.join()
    if producer:
        producer.wait()
    for f in (out, stdin):
        if hasattr(f, "close"):
            f.close()
    err.seek(0)
    stderr = err.read().decode(errors="replace")
    err.close()
    tree = None
    if wrapped:
        kept = []
        for line in stderr.splitlines(keepends=True):
            if line.startswith(TIME_TAG):
                tree = int(line[len(TIME_TAG):])
            elif not line.startswith("Command exited with non-zero status"):
                kept.append(line)
        stderr = "".join(kept)
    children = peak["children"]
    run = Run(label, cmd, wall, rc, stderr, hwm_kib=peak["self"],
              child_hwm_kib=max(children.values()) if children else None)
    run.tree_kib = tree
    return run


def fmt_cmd(cmd):
    return " ".join(shlex.quote(str(c)) for c in cmd).replace(str(ROOT) + "/", "")


def table(headers, rows):
    cols = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(headers))]
    last = len(headers) - 1
    line = lambda r: "  ".join(  # noqa: E731
        c.ljust(w) if i in (0, last) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
    ).rstrip()
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(r) for r in cols[1:]])


# ------------------------------------------------------------------ context


class Contender:
    """cmd to time; reason = why it cannot run (binary missing), else None;
    stdout = file for its stdout; check = output file to verify (default
    stdout; the supervisor writes its own --output)."""

    def __init__(self, label, cmd, reason=None, stdout=None, check=None):
        self.label, self.cmd, self.reason, self.stdout, self.check = label, cmd, reason, stdout, check


class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = Path(args.bin_dir).resolve()
        self.supervisor = self.bin / "supervisor"
        self.sup_extra = shlex.split(args.sup_args or "")
        self.baseline = self.bin / "examples" / "inprocess_baseline"
        self.data = Path(args.data_dir).resolve()
        self.data.mkdir(parents=True, exist_ok=True)
        self.machine = machine_info()
        self.log = []

    def say(self, text=""):
        print(text, flush=True)
        self.log.append(text)

    def missing(self, path):
        if path == self.supervisor and not (self.bin / "worker").exists():
            return f"pending ({path.name} / worker not built)"
        return None if path.exists() else f"pending ({path.relative_to(ROOT) if ROOT in path.parents else path} not built)"

    def tasks(self, name, gen_argv):
        """A generated task list, cached by name + arguments."""
        path = self.data / f"{name}.jsonl"
        stamp = self.data / f"{name}.args"
        want = " ".join(gen_argv)
        if not path.exists() or not stamp.exists() or stamp.read_text() != want:
            self.say(f"generating {path.relative_to(ROOT) if ROOT in path.parents else path}: gen_tasks.py {want}")
            gen_tasks.main(gen_argv + ["-o", str(path)])
            stamp.write_text(want)
        return path

    def out(self, name):
        return self.data / f"out-{name}.jsonl"

    def header(self, name):
        m = self.machine = machine_info()
        self.say(f"=== {name}  {m['date']}  git {m['git']}")
        self.say(f"machine: {m['host']}")
        self.say(f"loadavg before: {m['load']}")
        try:
            busy = float(m["load"].split()[0]) > 0.5
        except (ValueError, IndexError):
            busy = False
        if busy:
            self.say("WARNING: the machine is busy (1-min load > 0.5): timings will be noisy; "
                     "compare best runs, or rerun when idle")

    def save(self, name):
        if self.args.no_save:
            return
        results = SCRIPTS / "results"
        results.mkdir(exist_ok=True)
        path = results / f"{name}-{datetime.date.today().isoformat()}.txt"
        with open(path, "a") as f:
            f.write("\n".join(self.log) + "\n\n")
        print(f"(appended to {path.relative_to(ROOT)})")
        self.log = []

    def repeat(self, default):
        return self.args.repeat or default

    def contest(self, contenders, repeat, verify):
        """Runs each contender `repeat` times, interleaved (A B A B ...) so
        drift in machine load hits all alike; verifies the first run's
        output with verify(path) -> [problems].
        Returns {label: (runs, reason it did not run, problems)}."""
        res = {c.label: ([], c.reason, []) for c in contenders}
        for r in range(repeat):
            for c in contenders:
                if c.reason:
                    continue
                if r == 0:
                    self.say(f"  {c.label}: {fmt_cmd(c.cmd)}" + (f" > {fmt_cmd([c.stdout])}" if c.stdout else ""))
                if c.check:
                    Path(c.check).unlink(missing_ok=True)  # never verify a stale file
                run = run_timed(c.label, c.cmd, stdout_path=c.stdout)
                runs, _, problems = res[c.label]
                runs.append(run)
                if run.rc != 0:
                    problems.append(f"exit {run.rc}: {run.summary(3)}")
                elif r == 0 and (c.check or c.stdout):
                    problems += verify(c.check or c.stdout)
        return res

    def rows(self, res, count):
        rows = []
        for label, (runs, reason, problems) in res.items():
            if reason:
                rows.append([label, "-", "-", "-", reason])
                continue
            if any(x.rc != 0 for x in runs):
                rows.append([label, "-", "-", "-", "FAILED: " + "; ".join(problems)[:120]])
                continue
            walls = [x.wall for x in runs]
            med, best = statistics.median(walls), min(walls)
            status = "ok" if not problems else "FAILED: " + "; ".join(problems)[:120]
            spread = f"{best:.3f}-{max(walls):.3f}"
            rows.append([label, f"{med:.3f}", spread, f"{count / med:,.0f}", status])
        return rows

    def notes(self, res):
        for label, (runs, _, _) in res.items():
            if runs and label.startswith("supervisor") and runs[0].summary():
                self.log.append(f"  [{label} stderr] {runs[0].summary(3)}")


def wall_of(res, label, pick=statistics.median):
    runs = res[label][0]
    return pick(r.wall for r in runs) if runs and not res[label][2] else None


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "pending"


# --------------------------------------------------------------- benchmarks


def bench_trivial(b):
    count = b.args.count or (20_000 if b.args.quick else 1_000_000)
    repeat = b.repeat(3)
    b.header("trivial")
    tasks = b.tasks(f"trivial-{count}", ["--preset", "trivial", "--count", str(count)])
    b.say(f"{count:,} trivial tasks {{\"sleep_ms\":0,\"iters\":0}}, file in -> file out, median of {repeat}")
    sup_out = b.out("trivial-supervisor")
    contenders = [
        Contender("supervisor --workers 2",
                  [b.supervisor, *b.sup_extra, "--workers", "2", "--task", "sim", "--input", tasks, "--output", sup_out],
                  b.missing(b.supervisor), check=sup_out),
        Contender("inprocess_baseline", [b.baseline, tasks], b.missing(b.baseline), stdout=b.out("trivial-baseline")),
    ]
    if b.args.screen_cost:
        # The same run without the check that each result is one line of
        # JSON (a hidden flag that exists for this comparison only).
        unscreened = b.out("trivial-supervisor-unscreened")
        contenders.append(Contender(
            "supervisor --workers 2 --unscreened-output",
            [b.supervisor, *b.sup_extra, "--workers", "2", "--unscreened-output", "--task", "sim",
             "--input", tasks, "--output", unscreened],
            b.missing(b.supervisor), check=unscreened))
    res = b.contest(contenders, repeat, lambda p: check_output.check(None, p, quick=True, expected=count)[1])
    b.say()
    b.say(table(["contender", "median s", "min-max s", "tasks/s", "status / output check"], b.rows(res, count)))
    sup, base = wall_of(res, "supervisor --workers 2"), wall_of(res, "inprocess_baseline")
    b.say(f"supervisor / baseline throughput: {ratio(base, sup)}   (1.00x = as fast as in-process)")
    if b.args.screen_cost:
        bare = wall_of(res, "supervisor --workers 2 --unscreened-output")
        b.say(f"screened / unscreened throughput: {ratio(bare, sup)}   (what checking each result costs)")
    b.notes(res)
    b.save("trivial")


def bench_cpu(b):
    count = b.args.count or (500 if b.args.quick else 20_000)
    repeat = b.repeat(3)
    iters = gen_tasks.CPU_ITERS
    b.header("cpu")
    tasks = b.tasks(f"cpu-{count}", ["--preset", "cpu", "--count", str(count)])
    b.say(f"{count:,} CPU-bound tasks (sleep 0, iters {iters:,} = ~1 ms in Rust), median of {repeat}")
    contenders = []
    for w in ("2", "1"):
        out = b.out(f"cpu-supervisor-{w}")
        contenders.append(Contender(
            f"supervisor --workers {w}",
            [b.supervisor, *b.sup_extra, "--workers", w, "--task", "sim", "--input", tasks, "--output", out],
            b.missing(b.supervisor), check=out))
    for t in ("2", "1"):
        contenders.append(Contender(f"inprocess_baseline --threads {t}", [b.baseline, "--threads", t, tasks],
                                    b.missing(b.baseline), stdout=b.out(f"cpu-baseline-{t}")))
    res = b.contest(contenders, repeat, lambda p: check_output.check(tasks, p)[1])
    b.say()
    b.say(table(["contender", "median s", "min-max s", "tasks/s", "status / output check"], b.rows(res, count)))
    s2, s1 = wall_of(res, "supervisor --workers 2"), wall_of(res, "supervisor --workers 1")
    t2, t1 = wall_of(res, "inprocess_baseline --threads 2"), wall_of(res, "inprocess_baseline --threads 1")
    verdict = ""
    if s2 and s1:
        verdict = "  PASS (>= 1.9x)" if s1 / s2 >= 1.9 else "  BELOW TARGET (< 1.9x)"
    best = lambda label: wall_of(res, label, min)  # noqa: E731
    b.say(f"supervisor speedup, 2 workers vs 1: {ratio(s1, s2)} (medians){verdict}; "
          f"{ratio(best('supervisor --workers 1'), best('supervisor --workers 2'))} (best runs)")
    b.say(f"machine ceiling, baseline 2 threads vs 1: {ratio(t1, t2)} (medians); "
          f"{ratio(best('inprocess_baseline --threads 1'), best('inprocess_baseline --threads 2'))} (best runs)")
    b.notes(res)
    b.save("cpu")


def bench_demo(b):
    count = b.args.count or (300 if b.args.quick else 10_000)
    scale = b.args.iters_scale
    repeat = b.repeat(1)
    b.header("demo")
    gen = ["--preset", "demo", "--count", str(count), "--seed", "1"]
    full = b.tasks(f"demo-{count}", gen)
    scaled = b.tasks(f"demo-{count}-x{scale:g}", gen + ["--iters-scale", f"{scale:g}"])
    conc = str(b.args.concurrency)
    b.say(f"{count:,} tasks, sleep 200-1000 ms, iters 1,000,000-5,000,000 (seed 1); "
          f"concurrency {conc} per event loop for the supervisor and the Python peers")

    def contenders(tasks, tag, python):
        rows = []
        for w in ("auto", "1"):
            out = b.out(f"demo-{tag}-supervisor-{w}")
            rows.append(Contender(
                f"supervisor --workers {w}",
                [b.supervisor, *b.sup_extra, "--workers", w, "--task", "sim", "--concurrency", conc, "--input", tasks, "--output", out],
                b.missing(b.supervisor), check=out))
        rows.append(Contender("inprocess_baseline", [b.baseline, tasks], b.missing(b.baseline),
                              stdout=b.out(f"demo-{tag}-baseline")))
        if python:
            for peer in ("asyncio_single", "pool_asyncio"):
                rows.append(Contender(f"python {peer}",
                                      [PY, SCRIPTS / "peers" / f"{peer}.py", "--concurrency", conc, tasks],
                                      stdout=b.out(f"demo-{tag}-{peer}")))
        return rows

    def run(tasks, tag, python, title):
        b.say()
        b.say(title)
        res = b.contest(contenders(tasks, tag, python), repeat, lambda p: check_output.check(tasks, p)[1])
        b.say()
        b.say(table(["contender", "median s", "min-max s", "tasks/s", "status / output check"], b.rows(res, count)))
        sa, s1 = wall_of(res, "supervisor --workers auto"), wall_of(res, "supervisor --workers 1")
        b.say(f"supervisor auto vs 1 worker: {ratio(s1, sa)}")
        for peer in ("python asyncio_single", "python pool_asyncio"):
            if peer in res:
                b.say(f"supervisor auto vs {peer}: {ratio(wall_of(res, peer), sa)}")
        b.notes(res)

    if not b.args.skip_full:
        run(full, "full", b.args.python_full, f"-- full list ({full.name})"
            + ("" if b.args.python_full else "; Python peers skipped (a Python loop over 1-5M iters is "
               "~75-375 ms per task; --python-full to run them anyway)"))
    run(scaled, f"x{scale:g}", True, f"-- SCALED list ({scaled.name}): iters x{scale:g} for EVERY contender, "
        "same file, so the Python peers finish in reasonable time")
    b.save("demo")


def bench_rss(b):
    counts = [int(c) for c in b.args.rss_counts.split(",")] if b.args.rss_counts else (
        [100_000, 1_000_000] if b.args.quick else [1_000_000, 10_000_000])
    b.header("rss")
    b.say(f"trivial tasks streamed: gen_tasks.py --preset trivial --count N | <cmd> --input - --output /dev/null")
    b.say("self = VmHWM (peak RSS) of the process, children = largest VmHWM among its child processes "
          "(workers), both polled from /proc every 20 ms; tree = /usr/bin/time %M (ru_maxrss, unsampled): "
          "the largest of the process and its children, an upper bound for both.")
    rows, peaks = [], {}
    for label, exe, cmd in (
        ("supervisor --workers 2", b.supervisor, [b.supervisor, *b.sup_extra, "--workers", "2", "--task", "sim", "--input", "-",
                                                  "--output", "/dev/null"]),
        ("inprocess_baseline", b.baseline, [b.baseline, "-"]),
    ):
        reason = b.missing(exe)
        for n in counts:
            if reason:
                rows.append([label, f"{n:,}", "-", "-", "-", "-", reason])
                continue
            gen = [PY, SCRIPTS / "gen_tasks.py", "--preset", "trivial", "--count", str(n)]
            b.say(f"  {label}, {n:,}: {fmt_cmd(gen)} | {fmt_cmd(cmd)}")
            run = run_timed(label, cmd, stdin_cmd=gen, poll_rss=True)
            mib = lambda k: f"{k / 1024:.1f}" if k else "?"  # noqa: E731
            status = "ok" if run.rc == 0 else f"FAILED exit {run.rc}: {run.summary(2)}"[:100]
            rows.append([label, f"{n:,}", mib(run.hwm_kib), mib(run.child_hwm_kib) if run.child_hwm_kib else "-",
                         mib(run.tree_kib) if run.tree_kib else "-", f"{n / run.wall:,.0f}" if run.rc == 0 else "-",
                         status])
            if run.rc == 0 and run.hwm_kib:
                peaks.setdefault(label, []).append(run.hwm_kib / 1024)
            if label.startswith("supervisor") and run.summary():
                b.log.append(f"  [{label} {n:,} stderr] {run.summary(3)}")
    b.say()
    b.say(table(["process", "tasks", "self MiB", "children MiB", "tree MiB", "tasks/s", "status"], rows))
    sup = peaks.get("supervisor --workers 2")
    if sup and len(sup) == len(counts):
        ok = max(sup) < 64 and sup[-1] - sup[0] <= max(4.0, 0.1 * sup[0])
        b.say(f"supervisor peak RSS {sup[0]:.1f} -> {sup[-1]:.1f} MiB: "
              + ("PASS (< 64 MiB and flat)" if ok else "FAIL (target < 64 MiB, flat within max(4 MiB, 10%))"))
    else:
        b.say("supervisor peak RSS: pending")
    b.save("rss")


def bench_keeporder(b):
    count = b.args.count or (100_000 if b.args.quick else 2_000_000)
    straggle_ms = 2_000 if b.args.quick else 15_000
    b.header("keeporder")
    trivial = b.tasks(f"trivial-{count}", ["--preset", "trivial", "--count", str(count)])
    # The same list with line 2 a straggler: every record after it waits in
    # --keep-order's reorder buffer until it ends.
    tasks = b.data / f"keeporder-{count}-{straggle_ms}.jsonl"
    if not tasks.exists():
        with open(trivial, "rb") as src, open(tasks, "wb") as dst:
            for i, line in enumerate(src, 1):
                dst.write(b'{"sleep_ms":%d,"iters":0}\n' % straggle_ms if i == 2 else line)
    b.say(f"{count:,} trivial tasks with a {straggle_ms / 1000:g} s straggler on line 2, --keep-order, "
          f"from a file and from stdin; self = supervisor peak RSS (VmHWM), bound {KEEP_ORDER_BOUND_MIB} MiB "
          "of held records")
    rows = []
    for source in ("file", "stdin"):
        label = f"supervisor --workers 2 --keep-order ({source})"
        cmd = [b.supervisor, *b.sup_extra, "--workers", "2", "--keep-order", "--task", "sim",
               "--input", str(tasks) if source == "file" else "-", "--output", "/dev/null"]
        reason = b.missing(b.supervisor)
        if reason:
            rows.append([label, "-", "-", "-", reason])
            continue
        b.say(f"  {label}: {fmt_cmd(cmd)}" + (f" < {tasks}" if source == "stdin" else ""))
        run = run_timed(label, cmd, stdin_path=tasks if source == "stdin" else None, poll_rss=True)
        mib = lambda k: f"{k / 1024:.1f}" if k else "?"  # noqa: E731
        status = "ok" if run.rc == 0 else f"FAILED exit {run.rc}: {run.summary(2)}"[:100]
        rows.append([label, mib(run.hwm_kib), mib(run.child_hwm_kib) if run.child_hwm_kib else "-",
                     f"{run.wall:.2f}", status])
    b.say()
    b.say(table(["contender", "self MiB", "children MiB", "wall s", "status"], rows))
    b.save("keeporder")


#: REORDER_BYTES in crates/supervisor/src/reorder.rs, for the report.
KEEP_ORDER_BOUND_MIB = 32

BENCHES = {"trivial": bench_trivial, "cpu": bench_cpu, "demo": bench_demo, "rss": bench_rss,
           "keeporder": bench_keeporder}


def main():
    p = argparse.ArgumentParser(prog="bench.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+", choices=list(BENCHES) + ["all"], metavar="NAME",
                   help="trivial | cpu | demo | rss | keeporder | all")
    p.add_argument("--bin-dir", default=str(ROOT / "target" / "release"),
                   help="where supervisor, worker and examples/inprocess_baseline are (default target/release)")
    p.add_argument("--data-dir", default=os.environ.get("MULTILOOP_BENCH_DATA", str(SCRIPTS / "data")),
                   help="generated task lists and outputs (default scripts/data, $MULTILOOP_BENCH_DATA)")
    p.add_argument("--repeat", type=int, help="runs per contender (default: 3 trivial/cpu, 1 demo)")
    p.add_argument("--count", type=int, help="override the task count (trivial, cpu, demo)")
    p.add_argument("--rss-counts", help="comma-separated task counts for rss (default 1000000,10000000)")
    p.add_argument("--quick", action="store_true", help="small sizes, to smoke-test the scripts")
    p.add_argument("--iters-scale", type=float, default=0.01, help="demo: iters scale of the shared list (default 0.01)")
    p.add_argument("--concurrency", type=int, default=1024, help="demo: tasks in flight per event loop (default 1024)")
    p.add_argument("--python-full", action="store_true", help="demo: also run the Python peers on the unscaled list (slow)")
    p.add_argument("--skip-full", action="store_true", help="demo: only the scaled list")
    p.add_argument("--sup-args", help='extra arguments for every supervisor run; use the = form: --sup-args="--keep-order"')
    p.add_argument("--screen-cost", action="store_true",
                   help="trivial: also run without the check that each result is one line of JSON")
    p.add_argument("--no-save", action="store_true", help="do not append to scripts/results/")
    p.add_argument("--allow-dirty", action="store_true",
                   help="run on a tree with uncommitted changes; results are marked DIRTY (not for the README)")
    args = p.parse_args()
    global GIT_LABEL
    GIT_LABEL = provenance.check_tree(ROOT, args.allow_dirty)
    names = list(BENCHES) if "all" in args.names else args.names
    b = Bench(args)
    for name in names:
        BENCHES[name](b)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
