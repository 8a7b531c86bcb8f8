//! Worker lives as the dispatcher sees them: spawn, handshake, results,
//! heartbeats, death, restart and the restart limit.

use std::time::Instant;

use multiloop_protocol::{ErrorKind, Outcome, TaskResult};
use tracing::{debug, info, warn};

use super::blame::Evidence;
use super::core::{Dispatcher, Phase, Place};
use super::events::{Command, ExitStatus, WorkerId};
use super::fleet::{CloseReason, Incarnation, KillReason, Life};
use crate::loop_watch::{judge, Limits};
use crate::record::{Record, TaskEntry};

impl Dispatcher {
    pub(super) fn spawn(&mut self, index: usize, now: Instant) {
        let heartbeat = self.config.heartbeat;
        let recycle_after = self
            .config
            .max_tasks_per_worker
            .map(|n| jitter(n, index, self.slots[index].generation));
        let slot = &mut self.slots[index];
        let id = slot.next_id();
        slot.restart_at = None;
        slot.current = Some(Incarnation::new(id, now, recycle_after, heartbeat));
        self.out.push(Command::Spawn { worker: id });
    }

    pub(super) fn spawn_failed(&mut self, worker: WorkerId, error: String, now: Instant) {
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

    pub(super) fn hello(&mut self, worker: WorkerId, kinds: Vec<String>, now: Instant) {
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

    pub(super) fn heartbeat(
        &mut self,
        worker: WorkerId,
        heartbeat: multiloop_protocol::Heartbeat,
        now: Instant,
    ) {
        let max_rss = self.config.max_worker_rss;
        let limits = Limits {
            task_timeout: self.config.task_timeout,
            worker_timeout: self.config.worker_timeout,
        };
        let Some(inc) = self.incarnation(worker) else {
            return;
        };
        let pid = inc.pid;
        inc.last_heard = now;
        inc.heartbeat = heartbeat;
        inc.watch.heartbeat(&heartbeat, now);
        // Silence is judged by `check_timers`; here, a loop that a task
        // holds, busy or stuck, while heartbeats still come.
        let action = judge(inc.watch.state(now), limits).filter(|_| inc.killed.is_none());
        let reason = action.map(|action| KillReason::of_loop(action, &inc.in_flight));
        let over_rss =
            max_rss.filter(|&limit| heartbeat.rss_bytes > limit && inc.life == Life::Running);
        let slot = &mut self.slots[worker.index];
        slot.totals.peak_rss = slot.totals.peak_rss.max(heartbeat.rss_bytes);
        slot.totals.max_lag_us = slot.totals.max_lag_us.max(heartbeat.max_lag_us);
        if let Some(reason) = reason {
            warn!("worker {} (pid {:?}): {reason}", worker.index, pid);
            self.kill(worker, reason);
            return;
        }
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

    pub(super) fn results(&mut self, worker: WorkerId, results: Vec<TaskResult>, now: Instant) {
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

    pub(super) fn link_failed(&mut self, worker: WorkerId, error: String, now: Instant) {
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

    pub(super) fn exited(&mut self, worker: WorkerId, status: ExitStatus, now: Instant) {
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
        let mut in_flight = inc.in_flight;
        // The task the watchdog named takes the whole blame; the others
        // shared the worker by chance and run again as innocent.
        let named = inc
            .killed
            .as_ref()
            .and_then(KillReason::named_task)
            .and_then(|id| in_flight.remove(&id));
        let mut tasks: Vec<TaskEntry> = in_flight.into_values().collect();
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
        if let Some(task) = named {
            for task in tasks.drain(..).rev() {
                self.queue.push_front(task);
            }
            if let Some(KillReason::TaskTimeout { message, .. }) = &inc.killed {
                self.loop_timeout(worker, task, message.clone(), now);
            } else {
                tasks.push(task);
            }
        }
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

    /// `task` computed on its worker's loop past `--task-timeout`: a
    /// timeout, retried as `--retries` allow like one the worker reports.
    fn loop_timeout(&mut self, worker: WorkerId, task: TaskEntry, message: String, now: Instant) {
        if task.attempts <= self.config.retries {
            let delay = self
                .config
                .retry_backoff
                .saturating_mul(1 << (task.attempts - 1).min(16));
            self.retry_wait.insert((now + delay, task.id), task);
            return;
        }
        let totals = &mut self.slots[worker.index].totals;
        totals.done += 1;
        totals.failed += 1;
        let outcome = Outcome::Err {
            kind: ErrorKind::Timeout,
            message,
        };
        self.emit(Record::of(task, worker.index, 0, outcome));
    }

    /// A slot's process is gone: schedule its replacement, or give up.
    pub(super) fn after_death(&mut self, index: usize, probe: bool, now: Instant) {
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

    pub(super) fn give_up_message(&self) -> String {
        let recent: Vec<&String> = self.deaths.iter().rev().take(8).collect();
        format!(
            "giving up: {} workers died in a row without completing a task (--max-restarts {} within {:?}); last deaths: {}",
            self.intensity.count(),
            self.config.max_restarts,
            self.config.restart_window,
            recent.iter().rev().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
        )
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
