//! One worker process from spawn to exit (an incarnation of its slot): the
//! state of its life, what it last told us, and the checks on it — hung,
//! overdue, what holds its loop. The fleet owns the incarnations and decides
//! what happens to them.

use std::time::{Duration, Instant};

use multiloop_protocol::{Heartbeat, Usage};

use super::events::{Sample, WorkerId};
use super::fleet::FleetConfig;
use super::reasons::{CloseReason, KillReason};
use super::status::WorkerState;
use crate::loop_watch::{LoopState, LoopWatch};

/// What a live worker last told us, and when. Heartbeats land here and
/// the hung-worker check reads only this.
#[derive(Debug, Clone)]
pub(super) struct Liveness {
    pub last_heard: Instant,
    pub heartbeat: Heartbeat,
}

impl Liveness {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            last_heard: now,
            heartbeat: Heartbeat::default(),
        }
    }
}

/// Where an incarnation is in its life; each state carries what it needs,
/// so that "killed but still probing" or "closing without a deadline"
/// cannot be written down.
#[derive(Debug, Clone)]
pub(super) enum Life {
    /// Spawn requested; no handshake yet.
    Starting {
        live: Liveness,
    },
    Running {
        live: Liveness,
    },
    /// Still working, while its replacement starts; then it is closed.
    Replacing {
        live: Liveness,
        reason: CloseReason,
    },
    /// Input closed: finishing what it has, then exiting.
    Closing {
        live: Liveness,
        since: Instant,
        reason: CloseReason,
    },
    /// Sent SIGKILL; its exit is awaited.
    Killed {
        reason: KillReason,
        last: Heartbeat,
    },
}

impl Life {
    pub(super) fn live(&self) -> Option<&Liveness> {
        match self {
            Life::Starting { live }
            | Life::Running { live }
            | Life::Replacing { live, .. }
            | Life::Closing { live, .. } => Some(live),
            Life::Killed { .. } => None,
        }
    }

    pub(super) fn live_mut(&mut self) -> Option<&mut Liveness> {
        match self {
            Life::Starting { live }
            | Life::Running { live }
            | Life::Replacing { live, .. }
            | Life::Closing { live, .. } => Some(live),
            Life::Killed { .. } => None,
        }
    }

    pub(super) fn heartbeat(&self) -> &Heartbeat {
        match self {
            Life::Killed { last, .. } => last,
            other => &other.live().expect("alive").heartbeat,
        }
    }

    /// Turns a live state into `Closing` (a no-op for closing or killed).
    pub(super) fn close(&mut self, now: Instant, reason: CloseReason) -> bool {
        let live = match self {
            Life::Starting { live } | Life::Running { live } | Life::Replacing { live, .. } => {
                live.clone()
            }
            Life::Closing { .. } | Life::Killed { .. } => return false,
        };
        *self = Life::Closing {
            live,
            since: now,
            reason,
        };
        true
    }
}

/// One worker process, from spawn to exit.
#[derive(Debug)]
pub(super) struct Incarnation {
    pub id: WorkerId,
    pub pid: Option<u32>,
    pub life: Life,
    pub started: Instant,
    pub usage: Option<Usage>,
    /// Tasks answered in this life.
    pub completed: u64,
    /// Recycle after this many tasks (`--max-tasks-per-worker`, jittered).
    pub recycle_after: Option<u64>,
    /// The last `/proc` sample.
    pub sample: Option<Sample>,
    /// What its event loop is doing, from its heartbeats.
    pub watch: LoopWatch,
}

impl Incarnation {
    pub(super) fn new(
        id: WorkerId,
        now: Instant,
        recycle_after: Option<u64>,
        heartbeat: Duration,
    ) -> Self {
        Self {
            id,
            pid: None,
            life: Life::Starting {
                live: Liveness::new(now),
            },
            started: now,
            usage: None,
            completed: 0,
            recycle_after,
            sample: None,
            watch: LoopWatch::new(heartbeat),
        }
    }

    pub(super) fn heard(&mut self, now: Instant) {
        if let Some(live) = self.life.live_mut() {
            live.last_heard = now;
        }
    }

    /// Can be sent new tasks.
    pub(super) fn accepts_tasks(&self) -> bool {
        matches!(self.life, Life::Running { .. } | Life::Replacing { .. })
    }

    /// The hung-worker check: whether this incarnation must be killed now.
    pub(super) fn overdue(&self, now: Instant, config: &FleetConfig) -> Option<KillReason> {
        let live = self.life.live()?;
        if let Life::Closing { since, .. } = self.life {
            if now.saturating_duration_since(since) >= config.grace {
                return Some(KillReason::Overdue);
            }
        }
        let silent = now.saturating_duration_since(live.last_heard);
        if silent < config.worker_timeout {
            return None;
        }
        Some(match self.life {
            Life::Starting { .. } => KillReason::NoHandshake { waited: silent },
            _ => KillReason::Hung {
                silent,
                lag: Duration::from_micros(live.heartbeat.lag_us),
            },
        })
    }

    /// When [`Self::overdue`] may next say yes.
    pub(super) fn deadline(&self, config: &FleetConfig) -> Option<Instant> {
        let live = self.life.live()?;
        let silent = live.last_heard + config.worker_timeout;
        Some(match self.life {
            Life::Closing { since, .. } => silent.min(since + config.grace),
            _ => silent,
        })
    }

    /// CPU time so far: the final rusage when there is one, else the last
    /// heartbeat's.
    pub(super) fn cpu_us(&self) -> u64 {
        match self.usage {
            Some(usage) => usage.user_us + usage.system_us,
            None => self.life.heartbeat().cpu_us,
        }
    }

    pub(super) fn peak_rss(&self) -> u64 {
        let from_usage = self.usage.map_or(0, |u| u.max_rss_bytes);
        from_usage.max(self.life.heartbeat().rss_bytes)
    }

    /// What holds its loop, for people: `busy: seq 17 for 14.2 s`.
    pub(super) fn held(&self, now: Instant, seq: impl Fn(u64) -> Option<u64>) -> String {
        let name = |task: Option<u64>| match task {
            Some(id) => seq(id).map_or_else(|| format!("task id {id}"), |s| format!("seq {s}")),
            None => "outside any task".to_string(),
        };
        match self.watch.state(now) {
            LoopState::Turning => String::new(),
            LoopState::Busy { task, held, .. } => {
                format!("busy: {} for {:.1} s", name(task), held.as_secs_f64())
            }
            LoopState::Stuck { task, held } => {
                format!("stuck: {} for {:.1} s", name(task), held.as_secs_f64())
            }
            LoopState::Silent { for_ } => format!("silent for {:.1} s", for_.as_secs_f64()),
        }
    }

    pub(super) fn state(&self, probing: bool) -> WorkerState {
        match self.life {
            Life::Killed { .. } => WorkerState::Killing,
            Life::Starting { .. } => WorkerState::Starting,
            Life::Running { .. } if probing => WorkerState::Probing,
            Life::Running { .. } => WorkerState::Running,
            Life::Replacing { .. } | Life::Closing { .. } => WorkerState::Draining,
        }
    }
}
