//! The reorder buffer behind `--keep-order`: records go in in completion
//! order and come out in input order, and what they hold is counted in
//! bytes, so that the dispatcher can pause input at a stated bound.

use std::collections::VecDeque;

use bytes::Bytes;
use multiloop_protocol::Outcome;

use crate::record::Record;

/// Most bytes `--keep-order` holds back behind an unfinished task before
/// input pauses (the run then waits for that task, as the credit window
/// makes it wait for a slow worker).
pub const REORDER_BYTES: usize = 32 << 20;

/// What the allocator adds to each heap block a held record owns.
const ALLOCATION_OVERHEAD: usize = 16;

/// Holds records that finished ahead of an earlier one. Record ids are
/// dense (every id from 0 up is eventually inserted exactly once), so a
/// ring indexed by `id - next` replaces a map.
#[derive(Debug, Default)]
pub struct ReorderBuffer {
    next: u64,
    waiting: VecDeque<Option<Record>>,
    held: usize,
    /// Heap bytes owned by the held records.
    heap: usize,
}

/// Heap bytes `record` owns once detached (see [`detach`]).
fn heap_bytes(record: &Record) -> usize {
    let output = match &record.outcome {
        Outcome::Ok(output) => output.len(),
        Outcome::Err { message, .. } => message.capacity(),
    };
    let key = record
        .key
        .as_ref()
        .map_or(0, |key| key.len() + ALLOCATION_OVERHEAD);
    output + ALLOCATION_OVERHEAD + key
}

/// Gives a record that is going to wait its own copy of its output. A
/// worker's outputs are slices of the frame they came in, so one held
/// record would otherwise keep its whole frame (and the read buffer around
/// it) alive: behind one straggler, that is most of the memory.
fn detach(mut record: Record) -> Record {
    if let Outcome::Ok(output) = &record.outcome {
        record.outcome = Outcome::Ok(Bytes::copy_from_slice(output));
    }
    record
}

impl ReorderBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of the next record to be released: every earlier one is out.
    #[cfg(test)]
    pub fn next_id(&self) -> u64 {
        self.next
    }

    /// Records held back waiting for an earlier one.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }

    /// Bytes the buffer holds: its ring (gaps included) and what the held
    /// records own. Each slot counts twice: when the task everything waits
    /// for ends, the records move out into a vector as large as the ring
    /// while the ring is still allocated.
    pub fn bytes(&self) -> usize {
        2 * self.waiting.capacity() * std::mem::size_of::<Option<Record>>() + self.heap
    }

    /// Appends every held record to `out` in id order, skipping the gaps
    /// (tasks that will never finish in this run).
    pub fn drain_all(&mut self, out: &mut Vec<Record>) {
        let skipped = self.waiting.len() as u64;
        out.extend(self.waiting.drain(..).flatten());
        self.next += skipped;
        self.held = 0;
        self.heap = 0;
    }

    /// Inserts `record` and appends every record now in order to `out`.
    pub fn push(&mut self, record: Record, out: &mut Vec<Record>) {
        let Some(offset) = record.id.checked_sub(self.next) else {
            debug_assert!(false, "record {} released twice", record.id);
            return;
        };
        let offset = offset as usize;
        if offset == 0 && self.waiting.front().is_none_or(Option::is_none) {
            // Next in line: out at once, nothing held.
            out.push(record);
            self.next += 1;
            if !self.waiting.is_empty() {
                self.waiting.pop_front();
            }
            self.release(out);
            return;
        }
        let record = detach(record);
        if offset >= self.waiting.len() {
            self.waiting.resize_with(offset + 1, || None);
        }
        debug_assert!(
            self.waiting[offset].is_none(),
            "record {} inserted twice",
            record.id
        );
        self.heap += heap_bytes(&record);
        self.waiting[offset] = Some(record);
        self.held += 1;
        self.release(out);
    }

    /// Appends the records now in order to `out`.
    fn release(&mut self, out: &mut Vec<Record>) {
        while let Some(Some(_)) = self.waiting.front() {
            let Some(Some(record)) = self.waiting.pop_front() else {
                break;
            };
            self.heap -= heap_bytes(&record);
            out.push(record);
            self.held -= 1;
            self.next += 1;
        }
        if self.waiting.is_empty() && self.waiting.capacity() > 1024 {
            // A long wait behind a straggler is over: give the ring back.
            self.waiting = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use multiloop_protocol::Outcome;
    use proptest::prelude::*;

    fn record(id: u64) -> Record {
        Record {
            id,
            seq: id + 1,
            key: None,
            worker: Some(0),
            attempts: 1,
            micros: 0,
            outcome: Outcome::Ok(Bytes::new()),
            path: None,
            adds: None,
        }
    }

    proptest! {
        /// Every id comes out exactly once, in order, for any completion order.
        #[test]
        fn releases_in_order(order in Just((0u64..300).collect::<Vec<_>>()).prop_shuffle()) {
            let mut buffer = ReorderBuffer::new();
            let mut out = Vec::new();
            for id in order {
                buffer.push(record(id), &mut out);
                let ids: Vec<u64> = out.iter().map(|r| r.id).collect();
                prop_assert_eq!(ids, (0..buffer.next_id()).collect::<Vec<_>>());
            }
            prop_assert_eq!(out.len(), 300);
            prop_assert_eq!(buffer.held(), 0);
            prop_assert_eq!(buffer.heap, 0);
        }
    }

    #[test]
    fn held_records_are_counted_in_bytes_and_own_their_output() {
        let mut buffer = ReorderBuffer::new();
        let mut out = Vec::new();
        let frame = Bytes::from(vec![b'7'; 100_000]);
        for id in 1..=10 {
            let mut held = record(id);
            held.outcome = Outcome::Ok(frame.slice(0..1000));
            buffer.push(held, &mut out);
        }
        assert!(buffer.bytes() >= 10 * 1000, "{}", buffer.bytes());
        let ring = 2 * 32 * std::mem::size_of::<Option<Record>>();
        assert!(buffer.bytes() < 10 * 1100 + ring, "{}", buffer.bytes());
        // The held outputs are copies: the frame they came in is free.
        assert!(frame.is_unique());
        buffer.push(record(0), &mut out);
        assert_eq!(out.len(), 11);
        assert_eq!(buffer.heap, 0);
    }

    #[test]
    fn drain_all_releases_what_is_held_in_order() {
        let mut buffer = ReorderBuffer::new();
        let mut out = Vec::new();
        buffer.push(record(3), &mut out);
        buffer.push(record(1), &mut out);
        buffer.drain_all(&mut out);
        assert_eq!(out.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(buffer.held(), 0);
    }

    #[test]
    fn holds_until_the_gap_fills() {
        let mut buffer = ReorderBuffer::new();
        let mut out = Vec::new();
        buffer.push(record(2), &mut out);
        buffer.push(record(1), &mut out);
        assert!(out.is_empty());
        assert_eq!(buffer.held(), 2);
        buffer.push(record(0), &mut out);
        assert_eq!(out.iter().map(|r| r.id).collect::<Vec<_>>(), vec![0, 1, 2]);
    }
}
