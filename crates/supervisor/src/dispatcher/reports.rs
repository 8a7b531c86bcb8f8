//! Read-only views of the dispatcher for people: worker rows, progress,
//! the final report.

use std::time::Instant;

use super::core::Dispatcher;
use super::events::WorkerId;
use super::fleet::Incarnation;
use super::status::{Progress, RunOutcome, RunReport, WorkerRow};
use crate::loop_watch::LoopState;

impl Dispatcher {
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
                    held: current.map_or_else(String::new, |c| held(c, now)),
                    blocked_share: current.map_or(0.0, |c| c.watch.blocked_share(now)),
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

/// What holds a worker's loop, for people: `busy: seq 17 for 14.2 s`.
fn held(inc: &Incarnation, now: Instant) -> String {
    let name = |task: Option<u64>| match task {
        Some(id) => inc
            .in_flight
            .get(&id)
            .map_or_else(|| format!("task id {id}"), |t| format!("seq {}", t.seq)),
        None => "outside any task".to_string(),
    };
    match inc.watch.state(now) {
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
