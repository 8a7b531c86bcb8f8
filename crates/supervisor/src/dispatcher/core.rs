//! The dispatcher's state and its event handler: decides everything,
//! does no I/O but the frontier's scratch file (a crawl's added tasks past
//! their memory bound, behind `crate::spill`, whose errors fail the run).
//! It holds three owners — the [`Fleet`] (workers), the [`TaskBook`]
//! (tasks) and the [`RunState`] (phase, counters, signals) — and
//! coordinates them: every event goes through [`Dispatcher::handle`],
//! which returns the commands the engine carries out. Here are the worker
//! lives, stopping and what runs after every event; the intake of tasks
//! and records is in `intake`, operator requests and views in `operator`.
//! What a worker's exit means is decided apart, by the pure
//! `death::classify`; this module only carries it out.

use std::time::{Duration, Instant};

use multiloop_protocol::{ErrorKind, Outcome, TaskResult};
use tracing::{debug, warn};

use super::book::TaskBook;
use super::coalesce::Coalesce;
use super::death::{classify, history_cause, Death, Exit, Named, Restart};
use super::events::{Command, Event, ExitStatus, LinkFailure, Request, Tick, WorkerId};
use super::fleet::{AfterBeat, Fleet, FleetConfig, Tally};
use super::frontier::{CrawlLimits, Frontier};
use super::policy::deadline_after;
use super::reasons::{CloseReason, KillReason, RecycleReason};
use super::run::{Phase, RunState};
use super::status::RunOutcome;
use crate::history::{EndCause, LifeChange};
use crate::record::{Record, TaskEntry};
use crate::reorder::ReorderBuffer;
use crate::spill::SpillError;

/// The dispatcher's settings.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub workers: usize,
    pub kind: String,
    /// Tasks a worker may hold unanswered (its credit window).
    pub window: usize,
    pub keep_order: bool,
    /// Most bytes `--keep-order` holds back before input pauses.
    pub reorder_bytes: usize,
    /// The workers' limits, restart backoff and recycling.
    pub fleet: FleetConfig,
    pub max_restarts: usize,
    pub restart_window: Duration,
    pub max_crashes: u32,
    pub retries: u32,
    pub retry_backoff: Duration,
    /// Limits on tasks that add tasks.
    pub crawl: CrawlLimits,
}

/// Coordinates the fleet, the task book and the run state.
#[derive(Debug)]
pub struct Dispatcher {
    pub(super) config: DispatchConfig,
    pub(super) fleet: Fleet,
    pub(super) book: TaskBook,
    pub(super) run: RunState,
    pub(super) reorder: ReorderBuffer,
    /// Tasks that add tasks: dedupe, limits, counts, and the added tasks
    /// waiting for room in the book.
    pub(super) frontier: Frontier,
    /// The frontier's scratch file failed (a full disk): the run fails at
    /// the end of the current event, naming it.
    pub(super) spill_error: Option<SpillError>,
    /// New tasks held back a moment to go out together.
    pub(super) coalesce: Coalesce,
    /// Commands decided while handling the current event.
    pub(super) out: Vec<Command>,
    /// Records decided while handling the current event.
    pub(super) records: Vec<Record>,
}

impl Dispatcher {
    pub fn new(config: DispatchConfig, now: Instant) -> Self {
        let fleet = Fleet::new(config.workers, config.fleet.clone());
        Self {
            fleet,
            book: TaskBook::new(config.max_crashes),
            run: RunState::new(config.max_restarts, config.restart_window, now),
            reorder: ReorderBuffer::new(),
            frontier: Frontier::new(config.crawl.clone()),
            spill_error: None,
            coalesce: Coalesce::default(),
            out: Vec::new(),
            records: Vec::new(),
            config,
        }
    }

    /// Decides what an event means; returns what to do about it. The one
    /// way into the dispatcher's state: every other public method only
    /// reads it.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Command> {
        match event {
            Event::Start => {
                for index in 0..self.fleet.slot_count() {
                    let id = self.fleet.spawn(index, now);
                    self.spawn_command(id);
                }
            }
            Event::Input(items) => self.take_input(items),
            Event::InputEnded { lines } => self.run.input_ended(lines),
            Event::InputFailed(error) => self.fail(error, now),
            Event::Spawned { worker, pid } => self.fleet.spawned(worker, pid, now),
            Event::SpawnFailed { worker, error } => self.spawn_failed(worker, error, now),
            Event::Hello { worker, hello } => self.hello(worker, hello.kinds, now),
            Event::Results { worker, results } => self.results(worker, results, now),
            Event::Heartbeat { worker, heartbeat } => {
                match self.fleet.heartbeat(worker, heartbeat, now) {
                    AfterBeat::Nothing => {}
                    AfterBeat::Recycle if self.run.accepting() => {
                        self.replace(worker.index, CloseReason::Recycled(RecycleReason::Rss), now);
                    }
                    AfterBeat::Recycle => {}
                    AfterBeat::Kill(action) => {
                        let reason =
                            KillReason::of_loop(action, |task| self.book.seq(worker, task));
                        warn!(
                            "worker {} ({}): {reason}",
                            worker.index,
                            self.fleet.pid(worker)
                        );
                        self.kill(worker, reason);
                    }
                }
            }
            Event::Bye { worker, usage } => self.fleet.bye(worker, usage, now),
            Event::LinkFailed { worker, failure } => self.link_failed(worker, failure, now),
            Event::Exited { worker, status } => self.exited(worker, status, now),
            Event::Wake => {}
            Event::Tick(Tick::Progress) => self.out.push(Command::Progress(self.progress())),
            Event::Tick(Tick::Sample) => self.out.push(Command::Sample(self.fleet.live_workers())),
            Event::Sampled(samples) => {
                self.fleet.sampled(&samples);
                self.out.push(Command::Sampled {
                    progress: self.progress(),
                    rows: self.rows(now),
                });
            }
            Event::OutputPaused(pause) => self.fleet.paused(pause),
            Event::OutputClosed => self.request(
                Request::StopNow {
                    signal: libc::SIGPIPE,
                },
                now,
            ),
            Event::Signal(signal) => {
                let request = self.run.signal(signal);
                self.request(request, now);
            }
            Event::Control { call, request } => {
                let answer = self.control(request, now);
                self.out.push(Command::Reply { call, answer });
            }
        }
        self.tick(now);
        #[cfg(debug_assertions)]
        self.book.check();
        std::mem::take(&mut self.out)
    }

    /// The earliest time at which [`Event::Wake`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.fleet.next_deadline(),
            self.book.next_retry(),
            self.run.deadline(),
            self.coalesce.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn is_finished(&self) -> bool {
        self.run.is_finished()
    }

    // ----- worker lives -------------------------------------------------

    pub(super) fn spawn_command(&mut self, worker: WorkerId) {
        self.out.push(Command::Life(LifeChange::Started {
            slot: worker.index,
            generation: worker.generation,
        }));
        self.out.push(Command::Spawn {
            worker,
            workers: self.fleet.active(),
        });
    }

    /// Replaces a slot's worker gracefully (its replacement starts first).
    pub(super) fn replace(&mut self, index: usize, reason: CloseReason, now: Instant) {
        if !self.run.accepting() {
            return;
        }
        if let Some(id) = self.fleet.replace(index, reason, now) {
            self.spawn_command(id);
        }
    }

    /// Kills a worker process; its exit is handled when it comes.
    pub(super) fn kill(&mut self, worker: WorkerId, reason: KillReason) {
        if self.fleet.kill(worker, reason) {
            self.out.push(Command::Signal {
                worker,
                signal: libc::SIGKILL,
            });
        }
    }

    fn spawn_failed(&mut self, worker: WorkerId, error: String, now: Instant) {
        if !self.fleet.spawn_failed(worker) {
            return;
        }
        self.out.push(Command::Life(LifeChange::Ended {
            slot: worker.index,
            generation: worker.generation,
            pid: None,
            cause: EndCause::SpawnFailed,
            detail: error.clone(),
            probe: false,
        }));
        let message = format!("cannot start worker {}: {error}", worker.index);
        warn!("{message}");
        if !self.fleet.any_done() && self.fleet.restarts() == 0 && worker.generation == 1 {
            // The very first start failed: a configuration problem, not a crash.
            self.fail(message, now);
            return;
        }
        self.after_death(
            worker.index,
            format!("worker {}: {error}", worker.index),
            Restart::Backoff,
            now,
        );
    }

    fn hello(&mut self, worker: WorkerId, kinds: Vec<String>, now: Instant) {
        if !self.fleet.knows(worker) {
            return;
        }
        if !kinds.contains(&self.config.kind) {
            let message = format!(
                "worker {} does not serve task kind {:?} (it serves: {})",
                worker.index,
                self.config.kind,
                kinds.join(", ")
            );
            self.fail(message, now);
            return;
        }
        let closed = self.fleet.hello(worker, now).unwrap_or_default();
        self.out.extend(
            closed
                .into_iter()
                .map(|worker| Command::CloseInput { worker }),
        );
        if self.run.accepting() {
            if let Some(next) = self.fleet.rolled(worker.index) {
                self.replace(next, CloseReason::Restart, now);
            }
        }
    }

    fn results(&mut self, worker: WorkerId, results: Vec<TaskResult>, now: Instant) {
        let Some(recycle) = self.fleet.answered(worker, results.len() as u64, now) else {
            return;
        };
        // Stale duplicates (answered already) are left out.
        let answered = self.book.answered(worker, results);
        let progressed = !answered.is_empty();
        for (task, result) in answered {
            let retryable = result.retry
                || matches!(
                    result.outcome,
                    Outcome::Err {
                        kind: ErrorKind::Failed | ErrorKind::Timeout,
                        ..
                    }
                );
            let Some(task) = self.retry(task, retryable, now) else {
                continue;
            };
            let outcome = match result.outcome {
                Outcome::Err {
                    kind: ErrorKind::BadInput,
                    message,
                } => Outcome::Err {
                    kind: ErrorKind::BadInput,
                    message: match &task.path {
                        None => format!("line {}: {message}", task.seq),
                        Some(path) => format!("task {path}: {message}"),
                    },
                },
                outcome => outcome,
            };
            // Only the recorded attempt's additions count, and only with
            // an output: a failed task adds nothing.
            let adds = match outcome {
                Outcome::Ok(_) => Frontier::proposed(result.added),
                Outcome::Err { .. } => None,
            };
            self.fleet.record(worker.index, Tally::of(&outcome));
            self.emit(Record {
                adds,
                ..Record::of(task, worker.index, result.micros, outcome)
            });
        }
        if progressed {
            self.run.progress();
        }
        if recycle && self.run.accepting() {
            self.replace(
                worker.index,
                CloseReason::Recycled(RecycleReason::Tasks),
                now,
            );
        }
    }

    /// Puts `task` in the retry wait if it may run again (`--retries`);
    /// else gives it back for its record.
    fn retry(&mut self, task: TaskEntry, retryable: bool, now: Instant) -> Option<TaskEntry> {
        if !retryable || task.attempts > self.config.retries {
            return Some(task);
        }
        let delay = self
            .config
            .retry_backoff
            .saturating_mul(1 << (task.attempts - 1).min(16));
        self.book.retry_at(deadline_after(now, delay), task);
        None
    }

    fn link_failed(&mut self, worker: WorkerId, failure: LinkFailure, now: Instant) {
        if !self.fleet.knows(worker) {
            return;
        }
        if let LinkFailure::Handshake(_) = failure {
            if !self.fleet.any_hello() {
                self.fail(format!("worker {}: {failure}", worker.index), now);
                return;
            }
        }
        warn!(
            "worker {} ({}): {failure}",
            worker.index,
            self.fleet.pid(worker)
        );
        self.kill(worker, KillReason::Violation(failure.to_string()));
    }

    fn exited(&mut self, worker: WorkerId, status: ExitStatus, now: Instant) {
        let Some(ended) = self.fleet.exited(worker) else {
            return;
        };
        let pid = ended.pid;
        let (cause, detail) = history_cause(&ended.ending, status);
        self.out.push(Command::Life(LifeChange::Ended {
            slot: worker.index,
            generation: worker.generation,
            pid: pid.0,
            cause,
            detail,
            probe: self.book.probe() == Some(worker),
        }));
        let in_flight = self.book.in_flight(worker);
        let death = classify(&Exit {
            ending: &ended.ending,
            status,
            in_flight,
            any_hello: self.fleet.any_hello(),
            accepting: self.run.accepting(),
        });
        let (cause, evidence, named, restart) = match death {
            Death::Clean(reason) => {
                debug!("worker {} ({pid}) exited cleanly ({reason})", worker.index);
                return;
            }
            Death::NeverUp => {
                self.fail(
                    format!(
                        "worker {} ({pid}) exited before its handshake ({status}); its stderr above says why",
                        worker.index
                    ),
                    now,
                );
                return;
            }
            Death::Shutdown { cause } => {
                let dropped = self.book.drop_worker(worker);
                debug!(
                    "worker {} ({pid}) ended: {cause}; {dropped} task(s) left for --resume",
                    worker.index
                );
                return;
            }
            Death::Died {
                cause,
                evidence,
                named,
                restart,
            } => (cause, evidence, named, restart),
        };
        warn!(
            "worker {} ({pid}) died: {cause}; {in_flight} task(s) re-queued",
            worker.index
        );
        let named = named.and_then(|named| {
            let (task, probe) = self.book.worker_died_named(worker, named.task())?;
            Some((named, task, probe))
        });
        let (culprits, probe) = match named {
            Some((Named::TimedOut { message, .. }, task, probe)) => {
                self.loop_timeout(worker, task, message, now);
                (Vec::new(), probe)
            }
            Some((Named::Stuck { .. }, task, probe)) => (self.book.blame_alone(task, probe), probe),
            None => self.book.worker_died(worker, evidence),
        };
        // A verdict is progress, like a completed task: poison tasks must
        // not make the run give up. (Bisection between two verdicts costs
        // about log2(in flight) + --max-crashes deaths, well under the
        // default --max-restarts.)
        if !culprits.is_empty() {
            self.run.progress();
        }
        for task in culprits {
            let times = task.blame.strikes.div_ceil(2);
            self.fleet.record(worker.index, Tally::Blamed);
            let outcome = Outcome::Err {
                kind: ErrorKind::Crashed,
                message: format!("crashed its worker {times} times (last: {cause})"),
            };
            self.emit(Record::of(task, worker.index, 0, outcome));
        }
        if ended.failed_rolling {
            warn!(
                "rolling restart stopped: the new worker {} did not come up ({cause}); the old workers keep running",
                worker.index
            );
            self.fleet.stop_rolling();
        }
        if ended.was_current {
            self.after_death(
                worker.index,
                format!("worker {} ({pid}): {cause}", worker.index),
                restart.probed(probe),
                now,
            );
        }
    }

    /// `task` computed on its worker's loop past `--task-timeout`: a
    /// `timeout` record, or a retry as `--retries` allow, like a timeout
    /// the worker reports itself.
    fn loop_timeout(&mut self, worker: WorkerId, task: TaskEntry, message: String, now: Instant) {
        self.run.progress();
        let Some(task) = self.retry(task, true, now) else {
            return;
        };
        self.fleet.record(worker.index, Tally::Failed);
        let outcome = Outcome::Err {
            kind: ErrorKind::Timeout,
            message,
        };
        self.emit(Record::of(task, worker.index, 0, outcome));
    }

    /// A slot's process is gone: schedule its replacement, or give up.
    fn after_death(&mut self, index: usize, how: String, restart: Restart, now: Instant) {
        let counts = restart != Restart::Requested;
        if let Some(message) = self.run.death(how, counts, now) {
            self.give_up(message, now);
            return;
        }
        if !self.run.accepting() || !self.fleet.is_active(index) {
            return;
        }
        self.fleet
            .schedule_restart(index, restart != Restart::Backoff, counts, now);
    }

    // ----- stopping -----------------------------------------------------

    pub(super) fn stop_input(&mut self) {
        if self.run.close_input() {
            self.out.push(Command::StopInput);
        }
        self.drop_waiting();
        self.fleet.stop_rolling();
    }

    fn give_up(&mut self, message: String, now: Instant) {
        if !self.run.accepting() {
            return;
        }
        warn!("{message}");
        self.stop_input();
        self.run.wind_down(
            RunOutcome::GaveUp(message),
            now,
            self.config.fleet.life.grace,
        );
    }

    fn fail(&mut self, error: String, now: Instant) {
        self.run.fatal(error);
        self.stop_input();
        self.stop_now(now);
    }

    pub(super) fn stop_now(&mut self, now: Instant) {
        if matches!(self.run.phase(), Phase::Stopping { .. } | Phase::Finished) {
            return;
        }
        if self.run.has_fatal() || self.run.accepting() {
            self.stop_input();
        }
        for id in self.fleet.all_ids() {
            self.kill(id, KillReason::Shutdown);
        }
        self.fleet.cancel_restarts();
        self.run.stopping(now);
    }

    // ----- after every event --------------------------------------------

    /// Runs after every event: timers, dispatch, completion.
    fn tick(&mut self, now: Instant) {
        self.check_timers(now);
        self.refill();
        if let Some(error) = self.spill_error.take() {
            self.fail(
                format!("{error}; the output keeps every task added so far: --resume runs them"),
                now,
            );
        }
        self.fill(now);
        self.check_done(now);
        if !self.records.is_empty() {
            self.out
                .push(Command::Emit(std::mem::take(&mut self.records)));
        }
    }

    fn check_timers(&mut self, now: Instant) {
        for id in self.fleet.due_restarts(now, self.run.accepting()) {
            self.spawn_command(id);
        }
        for (id, reason) in self.fleet.overdue(now) {
            self.kill(id, reason);
        }
        self.book.release_retries(now);
        match self.run.phase() {
            Phase::Winding { deadline } | Phase::Finishing { deadline } if now >= deadline => {
                self.stop_now(now)
            }
            Phase::Stopping { deadline } if now >= deadline => self.finish(),
            _ => {}
        }
    }

    fn check_done(&mut self, now: Instant) {
        let all_answered =
            !self.run.input_open() && self.book.is_empty() && self.frontier.pending() == 0;
        let phase = self.run.phase();
        if all_answered && matches!(phase, Phase::Running | Phase::Winding { .. }) {
            self.run.finishing(now, self.config.fleet.life.grace);
            let closed = self.fleet.close_all(now);
            self.out.extend(
                closed
                    .into_iter()
                    .map(|worker| Command::CloseInput { worker }),
            );
        }
        let phase = self.run.phase();
        if self.fleet.is_empty() && !matches!(phase, Phase::Running | Phase::Finished) {
            self.finish();
        }
    }

    /// Ends the run. Records that `--keep-order` still holds (behind tasks
    /// that a drain dropped) are written, in order, so finished work is
    /// never thrown away; the dropped tasks are left for `--resume`.
    fn finish(&mut self) {
        self.reorder.drain_all(&mut self.records);
        self.run.finished();
        self.out.push(Command::Finish);
    }
}
