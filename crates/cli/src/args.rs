//! The command line, as clap parses it. Checks that need the file system
//! or the worker binary happen in `config`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::size::parse_size;

/// Run a batch of async tasks on every core, one supervised worker process
/// per core, with results merged into one JSONL output.
///
/// Each input line is one task (JSON). Each output line is one record:
/// {"seq":LINE,"worker":N,"attempts":N,"ms":F,"ok":OUTPUT} or
/// {"seq":LINE,...,"error":{"kind":"timeout|failed|panicked|crashed|bad_input","message":"..."}}.
///
/// With no --input and stdin a terminal (or with --demo), runs a built-in
/// demo batch of 10,000 `sim` tasks.
///
/// Signals: INT/TERM once = drain, twice = stop now; TTIN/TTOU = one worker
/// more/less; HUP = rolling restart; USR1 = status table.
///
/// Exit status: 0 all ok, 1 some failed, 2 usage or setup error, 3 gave up
/// (restart limit), 128+N stopped by signal N (130 SIGINT, 143 SIGTERM).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "supervisor",
    version,
    max_term_width = 100,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Subcommand>,

    #[command(flatten)]
    pub run: Args,
}

/// What `supervisor` does besides running a batch.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Subcommand {
    /// Combine shard outputs into one, in input order, reporting missing
    /// and duplicated tasks.
    Merge(crate::merge::MergeArgs),
    /// Talk to a running supervisor: status, restart or kill a worker,
    /// scale, drain.
    Ctl(crate::ctl::CtlArgs),
    /// A live table of a running supervisor's workers, sorted by CPU, with
    /// keys to restart or kill a worker and to scale.
    Top(crate::top::TopArgs),
}

/// Running a batch: the flags of `supervisor` itself.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Worker processes: `auto` (one per available core) or a number.
    #[arg(short, long, default_value = "auto", value_parser = parse_workers)]
    pub workers: Workers,

    /// Input file of JSON lines; `-` for stdin.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Output file of JSON lines [default: stdout].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Run the built-in demo batch (10,000 seeded `sim` tasks).
    #[arg(long, conflicts_with = "input")]
    pub demo: bool,

    /// Task kind to run [default: sim, or the worker's only kind].
    #[arg(short, long, value_name = "KIND")]
    pub task: Option<String>,

    /// Worker binary [default: `worker` next to this binary].
    #[arg(long, value_name = "PATH")]
    pub worker: Option<PathBuf>,

    /// Most tasks in flight in each worker's event loop.
    #[arg(short, long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Time limit per task, e.g. `30s`; over it the task is a `timeout`.
    /// Also the longest a task may compute on its worker's event loop: then
    /// the worker is replaced and only that task is a `timeout`. Without
    /// it, a task that computes (busy) runs however long it needs.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub task_timeout: Option<Duration>,

    /// Write records in input order (through a bounded reorder buffer)
    /// instead of completion order.
    #[arg(long)]
    pub keep_order: bool,

    /// Tasks a worker may hold unanswered [default: 1.5 x --concurrency].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub window: Option<u32>,

    /// Largest frame between supervisor and worker; longer input lines are
    /// `bad_input`.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub max_frame: u64,

    /// A worker silent (no heartbeat) this long, or whose event loop a task
    /// blocks this long without using CPU (stuck), is killed and replaced;
    /// a stuck loop's task is blamed. A task computing on the loop (busy)
    /// is not limited by this: see --task-timeout.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub worker_timeout: Duration,

    /// Time given to tasks in flight when draining or finishing.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,

    /// Give up after this many worker deaths in a row with no task
    /// completed in between, within --restart-window.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_restarts: usize,

    /// Window of --max-restarts.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub restart_window: Duration,

    /// Crashes of its worker, while running alone, after which a task is
    /// reported as `crashed`.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_crashes: u32,

    /// Re-run tasks whose result is `failed` or `timeout` up to N times.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,

    /// First delay before a retry; it doubles with each attempt.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    pub retry_backoff: Duration,

    /// Replace a worker after it answered about N tasks (±10 % jitter).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tasks_per_worker: Option<u64>,

    /// Replace a worker whose resident memory grows past SIZE.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_worker_rss: Option<u64>,

    /// Each input line is a bare string (a URL, a name), not JSON: it is
    /// sent to the task as a JSON string.
    #[arg(long)]
    pub lines: bool,

    /// A setting for the task kind, passed to every worker (repeatable),
    /// e.g. `--set user_agent=mybot/1.0`.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub settings: Vec<(String, String)>,

    /// fetch: most concurrent requests to one host, per worker
    /// (the same as `--set per_host=N`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub per_host: Option<u32>,

    /// fetch: HTTP statuses worth another attempt under --retries, e.g.
    /// `429,500-599` (the same as `--set retry_status=...`).
    #[arg(long, value_name = "LIST")]
    pub retry_status: Option<String>,

    /// Continue an interrupted run: skip the tasks already recorded in
    /// --output (a torn last line is dropped) and append the rest.
    #[arg(long, requires = "output")]
    pub resume: bool,

    /// Like --resume, and also run again the tasks recorded with an error.
    /// The old record stays; read the file with "last record per task wins".
    #[arg(long, requires = "output")]
    pub resume_failed: bool,

    /// Identify tasks by this field of the input line instead of by line
    /// number (for --resume); records then carry "key".
    #[arg(long, value_name = "FIELD")]
    pub key: Option<String>,

    /// Run only shard K of N (0-based): lines whose number, or whose --key
    /// hash, falls in it. `auto` reads a Kubernetes Indexed Job
    /// (JOB_COMPLETION_INDEX with --shard-count or MULTILOOP_SHARD_COUNT) or
    /// a Slurm array (SLURM_ARRAY_TASK_ID/_COUNT/_MIN).
    #[arg(long, value_name = "K/N|auto")]
    pub shard: Option<String>,

    /// Number of shards for `--shard auto` under Kubernetes.
    #[arg(long, value_name = "N", env = "MULTILOOP_SHARD_COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_count: Option<u64>,

    /// Progress bar on stderr: `auto` shows it when stderr is a terminal.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: crate::report::ProgressMode,

    /// Write per-worker statistics as JSON to FILE, every second and at
    /// the end.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,

    /// More log lines (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only warnings and errors; no summary.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// `--workers auto|N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Auto,
    Count(usize),
}

fn parse_workers(text: &str) -> Result<Workers, String> {
    if text == "auto" {
        return Ok(Workers::Auto);
    }
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(Workers::Count(n)),
        Err(_) => Err(format!("{text:?} is neither `auto` nor a number")),
    }
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (try 500ms, 30s, 5m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn workers_parse() {
        assert_eq!(parse_workers("auto"), Ok(Workers::Auto));
        assert_eq!(parse_workers("3"), Ok(Workers::Count(3)));
        assert!(parse_workers("0").is_err());
        assert!(parse_workers("many").is_err());
    }

    #[test]
    fn durations_name_the_value() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").unwrap_err().contains("\"soon\""));
    }
}
