//! One worker process from spawn to exit (an incarnation of its slot): the
//! state of its life, what it last told us, and the checks on it — hung,
//! overdue, what holds its loop. It is the one owner of its [`Life`]: the
//! fleet asks for transitions (hello, replace, close, kill, exit) and this
//! module alone decides which are allowed from which state.

use std::time::{Duration, Instant};

use multiloop_protocol::{Heartbeat, Usage};

use super::events::{Pid, Sample, WorkerId};
use super::loop_watch::{judge, Action, Limits, LoopState, LoopWatch};
use super::reasons::{CloseReason, KillReason};
use super::status::WorkerState;

/// The limits a worker's life is judged against, and the heartbeat
/// interval its loop watch reads against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifeLimits {
    /// `--worker-timeout`: the longest a worker may stay silent or stuck.
    pub worker_timeout: Duration,
    /// `--task-timeout`: also the longest a task may compute on a loop.
    pub task_timeout: Option<Duration>,
    /// Interval of worker heartbeats.
    pub heartbeat: Duration,
    /// `--grace`: how long a worker told to finish may take.
    pub grace: Duration,
}

impl LifeLimits {
    fn loop_limits(&self) -> Limits {
        Limits {
            task_timeout: self.task_timeout,
            worker_timeout: self.worker_timeout,
        }
    }
}

/// What a live worker last told us, and when. Heartbeats land here and
/// the hung-worker check reads only this.
#[derive(Debug, Clone)]
struct Liveness {
    last_heard: Instant,
    heartbeat: Heartbeat,
}

impl Liveness {
    fn new(now: Instant) -> Self {
        Self {
            last_heard: now,
            heartbeat: Heartbeat::default(),
        }
    }
}

/// Where an incarnation is in its life; each state carries what it needs,
/// so that "killed but still probing" or "closing without a deadline"
/// cannot be written down. Only this module changes it.
#[derive(Debug, Clone)]
enum Life {
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
    fn live(&self) -> Option<&Liveness> {
        match self {
            Life::Starting { live }
            | Life::Running { live }
            | Life::Replacing { live, .. }
            | Life::Closing { live, .. } => Some(live),
            Life::Killed { .. } => None,
        }
    }

    fn live_mut(&mut self) -> Option<&mut Liveness> {
        match self {
            Life::Starting { live }
            | Life::Running { live }
            | Life::Replacing { live, .. }
            | Life::Closing { live, .. } => Some(live),
            Life::Killed { .. } => None,
        }
    }

    fn heartbeat(&self) -> &Heartbeat {
        match self {
            Life::Killed { last, .. } => last,
            other => &other.live().expect("alive").heartbeat,
        }
    }
}

/// How an incarnation's life ended, as far as it knows: what it was
/// doing when its process exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ending {
    /// Told to finish (why), it exited without being killed.
    pub closing: Option<CloseReason>,
    /// It never completed its handshake.
    pub starting: bool,
    pub killed: Option<KillReason>,
}

/// One worker process, from spawn to exit.
#[derive(Debug)]
pub(super) struct Incarnation {
    id: WorkerId,
    pid: Option<u32>,
    life: Life,
    started: Instant,
    usage: Option<Usage>,
    /// Tasks answered in this life.
    completed: u64,
    /// Tasks sent to it in this life (probes aside).
    sent: u64,
    /// Recycle after this many tasks (`--max-tasks-per-worker`, jittered).
    recycle_after: Option<u64>,
    /// The last `/proc` sample.
    sample: Option<Sample>,
    /// What its event loop is doing, from its heartbeats.
    watch: LoopWatch,
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
            sent: 0,
            recycle_after,
            sample: None,
            watch: LoopWatch::new(heartbeat),
        }
    }

    // ----- what it is ---------------------------------------------------

    pub(super) fn id(&self) -> WorkerId {
        self.id
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// No handshake yet.
    pub(super) fn is_starting(&self) -> bool {
        matches!(self.life, Life::Starting { .. })
    }

    /// Up, and not on its way out.
    pub(super) fn is_running(&self) -> bool {
        matches!(self.life, Life::Running { .. })
    }

    /// Can be sent new tasks.
    pub(super) fn accepts_tasks(&self) -> bool {
        matches!(self.life, Life::Running { .. } | Life::Replacing { .. })
    }

    /// Tasks answered in this life.
    pub(super) fn completed(&self) -> u64 {
        self.completed
    }

    // ----- what happens to it -------------------------------------------

    fn heard(&mut self, now: Instant) {
        if let Some(live) = self.life.live_mut() {
            live.last_heard = now;
        }
    }

    /// Its process started as `pid`.
    pub(super) fn spawned(&mut self, pid: u32, now: Instant) {
        self.pid = Some(pid);
        self.heard(now);
    }

    /// Its handshake came: a starting worker is now running.
    pub(super) fn hello(&mut self, now: Instant) {
        self.heard(now);
        if let Life::Starting { live } = &self.life {
            self.life = Life::Running { live: live.clone() };
        }
        tracing::debug!("worker {} ({}) is up", self.id.index, Pid(self.pid));
    }

    /// A heartbeat: remembered, then the watchdog's report in it judged.
    /// A killed worker's late heartbeats change nothing about it.
    pub(super) fn heartbeat(
        &mut self,
        heartbeat: Heartbeat,
        now: Instant,
        limits: &LifeLimits,
    ) -> Option<Action> {
        let live = self.life.live_mut()?;
        live.last_heard = now;
        live.heartbeat = heartbeat;
        self.watch.heartbeat(&heartbeat, now);
        judge(self.watch.state(now), limits.loop_limits())
    }

    /// `answered` results came in; true when a running incarnation reached
    /// its `--max-tasks-per-worker`.
    pub(super) fn answered(&mut self, answered: u64, now: Instant) -> bool {
        self.heard(now);
        self.completed += answered;
        self.is_running() && self.recycle_after.is_some_and(|n| self.completed >= n)
    }

    /// How many more tasks it may be sent before `--max-tasks-per-worker`
    /// retires it (None: no limit). A worker is never sent more than its
    /// count, so one slow to be replaced cannot keep serving past it.
    pub(super) fn budget(&self) -> Option<u64> {
        self.recycle_after.map(|n| n.saturating_sub(self.sent))
    }

    /// `count` tasks were sent to it; true when a running incarnation has
    /// now been sent its `--max-tasks-per-worker`.
    pub(super) fn sent(&mut self, count: u64) -> bool {
        self.sent += count;
        self.is_running() && self.budget() == Some(0)
    }

    /// Its final frame, with its rusage.
    pub(super) fn bye(&mut self, usage: Usage, now: Instant) {
        self.usage = Some(usage);
        self.heard(now);
    }

    pub(super) fn sampled(&mut self, sample: Sample) {
        self.sample = Some(sample);
    }

    /// The engine could not read for `pause`: nobody is late for that.
    pub(super) fn paused(&mut self, pause: Duration) {
        if let Some(live) = self.life.live_mut() {
            live.last_heard += pause;
        }
    }

    /// Its replacement is starting: a starting or running worker keeps
    /// working until the replacement is up. One already on its way out
    /// stays as it is.
    pub(super) fn replace(&mut self, reason: CloseReason) {
        if let Life::Starting { live } | Life::Running { live } = &self.life {
            self.life = Life::Replacing {
                live: live.clone(),
                reason,
            };
        }
    }

    /// Its replacement is up: one being replaced is told to close now.
    /// True if it must be told.
    pub(super) fn replaced(&mut self, now: Instant) -> bool {
        match self.life {
            Life::Replacing { reason, .. } => self.close(now, reason),
            _ => false,
        }
    }

    /// Tells a live worker to finish and exit (a no-op for one closing or
    /// killed already); true if it must be told.
    pub(super) fn close(&mut self, now: Instant, reason: CloseReason) -> bool {
        let live = match &self.life {
            Life::Starting { live } | Life::Running { live } | Life::Replacing { live, .. } => {
                live.clone()
            }
            Life::Closing { .. } | Life::Killed { .. } => return false,
        };
        self.life = Life::Closing {
            live,
            since: now,
            reason,
        };
        true
    }

    /// Marks it killed; true when a SIGKILL must be sent. A shutdown kill
    /// overrides an earlier reason (the exit is then not a crash).
    pub(super) fn kill(&mut self, reason: KillReason) -> bool {
        if matches!(self.life, Life::Killed { .. }) && reason != KillReason::Shutdown {
            return false;
        }
        let last = *self.life.heartbeat();
        self.life = Life::Killed { reason, last };
        true
    }

    /// Its process exited: how its life ended.
    pub(super) fn ending(&self) -> Ending {
        let (closing, killed) = match &self.life {
            Life::Closing { reason, .. } => (Some(*reason), None),
            Life::Killed { reason, .. } => (None, Some(reason.clone())),
            _ => (None, None),
        };
        Ending {
            closing,
            starting: self.is_starting(),
            killed,
        }
    }

    // ----- checks -------------------------------------------------------

    /// The hung-worker check: whether this incarnation must be killed now.
    pub(super) fn overdue(&self, now: Instant, limits: &LifeLimits) -> Option<KillReason> {
        let live = self.life.live()?;
        if let Life::Closing { since, .. } = self.life {
            if now.saturating_duration_since(since) >= limits.grace {
                return Some(KillReason::Overdue);
            }
        }
        let silent = now.saturating_duration_since(live.last_heard);
        if silent < limits.worker_timeout {
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
    pub(super) fn deadline(&self, limits: &LifeLimits) -> Option<Instant> {
        let live = self.life.live()?;
        let silent = live.last_heard + limits.worker_timeout;
        Some(match self.life {
            Life::Closing { since, .. } => silent.min(since + limits.grace),
            _ => silent,
        })
    }

    // ----- views --------------------------------------------------------

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

    /// Resident memory now: the last sample's, else the last heartbeat's.
    pub(super) fn rss_bytes(&self) -> u64 {
        self.sample
            .map_or(self.life.heartbeat().rss_bytes, |s| s.rss_bytes)
    }

    pub(super) fn cpu_percent(&self) -> f64 {
        self.sample.map_or(0.0, |s| s.cpu_percent)
    }

    pub(super) fn lag_us(&self) -> u64 {
        self.life.heartbeat().lag_us
    }

    pub(super) fn blocked_share(&self, now: Instant) -> f64 {
        self.watch.blocked_share(now)
    }

    pub(super) fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
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
