"""A stand-in supervisor for looking at one Python worker's frames directly:
it opens the task and result pipes on fds 3 and 4, sends task frames and
decodes what comes back (heartbeats included)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from multiloop import _protocol as proto

from conftest import worker_env


class Worker:
    def __init__(self, spec: str, args: Sequence[str] = (), cwd: Optional[Path] = None) -> None:
        task_read, self.task_write = os.pipe()
        self.result_read, result_write = os.pipe()

        def place_fds() -> None:
            os.dup2(task_read, 3)
            os.dup2(result_write, 4)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "multiloop.worker", spec, "--heartbeat-ms", "100", *args],
            cwd=cwd,
            env=worker_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # preexec_fn runs before close_fds would close 3 and 4 again;
            # everything else of ours is non-inheritable anyway (PEP 446).
            preexec_fn=place_fds,
            close_fds=False,
        )
        os.close(task_read)
        os.close(result_write)
        self.reader = proto.FrameReader()
        self.frames: List[proto.FromWorker] = []

    def send(self, tasks: List[Tuple[int, bytes]]) -> None:
        os.write(self.task_write, proto.encode_tasks([proto.Task(i, p) for i, p in tasks]))

    def close_tasks(self) -> None:
        os.close(self.task_write)

    def next_frame(self, limit: float = 30.0) -> proto.FromWorker:
        """The next message from the worker, waiting at most `limit` seconds."""
        import select

        deadline = time.monotonic() + limit
        while not self.frames:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no frame from the worker in time")
            ready, _, _ = select.select([self.result_read], [], [], left)
            if ready:
                data = os.read(self.result_read, 1 << 16)
                if not data:
                    raise AssertionError(
                        f"worker closed its result pipe: {self.proc.wait()} "
                        f"{self.proc.stderr.read().decode() if self.proc.stderr else ''}"
                    )
                self.frames += [proto.decode_from_worker(p) for p in self.reader.feed(data)]
        return self.frames.pop(0)

    def wait_for(self, predicate, what: str, limit: float = 30.0):
        deadline = time.monotonic() + limit
        while True:
            frame = self.next_frame(max(0.01, deadline - time.monotonic()))
            if predicate(frame):
                return frame
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for fd in (self.result_read,):
            try:
                os.close(fd)
            except OSError:
                pass
