#!/usr/bin/env python3
"""Python workers against the Python ways of using every core (issue #9).

Runs, in one go and on one task list (the seed article's workload with a
fixed seed, scripts/peers/seed.py):

* multiloop: `supervisor --python seed:handle` with one worker per core;
* one asyncio loop (`asyncio.gather` of every task);
* the article's layout: `ProcessPoolExecutor` + `asyncio.run` per batch,
  5 batches of N/5;
* the same with one even batch per core;
* aiomultiprocess `Pool(processes=cores).map`;

then the same task list with one worker/child SIGKILLed halfway through
(multiloop, the process pool, aiomultiprocess), and the dispatch overhead:
200,000 trivial tasks (`return task`) on 2 processes, multiloop vs
aiomultiprocess. Reports wall and CPU seconds (the CPU of every process of
the contender, from RUSAGE_CHILDREN), median and spread over --repeat runs.

    pip install . aiomultiprocess        # into the venv that runs this
    scripts/bench_python.py [--tasks 10000] [--repeat 3] [--skip-kill] [--skip-trivial]

Appends its table to scripts/results/python-<date>.txt.
"""

import argparse
import asyncio
import datetime
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))
sys.path.insert(0, str(HERE))
import provenance  # noqa: E402
import seed  # noqa: E402

CORES = os.cpu_count() or 1


# -- contenders, each run in a child process: `bench_python.py _run NAME FILE` --


def _run_batch(batch):
    async def main():
        return await asyncio.gather(*(seed.handle(t) for t in batch))

    return asyncio.run(main())


def contender_single(tasks):
    async def main():
        return await asyncio.gather(*(seed.handle(t) for t in tasks))

    return asyncio.run(main())


def _pool(tasks, batches):
    from concurrent.futures import ProcessPoolExecutor

    size = -(-len(tasks) // batches)
    parts = [tasks[i : i + size] for i in range(0, len(tasks), size)]

    async def main():
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(max_workers=min(CORES, len(parts))) as pool:
            done = await asyncio.gather(*(loop.run_in_executor(pool, _run_batch, p) for p in parts))
        return [r for part in done for r in part]

    return asyncio.run(main())


def contender_article(tasks):
    return _pool(tasks, 5)


def contender_even(tasks):
    return _pool(tasks, CORES)


def contender_aiomultiprocess(tasks, processes=CORES, fn=seed.handle):
    import aiomultiprocess

    async def main():
        async with aiomultiprocess.Pool(processes=processes) as pool:
            return await pool.map(fn, tasks)

    return asyncio.run(main())


def contender_aiomultiprocess_trivial(tasks):
    return contender_aiomultiprocess(tasks, processes=2, fn=seed.trivial)


CONTENDERS = {
    "single": contender_single,
    "article": contender_article,
    "even": contender_even,
    "aiomultiprocess": contender_aiomultiprocess,
    "aiomultiprocess_trivial": contender_aiomultiprocess_trivial,
}


def child_main(name, path):
    tasks = json.loads(Path(path).read_text())
    try:
        results = CONTENDERS[name](tasks)
    except BaseException as error:  # a peer's failure is a result of this benchmark
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return 1
    if name.endswith("trivial"):
        good = sum(1 for t, r in zip(tasks, results) if r == t)
    else:
        good = sum(1 for t, r in zip(tasks, results) if r == seed.expected(t))
    print(json.dumps({"correct": good}))
    return 0


# -- the parent: timing, CPU, kills -------------------------------------------


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def descendants(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            kids = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            out.append(kid)
            out += descendants(kid)
    return out


def supervisor_path():
    found = Path(sys.executable).parent / "supervisor"
    return str(found) if found.exists() else os.environ.get("MULTILOOP_SUPERVISOR", "supervisor")


def run_one(name, tasks_file, n, kill_after=None, limit=None):
    """Runs one contender; returns (wall, cpu, correct, note)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE / "peers")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    with tempfile.TemporaryDirectory() as tmp:
        if name.startswith("multiloop"):
            trivial = name.endswith("trivial")
            lines = Path(tmp) / "in.jsonl"
            lines.write_text("".join(json.dumps(t) + "\n" for t in json.loads(Path(tasks_file).read_text())))
            out = Path(tmp) / "out.jsonl"
            command = [
                supervisor_path(), "--workers", "2" if trivial else str(CORES),
                "--python", "seed:trivial" if trivial else "seed:handle",
                "--concurrency", "1024" if trivial else "10000",
                "-i", str(lines), "-o", str(out), "--quiet",
            ]
        else:
            out = None
            command = [sys.executable, __file__, "_run", name, tasks_file]
        cpu0, start = children_cpu(), time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True)
        note = ""
        if kill_after is not None:
            try:
                proc.wait(kill_after)
            except subprocess.TimeoutExpired:
                kids = descendants(proc.pid)
                # One worker / pool child: the busiest process, so never a
                # pool's manager or resource tracker.
                victims = sorted(kids, key=_cpu_ticks, reverse=True)
                if victims:
                    os.kill(victims[0], signal.SIGKILL)
                    note = f"killed pid {victims[0]} at {kill_after:.1f}s; "
        try:
            stdout, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            for pid in descendants(proc.pid):
                _kill(pid)
            proc.kill()
            stdout, stderr = proc.communicate()
            return time.perf_counter() - start, children_cpu() - cpu0, 0, note + f"hung: no end after {limit:.0f}s, killed"
        wall, cpu = time.perf_counter() - start, children_cpu() - cpu0
        if out is not None:
            records = [json.loads(l) for l in out.read_text().splitlines() if l.strip()] if out.exists() else []
            tasks = json.loads(Path(tasks_file).read_text())
            seen = {}
            for r in records:
                seen[r["seq"]] = seen.get(r["seq"], 0) + 1
            twice = sum(1 for c in seen.values() if c > 1)
            if name.endswith("trivial"):
                correct = sum(1 for r in records if r.get("ok") == tasks[r["seq"] - 1])
            else:
                correct = sum(1 for r in records if r.get("ok") == seed.expected(tasks[r["seq"] - 1]))
            note += f"exit {proc.returncode}" + (f", {twice} twice" if twice else "")
            if proc.returncode not in (0, 1):
                note += ": " + (stderr.strip().splitlines() or ["no message"])[-1][:160]
            return wall, cpu, correct, note
        try:
            answer = json.loads(stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            answer = {"error": (stderr.strip().splitlines() or ["no output"])[-1]}
        if "error" in answer:
            return wall, cpu, 0, note + answer["error"][:120]
        return wall, cpu, answer["correct"], note + f"exit {proc.returncode}"


def _cpu_ticks(pid):
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def spread(values):
    med = statistics.median(values)
    return f"{med:7.2f} ({min(values):.2f}-{max(values):.2f})"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_run":
        return child_main(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--trivial", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--skip-trivial", action="store_true")
    parser.add_argument("--only", help="comma-separated contenders (multiloop,single,article,even,aiomultiprocess)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run on a tree with uncommitted changes; results are marked DIRTY (not for the README)")
    args = parser.parse_args()
    commit = provenance.check_tree(str(HERE.parent), args.allow_dirty)

    lines = []

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    say(f"# bench_python {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}")
    say(f"# {CORES} cores ({cpu_model}), load average at start {os.getloadavg()[0]:.1f}, "
        f"Python {sys.version.split()[0]}, {args.tasks} seed tasks, repeat {args.repeat}")

    with tempfile.TemporaryDirectory() as tmp:
        tasks_file = str(Path(tmp) / "tasks.json")
        Path(tasks_file).write_text(json.dumps(seed.make_tasks(args.tasks)))
        names = ["multiloop", "single", "article", "even", "aiomultiprocess"]
        if args.only:
            names = [n for n in names if n in args.only.split(",")]
        walls = {}
        say(f"{'contender':<18} {'wall s median (min-max)':>26} {'CPU s median (min-max)':>26}  correct")
        # Rounds interleave the contenders (A B C, A B C, ...): the VM's
        # speed drifts over minutes, and a block per contender would charge
        # the drift to whoever ran last.
        rounds = [[run_one(name, tasks_file, args.tasks) for name in names] for _ in range(args.repeat)]
        for index, name in enumerate(names):
            runs = [each[index] for each in rounds]
            walls[name] = statistics.median(r[0] for r in runs)
            say(f"{name:<18} {spread([r[0] for r in runs]):>26} {spread([r[1] for r in runs]):>26}  "
                f"{min(r[2] for r in runs)}/{args.tasks}  {runs[-1][3]}")
        if "multiloop" in walls:
            for peer in ("article", "even", "aiomultiprocess", "single"):
                if peer in walls:
                    say(f"multiloop vs {peer}: {walls[peer] / walls['multiloop']:.2f}x")
        if not args.skip_kill:
            say()
            say("SIGKILL of one worker/child halfway (at half the contender's median wall time):")
            for name in ("multiloop", "even", "aiomultiprocess"):
                if name not in walls:
                    continue
                wall, cpu, correct, note = run_one(name, tasks_file, args.tasks,
                                                   kill_after=walls[name] / 2, limit=walls[name] * 2 + 10)
                say(f"{name:<18} wall {wall:7.2f}s  cpu {cpu:7.2f}s  correct {correct}/{args.tasks}  {note}")
    if not args.skip_trivial:
        say()
        say(f"dispatch overhead: {args.trivial} trivial tasks (`return task`), 2 processes:")
        with tempfile.TemporaryDirectory() as tmp:
            tasks_file = str(Path(tmp) / "trivial.json")
            Path(tasks_file).write_text(json.dumps(list(range(args.trivial))))
            rates = {}
            for name in ("multiloop_trivial", "aiomultiprocess_trivial"):
                runs = [run_one(name, tasks_file, args.trivial) for _ in range(args.repeat)]
                per_s = [args.trivial / r[0] for r in runs]
                rates[name] = statistics.median(per_s)
                say(f"{name:<24} {statistics.median(per_s):9.0f} tasks/s ({min(per_s):.0f}-{max(per_s):.0f})  "
                    f"cpu {statistics.median(r[1] for r in runs):.2f}s  correct {min(r[2] for r in runs)}/{args.trivial}")
            say(f"multiloop vs aiomultiprocess: {rates['multiloop_trivial'] / rates['aiomultiprocess_trivial']:.1f}x")
    results = HERE / "results" / f"python-{datetime.date.today()}.txt"
    with open(results, "a") as f:
        f.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
