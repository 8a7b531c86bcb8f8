//! What the dispatcher hears (events) and what it asks for (commands).

use multiloop_protocol::{Heartbeat, Hello, Task, TaskResult, Usage};

use crate::record::{InputItem, Record};

/// One incarnation of a worker slot: events from an older generation of
/// the same slot are stale and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerId {
    pub index: usize,
    pub generation: u64,
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    pub fn from_std(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitStatus::Code(code),
            (None, Some(signal)) => ExitStatus::Signal(signal),
            (None, None) => ExitStatus::Code(-1),
        }
    }

    pub fn is_success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(signal) => match nix::sys::signal::Signal::try_from(signal) {
                Ok(name) => write!(f, "signal {}", name.as_str()),
                Err(_) => write!(f, "signal {signal}"),
            },
        }
    }
}

/// Operator requests: signals and control-socket commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// First SIGINT/SIGTERM: stop reading input, finish in-flight work.
    Drain {
        signal: i32,
    },
    /// Second SIGINT/SIGTERM: stop now.
    StopNow {
        signal: i32,
    },
    AddWorker,
    RemoveWorker,
    /// Exactly this many workers (`ctl scale`).
    Scale(usize),
    RollingRestart,
    /// Replace one worker gracefully (`ctl restart`).
    RestartWorker(usize),
    /// SIGKILL one worker; its tasks take the crash path (`ctl kill`).
    KillWorker(usize),
    ShowStatus,
}

/// CPU and memory of a worker process, as sampled from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// CPU use over the last sampling interval, 100 = one core.
    pub cpu_percent: f64,
    pub rss_bytes: u64,
}

/// Everything that can change the dispatcher's state.
#[derive(Debug)]
pub enum Event {
    Input(Vec<InputItem>),
    InputEnded {
        lines: u64,
    },
    InputFailed(String),
    Spawned {
        worker: WorkerId,
        pid: u32,
    },
    SpawnFailed {
        worker: WorkerId,
        error: String,
    },
    Hello {
        worker: WorkerId,
        hello: Hello,
    },
    Results {
        worker: WorkerId,
        results: Vec<TaskResult>,
    },
    Heartbeat {
        worker: WorkerId,
        heartbeat: Heartbeat,
    },
    Bye {
        worker: WorkerId,
        usage: Usage,
    },
    /// The worker broke the protocol or its pipe failed.
    LinkFailed {
        worker: WorkerId,
        error: String,
    },
    Exited {
        worker: WorkerId,
        status: ExitStatus,
    },
    /// A deadline from `Dispatcher::next_deadline` passed.
    Wake,
    /// The engine was blocked this long (writing output) and read no
    /// events meanwhile.
    Paused(std::time::Duration),
    /// Fresh `/proc` readings of live workers.
    Sampled(Vec<(WorkerId, Sample)>),
    Request(Request),
}

/// What the dispatcher asks the engine to do.
#[derive(Debug)]
pub enum Command {
    Spawn {
        worker: WorkerId,
    },
    Send {
        worker: WorkerId,
        tasks: Vec<Task>,
    },
    /// Close the task pipe: the worker finishes what it has and exits.
    CloseInput {
        worker: WorkerId,
    },
    Signal {
        worker: WorkerId,
        signal: i32,
    },
    Emit(Vec<Record>),
    /// Stop reading input (drain).
    StopInput,
    /// Print the status table.
    ShowStatus,
    /// The run is over.
    Finish,
}
