//! What people see while a run goes and after it: the progress bar (or
//! periodic status lines), status tables and the final summary on stderr;
//! the `--stats` file and the `--report` page, kept up to date.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use multiloop_supervisor::history::{History, HistoryView, LifeChange, Sampled};
use multiloop_supervisor::{Observer, Progress, RunOutcome, RunReport, WorkerRow};
use tracing::info;

use crate::page::{self, PageData, RunEnd, RunMeta};
use crate::stats_file::{StatsLine, StatsWriter};

/// How often `-v` logs a status line when there is no progress bar.
const STATUS_LINE_EVERY: Duration = Duration::from_secs(10);
/// How often the `--report` page is rewritten while the run goes.
const PAGE_EVERY: Duration = Duration::from_secs(5);

/// `--progress auto|always|never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal.
    Auto,
    Always,
    Never,
}

/// Where the `--report` page goes, and when it was last written.
#[derive(Debug)]
struct PageFile {
    path: PathBuf,
    written: Option<Instant>,
    /// The whole history, once the run is over.
    last: Option<HistoryView>,
}

/// The files kept up to date while a run goes.
#[derive(Debug, Default)]
pub struct Files {
    pub stats: Option<PathBuf>,
    pub report: Option<PathBuf>,
}

/// Shows progress, status tables and keeps the stats file and the page.
#[derive(Debug)]
pub struct Reporter {
    quiet: bool,
    verbose: bool,
    bar: Option<ProgressBar>,
    meta: RunMeta,
    stats: Option<StatsWriter>,
    page: Option<PageFile>,
    started: Instant,
    last_line: Instant,
    last_progress: Progress,
}

impl Reporter {
    pub fn new(
        quiet: bool,
        verbose: bool,
        mode: ProgressMode,
        files: Files,
        meta: RunMeta,
    ) -> anyhow::Result<Self> {
        let stats = match &files.stats {
            Some(path) => Some(StatsWriter::open(path, &meta)?),
            None => None,
        };
        let page = files.report.map(|path| PageFile {
            path,
            written: None,
            last: None,
        });
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
        Ok(Self {
            quiet,
            verbose,
            bar,
            meta,
            stats,
            page,
            started: now,
            last_line: now,
            last_progress: Progress::default(),
        })
    }

    /// A handle that sets the bar's length once the total is known.
    pub fn total_setter(&self) -> Option<Arc<dyn Fn(u64) + Send + Sync>> {
        let bar = self.bar.clone()?;
        Some(Arc::new(move |total| bar.set_length(total)))
    }

    /// Writes the end to the stats file and the final page, and clears the
    /// bar before the summary.
    pub fn finish(&mut self, report: &RunReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let end = RunEnd::of(report);
        if let Some(stats) = &mut self.stats {
            stats.write(&StatsLine::End { end: end.clone() });
        }
        if let Some(page) = &self.page {
            if let Some(view) = &page.last {
                write_page(&page.path, &self.meta, Some(&end), view);
            }
        }
    }
}

/// Writes one report page; a failure is a warning, never the run's end.
fn write_page(path: &Path, meta: &RunMeta, end: Option<&RunEnd>, view: &HistoryView) {
    let html = page::render(&PageData {
        meta: Some(meta),
        end,
        finished: end.is_some(),
        history: view,
        generated_unix_ms: page::unix_ms(),
        chart_library: page::CHART_LIBRARY,
    });
    if let Err(error) = page::write_atomically(path, &html) {
        tracing::warn!("cannot write --report {}: {error}", path.display());
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

    fn sampled(&mut self, sample: &Sampled, history: &History) {
        if let Some(stats) = &mut self.stats {
            stats.write(&StatsLine::Sample(sample.clone()));
        }
        if let Some(page) = &mut self.page {
            if page.written.is_none_or(|at| at.elapsed() >= PAGE_EVERY) {
                page.written = Some(Instant::now());
                // Rendering and syncing the page blocks: the engine's
                // runtime thread hands its other tasks (worker links, the
                // output) to another thread meanwhile.
                tokio::task::block_in_place(|| {
                    write_page(&page.path, &self.meta, None, &history.view())
                });
            }
        }
    }

    fn life(&mut self, t: f64, change: &LifeChange) {
        if let Some(stats) = &mut self.stats {
            stats.write(&StatsLine::Life {
                t,
                life: change.clone(),
            });
        }
    }

    fn finished(&mut self, history: &History) {
        if let Some(page) = &mut self.page {
            page.last = Some(history.view());
        }
    }
}

pub fn outcome_name(outcome: &RunOutcome) -> &'static str {
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
    if crawl.queue && (crawl.added > 0 || crawl.kept_out.total() > 0) {
        let _ = writeln!(
            out,
            "multiloop: {} tasks added by tasks, handed to the queue with their parents (its seen-set and --max-tasks decide which go in: see `queue status`); kept out here: {} past --max-depth",
            crawl.added, crawl.kept_out.max_depth
        );
    } else if crawl.added > 0 || crawl.kept_out.total() > 0 {
        let kept = &crawl.kept_out;
        let _ = writeln!(
            out,
            "multiloop: {} tasks added by tasks; kept out: {} already seen, {} past --max-depth, {} past --max-tasks",
            crawl.added, kept.seen, kept.max_depth, kept.max_tasks
        );
        if crawl.spilled > 0 {
            let _ = writeln!(
                out,
                "multiloop: {} added tasks waited on disk (past --frontier-memory)",
                crawl.spilled
            );
        }
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
