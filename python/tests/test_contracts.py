"""The contracts the Python package shares with the Rust crates, against
the golden files Rust writes (and checks in its own tests, failing when a
file is stale): the worker's command line, the protocol's constants and
error kinds, the ``chaos`` faults and the output records. The frames have
their own file, test_codec.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
from harness import Worker

from multiloop import _kinds, _protocol as proto, _runtime, builtin

REPO = Path(__file__).resolve().parents[2]


def golden(path: str) -> Dict[str, Any]:
    return json.loads((REPO / path).read_text())


# -- the worker's command line (crates/protocol/src/argv.rs) ------------------

ARGV = golden("crates/protocol/golden/argv.json")


@pytest.mark.parametrize("case", ARGV["cases"], ids=lambda case: " ".join(case["argv"]) or "defaults")
def test_the_runtime_reads_the_command_line_the_supervisor_writes(case):
    args = vars(_runtime.parse_args(["jobs:handle", *case["argv"]]))
    options = dict(case["options"])
    options["settings"] = [tuple(pair) for pair in options["settings"]]
    assert {name: args[name] for name in options} == options
    # Nothing else but what the runtime adds itself.
    assert set(args) - set(options) == {"spec", "list_kinds"}


# -- constants and error kinds (crates/protocol) ---------------------------------

CONSTANTS = golden("crates/protocol/golden/constants.json")


@pytest.mark.parametrize(
    "name",
    ["protocol_version", "length_prefix", "default_max_frame", "task_fd", "result_fd",
     "batch_overhead", "task_overhead", "result_overhead", "additions_overhead",
     "added_overhead"],
)
def test_protocol_constants_are_rusts(name: str):
    assert getattr(proto, name.upper()) == CONSTANTS[name]


def test_payload_limits_are_rusts():
    for frame, limit in CONSTANTS["max_result_payload"].items():
        assert proto.max_result_payload(int(frame)) == limit
    for frame, limit in CONSTANTS["max_task_payload"].items():
        assert proto.max_task_payload(int(frame)) == limit


def test_error_kinds_are_rusts_in_wire_order():
    assert list(proto.ERROR_KINDS) == CONSTANTS["error_kinds"]
    assert [proto.TIMEOUT, proto.FAILED, proto.PANICKED, proto.CRASHED, proto.BAD_INPUT] == [
        CONSTANTS["error_kinds"].index(k) for k in ("timeout", "failed", "panicked", "crashed", "bad_input")
    ]
    assert list(proto.SUPERVISOR_ONLY_ERROR_KINDS) == CONSTANTS["supervisor_only_error_kinds"]
    # What a handler may raise: all but what only the supervisor decides.
    assert list(_kinds.TaskError.KINDS) == [
        k for k in CONSTANTS["error_kinds"] if k not in CONSTANTS["supervisor_only_error_kinds"]
    ]


def test_the_runtime_caps_outputs_at_the_protocols_limit_and_packs_frames_within_it(tmp_path):
    (tmp_path / "sized.py").write_text(
        "import multiloop\n"
        "def handle(task):\n"
        "    if task['fail']:\n"
        "        raise multiloop.TaskError('\\u00e9' * task['n'])  # 2 bytes a character\n"
        "    return 'x' * task['n']\n"
    )
    limit = CONSTANTS["max_result_payload"]["1024"]
    tasks = [(0, {"fail": False, "n": limit - 2}), (1, {"fail": False, "n": limit - 1})]
    # Errors of 100 to 480 bytes, answered in one loop iteration: packed
    # several to a frame, never past the limit.
    tasks += [(i, {"fail": True, "n": 50 + i * 5}) for i in range(2, 40)]
    worker = Worker("sized:handle", ["--max-frame", "1024"], cwd=tmp_path)
    worker.reader = proto.FrameReader(1024)  # a frame over the limit fails here
    try:
        assert isinstance(worker.next_frame(), proto.Hello)
        encoded = [proto.Task(i, json.dumps(task).encode()) for i, task in tasks]
        # Tasks too are frames under the limit: ten to a frame, in one write.
        os.write(worker.task_write, b"".join(proto.encode_tasks(encoded[i : i + 10]) for i in range(0, len(encoded), 10)))
        got: Dict[int, proto.TaskResult] = {}
        frames = 0
        while len(got) < len(tasks):
            frame = worker.next_frame()
            if isinstance(frame, list):
                frames += 1
                got.update({r.id: r for r in frame})
        assert len(got[0].ok) == limit  # a JSON string of exactly the limit
        assert got[1].ok is None
        assert got[1].message == f"output of {limit + 1} bytes is over the frame limit ({limit} bytes)"
        for i, task in tasks[2:]:
            assert got[i].error_kind == proto.FAILED and got[i].message == "\u00e9" * task["n"]
        assert frames < len(tasks) - 1, "errors were packed several to a frame"
    finally:
        worker.kill()


# -- chaos faults (crates/tasks/src/chaos.rs) ---------------------------------------

FAULTS = golden("crates/tasks/golden/faults.json")


def test_fault_syntax_is_rusts():
    assert list(builtin.FAULTS) == FAULTS["syntax"]


def _rust_value(name: str, arg: Optional[int]) -> str:
    """How Rust's Debug prints the Fault that (name, arg) stands for."""
    return name.capitalize() + ("" if arg is None else f"({arg})")


@pytest.mark.parametrize("example", FAULTS["examples"], ids=lambda e: repr(e["fault"]))
def test_faults_parse_as_in_rust(example):
    if "error" in example:
        with pytest.raises(_kinds.BadInput) as raised:
            builtin._parse_fault(example["fault"])
        assert raised.value.message == example["error"]
    else:
        assert _rust_value(*builtin._parse_fault(example["fault"])) == example["parses_to"]


# -- output records (crates/supervisor/src/record.rs) ----------------------------

RECORDS = golden("crates/supervisor/golden/records.json")["records"]


def test_the_driver_reads_the_records_the_supervisor_writes():
    from multiloop._results import ErrorInfo, Result, parse_records

    chunk = "\n".join(case["line"] for case in RECORDS).encode()
    records = parse_records(chunk)
    assert len(records) == len(RECORDS)
    for record, case in zip(records, RECORDS):
        fields, result = case["fields"], Result(record)
        if isinstance(fields["seq"], str):
            # A task a handler added: known by its path, not one of the items.
            assert (result.seq, result.path, result.index) == (fields["seq"], fields["seq"], None), case
            # The parent by its path: a number for an input line, as text.
            assert (result.parent, result.depth) == (str(fields["parent"]), fields["depth"]), case
        else:
            assert (result.seq, result.index) == (fields["seq"], fields["seq"] - 1), case
            assert (result.path, result.parent, result.depth) == (str(fields["seq"]), None, 0), case
        assert record.get("added") == fields.get("added"), case
        assert record.get("kept_out") == fields.get("kept_out"), case
        assert result.added == len(fields.get("added") or ()), case
        assert result.kept_out == (fields.get("kept_out") or {}), case
        assert result.key == fields["key"], case
        assert (result.worker, result.attempts, result.ms) == (fields["worker"], fields["attempts"], fields["ms"])
        if "ok" in fields:
            assert result.ok and result.value == fields["ok"] and result.unwrap() == fields["ok"], case
        else:
            assert not result.ok and result.value is None, case
            assert result.error == ErrorInfo(**fields["error"]), case
