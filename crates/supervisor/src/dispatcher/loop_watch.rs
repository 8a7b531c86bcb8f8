//! Reads one worker's heartbeats and says what its event loop is doing:
//! turning, busy (one task holds it and burns CPU), stuck (it is blocked
//! without using CPU) or silent (no heartbeat at all); and, against the
//! limits, what to do about it. Pure: fed heartbeats and times, no I/O.
//!
//! The worker's watchdog thread names the task whose single poll holds the
//! loop and for how long (`held`), and the process's CPU time. Between two
//! heartbeats of one hold, CPU time that advanced by at least
//! [`BUSY_SHARE`] of the wall time means the task is computing; less
//! means it waits in a blocking call, on a lock, or is stopped. The share
//! is low on purpose: on a loaded machine a computing worker may get only a
//! fraction of a core, while a blocked one gets none.

use std::time::{Duration, Instant};

use multiloop_protocol::Heartbeat;

/// Least CPU share of a heartbeat interval that counts as computing.
pub const BUSY_SHARE: f64 = 0.1;

/// What a worker's event loop is doing, as its heartbeats tell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoopState {
    /// No poll has held the loop longer than the watchdog's sampling period.
    Turning,
    /// One poll holds the loop and the process burns CPU: working. `task`
    /// is `None` when the loop is held outside any task.
    Busy {
        task: Option<u64>,
        held: Duration,
        cpu: Duration,
    },
    /// One poll holds the loop and no CPU is used: `held` counts from when
    /// the CPU stopped advancing.
    Stuck { task: Option<u64>, held: Duration },
    /// No heartbeat for `for_` (more than a few intervals): the process is
    /// frozen or its pipe is gone.
    Silent { for_: Duration },
}

/// The limits a verdict is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--task-timeout`: the longest a busy task may hold the loop. `None`
    /// lets a busy task run however long it needs.
    pub task_timeout: Option<Duration>,
    /// `--worker-timeout`: the longest a loop may be stuck or silent.
    pub worker_timeout: Duration,
}

/// What the supervisor should do about a worker's loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// `task` computed on the loop past `--task-timeout`: kill the worker,
    /// record a timeout for exactly that task; its other tasks are innocent.
    TimeOut {
        task: u64,
        held: Duration,
        cpu: Duration,
        limit: Duration,
    },
    /// `task` blocked the loop without CPU past `--worker-timeout`: kill
    /// the worker, blame exactly that task as a crash; the others are
    /// innocent.
    Blame {
        task: u64,
        held: Duration,
        limit: Duration,
    },
    /// The loop is stuck or silent (for `held`) and no task can be named:
    /// kill the worker as hung; its tasks are suspects.
    Hung { held: Duration },
}

/// One heartbeat as remembered: when it came and the CPU time it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Beat {
    at: Instant,
    cpu_us: u64,
}

/// One poll holding the loop, followed across heartbeats.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Hold {
    task: Option<u64>,
    /// When the poll began, by the worker's account.
    since: Instant,
    /// The last `for_us` reported: a hold lasts only while it grows.
    for_us: u64,
    /// CPU time when the hold was first reported, and how long it had
    /// lasted then (assumed as busy as what followed).
    cpu_base: u64,
    first_for: Duration,
    /// CPU share over the last interval; `None` until two heartbeats.
    share: Option<f64>,
    /// Some interval of this hold was seen computing.
    was_busy: bool,
    /// Since when the CPU has stopped advancing, while it has.
    stuck_since: Option<Instant>,
}

/// The loop of one worker process, as its heartbeats tell.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopWatch {
    /// No heartbeat for this long is silence.
    silent_after: Duration,
    last: Option<Beat>,
    hold: Option<Hold>,
    /// The loop's blocked time so far, and the first heartbeat's time.
    blocked_us: u64,
    first: Option<Instant>,
}

impl LoopWatch {
    /// A watch for a worker that sends a heartbeat every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            silent_after: interval * 3,
            last: None,
            hold: None,
            blocked_us: 0,
            first: None,
        }
    }

    /// Takes one heartbeat, received at `now`.
    pub fn heartbeat(&mut self, beat: &Heartbeat, now: Instant) {
        self.first.get_or_insert(now);
        self.blocked_us = beat.blocked_us;
        let previous = self.last.replace(Beat {
            at: now,
            cpu_us: beat.cpu_us,
        });
        let Some(held) = beat.held else {
            self.hold = None;
            return;
        };
        let for_ = Duration::from_micros(held.for_us);
        let since = now.checked_sub(for_).unwrap_or(now);
        match (&mut self.hold, previous) {
            (Some(hold), Some(previous)) if hold.task == held.task && held.for_us > hold.for_us => {
                let wall = now.saturating_duration_since(previous.at).as_micros() as f64;
                let cpu = beat.cpu_us.saturating_sub(previous.cpu_us) as f64;
                let share = if wall > 0.0 { cpu / wall } else { 1.0 };
                hold.for_us = held.for_us;
                hold.share = Some(share);
                if share >= BUSY_SHARE {
                    hold.was_busy = true;
                    hold.stuck_since = None;
                } else if hold.stuck_since.is_none() {
                    // Never busy: stuck from the start of the poll; busy
                    // before: stuck since the last heartbeat that said so.
                    hold.stuck_since = Some(if hold.was_busy {
                        previous.at
                    } else {
                        hold.since
                    });
                }
            }
            _ => {
                self.hold = Some(Hold {
                    task: held.task,
                    since,
                    for_us: held.for_us,
                    cpu_base: beat.cpu_us,
                    first_for: for_,
                    share: None,
                    was_busy: false,
                    stuck_since: None,
                });
            }
        }
    }

    /// What the loop is doing at `now`.
    pub fn state(&self, now: Instant) -> LoopState {
        if let Some(last) = self.last {
            let quiet = now.saturating_duration_since(last.at);
            if quiet >= self.silent_after {
                return LoopState::Silent { for_: quiet };
            }
        }
        let (Some(hold), Some(last)) = (self.hold, self.last) else {
            return LoopState::Turning;
        };
        let held = now.saturating_duration_since(hold.since);
        match hold.stuck_since {
            Some(since) => LoopState::Stuck {
                task: hold.task,
                held: now.saturating_duration_since(since),
            },
            None => {
                // Until a second heartbeat gives a share, assume the poll
                // computes: the next heartbeat settles it.
                let share = hold.share.unwrap_or(1.0).min(1.0);
                let measured = Duration::from_micros(last.cpu_us.saturating_sub(hold.cpu_base));
                let cpu = (measured + hold.first_for.mul_f64(share)).min(held);
                LoopState::Busy {
                    task: hold.task,
                    held,
                    cpu,
                }
            }
        }
    }

    /// Share of the time since the first heartbeat that single polls held
    /// the loop: "your CPU work is starving your I/O".
    pub fn blocked_share(&self, now: Instant) -> f64 {
        let Some(first) = self.first else {
            return 0.0;
        };
        // The worker counts from its start, about one interval before its
        // first heartbeat; counting from the first heartbeat overstates
        // the share a little early on, never later.
        let wall = now.saturating_duration_since(first).as_micros() as f64;
        if wall <= 0.0 {
            return 0.0;
        }
        (self.blocked_us as f64 / wall).min(1.0)
    }

    /// The loop's blocked time so far, as the worker reported it.
    #[cfg(test)]
    pub fn blocked(&self) -> Duration {
        Duration::from_micros(self.blocked_us)
    }
}

/// What to do about a loop in `state`, under `limits`. A busy task with no
/// `--task-timeout` is left to run: it is working, and there is no ceiling.
pub fn judge(state: LoopState, limits: Limits) -> Option<Action> {
    let worker_timeout = limits.worker_timeout;
    match state {
        LoopState::Turning => None,
        LoopState::Busy {
            task: Some(task),
            held,
            cpu,
        } => limits
            .task_timeout
            .filter(|&limit| held >= limit)
            .map(|limit| Action::TimeOut {
                task,
                held,
                cpu,
                limit,
            }),
        // Held outside any task: nobody to charge, so it is as good as hung.
        LoopState::Busy {
            task: None, held, ..
        }
        | LoopState::Stuck { task: None, held } => {
            (held >= worker_timeout).then_some(Action::Hung { held })
        }
        LoopState::Stuck {
            task: Some(task),
            held,
        } => (held >= worker_timeout).then_some(Action::Blame {
            task,
            held,
            limit: worker_timeout,
        }),
        LoopState::Silent { for_ } => {
            (for_ >= worker_timeout).then_some(Action::Hung { held: for_ })
        }
    }
}

/// `30s`, `1.5s`, `300ms`: a limit as a person typed it.
pub fn show_limit(limit: Duration) -> String {
    if limit.subsec_millis() == 0 {
        format!("{}s", limit.as_secs())
    } else if limit < Duration::from_secs(1) {
        format!("{}ms", limit.as_millis())
    } else {
        format!("{}s", limit.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiloop_protocol::Held;
    use proptest::prelude::*;

    const BEAT: Duration = Duration::from_millis(500);

    fn limits(task_timeout: Option<u64>) -> Limits {
        Limits {
            task_timeout: task_timeout.map(Duration::from_secs),
            worker_timeout: Duration::from_secs(10),
        }
    }

    /// Feeds heartbeats every 500 ms; `step(i)` gives (held task and
    /// for_us, CPU added during the interval before beat i).
    fn play(
        beats: usize,
        step: impl Fn(usize) -> (Option<(Option<u64>, u64)>, u64),
    ) -> (LoopWatch, Instant) {
        let t0 = Instant::now();
        let mut watch = LoopWatch::new(BEAT);
        let mut cpu = 0;
        let mut now = t0;
        for i in 0..beats {
            now = t0 + BEAT * (i as u32 + 1);
            let (held, cpu_added) = step(i);
            cpu += cpu_added;
            watch.heartbeat(
                &Heartbeat {
                    cpu_us: cpu,
                    held: held.map(|(task, for_us)| Held { task, for_us }),
                    ..Heartbeat::default()
                },
                now,
            );
        }
        (watch, now)
    }

    /// Task 7 holds the loop from beat `from` on, adding `cpu_per_beat`.
    fn hold_from(
        from: usize,
        cpu_per_beat: u64,
    ) -> impl Fn(usize) -> (Option<(Option<u64>, u64)>, u64) {
        move |i| {
            if i < from {
                (None, 1_000)
            } else {
                let for_us = (i - from) as u64 * 500_000 + 300_000;
                (Some((Some(7), for_us)), cpu_per_beat)
            }
        }
    }

    #[test]
    fn a_loop_without_holds_turns() {
        let (watch, now) = play(10, |_| (None, 1_000));
        assert_eq!(watch.state(now), LoopState::Turning);
        assert_eq!(judge(watch.state(now), limits(Some(1))), None);
    }

    #[test]
    fn a_computing_task_is_busy_and_times_out_only_with_a_task_timeout() {
        // 300 ms into its poll at beat 2, then 500 ms of CPU per beat.
        let (watch, now) = play(10, hold_from(2, 500_000));
        let LoopState::Busy { task, held, cpu } = watch.state(now) else {
            panic!("{:?}", watch.state(now));
        };
        assert_eq!(task, Some(7));
        assert_eq!(held, Duration::from_millis(3_800));
        assert_eq!(cpu, Duration::from_millis(3_800));
        assert_eq!(judge(watch.state(now), limits(None)), None, "no ceiling");
        assert_eq!(judge(watch.state(now), limits(Some(4))), None);
        assert_eq!(
            judge(watch.state(now), limits(Some(3))),
            Some(Action::TimeOut {
                task: 7,
                held,
                cpu,
                limit: Duration::from_secs(3)
            })
        );
        // Long past --worker-timeout, a computing task is still not hung.
        let (watch, now) = play(60, hold_from(2, 500_000));
        assert_eq!(judge(watch.state(now), limits(None)), None);
    }

    #[test]
    fn a_task_on_a_crowded_machine_is_still_busy() {
        let (watch, now) = play(10, hold_from(1, 80_000)); // 16 % of a core
        assert!(matches!(watch.state(now), LoopState::Busy { .. }));
    }

    #[test]
    fn a_blocked_task_is_stuck_from_the_start_of_its_poll() {
        let (watch, now) = play(25, hold_from(2, 300)); // the watchdog's own crumbs
        assert_eq!(
            watch.state(now),
            LoopState::Stuck {
                task: Some(7),
                held: Duration::from_millis(11_300)
            }
        );
        assert!(matches!(
            judge(watch.state(now), limits(Some(1))),
            Some(Action::Blame { task: 7, .. })
        ));
    }

    #[test]
    fn stuck_after_busy_counts_from_when_the_cpu_stopped() {
        let (watch, now) = play(40, |i| {
            let (held, _) = hold_from(0, 0)(i);
            (held, if i < 30 { 500_000 } else { 0 })
        });
        assert_eq!(
            watch.state(now),
            LoopState::Stuck {
                task: Some(7),
                held: Duration::from_millis(5_000)
            }
        );
        assert_eq!(judge(watch.state(now), limits(None)), None);
    }

    #[test]
    fn a_new_poll_of_the_same_task_starts_a_new_hold() {
        let (watch, now) = play(10, |i| {
            (Some((Some(7), 300_000 + (i as u64 % 3) * 500_000)), 500_000)
        });
        let LoopState::Busy { held, .. } = watch.state(now) else {
            panic!()
        };
        // Beat 9 is the first of a new poll (for_us fell back).
        assert_eq!(held, Duration::from_millis(300));
    }

    #[test]
    fn held_outside_any_task_is_hung_after_the_worker_timeout() {
        let (watch, now) = play(30, |i| {
            (Some((None, i as u64 * 500_000 + 100_000)), 500_000)
        });
        assert_eq!(
            judge(watch.state(now), limits(Some(1))),
            Some(Action::Hung {
                held: Duration::from_millis(14_600)
            })
        );
    }

    #[test]
    fn no_heartbeat_is_silence() {
        let (watch, now) = play(3, |_| (None, 0));
        assert_eq!(watch.state(now + BEAT), LoopState::Turning);
        let later = now + Duration::from_secs(11);
        assert_eq!(
            watch.state(later),
            LoopState::Silent {
                for_: Duration::from_secs(11)
            }
        );
        assert_eq!(
            judge(watch.state(later), limits(None)),
            Some(Action::Hung {
                held: Duration::from_secs(11)
            })
        );
    }

    #[test]
    fn blocked_share_is_blocked_time_over_wall_time() {
        let t0 = Instant::now();
        let mut watch = LoopWatch::new(BEAT);
        assert_eq!(watch.blocked_share(t0), 0.0);
        watch.heartbeat(&Heartbeat::default(), t0);
        let beat = Heartbeat {
            blocked_us: 2_500_000,
            ..Heartbeat::default()
        };
        watch.heartbeat(&beat, t0 + Duration::from_secs(10));
        assert!((watch.blocked_share(t0 + Duration::from_secs(10)) - 0.25).abs() < 1e-9);
        assert_eq!(watch.blocked(), Duration::from_millis(2_500));
    }

    #[test]
    fn limits_read_as_typed() {
        assert_eq!(show_limit(Duration::from_secs(30)), "30s");
        assert_eq!(show_limit(Duration::from_millis(1500)), "1.5s");
        assert_eq!(show_limit(Duration::from_millis(300)), "300ms");
    }

    proptest! {
        /// Whatever the heartbeats say, the verdict only ever names the
        /// task of the last heartbeat's hold, and a heartbeat without a
        /// hold means the loop turns.
        #[test]
        fn verdicts_name_only_the_held_task(
            beats in prop::collection::vec(
                (prop::option::of((prop::option::of(0u64..4), 0u64..20_000_000)), 0u64..600_000),
                1..40,
            ),
            task_timeout in prop::option::of(1u64..20),
        ) {
            let (watch, now) = play(beats.len(), |i| beats[i]);
            let state = watch.state(now);
            let (last_held, _) = *beats.last().unwrap();
            match last_held {
                None => prop_assert_eq!(state, LoopState::Turning),
                Some((task, _)) => {
                    let named = match state {
                        LoopState::Busy { task, .. } | LoopState::Stuck { task, .. } => task,
                        other => return Err(TestCaseError::fail(format!("{other:?}"))),
                    };
                    prop_assert_eq!(named, task);
                }
            }
            match judge(state, limits(task_timeout)) {
                Some(Action::TimeOut { task, held, limit, .. }) => {
                    prop_assert_eq!(Some(task), last_held.and_then(|h| h.0));
                    prop_assert!(held >= limit);
                    prop_assert_eq!(Some(limit), task_timeout.map(Duration::from_secs));
                }
                Some(Action::Blame { task, held, .. }) => {
                    prop_assert_eq!(Some(task), last_held.and_then(|h| h.0));
                    prop_assert!(held >= Duration::from_secs(10));
                }
                Some(Action::Hung { .. }) => prop_assert!(last_held.is_some_and(|h| h.0.is_none())),
                None => {}
            }
        }

        /// A hold whose CPU keeps pace with the wall clock is never stuck,
        /// and one without CPU is never busy after its second heartbeat.
        #[test]
        fn cpu_decides_busy_or_stuck(from in 0usize..5, beats in 2usize..40, busy in any::<bool>()) {
            let cpu = if busy { 400_000 } else { 0 };
            let (watch, now) = play(from + beats, hold_from(from, cpu));
            let state = watch.state(now);
            if busy {
                prop_assert!(matches!(state, LoopState::Busy { .. }), "{:?}", state);
            } else {
                prop_assert!(matches!(state, LoopState::Stuck { .. }), "{:?}", state);
            }
        }
    }
}
