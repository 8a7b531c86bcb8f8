//! The worker's command line: the options a supervisor passes to every
//! worker it starts. This is its one definition: the supervisor writes it
//! with [`WorkerArgv::to_args`], a Rust worker parses it with clap through
//! this same struct, and the Python runtime's parser is tested against
//! `golden/argv.json`, which `tests/golden.rs` writes from it.

use clap::Args;
use serde::Serialize;

use crate::DEFAULT_MAX_FRAME;

/// Options of one worker process, as they travel on its command line.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct WorkerArgv {
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

    /// A setting for the task kind, `KEY=VALUE` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub settings: Vec<(String, String)>,
}

impl Default for WorkerArgv {
    /// What a worker assumes for an option the command line leaves out
    /// (the same values as the `default_value_t`s above; a test holds them
    /// together).
    fn default() -> Self {
        Self {
            kind: None,
            index: 0,
            workers: 1,
            supervisor_pid: None,
            concurrency: 1024,
            task_timeout_ms: 0,
            heartbeat_ms: 500,
            max_frame: DEFAULT_MAX_FRAME,
            settings: Vec::new(),
        }
    }
}

impl WorkerArgv {
    /// The options as command-line arguments, in the order a supervisor
    /// passes them.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::with_capacity(20);
        let mut option = |flag: &str, value: String| {
            args.push(flag.to_string());
            args.push(value);
        };
        option("--index", self.index.to_string());
        option("--workers", self.workers.to_string());
        if let Some(pid) = self.supervisor_pid {
            option("--supervisor-pid", pid.to_string());
        }
        option("--concurrency", self.concurrency.to_string());
        option("--task-timeout-ms", self.task_timeout_ms.to_string());
        option("--heartbeat-ms", self.heartbeat_ms.to_string());
        option("--max-frame", self.max_frame.to_string());
        if let Some(kind) = &self.kind {
            option("--kind", kind.clone());
        }
        for (key, value) in &self.settings {
            option("--set", format!("{key}={value}"));
        }
        args
    }
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        argv: WorkerArgv,
    }

    fn parse(args: &[String]) -> Result<WorkerArgv, clap::Error> {
        Command::try_parse_from(std::iter::once("worker".to_string()).chain(args.iter().cloned()))
            .map(|command| command.argv)
    }

    #[test]
    fn what_the_supervisor_writes_the_worker_reads() {
        let argv = WorkerArgv {
            kind: Some("chaos".into()),
            index: 3,
            workers: 8,
            supervisor_pid: Some(4242),
            concurrency: 7,
            task_timeout_ms: 1500,
            heartbeat_ms: 100,
            max_frame: 65_536,
            settings: vec![("a".into(), "1".into()), ("url".into(), "x=y".into())],
        };
        assert_eq!(parse(&argv.to_args()).unwrap(), argv);
        let bare = WorkerArgv::default();
        assert_eq!(parse(&bare.to_args()).unwrap(), bare);
    }

    #[test]
    fn defaults_are_what_an_empty_command_line_means() {
        assert_eq!(parse(&[]).unwrap(), WorkerArgv::default());
    }

    #[test]
    fn a_setting_without_a_key_is_refused() {
        let error = parse(&["--set".into(), "=1".into()]).unwrap_err();
        assert!(
            error.to_string().contains("\"=1\" is not KEY=VALUE"),
            "{error}"
        );
    }
}
