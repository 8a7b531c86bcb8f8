//! What a worker's death means, decided from how it ended alone: not news
//! (a clean exit when told to finish), a setup problem, part of a
//! shutdown, or a death — and then its cause, the evidence against its
//! tasks, the one task the watchdog named, and how its slot restarts.
//! Pure: no state and no I/O; the dispatcher carries out the verdict.
//! Beside `reasons.rs`, whose kill and close reasons are its input.

use super::blame::Evidence;
use super::events::ExitStatus;
use super::incarnation::Ending;
use super::reasons::{CloseReason, KillReason};
use crate::history::EndCause;

/// Everything the classification reads about one exit.
#[derive(Debug, Clone)]
pub(super) struct Exit<'a> {
    /// What its life was when its process exited.
    pub ending: &'a Ending,
    pub status: ExitStatus,
    /// Tasks it held when it exited.
    pub in_flight: usize,
    /// Some worker of this run has completed its handshake.
    pub any_hello: bool,
    /// The run takes new work (neither draining nor stopping).
    pub accepting: bool,
}

/// What a worker's exit means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Death {
    /// Told to finish, it exited 0 holding nothing: not news.
    Clean(CloseReason),
    /// It exited before its handshake, before any worker of this run got
    /// that far (or exited 0 before it): a setup problem (a bad `--set`
    /// value, a binary that is not a worker), not a crash to retry until
    /// the restart limit.
    NeverUp,
    /// The run is stopping: its tasks are left for `--resume`.
    Shutdown { cause: String },
    /// A death: its tasks are re-queued and judged.
    Died {
        cause: String,
        evidence: Evidence,
        /// The task the watchdog named, which takes the whole blame.
        named: Option<Named>,
        restart: Restart,
    },
}

/// The one task the watchdog named when it had the worker killed; the
/// others shared the worker by chance and run again as innocent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Named {
    /// It computed on the loop past `--task-timeout`: a `timeout`.
    TimedOut { task: u64, message: String },
    /// It blocked the loop without CPU past `--worker-timeout`: blamed
    /// alone, as a crash.
    Stuck { task: u64 },
}

impl Named {
    pub(super) fn task(&self) -> u64 {
        match self {
            Named::TimedOut { task, .. } | Named::Stuck { task } => *task,
        }
    }
}

/// How a dead slot is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Restart {
    /// After the slot's backoff.
    Backoff,
    /// At once: a probe's crash.
    AtOnce,
    /// Killed on request: at once, and not counted against the fleet.
    Requested,
}

impl Restart {
    /// A probe's crash is an experiment that went as feared: restart at
    /// once so that blame is settled quickly.
    pub(super) fn probed(self, probe: bool) -> Self {
        match self {
            Restart::Backoff if probe => Restart::AtOnce,
            other => other,
        }
    }
}

/// Decides what an exit means.
pub(super) fn classify(exit: &Exit<'_>) -> Death {
    let ending = exit.ending;
    if let (Some(reason), true, 0) = (ending.closing, exit.status.is_success(), exit.in_flight) {
        return Death::Clean(reason);
    }
    let never_up = !exit.any_hello || exit.status.is_success();
    if ending.starting && ending.killed.is_none() && never_up {
        return Death::NeverUp;
    }
    let cause = match &ending.killed {
        Some(reason) => reason.to_string(),
        None => exit.status.to_string(),
    };
    if matches!(ending.killed, Some(KillReason::Shutdown)) || !exit.accepting {
        return Death::Shutdown { cause };
    }
    let evidence = match (&ending.killed, exit.status) {
        // Kills the supervisor was asked to do, or did to end a drain, say
        // nothing about the tasks.
        (Some(KillReason::Operator | KillReason::Overdue), _) => Evidence::None,
        (Some(_), _) => Evidence::Strong,
        // A SIGKILL/SIGTERM we did not send: a person at `top` or the OOM
        // killer, so blame needs repeated coincidence.
        (None, ExitStatus::Signal(signal))
            if signal == libc::SIGKILL || signal == libc::SIGTERM =>
        {
            Evidence::Weak
        }
        (None, _) => Evidence::Strong,
    };
    let named = match &ending.killed {
        Some(KillReason::TaskTimeout { task, message }) => Some(Named::TimedOut {
            task: *task,
            message: message.clone(),
        }),
        Some(KillReason::Stuck { task, .. }) => Some(Named::Stuck { task: *task }),
        _ => None,
    };
    let restart = match ending.killed {
        Some(KillReason::Operator) => Restart::Requested,
        _ => Restart::Backoff,
    };
    Death::Died {
        cause,
        evidence,
        named,
        restart,
    }
}

/// Why a process ended, for the run's history: what the supervisor did to
/// it, else how it exited. Beside [`classify`], which decides what the
/// same exit means for the run and its tasks, so one module reads an
/// [`Ending`].
pub(super) fn history_cause(ending: &Ending, status: ExitStatus) -> (EndCause, String) {
    if let Some(reason) = &ending.killed {
        let cause = match reason {
            KillReason::Hung { .. } | KillReason::Blocked { .. } => EndCause::Hung,
            KillReason::NoHandshake { .. } => EndCause::NoHandshake,
            KillReason::TaskTimeout { .. } => EndCause::TaskTimeout,
            KillReason::Stuck { .. } => EndCause::Stuck,
            KillReason::Violation(_) => EndCause::Violation,
            KillReason::Operator => EndCause::KilledOnRequest,
            KillReason::Overdue => EndCause::Overdue,
            KillReason::Shutdown => EndCause::Shutdown,
        };
        return (cause, reason.to_string());
    }
    let cause = match (ending.closing, status) {
        (Some(reason), status) if status.is_success() => {
            let cause = match reason {
                CloseReason::Finished => EndCause::Finished,
                CloseReason::Recycled(_) => EndCause::Recycled,
                CloseReason::Restart => EndCause::Restarted,
                CloseReason::Retired => EndCause::Retired,
            };
            return (cause, reason.to_string());
        }
        (_, ExitStatus::Signal(signal)) if signal == libc::SIGKILL || signal == libc::SIGTERM => {
            EndCause::KilledOutside
        }
        _ => EndCause::Crashed,
    };
    (cause, status.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dispatcher::reasons::RecycleReason;

    const OK: ExitStatus = ExitStatus::Code(0);
    const FAILED: ExitStatus = ExitStatus::Code(1);
    const SEGV: ExitStatus = ExitStatus::Signal(libc::SIGSEGV);
    const KILL: ExitStatus = ExitStatus::Signal(libc::SIGKILL);
    const TERM: ExitStatus = ExitStatus::Signal(libc::SIGTERM);

    fn running() -> Ending {
        Ending {
            closing: None,
            starting: false,
            killed: None,
        }
    }

    fn starting() -> Ending {
        Ending {
            starting: true,
            ..running()
        }
    }

    fn closing() -> Ending {
        Ending {
            closing: Some(CloseReason::Finished),
            ..running()
        }
    }

    fn killed(reason: KillReason) -> Ending {
        Ending {
            killed: Some(reason),
            ..running()
        }
    }

    fn died(cause: &str, evidence: Evidence) -> Death {
        Death::Died {
            cause: cause.to_string(),
            evidence,
            named: None,
            restart: Restart::Backoff,
        }
    }

    /// One row: how it ended, its exit, tasks held, any hello, accepting.
    struct Case {
        name: &'static str,
        ending: Ending,
        status: ExitStatus,
        in_flight: usize,
        any_hello: bool,
        accepting: bool,
        death: Death,
    }

    fn case(
        name: &'static str,
        ending: Ending,
        status: ExitStatus,
        in_flight: usize,
        death: Death,
    ) -> Case {
        Case {
            name,
            ending,
            status,
            in_flight,
            any_hello: true,
            accepting: true,
            death,
        }
    }

    #[test]
    fn deaths_are_classified_as_the_table_says() {
        let hung = KillReason::Hung {
            silent: Duration::from_secs(3),
            lag: Duration::ZERO,
        };
        let timed_out = KillReason::TaskTimeout {
            task: 7,
            message: "seq 7 held the event loop".into(),
        };
        let stuck = KillReason::Stuck {
            task: 9,
            message: "seq 9 blocked the event loop".into(),
        };
        let table = [
            case(
                "told to finish, exits 0 holding nothing",
                closing(),
                OK,
                0,
                Death::Clean(CloseReason::Finished),
            ),
            case(
                "told to finish, exits 0 holding tasks",
                closing(),
                OK,
                2,
                died("exit code 0", Evidence::Strong),
            ),
            case(
                "told to finish, exits 1",
                closing(),
                FAILED,
                0,
                died("exit code 1", Evidence::Strong),
            ),
            Case {
                any_hello: false,
                ..case(
                    "first start fails before any hello",
                    starting(),
                    FAILED,
                    0,
                    Death::NeverUp,
                )
            },
            case(
                "exits 0 before its handshake",
                starting(),
                OK,
                0,
                Death::NeverUp,
            ),
            case(
                "crashes before its handshake once others are up",
                starting(),
                SEGV,
                0,
                died("signal SIGSEGV", Evidence::Strong),
            ),
            Case {
                any_hello: false,
                ..case(
                    "killed for no handshake",
                    Ending {
                        starting: true,
                        ..killed(KillReason::NoHandshake {
                            waited: Duration::from_secs(2),
                        })
                    },
                    KILL,
                    0,
                    died("no handshake within 2.0s, killed", Evidence::Strong),
                )
            },
            case(
                "killed at shutdown",
                killed(KillReason::Shutdown),
                KILL,
                3,
                Death::Shutdown {
                    cause: "killed at shutdown".into(),
                },
            ),
            Case {
                accepting: false,
                ..case(
                    "crashes while the run drains",
                    running(),
                    SEGV,
                    3,
                    Death::Shutdown {
                        cause: "signal SIGSEGV".into(),
                    },
                )
            },
            case(
                "crashes by itself",
                running(),
                SEGV,
                3,
                died("signal SIGSEGV", Evidence::Strong),
            ),
            case(
                "exits non-zero by itself",
                running(),
                FAILED,
                3,
                died("exit code 1", Evidence::Strong),
            ),
            case(
                "SIGKILL we did not send",
                running(),
                KILL,
                3,
                died("signal SIGKILL", Evidence::Weak),
            ),
            case(
                "SIGTERM we did not send",
                running(),
                TERM,
                3,
                died("signal SIGTERM", Evidence::Weak),
            ),
            case(
                "killed on request",
                killed(KillReason::Operator),
                KILL,
                3,
                Death::Died {
                    cause: "killed on request".into(),
                    evidence: Evidence::None,
                    named: None,
                    restart: Restart::Requested,
                },
            ),
            case(
                "killed past --grace",
                killed(KillReason::Overdue),
                KILL,
                1,
                died(
                    "still busy --grace after being told to finish, killed",
                    Evidence::None,
                ),
            ),
            case(
                "killed as hung",
                killed(hung),
                KILL,
                3,
                died(
                    "hung: no heartbeat for 3.0s (last event-loop lag 0 ms), killed",
                    Evidence::Strong,
                ),
            ),
            case(
                "killed for a protocol violation",
                killed(KillReason::Violation("garbage on the pipe".into())),
                KILL,
                3,
                died("garbage on the pipe, killed", Evidence::Strong),
            ),
            case(
                "killed: a task computed past --task-timeout",
                killed(timed_out),
                KILL,
                3,
                Death::Died {
                    cause: "seq 7 held the event loop; killed".into(),
                    evidence: Evidence::Strong,
                    named: Some(Named::TimedOut {
                        task: 7,
                        message: "seq 7 held the event loop".into(),
                    }),
                    restart: Restart::Backoff,
                },
            ),
            case(
                "killed: a task blocked the loop",
                killed(stuck),
                KILL,
                3,
                Death::Died {
                    cause: "stuck: seq 9 blocked the event loop, killed".into(),
                    evidence: Evidence::Strong,
                    named: Some(Named::Stuck { task: 9 }),
                    restart: Restart::Backoff,
                },
            ),
        ];
        for row in table {
            let exit = Exit {
                ending: &row.ending,
                status: row.status,
                in_flight: row.in_flight,
                any_hello: row.any_hello,
                accepting: row.accepting,
            };
            assert_eq!(classify(&exit), row.death, "{}", row.name);
        }
    }

    #[test]
    fn only_a_probe_restarts_at_once() {
        assert_eq!(Restart::Backoff.probed(true), Restart::AtOnce);
        assert_eq!(Restart::Backoff.probed(false), Restart::Backoff);
        assert_eq!(Restart::Requested.probed(true), Restart::Requested);
    }

    #[test]
    fn ends_say_who_did_it() {
        let table = [
            (
                Some(KillReason::Operator),
                None,
                ExitStatus::Signal(9),
                EndCause::KilledOnRequest,
            ),
            (None, None, ExitStatus::Signal(9), EndCause::KilledOutside),
            (None, None, ExitStatus::Signal(6), EndCause::Crashed),
            (None, None, ExitStatus::Code(0), EndCause::Crashed),
            (
                None,
                Some(CloseReason::Recycled(RecycleReason::Tasks)),
                ExitStatus::Code(0),
                EndCause::Recycled,
            ),
            (
                None,
                Some(CloseReason::Finished),
                ExitStatus::Code(0),
                EndCause::Finished,
            ),
            (
                None,
                Some(CloseReason::Finished),
                ExitStatus::Code(1),
                EndCause::Crashed,
            ),
            (
                Some(KillReason::Hung {
                    silent: Duration::from_secs(9),
                    lag: Duration::ZERO,
                }),
                None,
                ExitStatus::Signal(9),
                EndCause::Hung,
            ),
        ];
        for (killed, closing, status, want) in table {
            assert_eq!(
                history_cause(
                    &Ending {
                        closing,
                        starting: false,
                        killed: killed.clone(),
                    },
                    status
                )
                .0,
                want,
                "{killed:?} {closing:?} {status}"
            );
        }
    }
}
