"""Runs the real ``supervisor`` binary with real workers (the Rust ``worker``
and Python workers) for the tests; waits for events with deadlines, never
by sleeping a fixed time."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import pytest

import multiloop

REPO = Path(__file__).resolve().parents[2]
#: The directory the `multiloop` under test is imported from: workers must
#: import the same one.
PACKAGE_ROOT = Path(multiloop.__file__).resolve().parent.parent
LONG = 60.0


@functools.lru_cache(maxsize=None)
def supervisor() -> Path:
    """MULTILOOP_SUPERVISOR, else the one pip installed beside this Python,
    else the checkout's release build."""
    given = os.environ.get("MULTILOOP_SUPERVISOR")
    candidates = [Path(given)] if given else []
    candidates += [Path(sys.executable).parent / "supervisor", REPO / "target/release/supervisor"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    pytest.exit(
        "no supervisor binary: pip install . (or cargo build --release, or set MULTILOOP_SUPERVISOR)",
        returncode=2,
    )
    raise AssertionError("unreachable")


def rust_worker() -> Path:
    return supervisor().with_name("worker")


def installed() -> bool:
    """True when the supervisor is the one pip installed beside this Python:
    then it finds that Python and its multiloop by itself, as for a user."""
    return supervisor().parent == Path(sys.executable).parent


def worker_env(extra: Optional[Dict[str, Optional[str]]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    if not installed():
        # A checkout's build: Python workers run this interpreter and import
        # this copy of multiloop.
        env["MULTILOOP_PYTHON"] = sys.executable
        paths = [str(PACKAGE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("RUST_LOG", None)
    # As tests/common does for the Rust suite: a Rust worker's panic with
    # RUST_BACKTRACE=1 (set in many shells and CI machines) symbolizes a
    # backtrace on the event loop, which under load outlasts the tests'
    # short --task-timeout and turns a `panicked` record into `timeout`.
    env["RUST_BACKTRACE"] = "0"
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def wait_until(what: str, done: Callable[[], bool], limit: float = LONG) -> None:
    deadline = time.monotonic() + limit
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def expected_sum(iters: int) -> int:
    return (iters * max(iters - 1, 0) // 2) & ((1 << 64) - 1)


def sim_lines(n: int, sleep_ms: Callable[[int], int], iters: Callable[[int], int]) -> str:
    return "".join(
        json.dumps({"sleep_ms": sleep_ms(i), "iters": iters(i)}) + "\n" for i in range(n)
    )


def read_records(path: Path) -> List[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_seq(records: Sequence[dict]) -> Dict[int, dict]:
    seen: Dict[int, dict] = {}
    for record in records:
        assert record["seq"] not in seen, f"seq {record['seq']} twice"
        seen[record["seq"]] = record
    return seen


def children(pid: int) -> List[int]:
    out: List[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except OSError:
            continue
        out += [int(p) for p in text.split()]
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def is_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


class Run:
    """One supervisor run in a directory of its own: input file in, output
    file and stderr file out."""

    def __init__(
        self,
        directory: Path,
        args: Sequence[str],
        input_text: str,
        env: Optional[Dict[str, str]] = None,
        resume: bool = False,
    ) -> None:
        self.dir = directory
        self.input = directory / "in.jsonl"
        self.output = directory / "out.jsonl"
        self.stderr_path = directory / ("stderr.txt" if not resume else "stderr-resumed.txt")
        if not resume:
            self.input.write_text(input_text)
        command = [str(supervisor()), *args, "-i", str(self.input), "-o", str(self.output)]
        if resume:
            command.append("--resume")
        self.stderr_file = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            command,
            cwd=directory,
            env=worker_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr_file,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, limit: float = LONG) -> int:
        try:
            return self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"supervisor did not finish in {limit}s:\n{self.stderr()}")
        finally:
            self.stderr_file.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def records(self) -> List[dict]:
        return read_records(self.output)

    def output_lines(self) -> int:
        try:
            with open(self.output, "rb") as f:
                return sum(1 for line in f if line.endswith(b"\n"))
        except OSError:
            return 0

    def workers(self) -> List[int]:
        return [c for c in children(self.pid) if "--index" in cmdline(c)]

    def wait_for_workers(self, n: int) -> List[int]:
        found: List[int] = []

        def ready() -> bool:
            found[:] = self.workers()
            return len(found) == n

        wait_until(f"{n} workers", ready)
        return found

    def status(self) -> Optional[dict]:
        """`supervisor ctl status --json`, or None before the socket is up."""
        answer = subprocess.run(
            [str(supervisor()), "ctl", "--pid", str(self.pid), "status", "--json"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=worker_env(),
            # `ctl` answers in milliseconds; a hung one must fail the
            # test, not defeat the deadline of the wait around it.
            timeout=30,
        )
        if answer.returncode != 0:
            return None
        return json.loads(answer.stdout)

    def wait_for_busy_workers(self, n: int) -> List[int]:
        """Pids of `n` workers past their handshake with tasks in flight (a
        worker killed while it starts up is a setup error, not a crash)."""
        found: List[int] = []

        def ready() -> bool:
            status = self.status()
            rows = status["workers"] if status else []
            found[:] = [
                r["pid"] for r in rows if r["state"] == "running" and r["in_flight"] > 0 and r["pid"]
            ]
            return len(found) >= n

        wait_until(f"{n} busy workers", ready)
        return found

    def wait_for_output(self, lines: int) -> None:
        wait_until(f"{lines} output lines", lambda: self.output_lines() >= lines)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill_tree(self) -> None:
        """Ends the run at once (the workers die with their supervisor)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.wait()


@pytest.fixture
def run_in(tmp_path: Path):
    """``run_in(args, input)`` starts a supervisor in a fresh directory."""
    runs: List[Run] = []

    def start(
        args: Sequence[str],
        input_text: str,
        env: Optional[Dict[str, str]] = None,
        directory: Optional[Path] = None,
    ) -> Run:
        if directory is None:
            directory = tmp_path / f"run{len(runs)}"
            directory.mkdir()
        run = Run(directory, args, input_text, env)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.kill_tree()
