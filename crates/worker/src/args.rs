//! The command line a supervisor gives each worker process: the protocol's
//! [`WorkerArgv`] (its one definition, shared with the supervisor that
//! writes it) plus what a person may ask of a worker binary by hand.

use std::time::Duration;

use clap::Parser;
use multiloop_protocol::WorkerArgv;

/// Options of a worker binary.
///
/// A worker binary is not meant to be started by hand: the supervisor opens
/// the task pipe on fd 3 and the result pipe on fd 4 before it runs it.
/// Handlers read the `--set` settings through [`crate::WorkerInfo::setting`].
#[derive(Debug, Clone, Parser)]
#[command(about = "A multiloop worker. Started by `supervisor`, which passes these options.")]
pub struct WorkerArgs {
    /// Print the task kinds this worker serves, one per line, and exit.
    #[arg(long)]
    pub list_kinds: bool,

    /// What the supervisor passes.
    #[command(flatten)]
    pub argv: WorkerArgv,
}

impl WorkerArgs {
    pub fn task_timeout(&self) -> Option<Duration> {
        let ms = self.argv.task_timeout_ms;
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.argv.heartbeat_ms.max(1))
    }
}
