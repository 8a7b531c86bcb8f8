//! The dispatcher: owns every worker and task, decides everything, does no
//! I/O. The engine feeds it events and carries out the commands it returns.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use multiloop_protocol::{ErrorKind, Outcome, Task, TaskResult};
use tracing::{debug, info, warn};

use super::blame::{Blame, Evidence};
use super::events::{Command, Event, ExitStatus, Request, WorkerId};
use super::fleet::{CloseReason, Incarnation, KillReason, Life, Slot};
use super::policy::{Backoff, RestartIntensity};
use super::status::{Progress, RunOutcome, RunReport, WorkerRow};
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
enum Phase {
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
enum Place {
    Current(usize),
    Retiring(usize),
}

/// Owns all worker and task state of a run.
#[derive(Debug)]
pub struct Dispatcher {
    config: DispatchConfig,
    slots: Vec<Slot>,
    /// Incarnations whose slot has a newer one: recycled, restarted, retired.
    retiring: Vec<Incarnation>,
    /// Tasks ready to run, re-runs first.
    queue: VecDeque<TaskEntry>,
    /// Retries waiting for their backoff, by due time.
    retry_wait: BTreeMap<(Instant, u64), TaskEntry>,
    blame: Blame,
    intensity: RestartIntensity,
    reorder: ReorderBuffer,
    phase: Phase,
    input_open: bool,
    /// Slots still to be restarted by a rolling restart, in order.
    rolling: VecDeque<usize>,
    next_fill: usize,
    started: Instant,
    /// Tasks read (including rejected lines).
    read: u64,
    ok: u64,
    failed: u64,
    restarts: u64,
    lines: Option<u64>,
    fatal: Option<String>,
    /// Some worker has completed its handshake in this run.
    any_hello: bool,
    /// Why the run stopped early, kept after the phase moves on.
    stopped: Option<RunOutcome>,
    /// How each dead worker died, for the give-up message.
    deaths: Vec<String>,
    out: Vec<Command>,
    records: Vec<Record>,
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

    fn take_input(&mut self, items: Vec<InputItem>) {
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

    // ----- worker life --------------------------------------------------

    fn spawn(&mut self, index: usize, now: Instant) {
        let recycle_after = self
            .config
            .max_tasks_per_worker
            .map(|n| jitter(n, index, self.slots[index].generation));
        let slot = &mut self.slots[index];
        let id = slot.next_id();
        slot.restart_at = None;
        slot.current = Some(Incarnation::new(id, now, recycle_after));
        self.out.push(Command::Spawn { worker: id });
    }

    fn spawn_failed(&mut self, worker: WorkerId, error: String, now: Instant) {
        if self.incarnation(worker).is_none() {
            return;
        }
        let slot = &mut self.slots[worker.index];
        slot.current = None;
        let message = format!("cannot start worker {}: {error}", worker.index);
        warn!("{message}");
        if self.slots.iter().all(|s| s.totals.done == 0)
            && self.restarts == 0
            && worker.generation == 1
        {
            // The very first start failed: a configuration problem, not a crash.
            self.fatal = Some(message);
            self.stop_now(now);
            return;
        }
        self.deaths
            .push(format!("worker {}: {error}", worker.index));
        self.after_death(worker.index, false, now);
    }

    fn hello(&mut self, worker: WorkerId, kinds: Vec<String>, now: Instant) {
        let kind = self.config.kind.clone();
        let Some(inc) = self.incarnation(worker) else {
            return;
        };
        inc.last_heard = now;
        if !kinds.contains(&kind) {
            let message = format!(
                "worker {} does not serve task kind {kind:?} (it serves: {})",
                worker.index,
                kinds.join(", ")
            );
            self.fatal = Some(message);
            self.stop_now(now);
            return;
        }
        if inc.life == Life::Starting {
            inc.life = Life::Running;
        }
        debug!("worker {} (pid {:?}) is up", worker.index, inc.pid);
        self.any_hello = true;
        // The replacement is up: the incarnation it replaces may go now.
        for old in self
            .retiring
            .iter_mut()
            .filter(|old| old.id.index == worker.index)
        {
            if let Life::Replacing(reason) = &old.life {
                old.life = Life::Closing {
                    since: now,
                    reason: reason.clone(),
                };
                self.out.push(Command::CloseInput { worker: old.id });
            }
        }
        if self.accepting() && self.rolling.front() == Some(&worker.index) {
            self.rolling.pop_front();
            if let Some(&next) = self.rolling.front() {
                self.replace(next, CloseReason::Restart, now);
            }
        }
    }

    fn heartbeat(
        &mut self,
        worker: WorkerId,
        heartbeat: multiloop_protocol::Heartbeat,
        now: Instant,
    ) {
        let max_rss = self.config.max_worker_rss;
        let Some(inc) = self.incarnation(worker) else {
            return;
        };
        inc.last_heard = now;
        inc.heartbeat = heartbeat;
        let over_rss =
            max_rss.filter(|&limit| heartbeat.rss_bytes > limit && inc.life == Life::Running);
        let slot = &mut self.slots[worker.index];
        slot.totals.peak_rss = slot.totals.peak_rss.max(heartbeat.rss_bytes);
        slot.totals.max_lag_us = slot.totals.max_lag_us.max(heartbeat.max_lag_us);
        if let Some(limit) = over_rss {
            if self.phase == Phase::Running && slot.current.as_ref().map(|c| c.id) == Some(worker) {
                info!(
                    "worker {} uses {} MiB, over --max-worker-rss ({} MiB): recycling it",
                    worker.index,
                    heartbeat.rss_bytes >> 20,
                    limit >> 20
                );
                self.replace(worker.index, CloseReason::Recycled("rss".into()), now);
            }
        }
    }

    fn results(&mut self, worker: WorkerId, results: Vec<TaskResult>, now: Instant) {
        let Some(place) = self.place(worker) else {
            return;
        };
        let retries = self.config.retries;
        let retry_backoff = self.config.retry_backoff;
        let mut finished = Vec::with_capacity(results.len());
        let mut retry = Vec::new();
        {
            let inc = self.at(place);
            inc.last_heard = now;
            for result in results {
                let Some(task) = inc.in_flight.remove(&result.id) else {
                    continue; // Answered already (a stale duplicate): ignore.
                };
                inc.completed += 1;
                let retryable = result.retry
                    || matches!(
                        result.outcome,
                        Outcome::Err {
                            kind: ErrorKind::Failed | ErrorKind::Timeout,
                            ..
                        }
                    );
                if retryable && task.attempts <= retries {
                    let delay = retry_backoff.saturating_mul(1 << (task.attempts - 1).min(16));
                    retry.push((now + delay, task));
                } else {
                    finished.push((task, result));
                }
            }
            if inc.in_flight.is_empty() {
                inc.probe = false;
            }
        }
        if !finished.is_empty() || !retry.is_empty() {
            self.intensity.progress();
            self.slots[worker.index].failures = 0;
        }
        for (due, task) in retry {
            self.retry_wait.insert((due, task.id), task);
        }
        for (task, result) in finished {
            let outcome = match result.outcome {
                Outcome::Err {
                    kind: ErrorKind::BadInput,
                    message,
                } => Outcome::Err {
                    kind: ErrorKind::BadInput,
                    message: format!("line {}: {message}", task.seq),
                },
                outcome => outcome,
            };
            let totals = &mut self.slots[worker.index].totals;
            totals.done += 1;
            if !matches!(outcome, Outcome::Ok(_)) {
                totals.failed += 1;
            }
            self.emit(Record::of(task, worker.index, result.micros, outcome));
        }
        // Recycling by task count.
        if let Place::Current(index) = place {
            let inc = self.slots[index].current.as_ref().expect("current");
            if inc.life == Life::Running
                && inc.recycle_after.is_some_and(|n| inc.completed >= n)
                && self.phase == Phase::Running
            {
                info!(
                    "worker {index} answered {} tasks: recycling it",
                    inc.completed
                );
                self.replace(index, CloseReason::Recycled("tasks".into()), now);
            }
        }
    }

    fn link_failed(&mut self, worker: WorkerId, error: String, now: Instant) {
        let handshake = error.starts_with("handshake failed");
        let Some(inc) = self.incarnation(worker) else {
            return;
        };
        if handshake && inc.life == Life::Starting {
            self.fatal = Some(format!("worker {}: {error}", worker.index));
            self.stop_now(now);
            return;
        }
        warn!("worker {} (pid {:?}): {error}", worker.index, inc.pid);
        self.kill(worker, KillReason::Violation(error));
    }

    fn exited(&mut self, worker: WorkerId, status: ExitStatus, now: Instant) {
        let Some(place) = self.place(worker) else {
            return;
        };
        let inc = match place {
            Place::Current(index) => self.slots[index].current.take().expect("current"),
            Place::Retiring(position) => self.retiring.swap_remove(position),
        };
        let slot = &mut self.slots[worker.index];
        slot.totals.past_cpu_us += inc.cpu_us();
        slot.totals.peak_rss = slot.totals.peak_rss.max(inc.peak_rss());
        let closing = matches!(inc.life, Life::Closing { .. });
        if closing && status.is_success() && inc.in_flight.is_empty() && inc.killed.is_none() {
            debug!("worker {} (pid {:?}) exited cleanly", worker.index, inc.pid);
            return;
        }
        let pid = inc.pid.map_or_else(|| "?".to_string(), |p| p.to_string());
        // Before any worker of this run got as far as its handshake, an exit
        // is a setup problem (a bad --set value, a binary that is not a
        // worker), not a crash to retry until the restart limit.
        let never_up = !self.any_hello || status.is_success();
        if inc.life == Life::Starting && inc.killed.is_none() && never_up {
            self.fatal = Some(format!(
                "worker {} (pid {pid}) exited before its handshake ({status}); its stderr above says why",
                worker.index
            ));
            self.stop_now(now);
            return;
        }
        let cause = match &inc.killed {
            Some(reason) => reason.to_string(),
            None => status.to_string(),
        };
        // In input order, so that re-runs keep the reorder buffer small.
        let mut tasks: Vec<TaskEntry> = inc.in_flight.into_values().collect();
        tasks.sort_unstable_by_key(|task| task.id);
        let shutting_down = matches!(inc.killed, Some(KillReason::Shutdown)) || !self.accepting();
        if shutting_down {
            debug!("worker {} (pid {pid}) ended: {cause}", worker.index);
            return;
        }
        warn!(
            "worker {} (pid {pid}) died: {cause}; {} task(s) re-queued",
            worker.index,
            tasks.len()
        );
        self.deaths
            .push(format!("worker {} (pid {pid}): {cause}", worker.index));
        let evidence = match (&inc.killed, status) {
            (Some(KillReason::Operator | KillReason::Overdue), _) => Evidence::Weak,
            (Some(_), _) => Evidence::Strong,
            (None, ExitStatus::Signal(signal))
                if signal == libc::SIGKILL || signal == libc::SIGTERM =>
            {
                Evidence::Weak
            }
            (None, _) => Evidence::Strong,
        };
        if !tasks.is_empty() {
            let verdict = self.blame.on_death(tasks, evidence, inc.probe);
            for task in verdict.rerun.into_iter().rev() {
                self.queue.push_front(task);
            }
            for task in verdict.culprits {
                let times = task.blame.strikes.div_ceil(2);
                self.slots[worker.index].totals.failed += 1;
                let outcome = Outcome::Err {
                    kind: ErrorKind::Crashed,
                    message: format!("crashed its worker {times} times (last: {cause})"),
                };
                self.emit(Record::of(task, worker.index, 0, outcome));
            }
        }
        let was_current = matches!(place, Place::Current(_));
        if was_current {
            self.after_death(worker.index, inc.probe, now);
        }
    }

    /// A slot's process is gone: schedule its replacement, or give up.
    fn after_death(&mut self, index: usize, probe: bool, now: Instant) {
        if self.intensity.death(now) {
            let message = self.give_up_message();
            self.give_up(message, now);
            return;
        }
        if !self.accepting() || !self.slots[index].active {
            return;
        }
        let slot = &mut self.slots[index];
        slot.failures += 1;
        // A probe's crash is an experiment that went as feared: restart at
        // once so that blame is settled quickly.
        let delay = if probe {
            self.config.backoff.min
        } else {
            self.config.backoff.delay(slot.failures)
        };
        slot.restart_at = Some(now + delay);
        slot.totals.restarts += 1;
        self.restarts += 1;
    }

    fn give_up_message(&self) -> String {
        let recent: Vec<&String> = self.deaths.iter().rev().take(8).collect();
        format!(
            "giving up: {} workers died in a row without completing a task (--max-restarts {} within {:?}); last deaths: {}",
            self.intensity.count(),
            self.config.max_restarts,
            self.config.restart_window,
            recent.iter().rev().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
        )
    }

    // ----- requests -----------------------------------------------------

    fn request(&mut self, request: Request, now: Instant) {
        match request {
            Request::Drain { signal } => {
                if self.phase == Phase::Running {
                    info!(
                        "draining: no new tasks; waiting up to {:?} for tasks in flight",
                        self.config.grace
                    );
                    self.stopped = Some(RunOutcome::Interrupted(signal));
                    self.stop_input();
                    self.phase = Phase::Winding {
                        deadline: now + self.config.grace,
                    };
                } else {
                    self.request(Request::StopNow { signal }, now);
                }
            }
            Request::StopNow { signal } => {
                info!("stopping now: killing workers; unfinished tasks are left for --resume");
                if self.stopped.is_none() {
                    self.stopped = Some(RunOutcome::Interrupted(signal));
                }
                self.stop_input();
                self.stop_now(now);
            }
            Request::AddWorker => self.scale(self.active_slots() + 1, now),
            Request::Scale(workers) => self.scale(workers, now),
            Request::RestartWorker(index) => {
                if self.accepting() && self.slots.get(index).is_some_and(|s| s.active) {
                    info!("restarting worker {index} on request");
                    self.replace(index, CloseReason::Restart, now);
                }
            }
            Request::KillWorker(index) => {
                let id = self
                    .slots
                    .get(index)
                    .and_then(|s| s.current.as_ref())
                    .map(|c| c.id);
                if let Some(id) = id {
                    info!("killing worker {index} on request");
                    self.kill(id, KillReason::Operator);
                }
            }
            Request::RemoveWorker => self.scale(self.active_slots().saturating_sub(1), now),
            Request::RollingRestart => {
                if self.phase == Phase::Running && self.rolling.is_empty() {
                    self.rolling = (0..self.slots.len())
                        .filter(|&i| self.slots[i].active)
                        .collect();
                    info!("rolling restart of {} workers", self.rolling.len());
                    if let Some(&first) = self.rolling.front() {
                        self.replace(first, CloseReason::Restart, now);
                    }
                }
            }
            Request::ShowStatus => self.out.push(Command::ShowStatus),
        }
    }

    /// Grows or shrinks the fleet to `target` workers (at least one).
    pub fn scale(&mut self, target: usize, now: Instant) {
        let target = target.max(1);
        if self.phase != Phase::Running {
            return;
        }
        while self.active_slots() < target {
            let index = match self.slots.iter().position(|s| !s.active) {
                Some(index) => index,
                None => {
                    self.slots.push(Slot::new(self.slots.len()));
                    self.slots.len() - 1
                }
            };
            self.slots[index].active = true;
            info!("adding worker {index}");
            self.spawn(index, now);
        }
        while self.active_slots() > target {
            let index = self
                .slots
                .iter()
                .rposition(|s| s.active)
                .expect("an active slot");
            info!("retiring worker {index}");
            let slot = &mut self.slots[index];
            slot.active = false;
            slot.restart_at = None;
            if let Some(mut inc) = slot.current.take() {
                inc.life = Life::Closing {
                    since: now,
                    reason: CloseReason::Retired,
                };
                self.out.push(Command::CloseInput { worker: inc.id });
                self.retiring.push(inc);
            }
        }
    }

    /// Replaces a slot's worker gracefully: the replacement starts first;
    /// the old one keeps working until the new one is up, then drains.
    fn replace(&mut self, index: usize, reason: CloseReason, now: Instant) {
        if !self.accepting() || !self.slots[index].active {
            return;
        }
        let slot = &mut self.slots[index];
        match slot.current.take() {
            Some(mut old) => {
                old.life = Life::Replacing(reason);
                self.retiring.push(old);
            }
            None if slot.restart_at.is_some() => return, // A restart is already due.
            None => {}
        }
        self.spawn(index, now);
    }

    /// Kills a worker process; its exit is handled when it comes.
    pub fn kill(&mut self, worker: WorkerId, reason: KillReason) {
        if let Some(inc) = self.incarnation(worker) {
            if inc.killed.is_none() || reason == KillReason::Shutdown {
                inc.killed = Some(reason);
                self.out.push(Command::Signal {
                    worker,
                    signal: libc::SIGKILL,
                });
            }
        }
    }

    // ----- run phases ---------------------------------------------------

    fn accepting(&self) -> bool {
        self.phase == Phase::Running
    }

    fn stop_input(&mut self) {
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

    fn give_up(&mut self, message: String, now: Instant) {
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

    fn fail(&mut self, error: String, now: Instant) {
        self.fatal = Some(error);
        self.stop_input();
        self.stop_now(now);
    }

    fn stop_now(&mut self, now: Instant) {
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
    fn tick(&mut self, now: Instant) {
        self.check_timers(now);
        self.fill();
        self.check_done(now);
        if !self.records.is_empty() {
            self.out
                .push(Command::Emit(std::mem::take(&mut self.records)));
        }
    }

    fn check_timers(&mut self, now: Instant) {
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

    /// Hands queued tasks to workers with credit, and suspects to a probe.
    fn fill(&mut self) {
        if !self.accepting() {
            return;
        }
        self.assign_probe();
        // A worker gets at most its fair share of what is queued, counting
        // the ones still starting: otherwise the first worker up would take
        // a whole window of a small batch and leave the others idle.
        let (takers, holding) = self
            .incarnations()
            .filter(|inc| inc.life == Life::Starting || (inc.accepts_tasks() && !inc.probe))
            .fold((0, 0), |(n, held), inc| (n + 1, held + inc.in_flight.len()));
        let share = (self.queue.len() + holding).div_ceil(takers.max(1));
        let limit = self.config.window;
        let count = self.slots.len();
        for step in 0..count {
            if self.queue.is_empty() {
                break;
            }
            let index = (self.next_fill + step) % count;
            self.fill_one(Place::Current(index), limit, share);
        }
        for position in 0..self.retiring.len() {
            if self.queue.is_empty() {
                break;
            }
            self.fill_one(Place::Retiring(position), limit, share);
        }
        self.next_fill = (self.next_fill + 1) % count.max(1);
    }

    fn fill_one(&mut self, place: Place, window: usize, share: usize) {
        let reserved = self.blame.suspects() > 0 && !self.incarnations().any(|inc| inc.probe);
        let Some(inc) = self.get(place) else { return };
        if !inc.accepts_tasks() || inc.probe {
            return;
        }
        // With suspects waiting and no probe yet, the emptiest worker gets
        // nothing new, so that it soon can probe.
        if reserved
            && matches!(place, Place::Current(_))
            && self.probe_candidate() == Some(inc.id.index)
        {
            return;
        }
        let credit = window
            .min(share)
            .saturating_sub(inc.in_flight.len())
            .min(self.queue.len());
        if credit == 0 {
            return;
        }
        let batch: Vec<TaskEntry> = self.queue.drain(..credit).collect();
        let inc = self.at(place);
        let id = inc.id;
        let tasks = send(inc, batch);
        self.out.push(Command::Send { worker: id, tasks });
    }

    /// The running worker with the fewest tasks: the next probe.
    fn probe_candidate(&self) -> Option<usize> {
        self.slots
            .iter()
            .filter_map(|s| s.current.as_ref())
            .filter(|inc| inc.life == Life::Running && inc.killed.is_none())
            .min_by_key(|inc| inc.in_flight.len())
            .map(|inc| inc.id.index)
    }

    fn assign_probe(&mut self) {
        if self.blame.suspects() == 0 || self.incarnations().any(|inc| inc.probe) {
            return;
        }
        let Some(index) = self.probe_candidate() else {
            return;
        };
        let inc = self.slots[index]
            .current
            .as_mut()
            .expect("candidate is current");
        if !inc.in_flight.is_empty() {
            return;
        }
        let group = self.blame.next_group().expect("suspects exist");
        debug!("worker {index} probes {} suspect task(s)", group.len());
        inc.probe = true;
        let id = inc.id;
        let tasks = send(inc, group);
        self.out.push(Command::Send { worker: id, tasks });
    }

    fn check_done(&mut self, now: Instant) {
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
    fn finish(&mut self) {
        self.reorder.drain_all(&mut self.records);
        self.phase = Phase::Finished;
        self.out.push(Command::Finish);
    }

    fn emit(&mut self, record: Record) {
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

    fn place(&self, worker: WorkerId) -> Option<Place> {
        let slot = self.slots.get(worker.index)?;
        if slot.current.as_ref().is_some_and(|inc| inc.id == worker) {
            return Some(Place::Current(worker.index));
        }
        self.retiring
            .iter()
            .position(|inc| inc.id == worker)
            .map(Place::Retiring)
    }

    fn get(&self, place: Place) -> Option<&Incarnation> {
        match place {
            Place::Current(index) => self.slots[index].current.as_ref(),
            Place::Retiring(position) => self.retiring.get(position),
        }
    }

    fn at(&mut self, place: Place) -> &mut Incarnation {
        match place {
            Place::Current(index) => self.slots[index].current.as_mut().expect("placed"),
            Place::Retiring(position) => &mut self.retiring[position],
        }
    }

    fn incarnation(&mut self, worker: WorkerId) -> Option<&mut Incarnation> {
        let place = self.place(worker)?;
        Some(self.at(place))
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

    fn active_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.active).count()
    }

    // ----- reports ------------------------------------------------------

    /// One row per worker slot, for status tables and the summary.
    pub fn rows(&self, now: Instant) -> Vec<WorkerRow> {
        self.slots
            .iter()
            .map(|slot| {
                let current = slot.current.as_ref();
                let retiring_cpu: u64 = self
                    .retiring
                    .iter()
                    .filter(|inc| inc.id.index == slot.index)
                    .map(Incarnation::cpu_us)
                    .sum();
                WorkerRow {
                    index: slot.index,
                    pid: current.and_then(|c| c.pid).or(slot.last_pid),
                    state: match current {
                        Some(inc) => inc.state_name(),
                        None if slot.restart_at.is_some() => "restarting",
                        None if !slot.active => "retired",
                        None => "exited",
                    }
                    .to_string(),
                    in_flight: current.map_or(0, |c| c.in_flight.len()),
                    done: slot.totals.done,
                    failed: slot.totals.failed,
                    restarts: slot.totals.restarts,
                    cpu_percent: current
                        .and_then(|c| c.sample)
                        .map_or(0.0, |s| s.cpu_percent),
                    cpu_us: slot.totals.past_cpu_us
                        + retiring_cpu
                        + current.map_or(0, Incarnation::cpu_us),
                    rss_bytes: current.map_or(0, |c| {
                        c.sample.map_or(c.heartbeat.rss_bytes, |s| s.rss_bytes)
                    }),
                    peak_rss_bytes: slot
                        .totals
                        .peak_rss
                        .max(current.map_or(0, Incarnation::peak_rss)),
                    lag_us: current.map_or(0, |c| c.heartbeat.lag_us),
                    max_lag_us: slot.totals.max_lag_us,
                    uptime: current.map(|c| now.saturating_duration_since(c.started)),
                }
            })
            .collect()
    }

    /// How the run went.
    pub fn report(&self, now: Instant) -> RunReport {
        let outcome = match (&self.fatal, &self.stopped) {
            (Some(message), _) => RunOutcome::Fatal(message.clone()),
            (None, Some(stopped)) => stopped.clone(),
            (None, None) if self.failed > 0 => RunOutcome::SomeFailed,
            (None, None) => RunOutcome::AllOk,
        };
        RunReport {
            outcome,
            ok: self.ok,
            failed: self.failed,
            read: self.read,
            lines: self.lines,
            restarts: self.restarts,
            wall: now.saturating_duration_since(self.started),
            workers: self.rows(now),
        }
    }

    /// Run-wide counters for progress displays.
    pub fn progress(&self) -> Progress {
        Progress {
            done: self.ok + self.failed,
            failed: self.failed,
            read: self.read,
            restarts: self.restarts,
            alive: self.incarnations().filter(|inc| inc.pid.is_some()).count() as u64,
        }
    }

    /// Worker ids and pids of the live processes, for sampling.
    pub fn live_workers(&self) -> Vec<(WorkerId, u32)> {
        self.incarnations()
            .filter_map(|inc| inc.pid.map(|pid| (inc.id, pid)))
            .collect()
    }

    /// Number of worker slots (including retired ones), for request checks.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }
}

/// Moves `tasks` into `inc`'s in-flight set and returns them as sent.
fn send(inc: &mut Incarnation, tasks: Vec<TaskEntry>) -> Vec<Task> {
    let mut sent = Vec::with_capacity(tasks.len());
    for mut task in tasks {
        task.attempts += 1;
        sent.push(Task {
            id: task.id,
            payload: task.payload.clone(),
        });
        inc.in_flight.insert(task.id, task);
    }
    sent
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
