//! What people see on stderr: the status table and the final summary.

use std::fmt::Write as _;

use multiloop_supervisor::{Observer, RunOutcome, RunReport, WorkerRow};

/// Shows status tables on request.
#[derive(Debug)]
pub struct Reporter {
    quiet: bool,
}

impl Reporter {
    pub fn new(quiet: bool) -> Self {
        Self { quiet }
    }
}

impl Observer for Reporter {
    fn status(&mut self, rows: &[WorkerRow]) {
        if !self.quiet {
            multiloop_supervisor::write_stderr(status_table(rows).as_bytes());
        }
    }
}

/// The per-worker table shown on SIGUSR1.
pub fn status_table(rows: &[WorkerRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6} {:>8} {:<10} {:>8} {:>9} {:>7} {:>8} {:>9} {:>10} {:>8} {:>8}",
        "worker",
        "pid",
        "state",
        "inflight",
        "done",
        "failed",
        "restarts",
        "cpu s",
        "rss",
        "lag ms",
        "max lag"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:>6} {:>8} {:<10} {:>8} {:>9} {:>7} {:>8} {:>9.2} {:>10} {:>8.1} {:>8.1}",
            row.index,
            row.pid.map_or("-".to_string(), |p| p.to_string()),
            row.state,
            row.in_flight,
            row.done,
            row.failed,
            row.restarts,
            row.cpu_us as f64 / 1e6,
            mib(row.rss_bytes),
            row.lag_us as f64 / 1e3,
            row.max_lag_us as f64 / 1e3,
        );
    }
    out
}

/// The summary printed at the end of every run.
pub fn print_summary(report: &RunReport) {
    let mut out = String::new();
    let done = report.ok + report.failed;
    let secs = report.wall.as_secs_f64();
    let _ = writeln!(
        out,
        "multiloop: {done} tasks: {} ok, {} failed in {secs:.2}s ({:.0} tasks/s); {} worker restarts",
        report.ok,
        report.failed,
        done as f64 / secs.max(1e-9),
        report.restarts
    );
    match &report.outcome {
        RunOutcome::GaveUp(message) => {
            let _ = writeln!(out, "multiloop: {message}");
            let _ = writeln!(
                out,
                "multiloop: the output is complete up to here; run again with --resume to continue"
            );
        }
        RunOutcome::Interrupted(signal) => {
            let _ = writeln!(
                out,
                "multiloop: stopped by {}; unfinished tasks are not in the output (--resume runs them)",
                signal_name(*signal)
            );
        }
        RunOutcome::Fatal(message) => {
            let _ = writeln!(out, "multiloop: error: {message}");
        }
        RunOutcome::AllOk | RunOutcome::SomeFailed => {}
    }
    let _ = writeln!(
        out,
        "{:>6} {:>8} {:>9} {:>7} {:>8} {:>9} {:>10}",
        "worker", "pid", "tasks", "failed", "restarts", "cpu s", "peak rss"
    );
    for row in &report.workers {
        let _ = writeln!(
            out,
            "{:>6} {:>8} {:>9} {:>7} {:>8} {:>9.2} {:>10}",
            row.index,
            row.pid.map_or("-".to_string(), |p| p.to_string()),
            row.done,
            row.failed,
            row.restarts,
            row.cpu_us as f64 / 1e6,
            mib(row.peak_rss_bytes),
        );
    }
    multiloop_supervisor::write_stderr(out.as_bytes());
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_string())
}
