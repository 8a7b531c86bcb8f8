//! Screening a worker's result bytes before they are spliced, unparsed,
//! into the output: each must be one line of JSON, or the JSONL file (and
//! `--resume` and `merge`, which read it) would break. The Rust and Python
//! runtimes always send such bytes; a foreign `--worker` need not.

use multiloop_protocol::{ErrorKind, Outcome, TaskResult};
use serde::de::IgnoredAny;

/// Why `output` is not one line of JSON, or `None` when it is.
pub fn not_one_json_line(output: &[u8]) -> Option<String> {
    // A raw line break can only be whitespace between JSON tokens (inside a
    // string it is invalid JSON), so it is looked for first, cheaply.
    if let Some(at) = output.iter().position(|&b| b == b'\n' || b == b'\r') {
        return Some(format!("a raw line break at byte {at}"));
    }
    match serde_json::from_slice::<IgnoredAny>(output) {
        Ok(_) => None,
        Err(error) => Some(format!("not JSON ({error})")),
    }
}

/// Turns every result whose output is not one line of JSON into a
/// `failed` result naming the worker, so the task is recorded, not lost,
/// and the output stays readable. Not retried: the same worker program
/// would answer the same way.
pub fn screen_results(results: &mut [TaskResult], worker: &str) {
    for result in results {
        if let Outcome::Ok(output) = &result.outcome {
            if let Some(why) = not_one_json_line(output) {
                result.outcome = Outcome::Err {
                    kind: ErrorKind::Failed,
                    message: format!(
                        "{worker} sent a result of {} bytes that is not one line of JSON: {why}",
                        output.len()
                    ),
                };
                result.retry = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn only_single_line_json_passes() {
        for good in [
            &b"{\"sum\":3}"[..],
            b"17",
            b"\"a\\nb\"",
            b" [1, 2] ",
            b"null",
        ] {
            assert_eq!(not_one_json_line(good), None, "{good:?}");
        }
        for bad in [
            &b"{\"a\":\n1}"[..],
            b"1\r",
            b"not json",
            b"",
            b"{\"a\":1} {}",
            b"\"a\nb\"",
        ] {
            assert!(not_one_json_line(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_result_becomes_a_failure_naming_the_worker() {
        let mut results = vec![
            TaskResult {
                id: 1,
                micros: 5,
                outcome: Outcome::Ok(Bytes::from_static(b"{\"ok\":1}")),
                retry: false,
                added: Vec::new(),
            },
            TaskResult {
                id: 2,
                micros: 5,
                outcome: Outcome::Ok(Bytes::from_static(b"oops")),
                retry: true,
                added: Vec::new(),
            },
        ];
        screen_results(&mut results, "worker 3 (./mine)");
        assert_eq!(
            results[0].outcome,
            Outcome::Ok(Bytes::from_static(b"{\"ok\":1}"))
        );
        match &results[1].outcome {
            Outcome::Err { kind, message } => {
                assert_eq!(*kind, ErrorKind::Failed);
                assert!(
                    message.starts_with("worker 3 (./mine) sent a result of 4 bytes"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!results[1].retry);
    }
}
