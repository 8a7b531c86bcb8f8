//! Snapshots of the run for people: per-worker rows and the final report.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a worker slot is doing, as shown in status tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Spawned; no handshake yet.
    Starting,
    Running,
    /// Running a suspect group alone (blame).
    Probing,
    /// Finishing its tasks before it exits (recycled, restarted, retired).
    Draining,
    /// Killed; its exit is awaited.
    Killing,
    /// Dead; its replacement is due after the backoff.
    Restarting,
    /// The fleet shrank below this slot.
    Retired,
    Exited,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Running => "running",
            WorkerState::Probing => "probing",
            WorkerState::Draining => "draining",
            WorkerState::Killing => "killing",
            WorkerState::Restarting => "restarting",
            WorkerState::Retired => "retired",
            WorkerState::Exited => "exited",
        }
    }
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`, so that table widths apply.
        f.pad(self.as_str())
    }
}

/// One worker slot, as shown in status tables and the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRow {
    pub index: usize,
    pub pid: Option<u32>,
    pub state: WorkerState,
    pub in_flight: usize,
    pub done: u64,
    pub failed: u64,
    pub restarts: u64,
    /// CPU use over the last second, 100 = one core.
    pub cpu_percent: f64,
    pub cpu_us: u64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub lag_us: u64,
    pub max_lag_us: u64,
    /// What holds the event loop, from the watchdog: `busy: seq 17 for
    /// 14.2 s`, `stuck: ...`, `silent for ...`; empty while it turns.
    #[serde(default)]
    pub held: String,
    /// Share of this process's time its loop was held by single polls
    /// (0-1): high means CPU work is starving the I/O.
    #[serde(default)]
    pub blocked_share: f64,
    #[serde(skip)]
    pub uptime: Option<Duration>,
}

/// Run-wide counters, for progress displays and status requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Records written (ok + failed).
    pub done: u64,
    pub failed: u64,
    /// Tasks read from the input so far.
    pub read: u64,
    pub restarts: u64,
    /// Worker processes alive.
    pub alive: u64,
}

/// How a run ended; decides the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    AllOk,
    SomeFailed,
    /// The restart-intensity limit tripped.
    GaveUp(String),
    /// Stopped by a signal (its number).
    Interrupted(i32),
    /// A configuration or startup error (bad worker binary, wrong kind).
    Fatal(String),
}

/// The end of a run, for the summary and the exit status.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: RunOutcome,
    pub ok: u64,
    pub failed: u64,
    /// Tasks read from the input (lines that were not blank).
    pub read: u64,
    /// Lines in the input, once it was read to its end.
    pub lines: Option<u64>,
    pub restarts: u64,
    /// Tasks added by tasks, and those kept out.
    pub crawl: super::frontier::CrawlCounts,
    pub wall: Duration,
    pub workers: Vec<WorkerRow>,
}
