//! What people see on stderr while a run goes and after it: the progress
//! bar (or periodic status lines), status tables, the `--stats` file and the
//! final summary.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use multiloop_supervisor::{Observer, Progress, RunOutcome, RunReport, WorkerRow};
use tracing::info;

/// How often `-v` logs a status line when there is no progress bar.
const STATUS_LINE_EVERY: Duration = Duration::from_secs(10);

/// `--progress auto|always|never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal.
    Auto,
    Always,
    Never,
}

/// Shows progress, status tables and keeps the stats file.
#[derive(Debug)]
pub struct Reporter {
    quiet: bool,
    verbose: bool,
    bar: Option<ProgressBar>,
    stats: Option<PathBuf>,
    started: Instant,
    last_line: Instant,
    last_progress: Progress,
}

impl Reporter {
    pub fn new(quiet: bool, verbose: bool, mode: ProgressMode, stats: Option<PathBuf>) -> Self {
        let show = match mode {
            ProgressMode::Always => true,
            ProgressMode::Never => false,
            ProgressMode::Auto => !quiet && std::io::stderr().is_terminal(),
        };
        let bar = show.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} ETA {eta} {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            let hook_bar = bar.clone();
            multiloop_supervisor::set_stderr_hook(move |bytes| {
                hook_bar.suspend(|| multiloop_supervisor::write_stderr_raw(bytes));
            });
            bar
        });
        let now = Instant::now();
        Self {
            quiet,
            verbose,
            bar,
            stats,
            started: now,
            last_line: now,
            last_progress: Progress::default(),
        }
    }

    /// A handle that sets the bar's length once the total is known.
    pub fn total_setter(&self) -> Option<Arc<dyn Fn(u64) + Send + Sync>> {
        let bar = self.bar.clone()?;
        Some(Arc::new(move |total| bar.set_length(total)))
    }

    /// Writes the last stats and clears the bar before the summary.
    pub fn finish(&mut self, report: &RunReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let progress = Progress {
            done: report.ok + report.failed,
            failed: report.failed,
            read: report.read,
            restarts: report.restarts,
            alive: 0,
        };
        self.write_stats(&progress, &report.workers, Some(report));
    }

    fn write_stats(&self, progress: &Progress, rows: &[WorkerRow], report: Option<&RunReport>) {
        let Some(path) = &self.stats else { return };
        let mut value = serde_json::json!({
            "elapsed_s": self.started.elapsed().as_secs_f64(),
            "finished": report.is_some(),
            "progress": progress,
            "workers": rows,
        });
        if let Some(report) = report {
            value["outcome"] = serde_json::Value::String(outcome_name(&report.outcome).into());
            let crawl = &report.crawl;
            value["crawl"] = serde_json::json!({
                "added": crawl.added,
                "kept_out": {
                    "seen": crawl.kept_out.seen,
                    "max_depth": crawl.kept_out.max_depth,
                    "max_tasks": crawl.kept_out.max_tasks,
                },
            });
        }
        // Written aside and renamed, so a reader never sees half a file.
        let partial = path.with_extension("partial");
        let written = std::fs::write(&partial, format!("{value:#}\n"))
            .and_then(|()| std::fs::rename(&partial, path));
        if let Err(error) = written {
            tracing::warn!("cannot write --stats {}: {error}", path.display());
        }
    }
}

impl Observer for Reporter {
    fn progress(&mut self, progress: &Progress) {
        self.last_progress = *progress;
        if let Some(bar) = &self.bar {
            bar.set_position(progress.done);
            let rate = progress.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{rate:.0}/s  failed {}  restarts {}  workers {}",
                progress.failed, progress.restarts, progress.alive
            ));
        } else if self.verbose && self.last_line.elapsed() >= STATUS_LINE_EVERY {
            self.last_line = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-9);
            info!(
                "progress: {} done ({:.0}/s), {} failed, {} restarts, {} workers",
                progress.done,
                progress.done as f64 / secs,
                progress.failed,
                progress.restarts,
                progress.alive
            );
        }
    }

    fn status(&mut self, rows: &[WorkerRow]) {
        if !self.quiet {
            multiloop_supervisor::write_stderr(status_table(rows).as_bytes());
        }
    }

    fn sampled(&mut self, progress: &Progress, rows: &[WorkerRow]) {
        self.write_stats(progress, rows, None);
    }
}

fn outcome_name(outcome: &RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::AllOk => "all_ok",
        RunOutcome::SomeFailed => "some_failed",
        RunOutcome::GaveUp(_) => "gave_up",
        RunOutcome::Interrupted(_) => "interrupted",
        RunOutcome::Fatal(_) => "fatal",
    }
}

/// The per-worker table shown on SIGUSR1 and by `ctl status`.
pub fn status_table(rows: &[WorkerRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6} {:>8} {:<10} {:>8} {:>9} {:>7} {:>8} {:>6} {:>9} {:>10} {:>8} {:>8} {:>7}  loop",
        "worker",
        "pid",
        "state",
        "inflight",
        "done",
        "failed",
        "restarts",
        "cpu %",
        "cpu s",
        "rss",
        "lag ms",
        "max lag",
        "blocked",
    );
    for row in rows {
        let line = format!(
            "{:>6} {:>8} {:<10} {:>8} {:>9} {:>7} {:>8} {:>6.1} {:>9.2} {:>10} {:>8.1} {:>8.1} {:>6.0}%  {}",
            row.index,
            row.pid.map_or("-".to_string(), |p| p.to_string()),
            row.state,
            row.in_flight,
            row.done,
            row.failed,
            row.restarts,
            row.cpu_percent,
            row.cpu_us as f64 / 1e6,
            mib(row.rss_bytes),
            row.lag_us as f64 / 1e3,
            row.max_lag_us as f64 / 1e3,
            row.blocked_share * 100.0,
            row.held,
        );
        let _ = writeln!(out, "{}", line.trim_end());
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
    let crawl = &report.crawl;
    if crawl.added > 0 || crawl.kept_out.total() > 0 {
        let kept = &crawl.kept_out;
        let _ = writeln!(
            out,
            "multiloop: {} tasks added by tasks; kept out: {} already seen, {} past --max-depth, {} past --max-tasks",
            crawl.added, kept.seen, kept.max_depth, kept.max_tasks
        );
    }
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
        "{:>6} {:>8} {:>9} {:>7} {:>8} {:>9} {:>10} {:>9}",
        "worker", "pid", "tasks", "failed", "restarts", "cpu s", "peak rss", "max lag"
    );
    for row in &report.workers {
        let _ = writeln!(
            out,
            "{:>6} {:>8} {:>9} {:>7} {:>8} {:>9.2} {:>10} {:>6.1} ms",
            row.index,
            row.pid.map_or("-".to_string(), |p| p.to_string()),
            row.done,
            row.failed,
            row.restarts,
            row.cpu_us as f64 / 1e6,
            mib(row.peak_rss_bytes),
            row.max_lag_us as f64 / 1e3,
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
