//! Why a worker's life ends: recycled, closed, or killed — with the
//! words the log and the records use for each.

use std::time::Duration;

use super::loop_watch::{show_limit, Action};

/// Why a worker was recycled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecycleReason {
    /// `--max-tasks-per-worker`.
    Tasks,
    /// `--max-worker-rss`.
    Rss,
}

/// Why a worker was told to finish its tasks and exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The run is over.
    Finished,
    Recycled(RecycleReason),
    /// Rolling restart (SIGHUP or `ctl restart`).
    Restart,
    /// The fleet shrank (SIGTTOU or `ctl scale`).
    Retired,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::Finished => "the run is over",
            CloseReason::Recycled(RecycleReason::Tasks) => "recycled: --max-tasks-per-worker",
            CloseReason::Recycled(RecycleReason::Rss) => "recycled: --max-worker-rss",
            CloseReason::Restart => "restarted",
            CloseReason::Retired => "retired",
        })
    }
}

/// Why the supervisor killed a worker itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillReason {
    Hung {
        silent: Duration,
        lag: Duration,
    },
    NoHandshake {
        waited: Duration,
    },
    /// The watchdog named a task that computed on the event loop past
    /// `--task-timeout`: that task is a `timeout`, the others are innocent.
    TaskTimeout {
        task: u64,
        message: String,
    },
    /// The watchdog named a task that blocked the loop without using CPU
    /// past `--worker-timeout`: that task alone is blamed, as a crash.
    Stuck {
        task: u64,
        message: String,
    },
    /// The loop was held outside any task past `--worker-timeout`.
    Blocked {
        held: Duration,
    },
    Violation(String),
    /// An operator asked (`ctl kill`, `top`'s `k`): no evidence against
    /// its tasks at all.
    Operator,
    /// Told to finish and exit, it was still busy after `--grace`: its
    /// tasks run again elsewhere.
    Overdue,
    /// The run is stopping (a second signal, a fatal error, the end of a
    /// drain's grace): its tasks are left for `--resume`.
    Shutdown,
}

impl std::fmt::Display for KillReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillReason::Hung { silent, lag } => write!(
                f,
                "hung: no heartbeat for {:.1}s (last event-loop lag {} ms), killed",
                silent.as_secs_f64(),
                lag.as_millis()
            ),
            KillReason::TaskTimeout { message, .. } => write!(f, "{message}; killed"),
            KillReason::Stuck { message, .. } => write!(f, "stuck: {message}, killed"),
            KillReason::Blocked { held } => write!(
                f,
                "hung: event loop blocked outside any task for {:.1}s, killed",
                held.as_secs_f64()
            ),
            KillReason::NoHandshake { waited } => {
                write!(
                    f,
                    "no handshake within {:.1}s, killed",
                    waited.as_secs_f64()
                )
            }
            KillReason::Violation(error) => write!(f, "{error}, killed"),
            KillReason::Operator => f.write_str("killed on request"),
            KillReason::Overdue => {
                f.write_str("still busy --grace after being told to finish, killed")
            }
            KillReason::Shutdown => f.write_str("killed at shutdown"),
        }
    }
}

impl KillReason {
    /// The reason for killing a worker whose loop the watchdog reported;
    /// `seq` gives the input line of a task the worker holds, by id.
    pub fn of_loop(action: Action, seq: impl Fn(u64) -> Option<u64>) -> Self {
        let name = |task: u64| match seq(task) {
            Some(seq) => format!("seq {seq}"),
            None => format!("task id {task}"),
        };
        match action {
            Action::TimeOut {
                task,
                held,
                cpu,
                limit,
            } => KillReason::TaskTimeout {
                task,
                message: format!(
                    "{} held the event loop for {:.1} s ({:.1} s of CPU; over --task-timeout {}): \
                     move CPU-heavy work off the loop or raise the limit",
                    name(task),
                    held.as_secs_f64(),
                    cpu.as_secs_f64(),
                    show_limit(limit)
                ),
            },
            Action::Blame { task, held, limit } => KillReason::Stuck {
                task,
                message: format!(
                    "{} blocked the event loop for {:.1} s without using CPU (over --worker-timeout {}): \
                     a blocking call or a lock on the loop",
                    name(task),
                    held.as_secs_f64(),
                    show_limit(limit)
                ),
            },
            Action::Hung { held } => KillReason::Blocked { held },
        }
    }
}
