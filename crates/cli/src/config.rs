//! From parsed arguments to a validated run configuration: every check
//! that can fail before the first task, with the flag it is about.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use multiloop_supervisor::fingerprint::Fingerprint;
use multiloop_supervisor::queue::QueueSpec;
use multiloop_supervisor::{
    Backoff, CrawlLimits, DemoBatch, DispatchConfig, FleetConfig, Identity, InputSource, Journal,
    LifeLimits, OutputTarget, RunConfig, SpillConfig,
};
use tracing::{info, warn};

use crate::args::{Args, Workers};

/// Time a worker binary gets to answer `--list-kinds`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Interval between worker heartbeats.
const HEARTBEAT: Duration = Duration::from_millis(500);

pub async fn build(args: &Args) -> Result<RunConfig> {
    let workers = match args.workers {
        Workers::Count(n) => n,
        // Honours affinity masks and cgroup CPU quotas.
        Workers::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // Before anything starts: a fleet the machine cannot hold would fail
    // only after a flood of spawn errors.
    multiloop_supervisor::limits::check_fleet_size(workers).context("--workers")?;
    let worker = worker_command(args)?;
    let kinds = list_kinds(&worker).await?;
    let kind = choose_kind(args.task.as_deref(), &kinds, &worker.name())?;
    let input = match &args.queue {
        Some(url) => queue_source(args, url, workers)?,
        None => input_source(args)?,
    };
    if args.lines && args.key.is_some() {
        bail!("--key needs JSON object lines; with --lines, tasks are known by line number");
    }
    if args.shard.as_deref().is_some_and(|s| s != "auto") && args.shard_count.is_some() {
        bail!("--shard-count goes with --shard auto; --shard K/N already gives the count");
    }
    let shard = args
        .shard
        .as_deref()
        .map(|spec| crate::shard::resolve(spec, args.shard_count, |name| std::env::var(name).ok()))
        .transpose()?;
    if let Some(shard) = shard {
        info!("running shard {shard} of the input");
    }
    let identity = match &args.key {
        Some(field) => Identity::Key(field.clone()),
        None => Identity::Line,
    };
    let resume = args.resume || args.resume_failed;
    // After the argument checks, so that a usage error is named first (the
    // probe may wait for a slow producer); before the output is created, so
    // that a refused run leaves no file behind.
    if args.input.is_none() && matches!(input, InputSource::Stdin) && crate::stdin::is_empty() {
        bail!(
            "no input: stdin is empty and not a terminal, and no --input was given; \
             run the demo with --demo, your tasks with --input FILE (or through stdin), \
             or pass --input - to run an empty stdin as 0 tasks"
        );
    }
    let (output, mut journal) = match &args.output {
        None => (OutputTarget::Stdout, None),
        Some(path) if path.as_os_str() == "-" => {
            if resume {
                bail!("--resume needs --output FILE: the output file is the journal");
            }
            (OutputTarget::Stdout, None)
        }
        Some(path) => {
            // Locked before the journal is read: two supervisors on one
            // output (a rescheduled pod while the old one drains) would
            // otherwise cut each other's records and run tasks twice.
            let lock = lock_output(path)?;
            if resume {
                check_same_input(path, &input, &identity)?;
            }
            record_input(path, &input)?;
            let journal = if resume {
                Some(load_journal(
                    path,
                    &identity,
                    args.resume_failed,
                    args.queue.is_some(),
                    &frontier_spill(args),
                )?)
            } else {
                None
            };
            let target = OutputTarget::File {
                path: path.clone(),
                append: resume,
                lock: Arc::new(lock),
            };
            (target, journal)
        }
    };
    let max_frame = usize::try_from(args.max_frame).context("--max-frame is too large")?;
    if max_frame < 1024 {
        bail!("--max-frame {max_frame} is too small (at least 1KiB)");
    }
    if max_frame > u32::MAX as usize {
        bail!("--max-frame must be below 4GiB (frames have a 32-bit length)");
    }
    let concurrency = args.concurrency as usize;
    let window = args
        .window
        .map_or(concurrency + concurrency / 2, |w| w as usize);
    if args.worker_timeout <= HEARTBEAT * 2 {
        bail!(
            "--worker-timeout must be longer than two heartbeats ({:?})",
            HEARTBEAT * 2
        );
    }
    let policy = KindPolicy::of(&kind);
    if args.follow && !policy.follows_links {
        bail!("--follow is for --task fetch (a handler of kind {kind:?} adds its own tasks)");
    }
    let settings = settings(args, policy);
    let retries = if policy.retries_in_worker {
        0
    } else {
        args.retries.unwrap_or(0)
    };
    Ok(RunConfig {
        dispatch: DispatchConfig {
            workers,
            kind,
            window,
            keep_order: args.keep_order,
            reorder_bytes: multiloop_supervisor::REORDER_BYTES,
            fleet: FleetConfig {
                life: LifeLimits {
                    worker_timeout: args.worker_timeout,
                    task_timeout: args.task_timeout,
                    heartbeat: HEARTBEAT,
                    grace: args.grace,
                },
                backoff: Backoff {
                    min: Duration::from_millis(20),
                    max: Duration::from_secs(5),
                },
                max_tasks_per_worker: args.max_tasks_per_worker,
                max_worker_rss: args.max_worker_rss,
            },
            max_restarts: args.max_restarts,
            restart_window: args.restart_window,
            max_crashes: args.max_crashes,
            retries,
            retry_backoff: args.retry_backoff,
            crawl: CrawlLimits {
                max_tasks: args.max_tasks,
                max_depth: args.max_depth,
                queue: args.queue.is_some(),
                spill: frontier_spill(args),
                // The engine derives the payload limit from --max-frame.
                ..Default::default()
            },
        },
        input,
        output,
        worker_program: worker.program,
        worker_args: worker.args,
        concurrency,
        max_frame,
        identity,
        // A queue node's added tasks live in the queue, not in its journal:
        // it has no frontier of its own to resume.
        crawl_journal: journal
            .as_mut()
            .filter(|_| args.queue.is_none())
            .map(|j: &mut Journal| std::mem::take(&mut j.crawl)),
        journal: journal.map(Arc::new),
        history_records: args.report.is_some(),
        history_hosts: policy.records_hosts,
        lines_as_strings: args.lines,
        settings,
        shard,
        screen_output: !args.unscreened_output,
    })
}

/// What the supervisor needs to know about a task kind: the built-in
/// kinds with a policy of their own are named here, and only here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct KindPolicy {
    /// The kind retries inside the worker (`fetch`, per host), so
    /// `--retries` is passed to it as a setting; the supervisor retrying
    /// too would multiply the attempts.
    retries_in_worker: bool,
    /// The kind turns a page's links into tasks with `--follow`.
    follows_links: bool,
    /// Its records name a URL and an HTTP status, so a report can show a
    /// per-host table.
    records_hosts: bool,
}

impl KindPolicy {
    fn of(kind: &str) -> Self {
        match kind {
            "fetch" => Self {
                retries_in_worker: true,
                follows_links: true,
                records_hosts: true,
            },
            _ => Self::default(),
        }
    }
}

/// `--set` plus the flags that are shorthands for settings.
fn settings(args: &Args, policy: KindPolicy) -> Vec<(String, String)> {
    let mut settings = args.settings.clone();
    if let Some(n) = &args.per_host {
        settings.push(("per_host".into(), n.clone()));
    }
    if let (Some(n), true) = (args.retries, policy.retries_in_worker) {
        settings.push(("retries".into(), n.to_string()));
    }
    if let Some(list) = &args.retry_status {
        settings.push(("retry_status".into(), list.clone()));
    }
    if args.follow {
        settings.push(("follow".into(), "true".into()));
    }
    if let Some(scope) = &args.scope {
        settings.push(("scope".into(), scope.clone()));
    }
    for (key, patterns) in [("allow", &args.allow), ("deny", &args.deny)] {
        if !patterns.is_empty() {
            settings.push((key.into(), any_of(patterns)));
        }
    }
    if args.follow_nofollow {
        settings.push(("nofollow".into(), "follow".into()));
    }
    settings
}

/// One pattern that matches where any of `patterns` does.
fn any_of(patterns: &[String]) -> String {
    match patterns {
        [one] => one.clone(),
        many => many
            .iter()
            .map(|p| format!("(?:{p})"))
            .collect::<Vec<_>>()
            .join("|"),
    }
}

/// Counts the tasks to expect, in the background, for the progress bar:
/// lines of a regular input file (a fast newline count), or the demo's
/// size; shards and resumed tasks are subtracted. Stdin has no total.
pub fn count_total(config: &RunConfig, set_total: Arc<dyn Fn(u64) + Send + Sync>) {
    let shard = config.shard;
    let done = config.journal.as_ref().map_or(0, |j| j.done());
    let adjust = move |lines: u64| {
        let lines = shard.map_or(lines, |s| {
            lines / s.count + u64::from(lines % s.count > s.index)
        });
        lines.saturating_sub(done)
    };
    match &config.input {
        InputSource::Demo(demo) => set_total(adjust(demo.tasks)),
        // A node's share of a queue is not known in advance.
        InputSource::Stdin | InputSource::Queue(_) => {}
        InputSource::File(path) => {
            let path = path.clone();
            std::thread::spawn(move || {
                if let Ok(lines) = count_lines(&path) {
                    set_total(adjust(lines));
                }
            });
        }
    }
}

fn count_lines(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(lines + u64::from(last != b'\n'));
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
    }
}

/// Opens `path` and takes an exclusive lock on it, held for the whole run.
fn lock_output(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open output {} (--output)", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "output {} is in use by another supervisor; wait for it to end (or stop it) before resuming",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock output {}", path.display()))
        }
    }
}

/// On `--resume`, refuses an input other than the one `output` was written
/// from: records know their task by line number, so another file would
/// skip the wrong lines. With `--key` the keys say which task is which, so
/// another input (reordered, regenerated) is only worth a warning.
fn check_same_input(output: &Path, input: &InputSource, identity: &Identity) -> Result<()> {
    let InputSource::File(path) = input else {
        return Ok(());
    };
    let Some(recorded) = Fingerprint::load(output).with_context(|| {
        format!(
            "cannot read {} (--resume)",
            Fingerprint::sidecar(output).display()
        )
    })?
    else {
        return Ok(()); // Written by a version without fingerprints, or from stdin.
    };
    if recorded
        .matches(path)
        .with_context(|| format!("cannot read input {} (--input)", path.display()))?
    {
        return Ok(());
    }
    let what = format!(
        "{} does not start like the input {} was written from ({}, first {} bytes)",
        path.display(),
        output.display(),
        recorded.input,
        recorded.bytes
    );
    match identity {
        Identity::Key(_) => {
            warn!("{what}; resuming anyway: --key identifies the tasks");
            Ok(())
        }
        Identity::Line => bail!(
            "--resume: {what}; records are matched by line number, so resume with that input \
             (or delete {} to resume anyway)",
            Fingerprint::sidecar(output).display()
        ),
    }
}

/// Keeps the fingerprint of a file input beside the output, for a later
/// `--resume` to check; other inputs have none.
fn record_input(output: &Path, input: &InputSource) -> Result<()> {
    let sidecar = || Fingerprint::sidecar(output).display().to_string();
    match input {
        InputSource::File(path) => Fingerprint::of_file(path)
            .with_context(|| format!("cannot read input {} (--input)", path.display()))?
            .save(output)
            .with_context(|| format!("cannot write {}", sidecar())),
        _ => Fingerprint::forget(output).with_context(|| format!("cannot remove {}", sidecar())),
    }
}

/// Where a crawl's pending added tasks wait (`--frontier-memory`).
fn frontier_spill(args: &Args) -> SpillConfig {
    SpillConfig::in_temp_dir(usize::try_from(args.frontier_memory).unwrap_or(usize::MAX))
}

/// Reads the output being resumed and says what it found.
fn load_journal(
    path: &Path,
    identity: &Identity,
    rerun_failed: bool,
    queue: bool,
    spill: &SpillConfig,
) -> Result<Journal> {
    let journal = Journal::load(path, identity, rerun_failed, spill)
        .with_context(|| format!("cannot resume from {} (--output)", path.display()))?;
    info!(
        "resuming {}: {} tasks already done{}{}",
        path.display(),
        journal.done(),
        if journal.rerun_failed > 0 {
            format!(", {} failed ones run again", journal.rerun_failed)
        } else {
            String::new()
        },
        if journal.torn_bytes > 0 {
            format!(
                ", a torn last record ({} bytes) dropped",
                journal.torn_bytes
            )
        } else {
            String::new()
        }
    );
    // A queue node's added tasks are the queue's: it resumes no frontier.
    if !queue && journal.crawl.added > 0 {
        info!(
            "resuming a crawl: {} tasks added, {} recorded, {} to run first; {} keys seen",
            journal.crawl.added,
            journal.crawl.recorded,
            journal.crawl.frontier_len(),
            journal.crawl.seen.len()
        );
    }
    if journal.unreadable > 0 {
        warn!(
            "{}: {} lines are not records; ignored",
            path.display(),
            journal.unreadable
        );
    }
    Ok(journal)
}

/// The command that starts a worker: a program, and the arguments that
/// come before the standard worker options.
#[derive(Debug)]
struct WorkerCommand {
    program: PathBuf,
    args: Vec<OsString>,
}

impl WorkerCommand {
    /// How messages name the worker: the program, or for an interpreter the
    /// whole command.
    fn name(&self) -> String {
        let mut name = self.program.display().to_string();
        for arg in &self.args {
            name.push(' ');
            name.push_str(&arg.to_string_lossy());
        }
        name
    }
}

/// `--python SPEC`, `--worker PATH [--worker-arg ARG]...`, or the `worker`
/// binary next to this one.
fn worker_command(args: &Args) -> Result<WorkerCommand> {
    let Some(spec) = &args.python else {
        return Ok(WorkerCommand {
            program: worker_program(args.worker.as_deref())?,
            args: args.worker_arg.clone(),
        });
    };
    let (module, _) = spec.split_once(':').unwrap_or((spec, ""));
    if module.is_empty() || spec.chars().any(char::is_whitespace) {
        bail!("--python {spec:?} is not MODULE:FUNCTION or MODULE (e.g. --python jobs:handle)");
    }
    Ok(WorkerCommand {
        program: python_interpreter(args.python_interpreter.as_deref())?,
        args: vec!["-m".into(), "multiloop.worker".into(), spec.into()],
    })
}

/// `--python-interpreter` (or MULTILOOP_PYTHON), else `python` next to this
/// binary (the virtualenv `pip install` put it in), else `python3` on PATH.
fn python_interpreter(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        return on_path(path).ok_or_else(|| {
            anyhow::anyhow!(
                "Python interpreter not found: {} (--python-interpreter / MULTILOOP_PYTHON)",
                path.display()
            )
        });
    }
    let beside = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("python"))
        .filter(|path| is_executable(path));
    beside
        .or_else(|| on_path(Path::new("python3")))
        .context(
            "no Python interpreter for --python: neither `python` next to this binary nor              `python3` on PATH; pass --python-interpreter PATH",
        )
}

/// `name` itself if it has a slash, else the first executable of that name
/// in PATH.
fn on_path(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return is_executable(name).then(|| name.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `--worker`, or the `worker` binary next to this one.
fn worker_program(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        // A bare name (`--worker node`) is looked up in PATH.
        Some(path) => on_path(path).unwrap_or_else(|| path.to_path_buf()),
        None => std::env::current_exe()
            .context("cannot locate this binary to find `worker` next to it; pass --worker")?
            .with_file_name("worker"),
    };
    let metadata = std::fs::metadata(&path).map_err(|e| {
        anyhow::anyhow!(
            "worker binary not found: {} ({e}); build it with `cargo build --release` or pass --worker",
            path.display()
        )
    })?;
    use std::os::unix::fs::PermissionsExt;
    if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
        bail!("worker binary {} is not an executable file", path.display());
    }
    Ok(path)
}

/// Asks the worker which task kinds it serves.
async fn list_kinds(worker: &WorkerCommand) -> Result<Vec<String>> {
    let program = worker.name();
    let probe = tokio::process::Command::new(&worker.program)
        .args(&worker.args)
        .arg("--list-kinds")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .map_err(|_| {
            anyhow::anyhow!("{program} --list-kinds did not answer within {PROBE_TIMEOUT:?}")
        })?
        .with_context(|| format!("cannot run worker {program}"))?;
    let kinds: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    if !output.status.success() || kinds.is_empty() {
        bail!(
            "{program} is not a multiloop worker: `--list-kinds` {} ({})",
            if output.status.success() {
                "listed no kinds".to_string()
            } else {
                format!("failed with {}", output.status)
            },
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .next()
                .unwrap_or("no message")
                .trim()
        );
    }
    Ok(kinds)
}

fn choose_kind(wanted: Option<&str>, kinds: &[String], program: &str) -> Result<String> {
    let served = || kinds.join(", ");
    match wanted {
        Some(kind) if kinds.iter().any(|k| k == kind) => Ok(kind.to_string()),
        Some(kind) => bail!(
            "unknown task kind {kind:?} (--task); {program} serves: {}",
            served()
        ),
        None if kinds.iter().any(|k| k == "sim") => Ok("sim".into()),
        None if kinds.len() == 1 => Ok(kinds[0].clone()),
        None => bail!(
            "--task is required: {program} serves several kinds: {}",
            served()
        ),
    }
}

/// `--queue`: this node's place in the consumer group.
fn queue_source(args: &Args, url: &str, workers: usize) -> Result<InputSource> {
    let url = crate::queue::parse_url(url)?;
    if args.claim_after < Duration::from_millis(100) {
        bail!("--claim-after must be at least 100ms");
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "node".into());
    // The output file names the node: a restarted node (`--resume`) finds
    // the lines it held, and two nodes never share an output (it is locked).
    let consumer = match args.output.as_deref().filter(|p| p.as_os_str() != "-") {
        Some(path) => format!(
            "{host}:{}",
            std::path::absolute(path)
                .unwrap_or_else(|_| path.to_path_buf())
                .display()
        ),
        None => format!("{host}:pid{}", std::process::id()),
    };
    let concurrency = args.concurrency as usize;
    let window = args
        .window
        .map_or(concurrency + concurrency / 2, |w| w as usize);
    Ok(InputSource::Queue(QueueSpec {
        url,
        consumer,
        claim_after: args.claim_after,
        max_deliveries: u64::from(args.max_crashes) + 2,
        max_tasks: args.max_tasks,
        // Small enough that a node does not hoard what others could run.
        batch: (window * workers).clamp(1, 1000),
    }))
}

fn input_source(args: &Args) -> Result<InputSource> {
    Ok(match &args.input {
        _ if args.demo => InputSource::Demo(DemoBatch::default()),
        Some(path) if path.as_os_str() == "-" => InputSource::Stdin,
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open input {} (--input)", path.display()))?;
            // A directory opens fine and fails only at the first read, after
            // the workers have started.
            if file.metadata().is_ok_and(|m| m.is_dir()) {
                bail!(
                    "input {} is a directory, not a file (--input)",
                    path.display()
                );
            }
            InputSource::File(path.clone())
        }
        None if std::io::stdin().is_terminal() => InputSource::Demo(DemoBatch::default()),
        None => InputSource::Stdin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_choice() {
        let kinds = vec!["sim".to_string(), "chaos".to_string()];
        let program = "worker";
        assert_eq!(choose_kind(None, &kinds, program).unwrap(), "sim");
        assert_eq!(
            choose_kind(Some("chaos"), &kinds, program).unwrap(),
            "chaos"
        );
        let error = choose_kind(Some("fetch2"), &kinds, program)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown task kind \"fetch2\""), "{error}");
        assert_eq!(
            choose_kind(None, &["mine".to_string()], program).unwrap(),
            "mine"
        );
    }
}
