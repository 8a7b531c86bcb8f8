//! What the operator reaches: signals and control-socket requests turned
//! into state changes (drain, stop, scale, restart, kill), and the views
//! (worker rows, progress, the run's report) that status answers and the
//! engine's displays read.

use std::time::Instant;

use tracing::{info, warn};

use super::core::Dispatcher;
use super::events::{Command, Request};
use super::reasons::{CloseReason, KillReason};
use super::status::{Progress, RunOutcome, RunReport, WorkerRow};
use crate::control::{ControlAnswer, ControlRequest, StatusAnswer};
use crate::limits::check_fleet_size;

impl Dispatcher {
    // ----- views --------------------------------------------------------

    /// One row per worker slot, for status tables and the summary.
    pub fn rows(&self, now: Instant) -> Vec<WorkerRow> {
        self.fleet.rows(
            now,
            |id| self.book.in_flight(id),
            |id, task| self.book.seq(id, task),
            self.book.probe(),
        )
    }

    /// Run-wide counters for progress displays.
    pub fn progress(&self) -> Progress {
        Progress {
            queued: self.book.queued() as u64 + self.frontier.pending(),
            ..self
                .run
                .progress_counts(self.fleet.restarts(), self.fleet.alive())
        }
    }

    /// How the run went.
    pub fn report(&self, now: Instant) -> RunReport {
        let (ok, failed, read, lines) = self.run.counts();
        RunReport {
            outcome: self.run.outcome(),
            ok,
            failed,
            read,
            lines,
            restarts: self.fleet.restarts(),
            crawl: self.frontier.counts(),
            wall: now.saturating_duration_since(self.run.started()),
            workers: self.rows(now),
        }
    }

    // ----- operator requests --------------------------------------------

    pub(super) fn request(&mut self, request: Request, now: Instant) {
        match request {
            Request::Drain { signal } => {
                if self.run.accepting() {
                    info!(
                        "draining: no new tasks; waiting up to {:?} for tasks in flight",
                        self.config.fleet.life.grace
                    );
                    self.stop_input();
                    self.run.wind_down(
                        RunOutcome::Interrupted(signal),
                        now,
                        self.config.fleet.life.grace,
                    );
                } else {
                    self.request(Request::StopNow { signal }, now);
                }
            }
            Request::StopNow { signal } => {
                info!("stopping now: killing workers; unfinished tasks are left for --resume");
                self.run.interrupted(signal);
                self.stop_input();
                self.stop_now(now);
            }
            Request::AddWorker => {
                let target = self.fleet.active() + 1;
                match check_fleet_size(target) {
                    Ok(()) => self.scale(target, now),
                    Err(error) => warn!("SIGTTIN ignored: {error}"),
                }
            }
            Request::RemoveWorker => self.scale(self.fleet.active().saturating_sub(1), now),
            Request::Scale(workers) => self.scale(workers, now),
            Request::RestartWorker(index) => {
                if self.run.accepting() && self.fleet.is_active(index) {
                    info!("restarting worker {index} on request");
                    self.replace(index, CloseReason::Restart, now);
                }
            }
            Request::KillWorker(index) => {
                if let Some(id) = self.fleet.current(index) {
                    info!("killing worker {index} on request");
                    self.kill(id, KillReason::Operator);
                }
            }
            Request::RollingRestart => {
                if self.run.accepting() {
                    if let Some(first) = self.fleet.start_rolling() {
                        self.replace(first, CloseReason::Restart, now);
                    }
                }
            }
            Request::ShowStatus => self.out.push(Command::ShowStatus(self.rows(now))),
        }
    }

    /// Answers a control-socket request; mutations become requests.
    pub(super) fn control(&mut self, request: ControlRequest, now: Instant) -> ControlAnswer {
        let slots = self.fleet.slot_count();
        match request {
            ControlRequest::Status => ControlAnswer::Status(StatusAnswer {
                pid: std::process::id(),
                progress: self.progress(),
                workers: self.rows(now),
            }),
            ControlRequest::Restart { worker } | ControlRequest::Kill { worker }
                if worker >= slots =>
            {
                ControlAnswer::Refused(format!("no worker {worker} (workers are 0..{slots})"))
            }
            ControlRequest::Restart { worker } => {
                self.request(Request::RestartWorker(worker), now);
                ControlAnswer::Ok
            }
            ControlRequest::Kill { worker } => {
                self.request(Request::KillWorker(worker), now);
                ControlAnswer::Ok
            }
            ControlRequest::Scale { workers: 0 } => {
                ControlAnswer::Refused("scale needs at least 1 worker".into())
            }
            ControlRequest::Scale { workers } => match check_fleet_size(workers) {
                Ok(()) => {
                    self.request(Request::Scale(workers), now);
                    ControlAnswer::Ok
                }
                Err(error) => ControlAnswer::Refused(error.to_string()),
            },
            ControlRequest::Drain => {
                self.request(
                    Request::Drain {
                        signal: libc::SIGTERM,
                    },
                    now,
                );
                ControlAnswer::Ok
            }
        }
    }

    /// Grows or shrinks the fleet to `target` workers (at least one).
    fn scale(&mut self, target: usize, now: Instant) {
        if !self.run.accepting() {
            return;
        }
        let (spawned, closed) = self.fleet.scale(target, now);
        for id in spawned {
            self.spawn_command(id);
        }
        self.out.extend(
            closed
                .into_iter()
                .map(|worker| Command::CloseInput { worker }),
        );
    }
}
