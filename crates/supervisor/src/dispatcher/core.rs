//! The dispatcher: owns every worker and task, decides everything, does no
//! I/O. The engine feeds it events and carries out the commands it returns.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use multiloop_protocol::{ErrorKind, Outcome};
use tracing::warn;

use super::blame::Blame;
use super::events::{Command, Event, WorkerId};
use super::fleet::{CloseReason, Incarnation, KillReason, Life, Slot};
use super::policy::{Backoff, RestartIntensity};
use super::status::RunOutcome;
use crate::record::{InputItem, Record, TaskEntry};
use crate::reorder::ReorderBuffer;

/// The dispatcher's settings.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub workers: usize,
    pub kind: String,
    /// Tasks a worker may hold unanswered (its credit window).
    pub window: usize,
    pub keep_order: bool,
    /// Most records held back by `--keep-order` before input pauses.
    pub reorder_limit: usize,
    pub worker_timeout: Duration,
    /// `--task-timeout`: also the longest a task may compute on a loop.
    pub task_timeout: Option<Duration>,
    /// Interval of worker heartbeats.
    pub heartbeat: Duration,
    pub grace: Duration,
    pub max_restarts: usize,
    pub restart_window: Duration,
    pub backoff: Backoff,
    pub max_crashes: u32,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub max_tasks_per_worker: Option<u64>,
    pub max_worker_rss: Option<u64>,
}

/// Where the run is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    Running,
    /// No new tasks (SIGINT/SIGTERM once, or the restart limit hit):
    /// in-flight ones may finish until the deadline. Why is in `stopped`.
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

/// Where an incarnation is kept.
#[derive(Debug, Clone, Copy)]
pub(super) enum Place {
    Current(usize),
    Retiring(usize),
}

/// Owns all worker and task state of a run.
#[derive(Debug)]
pub struct Dispatcher {
    pub(super) config: DispatchConfig,
    pub(super) slots: Vec<Slot>,
    /// Incarnations whose slot has a newer one: recycled, restarted, retired.
    pub(super) retiring: Vec<Incarnation>,
    /// Tasks ready to run, re-runs first.
    pub(super) queue: VecDeque<TaskEntry>,
    /// Retries waiting for their backoff, by due time.
    pub(super) retry_wait: BTreeMap<(Instant, u64), TaskEntry>,
    pub(super) blame: Blame,
    pub(super) intensity: RestartIntensity,
    pub(super) reorder: ReorderBuffer,
    pub(super) phase: Phase,
    pub(super) input_open: bool,
    /// Slots still to be restarted by a rolling restart, in order.
    pub(super) rolling: VecDeque<usize>,
    pub(super) next_fill: usize,
    pub(super) started: Instant,
    /// Tasks read (including rejected lines).
    pub(super) read: u64,
    pub(super) ok: u64,
    pub(super) failed: u64,
    pub(super) restarts: u64,
    pub(super) lines: Option<u64>,
    pub(super) fatal: Option<String>,
    /// Some worker has completed its handshake in this run.
    pub(super) any_hello: bool,
    /// Why the run stopped early, kept after the phase moves on.
    pub(super) stopped: Option<RunOutcome>,
    /// How each dead worker died, for the give-up message.
    pub(super) deaths: Vec<String>,
    pub(super) out: Vec<Command>,
    pub(super) records: Vec<Record>,
}

impl Dispatcher {
    pub fn new(config: DispatchConfig, now: Instant) -> Self {
        let slots = (0..config.workers.max(1)).map(Slot::new).collect();
        Self {
            blame: Blame::new(config.max_crashes),
            intensity: RestartIntensity::new(config.max_restarts, config.restart_window),
            slots,
            retiring: Vec::new(),
            queue: VecDeque::new(),
            retry_wait: BTreeMap::new(),
            reorder: ReorderBuffer::new(),
            phase: Phase::Running,
            input_open: true,
            rolling: VecDeque::new(),
            next_fill: 0,
            started: now,
            read: 0,
            ok: 0,
            failed: 0,
            restarts: 0,
            lines: None,
            fatal: None,
            stopped: None,
            any_hello: false,
            deaths: Vec::new(),
            out: Vec::new(),
            records: Vec::new(),
            config,
        }
    }

    /// Spawns the fleet.
    pub fn start(&mut self, now: Instant) -> Vec<Command> {
        for index in 0..self.slots.len() {
            self.spawn(index, now);
        }
        std::mem::take(&mut self.out)
    }

    /// Decides what an event means; returns what to do about it.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Command> {
        match event {
            Event::Input(items) => self.take_input(items),
            Event::InputEnded { lines } => {
                self.lines = Some(lines);
                self.input_open = false;
            }
            Event::InputFailed(error) => self.fail(error, now),
            Event::Spawned { worker, pid } => {
                if let Some(inc) = self.incarnation(worker) {
                    inc.pid = Some(pid);
                    inc.last_heard = now;
                }
                self.slots[worker.index].last_pid = Some(pid);
            }
            Event::SpawnFailed { worker, error } => self.spawn_failed(worker, error, now),
            Event::Hello { worker, hello } => self.hello(worker, hello.kinds, now),
            Event::Results { worker, results } => self.results(worker, results, now),
            Event::Heartbeat { worker, heartbeat } => self.heartbeat(worker, heartbeat, now),
            Event::Bye { worker, usage } => {
                if let Some(inc) = self.incarnation(worker) {
                    inc.usage = Some(usage);
                    inc.last_heard = now;
                }
            }
            Event::LinkFailed { worker, error } => self.link_failed(worker, error, now),
            Event::Exited { worker, status } => self.exited(worker, status, now),
            Event::Wake => {}
            Event::Paused(pause) => {
                // The engine itself was blocked (a stalled output): nobody
                // could have read a heartbeat, so nobody is late for that.
                for inc in self.incarnations_mut() {
                    inc.last_heard += pause;
                }
            }
            Event::Sampled(samples) => {
                for (worker, sample) in samples {
                    if let Some(inc) = self.incarnation(worker) {
                        inc.sample = Some(sample);
                    }
                    let slot = &mut self.slots[worker.index];
                    slot.totals.peak_rss = slot.totals.peak_rss.max(sample.rss_bytes);
                }
            }
            Event::Request(request) => self.request(request, now),
        }
        self.tick(now);
        std::mem::take(&mut self.out)
    }

    /// Whether the engine should hand over more input now. False keeps the
    /// input unread, which is what bounds memory however large it is.
    pub fn wants_input(&self) -> bool {
        let credit: usize = self.config.window * self.active_slots().max(1);
        self.input_open
            && self.phase == Phase::Running
            && self.queue.len() < credit
            && (!self.config.keep_order || self.reorder.held() < self.config.reorder_limit)
    }

    /// The earliest time at which [`Event::Wake`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut deadline: Option<Instant> = None;
        let mut consider = |at: Instant| deadline = Some(deadline.map_or(at, |d| d.min(at)));
        for slot in &self.slots {
            if let Some(at) = slot.restart_at {
                consider(at);
            }
        }
        for inc in self.incarnations() {
            if inc.killed.is_none() {
                consider(inc.last_heard + self.config.worker_timeout);
            }
            if let Life::Closing { since, .. } = inc.life {
                consider(since + self.config.grace);
            }
        }
        if let Some((&(at, _), _)) = self.retry_wait.first_key_value() {
            consider(at);
        }
        match &self.phase {
            Phase::Winding { deadline: at }
            | Phase::Finishing { deadline: at }
            | Phase::Stopping { deadline: at } => consider(*at),
            Phase::Running | Phase::Finished => {}
        }
        deadline
    }

    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    // ----- input --------------------------------------------------------

    pub(super) fn take_input(&mut self, items: Vec<InputItem>) {
        for item in items {
            self.read += 1;
            match item {
                InputItem::Task(task) => self.queue.push_back(task),
                InputItem::Rejected { id, seq, message } => self.emit(Record {
                    id,
                    seq,
                    key: None,
                    worker: None,
                    attempts: 0,
                    micros: 0,
                    outcome: Outcome::Err {
                        kind: ErrorKind::BadInput,
                        message,
                    },
                }),
            }
        }
    }

    // ----- run phases ---------------------------------------------------

    pub(super) fn accepting(&self) -> bool {
        self.phase == Phase::Running
    }

    pub(super) fn stop_input(&mut self) {
        if self.input_open {
            self.input_open = false;
            self.out.push(Command::StopInput);
        }
        // Tasks read but not started are simply not in the output: a
        // `--resume` runs them.
        self.queue.clear();
        self.retry_wait.clear();
        while self.blame.next_group().is_some() {}
        self.rolling.clear();
    }

    pub(super) fn give_up(&mut self, message: String, now: Instant) {
        if !self.accepting() {
            return;
        }
        warn!("{message}");
        self.stop_input();
        self.stopped = Some(RunOutcome::GaveUp(message));
        self.phase = Phase::Winding {
            deadline: now + self.config.grace,
        };
    }

    pub(super) fn fail(&mut self, error: String, now: Instant) {
        self.fatal = Some(error);
        self.stop_input();
        self.stop_now(now);
    }

    pub(super) fn stop_now(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Stopping { .. } | Phase::Finished) {
            return;
        }
        if self.fatal.is_some() || self.phase == Phase::Running {
            self.stop_input();
        }
        let ids: Vec<WorkerId> = self.incarnations().map(|inc| inc.id).collect();
        for id in ids {
            self.kill(id, KillReason::Shutdown);
        }
        for slot in &mut self.slots {
            slot.restart_at = None;
        }
        // Killed processes exit at once; the deadline only guards against
        // one stuck in the kernel (D state), which must not hang the run.
        self.phase = Phase::Stopping {
            deadline: now + Duration::from_secs(5),
        };
    }

    /// Runs after every event: timers, dispatch, completion.
    pub(super) fn tick(&mut self, now: Instant) {
        self.check_timers(now);
        self.fill();
        self.check_done(now);
        if !self.records.is_empty() {
            self.out
                .push(Command::Emit(std::mem::take(&mut self.records)));
        }
    }

    pub(super) fn check_timers(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            if self.slots[index].restart_at.is_some_and(|at| at <= now)
                && self.slots[index].current.is_none()
            {
                if self.accepting() && self.slots[index].active {
                    self.spawn(index, now);
                } else {
                    self.slots[index].restart_at = None;
                }
            }
        }
        let timeout = self.config.worker_timeout;
        let grace = self.config.grace;
        let mut kills = Vec::new();
        for inc in self.incarnations() {
            if inc.killed.is_some() {
                continue;
            }
            let silent = now.saturating_duration_since(inc.last_heard);
            if let Life::Closing { since, .. } = inc.life {
                if now.saturating_duration_since(since) >= grace {
                    kills.push((inc.id, KillReason::Overdue));
                    continue;
                }
            }
            if silent >= timeout {
                let reason = match inc.life {
                    Life::Starting => KillReason::NoHandshake { waited: silent },
                    _ => KillReason::Hung {
                        silent,
                        lag: Duration::from_micros(inc.heartbeat.lag_us),
                    },
                };
                warn!("worker {} (pid {:?}): {reason}", inc.id.index, inc.pid);
                kills.push((inc.id, reason));
            }
        }
        for (id, reason) in kills {
            self.kill(id, reason);
        }
        while let Some(entry) = self.retry_wait.first_entry() {
            if entry.key().0 > now {
                break;
            }
            self.queue.push_front(entry.remove());
        }
        let deadline = match &self.phase {
            Phase::Winding { deadline } | Phase::Finishing { deadline } => Some(*deadline),
            Phase::Stopping { deadline } => {
                if now >= *deadline {
                    self.finish();
                }
                None
            }
            _ => None,
        };
        if deadline.is_some_and(|d| now >= d) {
            self.stop_now(now);
        }
    }

    pub(super) fn check_done(&mut self, now: Instant) {
        let all_answered = !self.input_open
            && self.queue.is_empty()
            && self.retry_wait.is_empty()
            && self.blame.suspects() == 0
            && self.incarnations().all(|inc| inc.in_flight.is_empty());
        let draining = matches!(self.phase, Phase::Winding { .. });
        if all_answered && (self.phase == Phase::Running || draining) {
            if self.phase == Phase::Running {
                self.phase = Phase::Finishing {
                    deadline: now + self.config.grace,
                };
            }
            for slot in &mut self.slots {
                slot.restart_at = None;
            }
            self.rolling.clear();
            let mut close = Vec::new();
            for inc in self.incarnations_mut() {
                if !matches!(inc.life, Life::Closing { .. }) && inc.killed.is_none() {
                    inc.life = Life::Closing {
                        since: now,
                        reason: CloseReason::Finished,
                    };
                    close.push(inc.id);
                }
            }
            self.out.extend(
                close
                    .into_iter()
                    .map(|worker| Command::CloseInput { worker }),
            );
        }
        let nothing_alive = self.incarnations().next().is_none();
        if nothing_alive && self.phase != Phase::Running && self.phase != Phase::Finished {
            self.finish();
        }
    }

    /// Ends the run. Records that `--keep-order` still holds (behind tasks
    /// that a drain dropped) are written, in order, so finished work is
    /// never thrown away; the dropped tasks are left for `--resume`.
    pub(super) fn finish(&mut self) {
        self.reorder.drain_all(&mut self.records);
        self.phase = Phase::Finished;
        self.out.push(Command::Finish);
    }

    pub(super) fn emit(&mut self, record: Record) {
        if record.is_ok() {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        if self.config.keep_order {
            self.reorder.push(record, &mut self.records);
        } else {
            self.records.push(record);
        }
    }

    // ----- lookups ------------------------------------------------------

    pub(super) fn place(&self, worker: WorkerId) -> Option<Place> {
        let slot = self.slots.get(worker.index)?;
        if slot.current.as_ref().is_some_and(|inc| inc.id == worker) {
            return Some(Place::Current(worker.index));
        }
        self.retiring
            .iter()
            .position(|inc| inc.id == worker)
            .map(Place::Retiring)
    }

    pub(super) fn get(&self, place: Place) -> Option<&Incarnation> {
        match place {
            Place::Current(index) => self.slots[index].current.as_ref(),
            Place::Retiring(position) => self.retiring.get(position),
        }
    }

    pub(super) fn at(&mut self, place: Place) -> &mut Incarnation {
        match place {
            Place::Current(index) => self.slots[index].current.as_mut().expect("placed"),
            Place::Retiring(position) => &mut self.retiring[position],
        }
    }

    pub(super) fn incarnation(&mut self, worker: WorkerId) -> Option<&mut Incarnation> {
        let place = self.place(worker)?;
        Some(self.at(place))
    }

    pub(super) fn incarnations(&self) -> impl Iterator<Item = &Incarnation> {
        self.slots
            .iter()
            .filter_map(|s| s.current.as_ref())
            .chain(self.retiring.iter())
    }

    pub(super) fn incarnations_mut(&mut self) -> impl Iterator<Item = &mut Incarnation> {
        self.slots
            .iter_mut()
            .filter_map(|s| s.current.as_mut())
            .chain(self.retiring.iter_mut())
    }

    pub(super) fn active_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.active).count()
    }
}
