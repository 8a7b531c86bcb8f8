//! Packing many tasks or results into as few frames as the frame limit
//! allows. The bounds below are postcard's worst case, so a packed batch
//! always encodes: a varint `u64`/`usize` takes at most 10 bytes, an enum
//! tag at most 5 (a `u32` varint), a `bool` 1.

use crate::{Added, Outcome, Task, TaskResult};

/// A `ToWorker::Tasks` / `FromWorker::Results` message around its items:
/// the enum tag (5) and the length of the sequence (10).
pub const BATCH_OVERHEAD: usize = 5 + 10;

/// A task besides its payload: its id (10) and the payload's length (10).
pub const TASK_OVERHEAD: usize = 10 + 10;

/// A result besides its output or message: id (10), micros (10), the
/// outcome's tag (5), an error kind's tag (5), the bytes' length (10) and
/// the retry flag (1).
pub const RESULT_OVERHEAD: usize = 10 + 10 + 5 + 5 + 10 + 1;

/// A result's list of added tasks, besides its items: its length (10).
pub const ADDITIONS_OVERHEAD: usize = 10;

/// An added task besides its payload and key: the payload's length (10),
/// the key's option tag (1) and the key's length (10).
pub const ADDED_OVERHEAD: usize = 10 + 1 + 10;

/// Something that goes into a batch frame.
pub trait Packed {
    /// The most bytes this item can take in the frame.
    fn encoded_bound(&self) -> usize;
}

impl Packed for Task {
    fn encoded_bound(&self) -> usize {
        TASK_OVERHEAD + self.payload.len()
    }
}

impl Packed for Added {
    fn encoded_bound(&self) -> usize {
        ADDED_OVERHEAD + self.payload.len() + self.key.as_ref().map_or(0, String::len)
    }
}

impl Packed for TaskResult {
    fn encoded_bound(&self) -> usize {
        RESULT_OVERHEAD
            + ADDITIONS_OVERHEAD
            + match &self.outcome {
                Outcome::Ok(bytes) => bytes.len(),
                Outcome::Err { message, .. } => message.len(),
            }
            + self.added.iter().map(Packed::encoded_bound).sum::<usize>()
    }
}

/// The longest task payload that fits a frame of `max_frame` bytes alone.
pub fn max_task_payload(max_frame: usize) -> usize {
    max_frame.saturating_sub(BATCH_OVERHEAD + TASK_OVERHEAD)
}

/// The longest result output (with no added tasks) that fits a frame of
/// `max_frame` bytes alone.
pub fn max_result_payload(max_frame: usize) -> usize {
    max_frame.saturating_sub(BATCH_OVERHEAD + RESULT_OVERHEAD + ADDITIONS_OVERHEAD)
}

/// Splits `items` into batches that each encode within `max_frame`, in
/// order, and hands each to `emit`. An item too big even alone is a batch
/// of its own (its encoding then reports the frame as too long).
pub fn pack<T: Packed, E>(
    items: impl IntoIterator<Item = T>,
    max_frame: usize,
    mut emit: impl FnMut(Vec<T>) -> Result<(), E>,
) -> Result<(), E> {
    let budget = max_frame.saturating_sub(BATCH_OVERHEAD);
    let mut batch = Vec::new();
    let mut size = 0;
    for item in items {
        let len = item.encoded_bound();
        if size + len > budget && !batch.is_empty() {
            emit(std::mem::take(&mut batch))?;
            size = 0;
        }
        size += len;
        batch.push(item);
    }
    if !batch.is_empty() {
        emit(batch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, FrameCodec, FromWorker, ToWorker};
    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;
    use tokio_util::codec::Encoder;

    proptest! {
        #[test]
        fn packed_task_batches_always_encode(sizes in prop::collection::vec(0usize..3000, 1..60), max_frame in 200usize..20_000) {
            let limit = max_task_payload(max_frame);
            let tasks: Vec<Task> = sizes.iter().enumerate().map(|(i, &n)| Task {
                id: u64::MAX - i as u64,
                payload: Bytes::from(vec![b'x'; n.min(limit)]),
            }).collect();
            let mut codec = FrameCodec::new(max_frame);
            let mut seen = 0;
            pack(tasks, max_frame, |batch: Vec<Task>| {
                seen += batch.len();
                codec.encode(&ToWorker::Tasks(batch), &mut BytesMut::new())
            }).unwrap();
            prop_assert_eq!(seen, sizes.len());
        }

        #[test]
        fn packed_result_batches_always_encode(sizes in prop::collection::vec(0usize..3000, 1..60), max_frame in 200usize..20_000) {
            let limit = max_result_payload(max_frame);
            // Every third result gives a quarter of its room to an added
            // task (payload and key), which must count in its bound.
            let results: Vec<TaskResult> = sizes.iter().enumerate().map(|(i, &n)| {
                let room = n.min(limit);
                let share = if i % 3 == 0 && room / 4 > ADDED_OVERHEAD { room / 4 } else { 0 };
                let added = if share > 0 {
                    let key_len = (share - ADDED_OVERHEAD) / 2;
                    vec![Added {
                        payload: Bytes::from(vec![b'2'; share - ADDED_OVERHEAD - key_len]),
                        key: Some("k".repeat(key_len)),
                    }]
                } else {
                    Vec::new()
                };
                let own = room - share;
                TaskResult {
                    id: u64::MAX - i as u64,
                    micros: u64::MAX,
                    outcome: if i % 2 == 0 {
                        Outcome::Ok(Bytes::from(vec![b'1'; own]))
                    } else {
                        Outcome::Err { kind: ErrorKind::BadInput, message: "m".repeat(own) }
                    },
                    retry: true,
                    added,
                }
            }).collect();
            let mut codec = FrameCodec::new(max_frame);
            pack(results, max_frame, |batch: Vec<TaskResult>| {
                codec.encode(&FromWorker::Results(batch), &mut BytesMut::new())
            }).unwrap();
        }
    }
}
