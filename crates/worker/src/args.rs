//! The command line a supervisor gives each worker process.

use std::time::Duration;

use clap::Parser;
use multiloop_protocol::DEFAULT_MAX_FRAME;

/// Options the supervisor passes to every worker it starts.
///
/// A worker binary is not meant to be started by hand: the supervisor opens
/// the task pipe on fd 3 and the result pipe on fd 4 before it runs it.
#[derive(Debug, Clone, Parser)]
#[command(about = "A multiloop worker. Started by `supervisor`, which passes these options.")]
pub struct WorkerArgs {
    /// Print the task kinds this worker serves, one per line, and exit.
    #[arg(long)]
    pub list_kinds: bool,

    /// The task kind to run.
    #[arg(long)]
    pub kind: Option<String>,

    /// This worker's index in the fleet (shown in `ps` and `top`).
    #[arg(long, default_value_t = 0)]
    pub index: usize,

    /// Size of the fleet, for the process title.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,

    /// Pid of the supervisor, for the process title.
    #[arg(long)]
    pub supervisor_pid: Option<u32>,

    /// Most tasks running at once in this worker's event loop.
    #[arg(long, default_value_t = 1024)]
    pub concurrency: usize,

    /// Time limit of one task, in milliseconds (0 = none).
    #[arg(long, default_value_t = 0)]
    pub task_timeout_ms: u64,

    /// Interval between heartbeats, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub heartbeat_ms: u64,

    /// Largest frame accepted or sent, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME)]
    pub max_frame: usize,

    /// A setting for the task kind, `KEY=VALUE` (repeatable); handlers read
    /// it through [`crate::WorkerInfo::setting`].
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub settings: Vec<(String, String)>,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

impl WorkerArgs {
    pub fn task_timeout(&self) -> Option<Duration> {
        (self.task_timeout_ms > 0).then(|| Duration::from_millis(self.task_timeout_ms))
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(1))
    }
}
