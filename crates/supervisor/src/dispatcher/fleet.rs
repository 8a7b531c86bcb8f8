//! The fleet: worker slots and the processes (incarnations, see
//! `incarnation.rs`) that fill them, and what happens to them — spawn,
//! handshake, heartbeats, the hung-worker check, kills, graceful
//! replacement, scaling, restart backoff and rolling restarts. Which tasks
//! a worker holds is the task book's business, not the fleet's.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use multiloop_protocol::{Heartbeat, Outcome, Usage};
use tracing::{info, warn};

use super::events::{Pid, Sample, WorkerId};
use super::incarnation::{Ending, Incarnation, LifeLimits};
use super::loop_watch::Action;
use super::policy::Backoff;
use super::reasons::{CloseReason, KillReason};
use super::status::{WorkerRow, WorkerState};

/// What a heartbeat calls for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum AfterBeat {
    Nothing,
    /// Over `--max-worker-rss` as its slot's running incarnation.
    Recycle,
    /// The watchdog's report says the worker must be killed.
    Kill(Action),
}

/// The fleet's own settings.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// What every incarnation's life is judged against.
    pub life: LifeLimits,
    pub backoff: Backoff,
    /// `--max-tasks-per-worker` (jittered per incarnation).
    pub max_tasks_per_worker: Option<u64>,
    /// `--max-worker-rss`, in bytes.
    pub max_worker_rss: Option<u64>,
}

/// What became of a task a slot's worker held, for the slot's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tally {
    /// Answered, ok.
    Ok,
    /// Answered with an error, or timed out on its worker's loop.
    Failed,
    /// Blamed for crashing its worker: failed, though never answered.
    Blamed,
}

impl Tally {
    pub(super) fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Ok(_) => Tally::Ok,
            Outcome::Err { .. } => Tally::Failed,
        }
    }
}

/// Totals of a slot over all its incarnations. The fleet is their only
/// writer; the run state counts records, not workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SlotTotals {
    /// Tasks its workers answered.
    done: u64,
    failed: u64,
    restarts: u64,
    /// CPU time of incarnations that have exited.
    past_cpu_us: u64,
    peak_rss: u64,
    max_lag_us: u64,
}

/// A place in the fleet: worker `index`, whichever process fills it now.
#[derive(Debug)]
struct Slot {
    index: usize,
    generation: u64,
    current: Option<Incarnation>,
    /// When a replacement is due after a death.
    restart_at: Option<Instant>,
    /// Deaths in a row without the current incarnation completing a task,
    /// for the backoff.
    failures: u32,
    /// False once the fleet shrank below this slot.
    active: bool,
    totals: SlotTotals,
    last_pid: Option<u32>,
}

impl Slot {
    fn new(index: usize) -> Self {
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
}

/// What the fleet knows about a worker that just exited.
#[derive(Debug)]
pub(super) struct Ended {
    pub pid: Pid,
    /// It was its slot's current incarnation (not one being replaced).
    pub was_current: bool,
    /// What its life was when it ended.
    pub ending: Ending,
    /// A rolling restart's replacement that never came up.
    pub failed_rolling: bool,
}

/// How a worker can take tasks right now, for dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taker {
    /// Starting: counts for fair shares, takes nothing yet.
    Soon,
    /// Takes tasks; `current` says whether it is its slot's current one.
    Now { current: bool },
}

/// All worker slots and their incarnations.
#[derive(Debug)]
pub(super) struct Fleet {
    config: FleetConfig,
    slots: Vec<Slot>,
    /// Incarnations whose slot has a newer one: recycled, restarted, retired.
    retiring: Vec<Incarnation>,
    /// Slots still to be restarted by a rolling restart, in order.
    rolling: VecDeque<usize>,
    next_fill: usize,
    /// Some worker has completed its handshake in this run.
    any_hello: bool,
}

impl Fleet {
    pub fn new(workers: usize, config: FleetConfig) -> Self {
        Self {
            config,
            slots: (0..workers.max(1)).map(Slot::new).collect(),
            retiring: Vec::new(),
            rolling: VecDeque::new(),
            next_fill: 0,
            any_hello: false,
        }
    }

    // ----- lookups ------------------------------------------------------

    fn get(&self, id: WorkerId) -> Option<&Incarnation> {
        let slot = self.slots.get(id.index)?;
        match &slot.current {
            Some(inc) if inc.id() == id => Some(inc),
            _ => self.retiring.iter().find(|inc| inc.id() == id),
        }
    }

    fn get_mut(&mut self, id: WorkerId) -> Option<&mut Incarnation> {
        let slot = self.slots.get_mut(id.index)?;
        match &mut slot.current {
            Some(inc) if inc.id() == id => Some(inc),
            _ => self.retiring.iter_mut().find(|inc| inc.id() == id),
        }
    }

    fn incarnations(&self) -> impl Iterator<Item = &Incarnation> {
        self.slots
            .iter()
            .filter_map(|s| s.current.as_ref())
            .chain(self.retiring.iter())
    }

    fn incarnations_mut(&mut self) -> impl Iterator<Item = &mut Incarnation> {
        self.slots
            .iter_mut()
            .filter_map(|s| s.current.as_mut())
            .chain(self.retiring.iter_mut())
    }

    pub fn knows(&self, id: WorkerId) -> bool {
        self.get(id).is_some()
    }

    pub fn pid(&self, id: WorkerId) -> Pid {
        Pid(self.get(id).and_then(Incarnation::pid))
    }

    /// Slots, including retired ones.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Slots the fleet wants filled: its size.
    pub fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.active).count()
    }

    pub fn is_active(&self, index: usize) -> bool {
        self.slots.get(index).is_some_and(|s| s.active)
    }

    pub fn current(&self, index: usize) -> Option<WorkerId> {
        self.slots.get(index)?.current.as_ref().map(Incarnation::id)
    }

    pub fn is_current(&self, id: WorkerId) -> bool {
        self.current(id.index) == Some(id)
    }

    pub fn any_hello(&self) -> bool {
        self.any_hello
    }

    /// No worker process is left.
    pub fn is_empty(&self) -> bool {
        self.incarnations().next().is_none()
    }

    pub fn all_ids(&self) -> Vec<WorkerId> {
        self.incarnations().map(Incarnation::id).collect()
    }

    /// Worker ids and pids of the live processes, for sampling.
    pub fn live_workers(&self) -> Vec<(WorkerId, u32)> {
        self.incarnations()
            .filter_map(|inc| inc.pid().map(|pid| (inc.id(), pid)))
            .collect()
    }

    pub fn alive(&self) -> u64 {
        self.incarnations()
            .filter(|inc| inc.pid().is_some())
            .count() as u64
    }

    /// Counts what became of one task a worker of slot `index` held.
    pub fn record(&mut self, index: usize, tally: Tally) {
        let totals = &mut self.slots[index].totals;
        match tally {
            Tally::Ok => totals.done += 1,
            Tally::Failed => {
                totals.done += 1;
                totals.failed += 1;
            }
            Tally::Blamed => totals.failed += 1,
        }
    }

    /// Restarts scheduled in this run, over all slots.
    pub fn restarts(&self) -> u64 {
        self.slots.iter().map(|s| s.totals.restarts).sum()
    }

    /// Whether any slot ever completed a task.
    pub fn any_done(&self) -> bool {
        self.slots.iter().any(|s| s.totals.done > 0)
    }

    // ----- lives --------------------------------------------------------

    /// Starts a new incarnation in slot `index`.
    pub fn spawn(&mut self, index: usize, now: Instant) -> WorkerId {
        let slot = &mut self.slots[index];
        slot.generation += 1;
        let id = WorkerId {
            index,
            generation: slot.generation,
        };
        let recycle_after = self
            .config
            .max_tasks_per_worker
            .map(|n| jitter(n, index, slot.generation));
        slot.restart_at = None;
        slot.current = Some(Incarnation::new(
            id,
            now,
            recycle_after,
            self.config.life.heartbeat,
        ));
        id
    }

    pub fn spawned(&mut self, id: WorkerId, pid: u32, now: Instant) {
        if let Some(inc) = self.get_mut(id) {
            inc.spawned(pid, now);
        }
        if let Some(slot) = self.slots.get_mut(id.index) {
            slot.last_pid = Some(pid);
        }
    }

    /// The spawn of `id` failed; true if it was ours.
    pub fn spawn_failed(&mut self, id: WorkerId) -> bool {
        if !self.is_current(id) {
            return false;
        }
        self.slots[id.index].current = None;
        true
    }

    /// A handshake: the worker is up. Returns the incarnations it replaces
    /// (now told to close), or None for an unknown worker.
    pub fn hello(&mut self, id: WorkerId, now: Instant) -> Option<Vec<WorkerId>> {
        self.get_mut(id)?.hello(now);
        self.any_hello = true;
        // The replacement is up: the incarnation it replaces may go now.
        let closed = self
            .retiring
            .iter_mut()
            .filter(|old| old.id().index == id.index)
            .filter_map(|old| old.replaced(now).then(|| old.id()))
            .collect();
        Some(closed)
    }

    /// A heartbeat: what it calls for. The watchdog's report in it is
    /// judged first — busy past `--task-timeout`, or stuck past
    /// `--worker-timeout` — then `--max-worker-rss`. Silence is judged by
    /// [`Self::overdue`].
    pub fn heartbeat(&mut self, id: WorkerId, heartbeat: Heartbeat, now: Instant) -> AfterBeat {
        let max_rss = self.config.max_worker_rss;
        let limits = self.config.life;
        let current = self.is_current(id);
        let Some(inc) = self.get_mut(id) else {
            return AfterBeat::Nothing;
        };
        let running = inc.is_running();
        let action = inc.heartbeat(heartbeat, now, &limits);
        let totals = &mut self.slots[id.index].totals;
        totals.peak_rss = totals.peak_rss.max(heartbeat.rss_bytes);
        totals.max_lag_us = totals.max_lag_us.max(heartbeat.max_lag_us);
        if let Some(action) = action {
            return AfterBeat::Kill(action);
        }
        match max_rss {
            Some(limit) if running && current && heartbeat.rss_bytes > limit => {
                info!(
                    "worker {} uses {} MiB, over --max-worker-rss ({} MiB): recycling it",
                    id.index,
                    heartbeat.rss_bytes >> 20,
                    limit >> 20
                );
                AfterBeat::Recycle
            }
            _ => AfterBeat::Nothing,
        }
    }

    /// `answered` results came in. Returns whether the worker is due for
    /// recycling by task count, or None for an unknown worker.
    pub fn answered(&mut self, id: WorkerId, answered: u64, now: Instant) -> Option<bool> {
        let current = self.is_current(id);
        let inc = self.get_mut(id)?;
        let due = inc.answered(answered, now) && current;
        if due {
            info!(
                "worker {} answered {} tasks: recycling it",
                id.index,
                inc.completed()
            );
        }
        // Only the slot's current incarnation resets its backoff: an old
        // one still finishing tasks says nothing about whether the new
        // one can come up.
        if current && answered > 0 {
            self.slots[id.index].failures = 0;
        }
        Some(due)
    }

    /// How many more tasks `id` may be sent before its recycling (None: no
    /// limit).
    pub fn budget(&self, id: WorkerId) -> Option<u64> {
        self.get(id).and_then(Incarnation::budget)
    }

    /// `count` tasks went to `id`. Returns whether that was the last of its
    /// `--max-tasks-per-worker`: it is due for recycling now, so its
    /// replacement starts while it finishes them.
    pub fn sent(&mut self, id: WorkerId, count: u64) -> bool {
        let current = self.is_current(id);
        let Some(inc) = self.get_mut(id) else {
            return false;
        };
        let due = inc.sent(count) && current;
        if due {
            info!(
                "worker {} was sent its last task before --max-tasks-per-worker: recycling it",
                id.index
            );
        }
        due
    }

    pub fn bye(&mut self, id: WorkerId, usage: Usage, now: Instant) {
        if let Some(inc) = self.get_mut(id) {
            inc.bye(usage, now);
        }
    }

    pub fn sampled(&mut self, samples: &[(WorkerId, Sample)]) {
        for &(id, sample) in samples {
            if let Some(inc) = self.get_mut(id) {
                inc.sampled(sample);
            }
            if let Some(slot) = self.slots.get_mut(id.index) {
                slot.totals.peak_rss = slot.totals.peak_rss.max(sample.rss_bytes);
            }
        }
    }

    /// The engine itself was blocked (a stalled output): nobody could have
    /// read a heartbeat, so nobody is late for that.
    pub fn paused(&mut self, pause: Duration) {
        for inc in self.incarnations_mut() {
            inc.paused(pause);
        }
    }

    /// Marks `id` killed; true when a SIGKILL must be sent. A shutdown
    /// kill overrides an earlier reason (the exit is then not a crash).
    pub fn kill(&mut self, id: WorkerId, reason: KillReason) -> bool {
        self.get_mut(id).is_some_and(|inc| inc.kill(reason))
    }

    /// The process of `id` exited: it leaves the fleet.
    pub fn exited(&mut self, id: WorkerId) -> Option<Ended> {
        let was_current = self.is_current(id);
        let inc = if was_current {
            self.slots[id.index].current.take()?
        } else {
            let position = self.retiring.iter().position(|inc| inc.id() == id)?;
            self.retiring.swap_remove(position)
        };
        let totals = &mut self.slots[id.index].totals;
        totals.past_cpu_us += inc.cpu_us();
        totals.peak_rss = totals.peak_rss.max(inc.peak_rss());
        let ending = inc.ending();
        let failed_rolling = ending.starting
            && was_current
            && self.rolling.front() == Some(&id.index)
            && self.retiring.iter().any(|old| old.id().index == id.index);
        Some(Ended {
            pid: Pid(inc.pid()),
            was_current,
            ending,
            failed_rolling,
        })
    }

    /// Schedules the replacement of slot `index` after a death. A probe's
    /// crash restarts at once, so that blame is settled quickly; an
    /// operator's kill is no failure of the slot.
    pub fn schedule_restart(&mut self, index: usize, at_once: bool, counts: bool, now: Instant) {
        let slot = &mut self.slots[index];
        if !slot.active {
            return;
        }
        if counts {
            slot.failures += 1;
        }
        let delay = if at_once {
            self.config.backoff.min
        } else {
            self.config.backoff.delay(slot.failures.max(1))
        };
        slot.restart_at = Some(now + delay);
        slot.totals.restarts += 1;
    }

    pub fn cancel_restarts(&mut self) {
        for slot in &mut self.slots {
            slot.restart_at = None;
        }
    }

    /// Spawns the replacements whose backoff ran out.
    pub fn due_restarts(&mut self, now: Instant, accepting: bool) -> Vec<WorkerId> {
        let mut spawned = Vec::new();
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.restart_at.is_some_and(|at| at <= now) && slot.current.is_none() {
                if accepting && slot.active {
                    spawned.push(self.spawn(index, now));
                } else {
                    self.slots[index].restart_at = None;
                }
            }
        }
        spawned
    }

    /// Workers to kill now: silent past `--worker-timeout`, or closing
    /// past `--grace`.
    pub fn overdue(&self, now: Instant) -> Vec<(WorkerId, KillReason)> {
        let mut kills = Vec::new();
        for inc in self.incarnations() {
            if let Some(reason) = inc.overdue(now, &self.config.life) {
                if reason != KillReason::Overdue {
                    warn!("worker {} ({}): {reason}", inc.id().index, Pid(inc.pid()));
                }
                kills.push((inc.id(), reason));
            }
        }
        kills
    }

    /// The earliest restart, silence or grace deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        let restarts = self.slots.iter().filter_map(|s| s.restart_at);
        let lives = self
            .incarnations()
            .filter_map(|inc| inc.deadline(&self.config.life));
        restarts.chain(lives).min()
    }

    /// Replaces a slot's worker gracefully: the replacement starts first;
    /// the old one keeps working until the new one is up, then drains.
    /// Returns the replacement.
    pub fn replace(&mut self, index: usize, reason: CloseReason, now: Instant) -> Option<WorkerId> {
        let slot = self.slots.get_mut(index)?;
        if !slot.active {
            return None;
        }
        match slot.current.take() {
            Some(mut old) => {
                // One already on its way out stays so: a new one simply
                // takes over.
                old.replace(reason);
                self.retiring.push(old);
            }
            None if slot.restart_at.is_some() => return None, // A restart is already due.
            None => {}
        }
        Some(self.spawn(index, now))
    }

    /// Grows or shrinks the fleet to `target` workers (at least one).
    /// Returns (spawned, told to close).
    pub fn scale(&mut self, target: usize, now: Instant) -> (Vec<WorkerId>, Vec<WorkerId>) {
        let target = target.max(1);
        let (mut spawned, mut closed) = (Vec::new(), Vec::new());
        while self.active() < target {
            let index = match self.slots.iter().position(|s| !s.active) {
                Some(index) => index,
                None => {
                    self.slots.push(Slot::new(self.slots.len()));
                    self.slots.len() - 1
                }
            };
            self.slots[index].active = true;
            info!("adding worker {index}");
            spawned.push(self.spawn(index, now));
        }
        while self.active() > target {
            let index = self
                .slots
                .iter()
                .rposition(|s| s.active)
                .expect("an active slot");
            info!("retiring worker {index}");
            self.rolling.retain(|&i| i != index);
            let slot = &mut self.slots[index];
            slot.active = false;
            slot.restart_at = None;
            if let Some(mut inc) = slot.current.take() {
                if inc.close(now, CloseReason::Retired) {
                    closed.push(inc.id());
                }
                self.retiring.push(inc);
            }
        }
        (spawned, closed)
    }

    /// Tells every live worker to finish and exit; returns them.
    pub fn close_all(&mut self, now: Instant) -> Vec<WorkerId> {
        self.cancel_restarts();
        self.rolling.clear();
        let mut closed = Vec::new();
        for inc in self.incarnations_mut() {
            if inc.close(now, CloseReason::Finished) {
                closed.push(inc.id());
            }
        }
        closed
    }

    // ----- rolling restart ----------------------------------------------

    /// Starts a rolling restart of every active slot; returns the first
    /// slot to replace, or None if one is under way or nothing to do.
    pub fn start_rolling(&mut self) -> Option<usize> {
        if !self.rolling.is_empty() {
            return None;
        }
        self.rolling = (0..self.slots.len())
            .filter(|&i| self.slots[i].active)
            .collect();
        info!("rolling restart of {} workers", self.rolling.len());
        self.rolling.front().copied()
    }

    /// Slot `index` came up again: the next slot to replace, if any.
    pub fn rolled(&mut self, index: usize) -> Option<usize> {
        if self.rolling.front() != Some(&index) {
            return None;
        }
        self.rolling.pop_front();
        self.rolling.front().copied()
    }

    pub fn stop_rolling(&mut self) {
        self.rolling.clear();
    }

    // ----- dispatch -----------------------------------------------------

    /// Workers in the order they are offered tasks: current ones from a
    /// rotating start, then the retiring ones still accepting.
    pub fn takers(&mut self) -> Vec<(WorkerId, Taker)> {
        let count = self.slots.len();
        let mut takers = Vec::with_capacity(count + self.retiring.len());
        for step in 0..count {
            let index = (self.next_fill + step) % count;
            if let Some(inc) = &self.slots[index].current {
                if inc.is_starting() {
                    takers.push((inc.id(), Taker::Soon));
                } else if inc.accepts_tasks() {
                    takers.push((inc.id(), Taker::Now { current: true }));
                }
            }
        }
        for inc in &self.retiring {
            if inc.accepts_tasks() {
                takers.push((inc.id(), Taker::Now { current: false }));
            }
        }
        self.next_fill = (self.next_fill + 1) % count.max(1);
        takers
    }

    /// The running current worker with the fewest tasks: the next probe.
    pub fn probe_candidate(&self, in_flight: impl Fn(WorkerId) -> usize) -> Option<WorkerId> {
        self.slots
            .iter()
            .filter_map(|s| s.current.as_ref())
            .filter(|inc| inc.is_running())
            .min_by_key(|inc| in_flight(inc.id()))
            .map(Incarnation::id)
    }

    // ----- views --------------------------------------------------------

    /// One row per worker slot, for status tables and the summary; `seq`
    /// gives the input line of a task a worker holds.
    pub fn rows(
        &self,
        now: Instant,
        in_flight: impl Fn(WorkerId) -> usize,
        seq: impl Fn(WorkerId, u64) -> Option<u64>,
        probe: Option<WorkerId>,
    ) -> Vec<WorkerRow> {
        self.slots
            .iter()
            .map(|slot| {
                let current = slot.current.as_ref();
                let retiring_cpu: u64 = self
                    .retiring
                    .iter()
                    .filter(|inc| inc.id().index == slot.index)
                    .map(Incarnation::cpu_us)
                    .sum();
                WorkerRow {
                    index: slot.index,
                    pid: current.and_then(Incarnation::pid).or(slot.last_pid),
                    state: match current {
                        Some(inc) => inc.state(probe == Some(inc.id())),
                        None if slot.restart_at.is_some() => WorkerState::Restarting,
                        None if !slot.active => WorkerState::Retired,
                        None => WorkerState::Exited,
                    },
                    in_flight: current.map_or(0, |c| in_flight(c.id())),
                    done: slot.totals.done,
                    failed: slot.totals.failed,
                    restarts: slot.totals.restarts,
                    cpu_percent: current.map_or(0.0, Incarnation::cpu_percent),
                    cpu_us: slot.totals.past_cpu_us
                        + retiring_cpu
                        + current.map_or(0, Incarnation::cpu_us),
                    rss_bytes: current.map_or(0, Incarnation::rss_bytes),
                    peak_rss_bytes: slot
                        .totals
                        .peak_rss
                        .max(current.map_or(0, Incarnation::peak_rss)),
                    lag_us: current.map_or(0, Incarnation::lag_us),
                    max_lag_us: slot.totals.max_lag_us,
                    held: current
                        .map_or_else(String::new, |c| c.held(now, |task| seq(c.id(), task))),
                    blocked_share: current.map_or(0.0, |c| c.blocked_share(now)),
                    uptime: current.map(|c| c.uptime(now)),
                }
            })
            .collect()
    }
}

/// `n` give or take 10 %, different per slot and incarnation, so workers
/// do not all recycle at the same moment.
fn jitter(n: u64, index: usize, generation: u64) -> u64 {
    let spread = n / 10;
    if spread == 0 {
        return n.max(1);
    }
    let mut x = (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ generation.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    (n - spread + x % (2 * spread + 1)).max(1)
}
