//! Restart policy: how long to wait before a restart, and when a fleet
//! that cannot make progress should be given up.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far ahead a deadline lands when `now + delay` does not fit in an
/// `Instant` (a `--grace` or retry backoff of years): far enough that it
/// never comes during a run, near enough to be representable.
const FAR_AHEAD: Duration = Duration::from_secs(86_400);

/// `now + delay`, or [`FAR_AHEAD`] of now if that overflows.
pub(super) fn deadline_after(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay).unwrap_or(now + FAR_AHEAD)
}

/// Exponential restart delay for one worker slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delay before the restart that follows `failures` deaths in a row
    /// without the slot completing a task: `min`, `2*min`, ... up to `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.min.saturating_mul(factor).min(self.max)
    }
}

/// The restart-intensity limit, as in OTP supervisors, but about progress:
/// only deaths with no task completed since the previous death count, and
/// they must fall within the window. A run that keeps completing tasks is
/// never given up, however many workers die in it.
#[derive(Debug, Clone)]
pub struct RestartIntensity {
    max_restarts: usize,
    window: Duration,
    deaths: VecDeque<Instant>,
}

impl RestartIntensity {
    pub fn new(max_restarts: usize, window: Duration) -> Self {
        Self {
            max_restarts,
            window,
            deaths: VecDeque::new(),
        }
    }

    /// A task completed: the fleet is making progress.
    pub fn progress(&mut self) {
        self.deaths.clear();
    }

    /// A worker died; true when that is one too many.
    pub fn death(&mut self, now: Instant) -> bool {
        self.deaths.push_back(now);
        while let Some(&first) = self.deaths.front() {
            if now.duration_since(first) > self.window {
                self.deaths.pop_front();
            } else {
                break;
            }
        }
        self.deaths.len() > self.max_restarts
    }

    /// Deaths counted now.
    pub fn count(&self) -> usize {
        self.deaths.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_doubles_up_to_max() {
        let backoff = Backoff {
            min: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        let delays: Vec<u128> = (0..7).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, vec![10, 10, 20, 40, 80, 100, 100]);
    }

    proptest! {
        #[test]
        fn backoff_is_monotonic_and_bounded(a in 0u32..100, b in 0u32..100) {
            let backoff = Backoff { min: Duration::from_millis(7), max: Duration::from_secs(3) };
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(backoff.delay(lo) <= backoff.delay(hi));
            prop_assert!(backoff.delay(hi) <= backoff.max);
            prop_assert!(backoff.delay(lo) >= backoff.min);
        }
    }

    #[test]
    fn only_deaths_without_progress_count() {
        let start = Instant::now();
        let mut limit = RestartIntensity::new(2, Duration::from_secs(60));
        assert!(!limit.death(start));
        assert!(!limit.death(start));
        limit.progress();
        assert!(!limit.death(start));
        assert!(!limit.death(start));
        assert!(
            limit.death(start),
            "the third death in a row is one too many"
        );
    }

    #[test]
    fn old_deaths_leave_the_window() {
        let start = Instant::now();
        let mut limit = RestartIntensity::new(1, Duration::from_secs(10));
        assert!(!limit.death(start));
        assert!(!limit.death(start + Duration::from_secs(11)));
        assert!(limit.death(start + Duration::from_secs(12)));
    }
}
