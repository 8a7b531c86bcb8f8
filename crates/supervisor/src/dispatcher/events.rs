//! What the dispatcher hears (events) and what it asks for (commands).

use std::time::Duration;

use multiloop_protocol::{Heartbeat, Hello, Task, TaskResult, Usage};

use super::status::{Progress, WorkerRow};
use crate::control::{ControlAnswer, ControlRequest};
use crate::history::LifeChange;
use crate::record::{InputItem, Record};

/// One incarnation of a worker slot: events from an older generation of
/// the same slot are stale and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerId {
    pub index: usize,
    pub generation: u64,
}

/// The signals an operator can send the supervisor, listed once: the
/// engine listens for each of [`OperatorSignal::ALL`], the run state gives
/// each its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorSignal {
    /// SIGINT: drain; a second stop signal stops now.
    Interrupt,
    /// SIGTERM: like SIGINT.
    Terminate,
    /// SIGTTIN: one worker more.
    AddWorker,
    /// SIGTTOU: one worker less.
    RemoveWorker,
    /// SIGHUP: rolling restart of all workers.
    Hangup,
    /// SIGUSR1: show the status table.
    Status,
}

impl OperatorSignal {
    pub const ALL: [OperatorSignal; 6] = [
        OperatorSignal::Interrupt,
        OperatorSignal::Terminate,
        OperatorSignal::AddWorker,
        OperatorSignal::RemoveWorker,
        OperatorSignal::Hangup,
        OperatorSignal::Status,
    ];

    /// Its number, for installing the handler and for exit codes.
    pub fn number(self) -> i32 {
        match self {
            OperatorSignal::Interrupt => libc::SIGINT,
            OperatorSignal::Terminate => libc::SIGTERM,
            OperatorSignal::AddWorker => libc::SIGTTIN,
            OperatorSignal::RemoveWorker => libc::SIGTTOU,
            OperatorSignal::Hangup => libc::SIGHUP,
            OperatorSignal::Status => libc::SIGUSR1,
        }
    }
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

/// A process id that may not be known yet, for log lines: `pid 19547`,
/// or `pid ?` before the spawn reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pid(pub Option<u32>);

impl std::fmt::Display for Pid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "pid {pid}"),
            None => f.write_str("pid ?"),
        }
    }
}

/// Why a worker's link (its result pipe) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkFailure {
    /// The first frame was not a valid handshake: the program is not a
    /// worker of this protocol version.
    Handshake(String),
    /// A frame too long, undecodable, or out of place.
    Violation(String),
}

impl std::fmt::Display for LinkFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkFailure::Handshake(error) => write!(f, "handshake failed: {error}"),
            LinkFailure::Violation(error) => write!(f, "protocol violation: {error}"),
        }
    }
}

/// The engine's periodic timers (the dispatcher's own deadlines are
/// [`Event::Wake`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// A few times a second: progress displays.
    Progress,
    /// About once a second: time to sample live workers from `/proc`.
    Sample,
}

/// Operator requests, as signals and control-socket commands mean them.
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

/// Everything that can change the dispatcher's state. Every source the
/// engine watches becomes one of these, and all of them go through
/// `Dispatcher::handle`.
#[derive(Debug)]
pub enum Event {
    /// The run begins: spawn the fleet.
    Start,
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
        failure: LinkFailure,
    },
    Exited {
        worker: WorkerId,
        status: ExitStatus,
    },
    /// A deadline from `Dispatcher::next_deadline` passed.
    Wake,
    Tick(Tick),
    /// The engine was blocked this long writing output (back-pressure)
    /// and read no events meanwhile.
    OutputPaused(Duration),
    /// The output's reader went away (`| head`): nothing more can be written.
    OutputClosed,
    /// Fresh `/proc` readings of live workers.
    Sampled(Vec<(WorkerId, Sample)>),
    /// An operator's signal the supervisor received.
    Signal(OperatorSignal),
    /// A control-socket request; the answer goes back as
    /// [`Command::Reply`] with the same `call`.
    Control {
        call: u64,
        request: ControlRequest,
    },
}

/// What the dispatcher asks the engine to do.
#[derive(Debug)]
pub enum Command {
    Spawn {
        worker: WorkerId,
        /// The fleet's size now, for the worker's label (`worker 3/5`).
        workers: usize,
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
    ShowStatus(Vec<WorkerRow>),
    /// Show progress.
    Progress(Progress),
    /// Read these live workers from `/proc` and report [`Event::Sampled`].
    Sample(Vec<(WorkerId, u32)>),
    /// Fresh per-worker figures after a sampling round.
    Sampled {
        progress: Progress,
        rows: Vec<WorkerRow>,
    },
    /// A worker slot got a process, or one ended (for the run's history).
    Life(LifeChange),
    /// The answer to [`Event::Control`] `call`.
    Reply {
        call: u64,
        answer: ControlAnswer,
    },
    /// The run is over: the engine stops its loop.
    Finish,
}
