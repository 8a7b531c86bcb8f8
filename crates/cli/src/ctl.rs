//! `supervisor ctl`: talk to a running supervisor through its control
//! socket.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use multiloop_supervisor::control::{self, ControlAnswer, ControlRequest, StatusAnswer};
use multiloop_supervisor::socket_dir;

use crate::exit::ExitCode;

/// `supervisor ctl [--pid PID] COMMAND`
#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    /// The supervisor to talk to; optional when only one is running.
    #[arg(long, global = true)]
    pub pid: Option<u32>,

    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlCommand {
    /// Running supervisors (pid and socket).
    List,
    /// Per-worker table: pid, state, tasks, CPU, RSS, event-loop lag.
    Status {
        /// The raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Replace worker W gracefully (its replacement starts first).
    Restart { worker: usize },
    /// SIGKILL worker W; its tasks are re-run.
    Kill { worker: usize },
    /// Grow or shrink the fleet to N workers.
    Scale { workers: usize },
    /// Stop reading input; finish in-flight tasks; exit.
    Drain,
}

pub async fn main(args: &CtlArgs) -> i32 {
    match run(args).await {
        Ok(()) => ExitCode::AllOk.into(),
        Err(error) => {
            eprintln!("supervisor ctl: {error:#}");
            ExitCode::SomeFailed.into()
        }
    }
}

async fn run(args: &CtlArgs) -> Result<()> {
    if let CtlCommand::List = args.command {
        let Some(dir) = trusted_dir()? else {
            return Ok(());
        };
        for (pid, path) in control::running_supervisors(&dir) {
            println!("{pid}\t{}", path.display());
        }
        return Ok(());
    }
    let path = find_socket(args.pid)?;
    let request = match args.command {
        CtlCommand::List => unreachable!("handled above"),
        CtlCommand::Status { .. } => ControlRequest::Status,
        CtlCommand::Restart { worker } => ControlRequest::Restart { worker },
        CtlCommand::Kill { worker } => ControlRequest::Kill { worker },
        CtlCommand::Scale { workers } => ControlRequest::Scale { workers },
        CtlCommand::Drain => ControlRequest::Drain,
    };
    let answer = control::call(&path, &request)
        .await
        .with_context(|| format!("cannot reach the supervisor at {}", path.display()))?;
    match (answer, &args.command) {
        (ControlAnswer::Refused(error), _) => bail!("{error}"),
        (answer @ ControlAnswer::Status(_), CtlCommand::Status { json: true }) => {
            println!("{}", serde_json::to_string(&answer)?)
        }
        (ControlAnswer::Status(status), CtlCommand::Status { json: false }) => {
            print!("{}", status_text(&status))
        }
        (ControlAnswer::Status(_), _) | (ControlAnswer::Ok, CtlCommand::Status { .. }) => {
            bail!("the supervisor answered {request:?} with the wrong kind of answer")
        }
        (ControlAnswer::Ok, _) => println!("ok"),
    }
    Ok(())
}

/// The socket of `pid`, or of the only running supervisor.
pub fn find_socket(pid: Option<u32>) -> Result<PathBuf> {
    let dir = control::socket_dir();
    let running = match trusted_dir()? {
        Some(dir) => control::running_supervisors(&dir),
        None => Vec::new(),
    };
    match pid {
        Some(pid) => running
            .into_iter()
            .find(|(p, _)| *p == pid)
            .map(|(_, path)| path)
            .with_context(|| {
                format!(
                    "no supervisor with pid {pid} has a socket in {}",
                    dir.display()
                )
            }),
        None => match running.as_slice() {
            [] => bail!(
                "no running supervisor found (sockets live in {})",
                dir.display()
            ),
            [(_, path)] => Ok(path.clone()),
            several => {
                let pids: Vec<String> = several.iter().map(|(p, _)| p.to_string()).collect();
                bail!(
                    "several supervisors are running ({}); pick one with --pid",
                    pids.join(", ")
                )
            }
        },
    }
}

/// The socket directory if it exists and is safe to trust (see
/// `socket_dir::check`); None if there is none (no supervisor ran yet).
fn trusted_dir() -> Result<Option<PathBuf>> {
    match socket_dir::checked() {
        Ok(dir) => Ok(Some(dir)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// A status answer as the human table.
pub fn status_text(status: &StatusAnswer) -> String {
    let progress = &status.progress;
    let mut out = format!(
        "supervisor {}: {} done ({} failed), {} read, {} restarts, {} workers alive\n",
        status.pid,
        progress.done,
        progress.failed,
        progress.read,
        progress.restarts,
        progress.alive
    );
    out.push_str(&crate::report::status_table(&status.workers));
    out
}
