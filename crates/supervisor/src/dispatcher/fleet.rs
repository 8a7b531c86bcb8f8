//! The worker slots and their incarnations, as the dispatcher tracks them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use multiloop_protocol::{Heartbeat, Usage};

use super::events::WorkerId;
use crate::loop_watch::{show_limit, Action, LoopWatch};
use crate::record::TaskEntry;

/// Tasks by id. Ids are dense, unique counters, so they are their own hash:
/// SipHash was a visible share of the dispatcher's time per task.
pub type TaskMap = HashMap<u64, TaskEntry, BuildHasherDefault<IdHasher>>;

/// A hasher for `u64` ids that are already well spread.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // hashbrown takes its control bits from the top 7 bits: spread the
        // low bits of a counter there too.
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Why a worker was told to finish its tasks and exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The run is over.
    Finished,
    /// `--max-tasks-per-worker` or `--max-worker-rss`.
    Recycled(String),
    /// Rolling restart (SIGHUP or `ctl restart`).
    Restart,
    /// The fleet shrank (SIGTTOU or `ctl scale`).
    Retired,
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
    /// An operator asked (`ctl kill`): handled like a kill from outside.
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
    /// The reason for killing a worker whose loop the watchdog reported.
    pub fn of_loop(action: Action, in_flight: &TaskMap) -> Self {
        let name = |task: u64| match in_flight.get(&task) {
            Some(entry) => format!("seq {}", entry.seq),
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

    /// The task the watchdog named, if it named one.
    pub fn named_task(&self) -> Option<u64> {
        match self {
            KillReason::TaskTimeout { task, .. } | KillReason::Stuck { task, .. } => Some(*task),
            _ => None,
        }
    }
}

/// Where an incarnation is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Life {
    /// Spawn requested; no handshake yet.
    Starting,
    Running,
    /// Still working, while its replacement starts; then it is closed.
    Replacing(CloseReason),
    /// Input closed: finishing what it has, then exiting.
    Closing {
        since: Instant,
        reason: CloseReason,
    },
}

/// One worker process, from spawn to exit.
#[derive(Debug)]
pub struct Incarnation {
    pub id: WorkerId,
    pub pid: Option<u32>,
    pub life: Life,
    pub in_flight: TaskMap,
    /// Running a suspect group alone.
    pub probe: bool,
    pub started: Instant,
    pub last_heard: Instant,
    pub heartbeat: Heartbeat,
    pub usage: Option<Usage>,
    /// Tasks answered in this life.
    pub completed: u64,
    /// Recycle after this many tasks (`--max-tasks-per-worker`, jittered).
    pub recycle_after: Option<u64>,
    pub killed: Option<KillReason>,
    /// The last `/proc` sample.
    pub sample: Option<super::events::Sample>,
    /// What its event loop is doing, from its heartbeats.
    pub watch: LoopWatch,
}

impl Incarnation {
    pub fn new(
        id: WorkerId,
        now: Instant,
        recycle_after: Option<u64>,
        heartbeat: Duration,
    ) -> Self {
        Self {
            id,
            pid: None,
            life: Life::Starting,
            in_flight: TaskMap::default(),
            probe: false,
            started: now,
            last_heard: now,
            heartbeat: Heartbeat::default(),
            usage: None,
            completed: 0,
            recycle_after,
            killed: None,
            sample: None,
            watch: LoopWatch::new(heartbeat),
        }
    }

    /// Can be sent new tasks.
    pub fn accepts_tasks(&self) -> bool {
        self.killed.is_none() && matches!(self.life, Life::Running | Life::Replacing(_))
    }

    /// CPU time so far: the final rusage when there is one, else the last
    /// heartbeat's.
    pub fn cpu_us(&self) -> u64 {
        match self.usage {
            Some(usage) => usage.user_us + usage.system_us,
            None => self.heartbeat.cpu_us,
        }
    }

    pub fn peak_rss(&self) -> u64 {
        let from_usage = self.usage.map_or(0, |u| u.max_rss_bytes);
        from_usage.max(self.heartbeat.rss_bytes)
    }

    pub fn state_name(&self) -> &'static str {
        if self.killed.is_some() {
            return "killing";
        }
        match self.life {
            Life::Starting => "starting",
            Life::Running if self.probe => "probing",
            Life::Running => "running",
            Life::Replacing(_) | Life::Closing { .. } => "draining",
        }
    }
}

/// Totals of a slot over all its incarnations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotTotals {
    pub done: u64,
    pub failed: u64,
    pub restarts: u64,
    /// CPU time of incarnations that have exited.
    pub past_cpu_us: u64,
    pub peak_rss: u64,
    pub max_lag_us: u64,
}

/// A place in the fleet: worker `index`, whichever process fills it now.
#[derive(Debug)]
pub struct Slot {
    pub index: usize,
    pub generation: u64,
    pub current: Option<Incarnation>,
    /// When a replacement is due after a death.
    pub restart_at: Option<Instant>,
    /// Deaths in a row without completing a task, for the backoff.
    pub failures: u32,
    /// False once the fleet shrank below this slot.
    pub active: bool,
    pub totals: SlotTotals,
    pub last_pid: Option<u32>,
}

impl Slot {
    pub fn new(index: usize) -> Self {
        Self {
            index,
            generation: 0,
            current: None,
            restart_at: None,
            failures: 0,
            active: true,
            totals: SlotTotals::default(),
            last_pid: None,
        }
    }

    /// A new id for the next incarnation of this slot.
    pub fn next_id(&mut self) -> WorkerId {
        self.generation += 1;
        WorkerId {
            index: self.index,
            generation: self.generation,
        }
    }
}
