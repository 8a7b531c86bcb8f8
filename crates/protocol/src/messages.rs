//! The messages that travel in frames, in each direction.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{ProtocolError, PROTOCOL_VERSION};

/// Supervisor to worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker {
    /// A batch of tasks to run. A worker may receive many per frame.
    Tasks(Vec<Task>),
}

/// One task: the supervisor's id for it and the input line, as JSON bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: u64,
    pub payload: Bytes,
}

/// Worker to supervisor.
///
/// `Hello` must stay the first variant with `version` as its first field:
/// [`check_hello`] reads those two numbers before anything else, so a
/// worker of another version is named as such instead of failing to decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    /// The first frame a worker sends.
    Hello(Hello),
    /// A batch of finished tasks.
    Results(Vec<TaskResult>),
    /// Liveness and load, sent at a fixed interval.
    Heartbeat(Heartbeat),
    /// The last frame before a clean exit: the worker's own resource usage.
    Bye(Usage),
}

/// A worker's handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub pid: u32,
    /// Task kinds this worker binary serves.
    pub kinds: Vec<String>,
    /// What runs the handlers, for status and logs: `rust`, or
    /// `python 3.11.7 uvloop`, say.
    pub runtime: String,
}

impl Hello {
    pub fn new(pid: u32, kinds: Vec<String>, runtime: impl Into<String>) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            pid,
            kinds,
            runtime: runtime.into(),
        }
    }
}

/// The result of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub id: u64,
    /// Time the handler ran, in microseconds.
    pub micros: u64,
    pub outcome: Outcome,
    /// The handler asked for another attempt (an HTTP 503, say): the
    /// supervisor runs the task again while `--retries` allow, and keeps
    /// this outcome if it was the last attempt.
    pub retry: bool,
    /// Follow-up tasks the handler added while it ran, in the order it
    /// added them. They count only with an `Ok` outcome of the attempt that
    /// is recorded: a failed or re-run attempt adds nothing.
    pub added: Vec<Added>,
}

/// A task a handler added: its input line as JSON bytes, and the key that
/// dedupes it against every key the run has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Added {
    pub payload: Bytes,
    pub key: Option<String>,
}

/// What a task produced: handler output as JSON bytes, or an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok(Bytes),
    Err { kind: ErrorKind, message: String },
}

/// Why a task has no output. `Crashed` is decided by the supervisor only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    Timeout,
    Failed,
    Panicked,
    Crashed,
    BadInput,
}

impl ErrorKind {
    /// The name used in output records.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Failed => "failed",
            ErrorKind::Panicked => "panicked",
            ErrorKind::Crashed => "crashed",
            ErrorKind::BadInput => "bad_input",
        }
    }
}

/// Sent every heartbeat interval by a watchdog thread beside the event loop,
/// so it keeps coming while a task holds the loop: `held` then says which
/// task and for how long, and `cpu_us` whether the worker is burning CPU
/// (busy) or blocked without it (stuck). Its absence means the whole
/// process is frozen or its pipe is gone (silent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    /// How late the heartbeat timer fired: event-loop lag, in microseconds.
    pub lag_us: u64,
    /// Largest lag seen since the worker started, in microseconds.
    pub max_lag_us: u64,
    /// Tasks received and not yet answered.
    pub in_flight: u32,
    /// Tasks answered so far.
    pub done: u64,
    /// User plus system CPU time of the worker process, in microseconds.
    pub cpu_us: u64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// The poll holding the event loop now, once one poll has held it for
    /// longer than the watchdog's sampling period; `None` while the loop
    /// turns.
    pub held: Option<Held>,
    /// Total time since the worker started that single polls held the loop
    /// for longer than the sampling period, in microseconds: the loop's
    /// blocked time, whose share of wall time says "CPU work is starving
    /// the I/O".
    pub blocked_us: u64,
}

/// One poll that holds a worker's event loop, as its watchdog sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The task being polled, or `None` when the loop is blocked outside any
    /// task (in a worker's setup, say).
    pub task: Option<u64>,
    /// How long this one poll has held the loop so far, in microseconds.
    pub for_us: u64,
}

/// A worker's own resource usage, from `getrusage(RUSAGE_SELF)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub user_us: u64,
    pub system_us: u64,
    pub max_rss_bytes: u64,
}

/// Decodes a worker's first frame, naming a version mismatch as such.
pub fn check_hello(frame: &[u8]) -> Result<Hello, ProtocolError> {
    let len = frame.len();
    let decode_error = |source| ProtocolError::Decode { len, source };
    let ((variant, version), _) =
        postcard::take_from_bytes::<(u32, u32)>(frame).map_err(decode_error)?;
    if variant != 0 {
        let got = match variant {
            1 => "a results frame",
            2 => "a heartbeat",
            3 => "a goodbye",
            _ => "an unknown message",
        };
        return Err(ProtocolError::NotHello { got });
    }
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::VersionMismatch {
            worker: version,
            supervisor: PROTOCOL_VERSION,
        });
    }
    match postcard::from_bytes::<FromWorker>(frame).map_err(decode_error)? {
        FromWorker::Hello(hello) => Ok(hello),
        _ => Err(ProtocolError::NotHello {
            got: "an unknown message",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_of_another_version_is_named() {
        let mut hello = Hello::new(7, vec!["sim".into()], "rust");
        hello.version = 99;
        let frame = postcard::to_stdvec(&FromWorker::Hello(hello)).unwrap();
        let err = check_hello(&frame).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "protocol version mismatch: worker speaks 99, supervisor speaks {PROTOCOL_VERSION}"
            )
        );
    }

    #[test]
    fn hello_round_trips() {
        let hello = Hello::new(7, vec!["sim".into(), "chaos".into()], "rust");
        let frame = postcard::to_stdvec(&FromWorker::Hello(hello.clone())).unwrap();
        assert_eq!(check_hello(&frame).unwrap(), hello);
    }

    #[test]
    fn other_first_frame_is_not_a_hello() {
        let frame = postcard::to_stdvec(&FromWorker::Heartbeat(Heartbeat::default())).unwrap();
        assert!(matches!(
            check_hello(&frame),
            Err(ProtocolError::NotHello { got: "a heartbeat" })
        ));
    }
}
