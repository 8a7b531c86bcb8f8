//! What one report page shows, as one JSON document: the run's header
//! (command line, machine, start), its end (outcome, totals) once there is
//! one, and the history. The `--stats` file keeps the same header and end.

use std::time::{SystemTime, UNIX_EPOCH};

use multiloop_supervisor::history::HistoryView;
use multiloop_supervisor::{RunOutcome, RunReport, WorkerRow};
use serde::{Deserialize, Serialize};

/// Who ran what, where and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// The command line, one argument per item.
    pub command: Vec<String>,
    pub host: String,
    /// CPUs this process may use.
    pub cpus: usize,
    pub os: String,
    pub version: String,
    pub kind: String,
    pub workers: usize,
    pub started_unix_ms: u64,
}

impl RunMeta {
    pub fn here(kind: &str, workers: usize) -> Self {
        Self {
            command: std::env::args().collect(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kind: kind.to_string(),
            workers,
            started_unix_ms: unix_ms(),
        }
    }
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    pub ended_unix_ms: u64,
    pub wall_s: f64,
    /// `all_ok`, `some_failed`, `gave_up`, `interrupted`, `fatal`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub exit_code: i32,
    pub ok: u64,
    pub failed: u64,
    pub read: u64,
    pub restarts: u64,
    pub workers: Vec<WorkerRow>,
    /// What tasks added and what the crawl's limits kept out (all zero for
    /// a batch whose handlers add nothing).
    #[serde(default)]
    pub crawl: CrawlEnd,
}

/// A crawl's counts at the end of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrawlEnd {
    /// Tasks added by tasks and accepted.
    pub added: u64,
    /// Additions whose key was seen before.
    pub kept_out_seen: u64,
    /// Additions deeper than `--max-depth`.
    pub kept_out_max_depth: u64,
    /// Additions past `--max-tasks`.
    pub kept_out_max_tasks: u64,
    /// Added tasks that waited on disk, past `--frontier-memory`.
    #[serde(default)]
    pub spilled: u64,
}

impl RunEnd {
    pub fn of(report: &RunReport) -> Self {
        let message = match &report.outcome {
            RunOutcome::GaveUp(message) | RunOutcome::Fatal(message) => Some(message.clone()),
            RunOutcome::Interrupted(signal) => Some(format!("stopped by signal {signal}")),
            RunOutcome::AllOk | RunOutcome::SomeFailed => None,
        };
        Self {
            ended_unix_ms: unix_ms(),
            wall_s: report.wall.as_secs_f64(),
            outcome: crate::report::outcome_name(&report.outcome).to_string(),
            message,
            exit_code: crate::ExitCode::of(&report.outcome).into(),
            ok: report.ok,
            failed: report.failed,
            read: report.read,
            restarts: report.restarts,
            workers: report.workers.clone(),
            crawl: CrawlEnd {
                added: report.crawl.added,
                kept_out_seen: report.crawl.kept_out.seen,
                kept_out_max_depth: report.crawl.kept_out.max_depth,
                kept_out_max_tasks: report.crawl.kept_out.max_tasks,
                spilled: report.crawl.spilled,
            },
        }
    }
}

/// Everything one page shows.
#[derive(Debug, Clone, Serialize)]
pub struct PageData<'a> {
    pub meta: Option<&'a RunMeta>,
    pub end: Option<&'a RunEnd>,
    /// The run is over (a page without an end reloads itself while the
    /// run goes; a page rebuilt without a stats file has no end either).
    pub finished: bool,
    pub history: &'a HistoryView,
    pub generated_unix_ms: u64,
    /// Shown in the page's footer, with its licence.
    pub chart_library: &'static str,
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
