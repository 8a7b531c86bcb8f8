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
/// With --demo (or no --input and stdin a terminal), runs a built-in demo
/// batch of 10,000 `sim` tasks. With no --input, an empty stdin that is not
/// a terminal is an error (exit 2); `--input -` runs it as 0 tasks.
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
    /// A Redis Streams queue for many machines: push an input, show its
    /// state. Consume with `supervisor --queue URL`.
    Queue(crate::queue::QueueArgs),
    /// Make the HTML report of a finished run from its output (and its
    /// --stats file, for the charts over time).
    Report(crate::rebuild::ReportArgs),
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
    #[arg(long, value_name = "PATH", conflicts_with = "python")]
    pub worker: Option<PathBuf>,

    /// An argument for the --worker command, before the standard worker
    /// options (repeatable), e.g. `--worker node --worker-arg worker.js`.
    #[arg(
        long,
        value_name = "ARG",
        requires = "worker",
        allow_hyphen_values = true
    )]
    pub worker_arg: Vec<std::ffi::OsString>,

    /// Run Python handlers: each worker is `PYTHON -m multiloop.worker
    /// SPEC`. SPEC is MODULE:FUNCTION (an `async def`, or a multiloop.Kind)
    /// or MODULE (its multiloop.Kind objects; --task picks one). The module
    /// is imported from the working directory or PYTHONPATH.
    #[arg(long, value_name = "SPEC")]
    pub python: Option<String>,

    /// The Python interpreter for --python [default: `python` next to this
    /// binary (a virtualenv's bin/), else `python3` on PATH].
    #[arg(
        long,
        value_name = "PATH",
        env = "MULTILOOP_PYTHON",
        requires = "python"
    )]
    pub python_interpreter: Option<PathBuf>,

    /// Most tasks in flight in each worker's event loop. A task waiting on
    /// a timer or the network costs only memory (a few KiB), so the default
    /// is high: it bounds a worker's memory and how many tasks a dying
    /// worker takes down (they all run again). Sockets have their own
    /// limits (fetch: --per-host and a connection budget per worker).
    #[arg(short, long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Time limit per task, e.g. `30s`; over it the task is a `timeout`.
    /// Also the longest a task may compute on its worker's event loop: then
    /// the worker is replaced and only that task is a `timeout`. Without
    /// it, a task that computes (busy) runs however long it needs.
    #[arg(long, value_name = "DURATION", value_parser = parse_task_timeout)]
    pub task_timeout: Option<Duration>,

    /// Write records in input order instead of completion order. Records
    /// that finish ahead of an earlier task wait in a reorder buffer of at
    /// most 32MiB; when it is full, input pauses until that task ends.
    #[arg(long)]
    pub keep_order: bool,

    /// Tasks a worker may hold unanswered [default: 1.5 x --concurrency].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub window: Option<u32>,

    /// Write workers' results without checking that each is one line of
    /// JSON. Hidden: it exists so that `scripts/bench.py trivial
    /// --screen-cost` can measure what the check costs; a worker that
    /// sends anything else then breaks the output file.
    #[arg(long, hide = true)]
    pub unscreened_output: bool,

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

    /// Re-run tasks whose result is `failed` or `timeout` up to N times
    /// [default: 0]. fetch retries inside the worker instead [default: 2]:
    /// network errors, timeouts and --retry-status, with backoff and
    /// jitter, Retry-After honoured, the wait spent by that host alone;
    /// `--retries 0` turns them off.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// First delay before a retry; it doubles with each attempt.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    pub retry_backoff: Duration,

    /// At most N tasks in all: input lines plus the tasks handlers add
    /// (crawls). Additions past it are kept out and counted, never run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tasks: Option<u64>,

    /// Tasks added more than D additions away from an input line (depth 0)
    /// are kept out and counted: `--max-depth 1` runs the input lines and
    /// what they add, nothing deeper.
    #[arg(long, value_name = "D")]
    pub max_depth: Option<u32>,

    /// Tasks handlers added (crawls) and not yet started are held in
    /// memory up to SIZE (payloads, paths and bookkeeping); past it they
    /// wait in order in a scratch file in TMPDIR that has no name (it
    /// never outlives the run) and are read back in chunks. `0` sends
    /// every one of them through the file.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub frontier_memory: u64,

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

    /// fetch: most requests in flight to one host (host:port), in all
    /// workers together [default: 8]; `0` = no limit; `auto` = a limit per
    /// host that grows while responses stay fast and halves on timeouts,
    /// refused or reset connections, 429 and 503 (the same as
    /// `--set per_host=...`).
    #[arg(long, value_name = "N|auto", value_parser = parse_per_host)]
    pub per_host: Option<String>,

    /// fetch: HTTP statuses worth another attempt [default:
    /// 408,429,500,502,503,504]; `""` = none (the same as
    /// `--set retry_status=...`).
    #[arg(long, value_name = "LIST")]
    pub retry_status: Option<String>,

    /// fetch: crawl. Every page's links (`<a href>`, `<area href>`,
    /// resolved against `<base href>` and the page's URL) and every
    /// redirect's target become new tasks, keyed by their canonical URL
    /// (fragment dropped, default port removed, host lowercased) so that
    /// each page is fetched once; redirects are not followed inside a task.
    /// Records add "follow": what became of the links. Limits: --scope,
    /// --allow, --deny, `--set robots=obey`.
    #[arg(long)]
    pub follow: bool,

    /// fetch --follow: the links to follow, seen from each page: `host`
    /// (its host name), `domain` (its registrable domain, by the public
    /// suffix list) or `any` [default: host].
    #[arg(long, value_name = "host|domain|any", requires = "follow", value_parser = ["host", "domain", "any"])]
    pub scope: Option<String>,

    /// fetch --follow: follow only links whose canonical URL matches REGEX
    /// (repeatable: any of them).
    #[arg(long, value_name = "REGEX", requires = "follow", value_parser = parse_regex)]
    pub allow: Vec<String>,

    /// fetch --follow: do not follow links whose canonical URL matches
    /// REGEX (repeatable: any of them).
    #[arg(long, value_name = "REGEX", requires = "follow", value_parser = parse_regex)]
    pub deny: Vec<String>,

    /// fetch --follow: follow `rel=nofollow` links too.
    #[arg(long, requires = "follow")]
    pub follow_nofollow: bool,

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

    /// Pull tasks from this queue (filled by `supervisor queue push`)
    /// instead of --input, beside any number of other supervisors:
    /// redis://[:PASSWORD@]HOST[:PORT][/DB]/NAME or rediss://...
    #[arg(long, value_name = "URL", conflicts_with_all = ["input", "demo", "shard", "keep_order"])]
    pub queue: Option<String>,

    /// With --queue: tasks held this long by a silent node (dead, or cut
    /// off) are taken over by the others.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration, requires = "queue")]
    pub claim_after: Duration,

    /// Number of shards for `--shard auto` under Kubernetes.
    #[arg(long, value_name = "N", env = "MULTILOOP_SHARD_COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_count: Option<u64>,

    /// Progress bar on stderr: `auto` shows it when stderr is a terminal.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: crate::report::ProgressMode,

    /// Append the run's time series to FILE as JSON lines: a `start` line,
    /// one `sample` line a second (run counters and per-worker rows), a
    /// `life` line per worker start or end (with its cause), an `end`
    /// line. `supervisor report` rebuilds the HTML report from it.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,

    /// Write a self-contained HTML report of the run to FILE (charts of
    /// throughput, worker lives and resources, task times, errors): at
    /// the end, and every few seconds while it runs. Opens offline.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

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

fn parse_per_host(text: &str) -> Result<String, String> {
    match text {
        "auto" => Ok(text.to_string()),
        _ => text
            .parse::<u32>()
            .map(|n| n.to_string())
            .map_err(|_| format!("{text:?} is neither a number nor `auto`")),
    }
}

/// A regular expression, checked here so that a bad one names its flag.
fn parse_regex(text: &str) -> Result<String, String> {
    match regex::Regex::new(text) {
        Ok(_) => Ok(text.to_string()),
        // The last line of a syntax error says what is wrong; the others
        // draw the pattern.
        Err(regex::Error::Syntax(message)) => Err(message
            .lines()
            .rev()
            .find(|line| line.starts_with("error:"))
            .map_or(message.clone(), str::to_string)),
        Err(error) => Err(error.to_string()),
    }
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// The longest duration any flag accepts. Past it, deadlines computed as
/// `now + duration` (and a retry backoff doubled 16 times) could overflow
/// the clock; no run needs a limit longer than a year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration flag: humantime syntax, at most [`MAX_DURATION`]. clap puts
/// the flag's name in front of the message and exits with status 2.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?}: {e} (try 500ms, 30s, 5m)"))?;
    if duration > MAX_DURATION {
        return Err(format!("{text:?} is too long: durations go up to 365d"));
    }
    Ok(duration)
}

/// `--task-timeout`: workers count it in whole milliseconds, and 0 would
/// mean no limit at all, so anything under 1ms is refused.
fn parse_task_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_millis(1) {
        return Err(format!("{text:?} is too short: at least 1ms"));
    }
    Ok(duration)
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
    fn follow_flags_need_follow_and_valid_patterns() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["supervisor"], args].concat());
        let cli = parse(&[
            "--follow", "--scope", "domain", "--allow", "a", "--allow", "b",
        ])
        .unwrap();
        assert_eq!(cli.run.allow, ["a", "b"]);
        assert!(parse(&["--scope", "any"]).is_err());
        assert!(parse(&["--follow", "--scope", "world"]).is_err());
        let error = parse(&["--follow", "--deny", "(["])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--deny") && error.contains("error:"),
            "{error}"
        );
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

    #[test]
    fn durations_past_a_year_are_refused_not_overflowed() {
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        let error = parse_duration("9999999999999999999s").unwrap_err();
        assert!(error.contains("too long"), "{error}");
        assert!(parse_duration("366d").is_err());
        // Too large for humantime itself: still an error, not a panic.
        assert!(parse_duration("99999999999999999999999s").is_err());
        assert!(parse_task_timeout("500us").is_err());
        assert_eq!(parse_task_timeout("1ms"), Ok(Duration::from_millis(1)));
    }
}
