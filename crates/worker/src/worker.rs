//! The public entry points: register handlers by kind, then `run`.

use std::fmt;
use std::future::Future;

use clap::Parser;
use multiloop_protocol::{RESULT_FD, TASK_FD};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::args::WorkerArgs;
use crate::handler::{erase, ErasedHandler};
use crate::os;
use crate::runtime::{serve, ServeConfig};

/// Exit status of a worker that could not serve (bad arguments, no pipes,
/// broken protocol); the supervisor reports it as a crash.
const EXIT_CANNOT_SERVE: i32 = 2;

/// Where this worker sits in the fleet; given to state initialisers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerInfo {
    pub index: usize,
    pub workers: usize,
}

/// A worker binary's task kinds.
#[derive(Default)]
pub struct Worker {
    kinds: Vec<(String, ErasedHandler)>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.kinds.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Worker").field("kinds", &names).finish()
    }
}

impl Worker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for tasks of kind `name`. Its input is decoded
    /// from the task's JSON line with serde_json; a line that does not
    /// decode becomes a `bad_input` result without calling the handler.
    pub fn kind<I, O, E, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        E: fmt::Display + 'static,
        F: Fn(I) -> Fut + 'static,
        Fut: Future<Output = Result<O, E>> + 'static,
    {
        self.kinds.retain(|(existing, _)| existing != name);
        self.kinds.push((name.to_string(), erase(handler)));
        self
    }

    /// Names of the registered kinds, in registration order.
    pub fn kind_names(&self) -> Vec<String> {
        self.kinds.iter().map(|(name, _)| name.clone()).collect()
    }

    /// Parses the worker command line, serves tasks until the supervisor
    /// closes the task pipe, and exits the process.
    pub fn run(self) -> ! {
        let args = WorkerArgs::parse();
        std::process::exit(match self.serve(args) {
            Ok(()) => 0,
            Err(message) => {
                eprintln!("worker: {message}");
                EXIT_CANNOT_SERVE
            }
        })
    }

    fn serve(self, args: WorkerArgs) -> Result<(), String> {
        let names = self.kind_names();
        if args.list_kinds {
            for name in &names {
                println!("{name}");
            }
            return Ok(());
        }
        let handler = match &args.kind {
            Some(kind) => self
                .kinds
                .into_iter()
                .find(|(name, _)| name == kind)
                .map(|(_, handler)| handler)
                .ok_or_else(|| {
                    format!(
                        "unknown task kind {kind:?}; this worker serves: {}",
                        names.join(", ")
                    )
                })?,
            None => match <[_; 1]>::try_from(self.kinds) {
                Ok([(_, handler)]) => handler,
                Err(_) => {
                    return Err(format!(
                        "--kind is required; this worker serves: {}",
                        names.join(", ")
                    ))
                }
            },
        };
        let tasks = os::inherited_pipe(TASK_FD, "task pipe")?;
        let results = os::inherited_pipe(RESULT_FD, "result pipe")?;
        os::set_process_name(args.index);
        let config = ServeConfig {
            concurrency: args.concurrency,
            task_timeout: args.task_timeout(),
            heartbeat: args.heartbeat_interval(),
            max_frame: args.max_frame,
            kinds: names,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the event loop: {e}"))?;
        let local = tokio::task::LocalSet::new();
        local
            .block_on(&runtime, serve(config, handler, tasks, results))
            .map_err(|e| format!("{e:#}"))
    }
}

/// Runs a worker with a single handler; the whole `main` of a worker binary.
pub fn run<I, O, E, F, Fut>(handler: F) -> !
where
    I: DeserializeOwned + 'static,
    O: Serialize + 'static,
    E: fmt::Display + 'static,
    F: Fn(I) -> Fut + 'static,
    Fut: Future<Output = Result<O, E>> + 'static,
{
    Worker::new().kind("default", handler).run()
}
