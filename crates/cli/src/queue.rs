//! `supervisor queue push|status`: fill a Redis Streams queue from an input
//! file, and show how far its consumers are.

use std::path::PathBuf;

use anyhow::{Context, Result};
use multiloop_supervisor::queue::{self, QueueUrl};

use crate::exit::ExitCode;

/// `supervisor queue ...`
#[derive(Debug, Clone, clap::Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub action: QueueAction,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueueAction {
    /// Store each non-blank line of a file in the queue under its line
    /// number. Pushing the same file again adds nothing (an interrupted
    /// push continues); another file is refused.
    Push {
        #[command(flatten)]
        queue: QueueUrlArg,
        /// Input file of JSON lines.
        #[arg(short, long, value_name = "FILE")]
        input: PathBuf,
        /// The consumers' --max-frame: longer lines are pushed with a
        /// warning naming them, and recorded `bad_input` by the node that
        /// pulls them.
        #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = crate::size::parse_size)]
        max_frame: u64,
        /// The nodes' --key FIELD: each line's key joins the queue's
        /// seen-set, so that tasks that add tasks never add a seed again.
        #[arg(long, value_name = "FIELD")]
        key: Option<String>,
    },
    /// Tasks waiting, in flight per node, done and dead.
    Status {
        #[command(flatten)]
        queue: QueueUrlArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The queue's URL, with the password optionally in `REDIS_PASSWORD`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueUrlArg {
    /// The queue: redis://[:PASSWORD@]HOST[:PORT][/DB]/NAME, or rediss://
    /// for TLS. Without a password in the URL, REDIS_PASSWORD is used.
    #[arg(long, value_name = "URL", env = "MULTILOOP_QUEUE")]
    pub queue: String,
}

/// Parses `--queue`, naming the flag on error.
pub fn parse_url(text: &str) -> Result<QueueUrl> {
    QueueUrl::parse(text, std::env::var("REDIS_PASSWORD").ok()).context("--queue")
}

pub async fn main(args: &QueueArgs) -> i32 {
    match run(args).await {
        Ok(()) => ExitCode::AllOk.into(),
        Err(error) => {
            eprintln!("supervisor queue: {error:#}");
            ExitCode::Usage.into()
        }
    }
}

async fn run(args: &QueueArgs) -> Result<()> {
    match &args.action {
        QueueAction::Push {
            queue,
            input,
            max_frame,
            key,
        } => {
            let url = parse_url(&queue.queue)?;
            let max_frame = usize::try_from(*max_frame).context("--max-frame is too large")?;
            let started = std::time::Instant::now();
            let report = queue::push(&url, input, max_frame, key.as_deref()).await?;
            let max_line = report.max_line;
            for (seq, len) in &report.oversize_lines {
                eprintln!(
                    "warning: {}: line {seq}: {len} bytes is over the frame limit of {max_line} bytes (see --max-frame); nodes will record it bad_input",
                    input.display()
                );
            }
            if report.oversize > report.oversize_lines.len() as u64 {
                eprintln!(
                    "warning: {}: {} more lines over the frame limit",
                    input.display(),
                    report.oversize - report.oversize_lines.len() as u64
                );
            }
            eprintln!(
                "pushed {} of {} tasks to {url} in {:.2}s{}",
                report.added,
                report.total,
                started.elapsed().as_secs_f64(),
                if report.present > 0 {
                    format!(" ({} were already there)", report.present)
                } else {
                    String::new()
                }
            );
            if report.oversize > 0 {
                eprintln!(
                    "{} of them over the frame limit (bad_input when run)",
                    report.oversize
                );
            }
            Ok(())
        }
        QueueAction::Status { queue, json } => {
            let url = parse_url(&queue.queue)?;
            let status = queue::status(&url).await?;
            if *json {
                println!("{}", serde_json::to_string(&status)?);
                return Ok(());
            }
            println!(
                "queue {}: {} tasks{}",
                status.queue,
                status.total,
                if status.push_complete {
                    String::new()
                } else {
                    format!(" ({} pushed so far)", status.pushed)
                }
            );
            println!(
                "  waiting {}  in flight {}  done {} (ok {}, failed {}, dead {})",
                status.waiting,
                status.in_flight,
                status.done,
                status.ok,
                status.failed,
                status.dead
            );
            if status.added + status.kept_seen + status.kept_max_tasks + status.seen_keys > 0 {
                println!(
                    "  added by tasks {}  kept out: key seen {}, --max-tasks {}  keys seen {}",
                    status.added, status.kept_seen, status.kept_max_tasks, status.seen_keys
                );
            }
            for node in &status.nodes {
                println!(
                    "  node {:<40} in flight {:>8}  last seen {:.1}s ago",
                    node.name,
                    node.in_flight,
                    node.idle_ms as f64 / 1000.0
                );
            }
            Ok(())
        }
    }
}
