//! When queued tasks wait a moment to go out together. A crawl queues a
//! task or two with each result (the page's new links), and sending each
//! at once costs a frame, a write, and a wake-up of the worker's reader
//! per page: a third of what the crawl cost over a list of the same pages.
//! A worker that still holds many unanswered tasks has work for now, so
//! while every worker does, new tasks wait until a batch of them is
//! queued or the first has waited [`WAIT`]; a worker running low is
//! filled at once, as before.

use std::time::{Duration, Instant};

/// Unanswered tasks from which a worker counts as busy: it has work for
/// longer than [`WAIT`].
pub(super) const BUSY: usize = 64;

/// Queued tasks per worker that go out at once.
pub(super) const BATCH: usize = 32;

/// Longest a queued task waits for a batch to fill.
pub(super) const WAIT: Duration = Duration::from_millis(20);

/// Since when tasks have been held back, if they are.
#[derive(Debug, Default)]
pub(super) struct Coalesce {
    since: Option<Instant>,
}

impl Coalesce {
    /// Whether the `queued` tasks wait now: only while every one of the
    /// `workers` that could take them is `busy`, fewer than a batch per
    /// worker are queued, and the first has waited less than [`WAIT`].
    pub fn hold(&mut self, busy: bool, queued: usize, workers: usize, now: Instant) -> bool {
        let hold = busy
            && queued > 0
            && queued < BATCH * workers.max(1)
            && self.since.is_none_or(|since| now < since + WAIT);
        self.since = if hold {
            Some(self.since.unwrap_or(now))
        } else {
            None
        };
        hold
    }

    /// When held tasks go out anyway.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_workers_get_batches_or_waited_tasks() {
        let start = Instant::now();
        let mut coalesce = Coalesce::default();
        // Idle or low workers are filled at once.
        assert!(!coalesce.hold(false, 1, 2, start));
        assert_eq!(coalesce.deadline(), None);
        // Busy ones wait for a batch...
        assert!(coalesce.hold(true, 1, 2, start));
        assert_eq!(coalesce.deadline(), Some(start + WAIT));
        assert!(coalesce.hold(true, 5, 2, start + WAIT / 2));
        assert_eq!(coalesce.deadline(), Some(start + WAIT));
        assert!(!coalesce.hold(true, BATCH * 2, 2, start + WAIT / 2));
        assert_eq!(coalesce.deadline(), None);
        // ...or for the first task's wait to end.
        assert!(coalesce.hold(true, 1, 2, start));
        assert!(!coalesce.hold(true, 1, 2, start + WAIT));
        assert_eq!(coalesce.deadline(), None);
        // Nothing queued holds nothing.
        assert!(!coalesce.hold(true, 0, 2, start));
        assert_eq!(coalesce.deadline(), None);
    }
}
