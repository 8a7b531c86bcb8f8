"""Python-only behaviour of `supervisor --python`: handler modules from the
working directory, errors as records, output and logging, per-worker setup
and teardown, several kinds, typed input, retries, and clear startup errors."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import by_seq, expected_sum, sim_lines
from harness import Worker


def module(run_dir_files: dict):
    """Writes handler modules into the run's directory before it starts."""

    def write(directory: Path) -> None:
        for name, text in run_dir_files.items():
            (directory / name).write_text(textwrap.dedent(text))

    return write


@pytest.fixture
def run_py(run_in, tmp_path):
    """``run_py(files, args, input)``: a supervisor run in a directory holding `files`."""

    def start(files: dict, args, input_text: str, env=None):
        # Run directories are made by run_in; the modules go into the next one.
        directory = tmp_path / f"py{len(list(tmp_path.glob('py*')))}"
        directory.mkdir()
        module(files)(directory)
        return run_in(args, input_text, env=env, directory=directory)

    return start


JOBS = """
    import asyncio

    async def handle(task):            # task = the decoded JSON line
        await asyncio.sleep(task["sleep_ms"] / 1000)
        result = 0
        for i in range(task["iters"]):
            result += i
        return {"sum": result}         # any JSON-encodable value -> the record's "ok"
"""


def test_the_readme_handler_runs_from_the_working_directory(run_py, tmp_path):
    n = 2_000
    stats = tmp_path / "stats.jsonl"
    run = run_py({"jobs.py": JOBS},
                 ["--workers", "2", "--python", "jobs:handle", "--stats", str(stats)],
                 sim_lines(n, lambda i: i % 7, lambda i: i))
    assert run.wait() == 0, run.stderr()
    records = by_seq(run.records())
    assert sorted(records) == list(range(1, n + 1))
    for seq, record in records.items():
        assert record["ok"] == {"sum": expected_sum(seq - 1)}
    # Both workers imported the handler from the working directory and
    # stayed up: a worker that could not would have been restarted. (Which
    # worker took which task is scheduling, not asserted.)
    end = json.loads(stats.read_text().splitlines()[-1])["end"]
    assert end["restarts"] == 0, end
    assert [(w["index"], w["state"], w["restarts"]) for w in end["workers"]] == [
        (0, "exited", 0), (1, "exited", 0)], end["workers"]


ERRORS = """
    import math

    def inner(n):
        if n == 0:
            raise ValueError(f"bad value {n}")
        return inner(n - 1)

    async def handle(task):
        what = task["what"]
        if what == "raise":
            inner(task.get("depth", 0))
        if what == "set":
            return {1, 2}
        if what == "nan":
            return math.nan
        if what == "exit":
            raise SystemExit(3)
        return what
"""


def test_exceptions_and_unencodable_results_are_failed_records(run_py):
    lines = [
        {"what": "raise"},
        {"what": "raise", "depth": 30},
        {"what": "set"},
        {"what": "nan"},
        {"what": "exit"},
        {"what": "fine"},
    ]
    run = run_py({"errors.py": ERRORS}, ["--workers", "1", "--python", "errors:handle"],
                 "".join(json.dumps(l) + "\n" for l in lines))
    assert run.wait() == 1, run.stderr()
    records = by_seq(run.records())
    for seq in range(1, 6):
        assert records[seq]["error"]["kind"] == "failed", records[seq]
    shallow = records[1]["error"]["message"]
    assert shallow.startswith("ValueError: bad value 0\nTraceback (most recent call last):\n"), shallow
    assert 'errors.py", line' in shallow and "in inner" in shallow and "in handle" in shallow
    assert "_runtime.py" not in shallow, "our own frames are not the user's business"
    deep = records[2]["error"]["message"]
    assert deep.startswith("ValueError: bad value 0\n")
    assert "earlier frames omitted" in deep
    assert 1 <= deep.count('File "') <= 5, deep
    assert records[3]["error"]["message"].startswith(
        "output does not encode as JSON: TypeError: Object of type set is not JSON serializable"
    )
    assert records[4]["error"]["message"].startswith("output does not encode as JSON: ValueError")
    assert records[5]["error"]["message"].startswith("SystemExit: 3")
    assert records[6]["ok"] == "fine"
    assert "restarts" in run.stderr() and " 0 worker restarts" in run.stderr()


LOUD = """
    import logging

    log = logging.getLogger("loud")

    async def handle(task):
        print(f"printed {task}")
        log.warning("logged %s", task)
        return task
"""


def test_print_and_logging_go_to_stderr_prefixed_with_the_worker(run_py):
    run = run_py({"loud.py": LOUD}, ["--workers", "1", "--python", "loud:handle"], "1\n2\n3\n")
    assert run.wait() == 0, run.stderr()
    assert sorted(r["ok"] for r in run.records()) == [1, 2, 3]
    stderr = run.stderr().splitlines()
    for n in (1, 2, 3):
        assert f"[w0] printed {n}" in stderr, stderr
        assert f"[w0] WARNING loud: logged {n}" in stderr, stderr


SLOW = """
    import asyncio

    async def handle(task):
        await asyncio.sleep(task)
        return task
"""


def test_task_timeout_is_a_timeout_record(run_py):
    run = run_py({"slow.py": SLOW}, ["--workers", "1", "--python", "slow:handle",
                                      "--task-timeout", "200ms"], "0.01\n30\n0.02\n")
    assert run.wait() == 1, run.stderr()
    records = by_seq(run.records())
    assert records[1]["ok"] == 0.01 and records[3]["ok"] == 0.02
    assert records[2]["error"] == {"kind": "timeout", "message": "task took longer than 200 ms"}
    assert records[2]["ms"] < 10_000


STATEFUL = """
    import asyncio
    import os
    from pathlib import Path
    from typing import Mapping

    import multiloop

    async def setup(settings: Mapping[str, str]) -> dict:
        return {"greeting": settings["greeting"], "pid": os.getpid(), "served": 0}

    async def teardown(state: dict) -> None:
        Path(f"teardown-{state['pid']}.txt").write_text(str(state["served"]))

    @multiloop.kind(setup=setup, teardown=teardown)
    async def greet(name: str, state: dict) -> str:
        await asyncio.sleep(0.005)
        state["served"] += 1
        return f"{state['greeting']}, {name} from {state['pid']}"

    @multiloop.kind(name="shout")
    def upper(text: str) -> str:
        return text.upper()

    @multiloop.kind
    def whisper(text: str) -> str:
        return text.lower()

    def not_a_kind(x):
        return x
"""


def test_setup_teardown_and_settings_per_worker(run_py):
    names = [f"n{i}" for i in range(200)]
    run = run_py({"stateful.py": STATEFUL},
                 ["--workers", "2", "--concurrency", "10", "--python", "stateful", "--task", "greet",
                  "--set", "greeting=hello"],
                 "".join(json.dumps(n) + "\n" for n in names))
    assert run.wait() == 0, run.stderr()
    records = by_seq(run.records())
    by_pid: dict = {}
    for seq, record in records.items():
        greeting, _, pid = record["ok"].rpartition(" from ")
        assert greeting == f"hello, n{seq - 1}"
        by_pid[int(pid)] = by_pid.get(int(pid), 0) + 1
    served = {int(p.stem.split("-")[1]): int(p.read_text()) for p in run.dir.glob("teardown-*.txt")}
    assert len(served) == 2, "teardown ran in both workers at their clean exit"
    for pid, count in by_pid.items():
        assert served[pid] == count, "one state per worker process, counted by its own tasks"


def test_several_kinds_in_one_module(run_py):
    files = {"stateful.py": STATEFUL}
    run = run_py(files, ["--workers", "1", "--python", "stateful", "--task", "shout"], '"abc"\n')
    assert run.wait() == 0, run.stderr()
    assert run.records()[0]["ok"] == "ABC"
    run = run_py(files, ["--workers", "1", "--python", "stateful"], '"abc"\n')
    assert run.wait() == 2
    assert "--task is required" in run.stderr() and "greet, shout, whisper" in run.stderr(), run.stderr()
    run = run_py(files, ["--workers", "1", "--python", "stateful", "--task", "whisper"], '"ABC"\n')
    assert run.wait() == 0, run.stderr()
    assert run.records()[0]["ok"] == "abc", "the bare decorator"
    run = run_py(files, ["--workers", "1", "--python", "stateful:upper"], '"abc"\n')
    assert run.wait() == 0, run.stderr()
    assert run.records()[0]["ok"] == "ABC", "a Kind named by attribute"


TYPED = """
    from dataclasses import dataclass
    from typing import List, Optional, TypedDict

    import multiloop

    @dataclass
    class Order:
        item: str
        count: int = 1
        note: Optional[str] = None

    class Point(TypedDict):
        x: float
        y: float

    async def order(task: Order) -> dict:
        if task.count > 100:
            raise multiloop.BadInput("at most 100 per order")
        return {"item": task.item, "count": task.count}

    async def norm(p: Point) -> float:
        return abs(p["x"]) + abs(p["y"])

    async def total(xs: List[int]) -> int:
        return sum(xs)
"""


def test_input_the_declared_type_cannot_take_is_bad_input(run_py):
    lines = ['{"item":"tea"}', '{"count":2}', '{"item":"tea","count":"2"}',
             '{"item":"tea","count":500}', '{"item":"tea","count":2,"extra":1}', '"tea"']
    run = run_py({"typed.py": TYPED}, ["--workers", "1", "--python", "typed:order"],
                 "\n".join(lines) + "\n")
    assert run.wait() == 1, run.stderr()
    records = by_seq(run.records())
    assert records[1]["ok"] == {"item": "tea", "count": 1}
    assert records[5]["ok"] == {"item": "tea", "count": 2}, "unknown fields are ignored"
    expected = {2: "missing field `item`", 3: "field `count`: expected an integer, got a string",
                4: "at most 100 per order", 6: "input: expected an object, got a string"}
    for seq, message in expected.items():
        assert records[seq]["error"] == {"kind": "bad_input", "message": f"line {seq}: {message}"}
    run = run_py({"typed.py": TYPED}, ["--workers", "1", "--python", "typed:norm"],
                 '{"x":1,"y":-2.5}\n{"x":1}\n')
    assert run.wait() == 1
    records = by_seq(run.records())
    assert records[1]["ok"] == 3.5
    assert records[2]["error"]["message"] == "line 2: missing field `y`"


RETRY = """
    from pathlib import Path
    import multiloop

    async def handle(key):
        marker = Path(f"seen-{key}")
        if not marker.exists():
            marker.write_text("1")
            multiloop.request_retry()
            return "first"
        return "second"
"""


def test_request_retry_runs_the_task_again(run_py):
    run = run_py({"retry.py": RETRY},
                 ["--workers", "1", "--python", "retry:handle", "--retries", "2",
                  "--retry-backoff", "10ms"], '"a"\n"b"\n')
    assert run.wait() == 0, run.stderr()
    for record in run.records():
        assert record["ok"] == "second" and record["attempts"] == 2, record


def test_sync_handlers_and_the_general_worker_form(run_py):
    files = {"plain.py": "def double(x):\n    return 2 * x\n"}
    run = run_py(files, ["--workers", "2", "--python", "plain:double"], "1\n2\n3\n")
    assert run.wait() == 0, run.stderr()
    assert sorted(r["ok"] for r in run.records()) == [2, 4, 6]
    # --worker with arguments: any command that speaks the protocol.
    run = run_py(files, ["--workers", "1", "--worker", sys.executable, "--worker-arg", "-m",
                         "--worker-arg", "multiloop.worker", "--worker-arg", "plain:double"],
                 "5\n")
    assert run.wait() == 0, run.stderr()
    assert run.records()[0]["ok"] == 10


FAILING_SETUP = """
    import multiloop

    async def setup(settings):
        raise ConnectionError("database at " + settings.get("db", "?") + " refused")

    @multiloop.kind(setup=setup)
    async def handle(task, state):
        return task
"""


@pytest.mark.parametrize(
    "files,spec,message",
    [
        ({}, "nosuch:handle", "cannot import 'nosuch': no such module"),
        ({"jobs.py": JOBS}, "jobs:missing", "module 'jobs' has no attribute 'missing'"),
        ({"broken.py": "def handle(:\n"}, "broken:handle", "cannot import 'broken': SyntaxError"),
        ({"empty.py": "X = 1\n"}, "empty", "module 'empty' defines no multiloop.Kind"),
        ({"jobs.py": JOBS}, "jobs:handle extra", "is not MODULE:FUNCTION or MODULE"),
        ({"bad_setup.py": FAILING_SETUP}, "bad_setup",
         "setting up kind 'handle': ConnectionError: database at pg:5432 refused"),
    ],
)
def test_startup_errors_are_one_clear_line_and_exit_2(run_py, files, spec, message):
    run = run_py(files, ["--workers", "1", "--python", spec, "--set", "db=pg:5432"], "1\n")
    assert run.wait() == 2, run.stderr()
    assert message in run.stderr(), run.stderr()
    assert run.records() == []


def test_a_missing_interpreter_is_named(run_py):
    run = run_py({"jobs.py": JOBS}, ["--python", "jobs:handle"], "{}\n",
                 env={"MULTILOOP_PYTHON": "/nonexistent/python3"})
    assert run.wait() == 2
    assert "Python interpreter not found: /nonexistent/python3" in run.stderr(), run.stderr()


def test_uvloop_is_used_when_installed_unless_turned_off():
    pytest.importorskip("uvloop")
    for args, expected in (([], "uvloop"), (["--set", "uvloop=off"], "asyncio")):
        worker = Worker("multiloop.builtin", ["--kind", "sim", *args])
        try:
            hello = worker.next_frame()
            assert expected in hello.runtime, hello
        finally:
            worker.kill()


def test_plain_asyncio_when_uvloop_is_turned_off(run_py):
    run = run_py({"jobs.py": JOBS}, ["--workers", "2", "--python", "jobs:handle",
                                      "--set", "uvloop=off"], sim_lines(500, lambda i: 3, lambda i: i))
    assert run.wait() == 0, run.stderr()
    assert len(by_seq(run.records())) == 500


def test_the_interpreter_beside_an_installed_supervisor_is_found(run_py):
    from conftest import installed

    if not installed():
        pytest.skip("the supervisor under test is a checkout's build, not pip-installed")
    env = {"MULTILOOP_PYTHON": None}
    run = run_py({"jobs.py": JOBS}, ["--workers", "1", "--python", "jobs:handle"],
                 '{"sleep_ms":1,"iters":4}\n', env=env)
    assert run.wait() == 0, run.stderr()
    assert run.records()[0]["ok"] == {"sum": 6}
