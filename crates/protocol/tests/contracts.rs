//! The contracts besides the frames that the Python package shares with
//! this crate, as golden files that Rust writes and Python's tests read
//! (`python/tests/test_contracts.py`): the worker's command line
//! (`golden/argv.json`) and the protocol's constants and error kinds
//! (`golden/constants.json`).
//!
//! `MULTILOOP_BLESS=1 cargo test -p multiloop-protocol --test contracts`
//! rewrites them after a deliberate change; then change Python to match.

use multiloop_protocol::{
    max_result_payload, max_task_payload, ErrorKind, WorkerArgv, ADDED_OVERHEAD,
    ADDITIONS_OVERHEAD, BATCH_OVERHEAD, DEFAULT_MAX_FRAME, LENGTH_PREFIX, PROTOCOL_VERSION,
    RESULT_FD, RESULT_OVERHEAD, TASK_FD, TASK_OVERHEAD,
};
use serde_json::{json, Value};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/golden");

/// Compares `name` in the golden directory with `expected`, or rewrites it
/// under `MULTILOOP_BLESS`.
fn check(name: &str, header: &str, expected: Value) {
    let mut with_header = serde_json::Map::new();
    with_header.insert("about".into(), header.into());
    let Value::Object(fields) = expected else {
        panic!("a golden file holds an object")
    };
    with_header.extend(fields);
    let text = serde_json::to_string_pretty(&Value::Object(with_header)).unwrap() + "\n";
    let path = format!("{GOLDEN}/{name}");
    if std::env::var_os("MULTILOOP_BLESS").is_some() {
        std::fs::write(&path, &text).expect("write golden file");
        return;
    }
    let actual = std::fs::read_to_string(&path).expect("read golden file");
    assert_eq!(
        actual, text,
        "{name} is stale: rerun with MULTILOOP_BLESS=1 and make the Python side match"
    );
}

#[test]
fn worker_command_line_matches_argv_json() {
    let full = WorkerArgv {
        kind: Some("chaos".into()),
        index: 3,
        workers: 8,
        supervisor_pid: Some(4242),
        concurrency: 7,
        task_timeout_ms: 1500,
        heartbeat_ms: 100,
        max_frame: 65_536,
        settings: vec![
            ("a".into(), "1".into()),
            ("url".into(), "http://x/?q=1".into()),
            ("empty".into(), String::new()),
        ],
    };
    let cases: Vec<Value> = [full, WorkerArgv::default()]
        .iter()
        .map(|argv| json!({ "argv": argv.to_args(), "options": argv }))
        .collect();
    // What an empty command line means: every default.
    let defaults = json!({ "argv": [], "options": WorkerArgv::default() });
    check(
        "argv.json",
        "The worker's command line: each case is the ARGV a supervisor passes (after the \
         program and, for Python, `-m multiloop.worker SPEC`) and the OPTIONS a worker must \
         read from it. Written by crates/protocol/tests/contracts.rs from WorkerArgv; read by \
         python/tests/test_contracts.py.",
        json!({ "cases": [cases[0], cases[1], defaults] }),
    );
}

#[test]
fn protocol_constants_match_constants_json() {
    let frames = [1024usize, 65_536, DEFAULT_MAX_FRAME];
    let payloads = |f: fn(usize) -> usize| -> Value {
        frames
            .iter()
            .map(|&frame| (frame.to_string(), json!(f(frame))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    check(
        "constants.json",
        "The protocol's constants and error kinds (in wire order). Written by \
         crates/protocol/tests/contracts.rs; read by python/tests/test_contracts.py.",
        json!({
            "protocol_version": PROTOCOL_VERSION,
            "length_prefix": LENGTH_PREFIX,
            "default_max_frame": DEFAULT_MAX_FRAME,
            "task_fd": TASK_FD,
            "result_fd": RESULT_FD,
            "batch_overhead": BATCH_OVERHEAD,
            "task_overhead": TASK_OVERHEAD,
            "result_overhead": RESULT_OVERHEAD,
            "additions_overhead": ADDITIONS_OVERHEAD,
            "added_overhead": ADDED_OVERHEAD,
            "max_task_payload": payloads(max_task_payload),
            "max_result_payload": payloads(max_result_payload),
            "error_kinds": ErrorKind::ALL.map(ErrorKind::as_str),
            "supervisor_only_error_kinds": [ErrorKind::Crashed.as_str()],
        }),
    );
}
