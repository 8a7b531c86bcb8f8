//! The run state: which phase the run is in, why it is stopping, its
//! counters, the escalation of stop signals, and the restart-intensity
//! limit with the deaths it names when it gives up.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::events::{OperatorSignal, Request};
use super::policy::{deadline_after, RestartIntensity};
use super::status::{Progress, RunOutcome};

/// Deaths named in the give-up message.
const DEATHS_NAMED: usize = 8;

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Running,
    /// No new tasks (SIGINT/SIGTERM once, or the restart limit hit):
    /// in-flight ones may finish until the deadline.
    Winding {
        deadline: Instant,
    },
    /// Every task is answered; workers were told to exit.
    Finishing {
        deadline: Instant,
    },
    /// Second signal or a fatal error: workers killed; waiting for exits.
    Stopping {
        deadline: Instant,
    },
    Finished,
}

/// Phase, outcome, counters and signals of one run. Its counters are of
/// the run's records (resumed and rejected lines too); what each worker
/// did is the fleet's to count.
#[derive(Debug)]
pub(super) struct RunState {
    phase: Phase,
    input_open: bool,
    /// Why the run stopped early, kept after the phase moves on.
    stopped: Option<RunOutcome>,
    fatal: Option<String>,
    started: Instant,
    /// Tasks read (including rejected lines).
    read: u64,
    ok: u64,
    failed: u64,
    lines: Option<u64>,
    /// SIGINT/SIGTERM received: the first drains, the next stop now.
    stop_signals: u32,
    /// How the last few workers died, for the give-up message.
    deaths: VecDeque<String>,
    intensity: RestartIntensity,
    max_restarts: usize,
    restart_window: Duration,
}

impl RunState {
    pub fn new(max_restarts: usize, restart_window: Duration, now: Instant) -> Self {
        Self {
            phase: Phase::Running,
            input_open: true,
            stopped: None,
            fatal: None,
            started: now,
            read: 0,
            ok: 0,
            failed: 0,
            lines: None,
            stop_signals: 0,
            deaths: VecDeque::with_capacity(DEATHS_NAMED),
            intensity: RestartIntensity::new(max_restarts, restart_window),
            max_restarts,
            restart_window,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Takes new work: the run is neither draining nor stopping.
    pub fn accepting(&self) -> bool {
        self.phase == Phase::Running
    }

    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    pub fn has_fatal(&self) -> bool {
        self.fatal.is_some()
    }

    pub fn input_open(&self) -> bool {
        self.input_open
    }

    /// Closes the input; true if it was open (the reader must be stopped).
    pub fn close_input(&mut self) -> bool {
        std::mem::replace(&mut self.input_open, false)
    }

    pub fn input_ended(&mut self, lines: u64) {
        self.lines = Some(lines);
        self.input_open = false;
    }

    /// Turns a signal into a request: the first stop signal drains, the
    /// next stop now; the others have fixed meanings.
    pub fn signal(&mut self, signal: OperatorSignal) -> Request {
        match signal {
            OperatorSignal::Interrupt | OperatorSignal::Terminate => {
                self.stop_signals += 1;
                let signal = signal.number();
                if self.stop_signals == 1 {
                    Request::Drain { signal }
                } else {
                    Request::StopNow { signal }
                }
            }
            OperatorSignal::AddWorker => Request::AddWorker,
            OperatorSignal::RemoveWorker => Request::RemoveWorker,
            OperatorSignal::Hangup => Request::RollingRestart,
            OperatorSignal::Status => Request::ShowStatus,
        }
    }

    // ----- phases -------------------------------------------------------

    /// Stops taking work; in-flight tasks may finish within `grace`.
    pub fn wind_down(&mut self, outcome: RunOutcome, now: Instant, grace: Duration) {
        self.stopped = Some(outcome);
        self.phase = Phase::Winding {
            deadline: deadline_after(now, grace),
        };
    }

    /// Every task is answered; workers finish within `grace`.
    pub fn finishing(&mut self, now: Instant, grace: Duration) {
        if self.phase == Phase::Running {
            self.phase = Phase::Finishing {
                deadline: deadline_after(now, grace),
            };
        }
    }

    /// Workers are killed; the run ends when they have exited.
    pub fn stopping(&mut self, now: Instant) {
        // Killed processes exit at once; the deadline only guards against
        // one stuck in the kernel (D state), which must not hang the run.
        self.phase = Phase::Stopping {
            deadline: now + Duration::from_secs(5),
        };
    }

    pub fn finished(&mut self) {
        self.phase = Phase::Finished;
    }

    pub fn interrupted(&mut self, signal: i32) {
        if self.stopped.is_none() {
            self.stopped = Some(RunOutcome::Interrupted(signal));
        }
    }

    pub fn fatal(&mut self, message: String) {
        self.fatal = Some(message);
    }

    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Winding { deadline }
            | Phase::Finishing { deadline }
            | Phase::Stopping { deadline } => Some(deadline),
            Phase::Running | Phase::Finished => None,
        }
    }

    // ----- counters -----------------------------------------------------

    pub fn read_one(&mut self) {
        self.read += 1;
    }

    pub fn recorded(&mut self, ok: bool) {
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
    }

    /// Something was completed or decided: the fleet makes progress.
    pub fn progress(&mut self) {
        self.intensity.progress();
    }

    /// A worker died (how, for the give-up message). Returns the give-up
    /// message when that is one death too many without progress.
    pub fn death(&mut self, how: String, counts: bool, now: Instant) -> Option<String> {
        if self.deaths.len() == DEATHS_NAMED {
            self.deaths.pop_front();
        }
        self.deaths.push_back(how);
        if !counts || !self.intensity.death(now) {
            return None;
        }
        Some(format!(
            "giving up: {} workers died in a row without completing a task (--max-restarts {} within {:?}); last deaths: {}",
            self.intensity.count(),
            self.max_restarts,
            self.restart_window,
            self.deaths.iter().map(String::as_str).collect::<Vec<_>>().join("; ")
        ))
    }

    #[cfg(test)]
    pub fn deaths_kept(&self) -> usize {
        self.deaths.len()
    }

    /// The run's counts, with the fleet's `restarts` and `alive` workers.
    pub fn progress_counts(&self, restarts: u64, alive: u64) -> Progress {
        Progress {
            done: self.ok + self.failed,
            failed: self.failed,
            read: self.read,
            restarts,
            alive,
            queued: 0,
        }
    }

    pub fn outcome(&self) -> RunOutcome {
        match (&self.fatal, &self.stopped) {
            (Some(message), _) => RunOutcome::Fatal(message.clone()),
            (None, Some(stopped)) => stopped.clone(),
            (None, None) if self.failed > 0 => RunOutcome::SomeFailed,
            (None, None) => RunOutcome::AllOk,
        }
    }

    pub fn counts(&self) -> (u64, u64, u64, Option<u64>) {
        (self.ok, self.failed, self.read, self.lines)
    }

    pub fn started(&self) -> Instant {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_escalate() {
        let mut run = RunState::new(3, Duration::from_secs(60), Instant::now());
        assert_eq!(
            run.signal(OperatorSignal::Interrupt),
            Request::Drain {
                signal: libc::SIGINT
            }
        );
        assert_eq!(
            run.signal(OperatorSignal::Terminate),
            Request::StopNow {
                signal: libc::SIGTERM
            }
        );
        assert_eq!(run.signal(OperatorSignal::AddWorker), Request::AddWorker);
    }

    #[test]
    fn only_the_last_deaths_are_kept() {
        let now = Instant::now();
        let mut run = RunState::new(1_000_000, Duration::from_secs(60), now);
        for n in 0..1000 {
            assert!(run.death(format!("worker {n}"), true, now).is_none());
        }
        assert_eq!(run.deaths_kept(), DEATHS_NAMED);
    }
}
