//! Operator requests (signals, the control socket): drain, stop, scale,
//! restart one worker or all, kill.

use std::time::Instant;

use tracing::info;

use super::core::{Dispatcher, Phase};
use super::events::{Command, Request, WorkerId};
use super::fleet::{CloseReason, KillReason, Life, Slot};
use super::status::RunOutcome;

impl Dispatcher {
    pub(super) fn request(&mut self, request: Request, now: Instant) {
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
    pub(super) fn replace(&mut self, index: usize, reason: CloseReason, now: Instant) {
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
}
