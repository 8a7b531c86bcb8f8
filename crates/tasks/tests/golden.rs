//! The `chaos` faults as a golden file (`golden/faults.json`) that this
//! crate writes and the Python twin's tests read
//! (`python/tests/test_contracts.py`): every fault's syntax, and how a set
//! of fault texts parse, error messages included, so `multiloop.builtin`
//! cannot drift from `chaos.rs`.
//!
//! `MULTILOOP_BLESS=1 cargo test -p multiloop-tasks --test golden` rewrites
//! it after a deliberate change; then change `python/multiloop/builtin.py`.

use multiloop_tasks::Fault;
use serde_json::{json, Value};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/faults.json");

/// Fault texts worth agreeing on: each syntax, and the edges of parsing.
const EXAMPLES: &[&str] = &[
    "abort",
    "exit:3",
    "exit:-1",
    "exit:+2",
    "exit:x",
    "exit:",
    "exit",
    "exit:2147483648",
    "block",
    "stall",
    "panic",
    "stdout",
    "garbage",
    "leak:64",
    "leak:-1",
    "leak: 1",
    "spin:1500",
    "spin:1_000",
    "spin:",
    "abort:1",
    "nope",
    "",
    "Abort",
];

fn render() -> String {
    let examples: Vec<Value> = EXAMPLES
        .iter()
        .map(|text| match text.parse::<Fault>() {
            Ok(fault) => json!({ "fault": text, "parses_to": format!("{fault:?}") }),
            Err(message) => json!({ "fault": text, "error": message }),
        })
        .collect();
    let file = json!({
        "about": "The chaos task kind's faults: their syntax, and how example texts parse \
                  (parses_to is the Rust value; error the bad_input message). Written by \
                  crates/tasks/tests/golden.rs; read by python/tests/test_contracts.py.",
        "syntax": Fault::SYNTAX,
        "examples": examples,
    });
    serde_json::to_string_pretty(&file).unwrap() + "\n"
}

#[test]
fn faults_match_the_golden_file() {
    let expected = render();
    if std::env::var_os("MULTILOOP_BLESS").is_some() {
        std::fs::write(GOLDEN, &expected).expect("write golden file");
        return;
    }
    let actual = std::fs::read_to_string(GOLDEN).expect("read golden file");
    assert_eq!(
        actual, expected,
        "faults.json is stale: rerun with MULTILOOP_BLESS=1 and update multiloop/builtin.py"
    );
}

#[test]
fn every_syntax_parses_with_a_number_in_place() {
    for syntax in Fault::SYNTAX {
        let text = syntax
            .split_once(':')
            .map_or(syntax.to_string(), |(name, _)| format!("{name}:1"));
        assert!(text.parse::<Fault>().is_ok(), "{text}");
    }
}
