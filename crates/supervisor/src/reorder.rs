//! The reorder buffer behind `--keep-order`: records go in in completion
//! order and come out in input order.

use std::collections::VecDeque;

use crate::record::Record;

/// Holds records that finished ahead of an earlier one. Record ids are
/// dense (every id from 0 up is eventually inserted exactly once), so a
/// ring indexed by `id - next` replaces a map.
#[derive(Debug, Default)]
pub struct ReorderBuffer {
    next: u64,
    waiting: VecDeque<Option<Record>>,
    held: usize,
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
    pub fn held(&self) -> usize {
        self.held
    }

    /// Appends every held record to `out` in id order, skipping the gaps
    /// (tasks that will never finish in this run).
    pub fn drain_all(&mut self, out: &mut Vec<Record>) {
        let skipped = self.waiting.len() as u64;
        out.extend(self.waiting.drain(..).flatten());
        self.next += skipped;
        self.held = 0;
    }

    /// Inserts `record` and appends every record now in order to `out`.
    pub fn push(&mut self, record: Record, out: &mut Vec<Record>) {
        let Some(offset) = record.id.checked_sub(self.next) else {
            debug_assert!(false, "record {} released twice", record.id);
            return;
        };
        let offset = offset as usize;
        if offset >= self.waiting.len() {
            self.waiting.resize_with(offset + 1, || None);
        }
        debug_assert!(
            self.waiting[offset].is_none(),
            "record {} inserted twice",
            record.id
        );
        self.waiting[offset] = Some(record);
        self.held += 1;
        while let Some(Some(_)) = self.waiting.front() {
            let record = self
                .waiting
                .pop_front()
                .flatten()
                .expect("checked just above");
            out.push(record);
            self.held -= 1;
            self.next += 1;
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
        }
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
