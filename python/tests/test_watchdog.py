"""The Python runtime's watchdog (issue #14): heartbeats keep coming while a
step blocks the loop, name the task holding it and for how long, count the
blocked time, and carry the process CPU time so busy can be told from stuck."""

from __future__ import annotations

import json

from multiloop import _protocol as proto

from harness import Worker


def beats_while(worker: Worker, predicate, what: str) -> proto.Heartbeat:
    return worker.wait_for(lambda f: isinstance(f, proto.Heartbeat) and predicate(f), what)


def test_hello_first_then_heartbeats_then_results():
    worker = Worker("multiloop.builtin", ["--kind", "sim"])
    try:
        hello = worker.next_frame()
        assert isinstance(hello, proto.Hello)
        assert hello.version == proto.PROTOCOL_VERSION
        assert hello.kinds == ["sim", "chaos", "tree"]
        assert hello.runtime.startswith("python 3.")
        worker.send([(7, b'{"iters":10}'), (8, b'{"sleep_ms":5,"iters":4}')])
        got = {}
        while len(got) < 2:
            frame = worker.next_frame()
            if isinstance(frame, list):
                got.update({r.id: r for r in frame})
        assert got[7].ok == b'{"sum":45}' and got[8].ok == b'{"sum":6}'
        beat = beats_while(worker, lambda b: b.done == 2, "done=2")
        assert beat.held is None and beat.in_flight == 0
        assert beat.cpu_us > 0 and beat.rss_bytes > 0
        worker.close_tasks()
        bye = worker.wait_for(lambda f: isinstance(f, proto.Usage), "goodbye")
        assert bye.user_us > 0 and bye.max_rss_bytes > 0
        assert worker.proc.wait(30) == 0
    finally:
        worker.kill()


def test_a_blocked_loop_is_named_with_its_task_and_no_cpu():
    worker = Worker("multiloop.builtin", ["--kind", "chaos"])
    try:
        assert isinstance(worker.next_frame(), proto.Hello)
        worker.send([(41, b'{"sleep_ms":10,"iters":1}'), (42, b'{"iters":1,"fault":"block"}')])
        first = beats_while(worker, lambda b: b.held is not None, "a held heartbeat")
        assert first.held.task == 42
        later = beats_while(worker, lambda b: b.held.for_us > 1_000_000, "held for 1 s")
        assert later.held.task == 42
        assert later.blocked_us >= later.held.for_us
        assert later.lag_us >= later.held.for_us - 2 * 20_000
        # Stuck, not busy: the process burns (almost) no CPU while held
        # (the watchdog's own looks cost well under 1 %).
        cpu, held = later.cpu_us - first.cpu_us, later.held.for_us - first.held.for_us
        assert cpu < held * 0.03, (cpu, held)
    finally:
        worker.kill()


def test_a_busy_loop_is_named_and_burns_cpu(tmp_path):
    (tmp_path / "busy.py").write_text(
        "import time\n"
        "def spin(task):\n"
        "    end = time.monotonic() + task['seconds']\n"
        "    while time.monotonic() < end:\n"
        "        pass\n"
        "    return task['seconds']\n"
    )
    worker = Worker("busy:spin", cwd=tmp_path)
    try:
        assert isinstance(worker.next_frame(), proto.Hello)
        worker.send([(5, json.dumps({"seconds": 1.5}).encode())])
        first = beats_while(worker, lambda b: b.held is not None, "a held heartbeat")
        assert first.held.task == 5
        later = beats_while(worker, lambda b: b.held is not None and b.held.for_us > 800_000, "held 0.8 s")
        # Busy: CPU advances with the hold (by less than the wall time on a
        # loaded machine, but far more than a stuck loop's).
        cpu, held = later.cpu_us - first.cpu_us, later.held.for_us - first.held.for_us
        assert cpu > held * 0.05, (cpu, held)
        result = worker.wait_for(lambda f: isinstance(f, list), "the result")
        assert result[0].id == 5 and result[0].ok == b"1.5"
        after = beats_while(worker, lambda b: b.held is None, "the loop turning again")
        # The hold is counted in the blocked total once it is over.
        assert after.blocked_us >= 1_400_000
    finally:
        worker.kill()


def test_a_loop_blocked_outside_any_task_is_held_by_none(tmp_path):
    (tmp_path / "sleepy.py").write_text(
        "import time, multiloop\n"
        "def block_forever():\n"
        "    time.sleep(3600)\n"
        "async def handle(task):\n"
        "    import asyncio\n"
        "    asyncio.get_running_loop().call_soon(block_forever)\n"
        "    return 1\n"
    )
    worker = Worker("sleepy:handle", cwd=tmp_path)
    try:
        assert isinstance(worker.next_frame(), proto.Hello)
        worker.send([(9, b"{}")])
        beat = beats_while(worker, lambda b: b.held is not None and b.held.for_us > 200_000, "held")
        assert beat.held.task is None
    finally:
        worker.kill()


def test_the_spin_fault_holds_the_loop_burning_cpu_then_answers():
    # `spin:MS` as in the Rust chaos kind: MS ms of the loop thread's CPU
    # (measured, so a loaded machine only stretches the wall time).
    worker = Worker("multiloop.builtin", ["--kind", "chaos"])
    try:
        assert isinstance(worker.next_frame(), proto.Hello)
        worker.send([(3, b'{"iters":10,"fault":"spin:600"}')])
        first = beats_while(worker, lambda b: b.held is not None, "a held heartbeat")
        assert first.held.task == 3
        result = worker.wait_for(lambda f: isinstance(f, list), "the result")
        assert result[0].id == 3 and result[0].ok == b'{"sum":45}'
        beat = beats_while(worker, lambda b: b.held is None, "the loop turning again")
        assert beat.cpu_us >= 600_000
    finally:
        worker.kill()
