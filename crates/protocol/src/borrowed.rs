//! Decoding without copying payloads: frames are decoded into borrowed
//! twins of the messages, and payloads become slices of the frame's
//! `Bytes` (a reference count, not an allocation and a copy per task).

use bytes::Bytes;
use serde::Deserialize;

use crate::{
    Added, ErrorKind, FromWorker, Heartbeat, Hello, Outcome, ProtocolError, Task, TaskResult,
    ToWorker, Usage,
};

#[derive(Deserialize)]
enum ToWorkerRef<'a> {
    #[serde(borrow)]
    Tasks(Vec<TaskRef<'a>>),
}

#[derive(Deserialize)]
struct TaskRef<'a> {
    id: u64,
    payload: &'a [u8],
}

#[derive(Deserialize)]
enum FromWorkerRef<'a> {
    Hello(Hello),
    #[serde(borrow)]
    Results(Vec<TaskResultRef<'a>>),
    Heartbeat(Heartbeat),
    Bye(Usage),
}

#[derive(Deserialize)]
struct TaskResultRef<'a> {
    id: u64,
    micros: u64,
    #[serde(borrow)]
    outcome: OutcomeRef<'a>,
    retry: bool,
    #[serde(borrow)]
    added: Vec<AddedRef<'a>>,
}

#[derive(Deserialize)]
struct AddedRef<'a> {
    payload: &'a [u8],
    key: Option<String>,
}

#[derive(Deserialize)]
enum OutcomeRef<'a> {
    Ok(&'a [u8]),
    Err { kind: ErrorKind, message: String },
}

fn decode<'a, T: Deserialize<'a>>(frame: &'a [u8]) -> Result<T, ProtocolError> {
    postcard::from_bytes(frame).map_err(|source| ProtocolError::Decode {
        len: frame.len(),
        source,
    })
}

/// Decodes a supervisor-to-worker frame; task payloads share `frame`.
pub fn decode_to_worker(frame: &Bytes) -> Result<ToWorker, ProtocolError> {
    let ToWorkerRef::Tasks(tasks) = decode(frame)?;
    Ok(ToWorker::Tasks(
        tasks
            .into_iter()
            .map(|task| Task {
                id: task.id,
                payload: frame.slice_ref(task.payload),
            })
            .collect(),
    ))
}

/// Decodes a worker-to-supervisor frame; result payloads share `frame`.
pub fn decode_from_worker(frame: &Bytes) -> Result<FromWorker, ProtocolError> {
    Ok(match decode(frame)? {
        FromWorkerRef::Hello(hello) => FromWorker::Hello(hello),
        FromWorkerRef::Heartbeat(heartbeat) => FromWorker::Heartbeat(heartbeat),
        FromWorkerRef::Bye(usage) => FromWorker::Bye(usage),
        FromWorkerRef::Results(results) => FromWorker::Results(
            results
                .into_iter()
                .map(|result| TaskResult {
                    id: result.id,
                    micros: result.micros,
                    outcome: match result.outcome {
                        OutcomeRef::Ok(output) => Outcome::Ok(frame.slice_ref(output)),
                        OutcomeRef::Err { kind, message } => Outcome::Err { kind, message },
                    },
                    retry: result.retry,
                    added: result
                        .added
                        .into_iter()
                        .map(|added| Added {
                            payload: frame.slice_ref(added.payload),
                            key: added.key,
                        })
                        .collect(),
                })
                .collect(),
        ),
    })
}
