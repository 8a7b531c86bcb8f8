//! The public entry points: register handlers by kind, then `run`.

use std::fmt;
use std::future::Future;

use clap::Parser;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use multiloop_protocol::{RESULT_FD, TASK_FD};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::args::WorkerArgs;
use crate::handler::{erase, ErasedHandler};
use crate::os;
use crate::runtime::{serve, ServeConfig};
use crate::watchdog::GAUGE;

/// Exit status of a worker that could not serve (bad arguments, no pipes,
/// broken protocol); the supervisor reports it as a crash.
const EXIT_CANNOT_SERVE: i32 = 2;

/// Where this worker sits in the fleet and what it was told; given to the
/// setup of kinds registered with [`Worker::kind_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerInfo {
    pub index: usize,
    pub workers: usize,
    settings: Vec<(String, String)>,
}

impl WorkerInfo {
    /// A `--set KEY=VALUE` given to the supervisor, if any.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A setting parsed as `T`; a value that does not parse is an error
    /// naming the key.
    pub fn parse_setting<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String>
    where
        T::Err: fmt::Display,
    {
        self.setting(key)
            .map(|value| {
                value
                    .parse()
                    .map_err(|e| format!("setting {key}={value:?}: {e}"))
            })
            .transpose()
    }
}

/// Builds a kind's handler once per worker process, inside its event loop.
type Setup = Box<dyn FnOnce(WorkerInfo) -> LocalBoxFuture<'static, Result<ErasedHandler, String>>>;

/// A registered kind: a handler, or the setup that makes one.
enum KindEntry {
    Ready(ErasedHandler),
    Setup(Setup),
}

/// A worker binary's task kinds.
#[derive(Default)]
pub struct Worker {
    kinds: Vec<(String, KindEntry)>,
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
    pub fn kind<I, O, E, F, Fut>(self, name: &str, handler: F) -> Self
    where
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        E: fmt::Display + 'static,
        F: Fn(I) -> Fut + 'static,
        Fut: Future<Output = Result<O, E>> + 'static,
    {
        self.add(name, KindEntry::Ready(erase(handler)))
    }

    /// Registers a kind whose handler is built once per worker process by
    /// `setup`, for state that tasks share: an HTTP client, a database pool.
    /// `setup` runs inside the worker's event loop before the first task;
    /// if it fails, the worker exits with its error.
    ///
    /// ```no_run
    /// use std::rc::Rc;
    /// multiloop_worker::Worker::new()
    ///     .kind_with("lookup", |info| async move {
    ///         let table: Rc<Vec<String>> = Rc::new(vec![format!("worker {}", info.index)]);
    ///         Ok::<_, String>(move |i: usize| {
    ///             let table = table.clone();
    ///             async move { Ok::<_, String>(table.get(i).cloned()) }
    ///         })
    ///     })
    ///     .run()
    /// ```
    pub fn kind_with<S, SFut, SE, H, I, O, E, Fut>(self, name: &str, setup: S) -> Self
    where
        S: FnOnce(WorkerInfo) -> SFut + 'static,
        SFut: Future<Output = Result<H, SE>> + 'static,
        SE: fmt::Display + 'static,
        H: Fn(I) -> Fut + 'static,
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        E: fmt::Display + 'static,
        Fut: Future<Output = Result<O, E>> + 'static,
    {
        let setup: Setup = Box::new(move |info| {
            setup(info)
                .map(|built| built.map(erase).map_err(|e| format!("{e:#}")))
                .boxed_local()
        });
        self.add(name, KindEntry::Setup(setup))
    }

    fn add(mut self, name: &str, entry: KindEntry) -> Self {
        self.kinds.retain(|(existing, _)| existing != name);
        self.kinds.push((name.to_string(), entry));
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
        let entry = match &args.argv.kind {
            Some(kind) => self
                .kinds
                .into_iter()
                .find(|(name, _)| name == kind)
                .map(|(_, entry)| entry)
                .ok_or_else(|| {
                    format!(
                        "unknown task kind {kind:?}; this worker serves: {}",
                        names.join(", ")
                    )
                })?,
            None => match <[_; 1]>::try_from(self.kinds) {
                Ok([(_, entry)]) => entry,
                Err(_) => {
                    return Err(format!(
                        "--kind is required; this worker serves: {}",
                        names.join(", ")
                    ))
                }
            },
        };
        os::raise_nofile_limit();
        let tasks = os::inherited_pipe(TASK_FD, "task pipe")?;
        let results = os::inherited_pipe(RESULT_FD, "result pipe")?;
        os::set_process_name(args.argv.index);
        let config = ServeConfig {
            concurrency: args.argv.concurrency,
            task_timeout: args.task_timeout(),
            heartbeat: args.heartbeat_interval(),
            max_frame: args.argv.max_frame,
            kinds: names,
        };
        // The watchdog must tell a parked loop (waiting for I/O) from one
        // that runs code outside any task.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(|| GAUGE.park())
            .on_thread_unpark(|| GAUGE.unpark())
            .build()
            .map_err(|e| format!("cannot start the event loop: {e}"))?;
        let info = WorkerInfo {
            index: args.argv.index,
            workers: args.argv.workers,
            settings: args.argv.settings,
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let handler = match entry {
                KindEntry::Ready(handler) => handler,
                KindEntry::Setup(setup) => setup(info).await.map_err(|e| {
                    format!(
                        "setting up kind {:?}: {e}",
                        args.argv.kind.unwrap_or_default()
                    )
                })?,
            };
            serve(config, handler, tasks, results)
                .await
                .map_err(|e| format!("{e:#}"))
        })
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
