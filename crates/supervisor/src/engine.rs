//! The engine: one `select!` loop that turns input, worker pipes, process
//! exits, signals and timers into dispatcher events, and carries out the
//! dispatcher's commands. It decides nothing about workers or tasks; the
//! one thing it decides is the run's outcome when the output's reader
//! went away (`| head`), which only it sees, after the dispatcher is done.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use multiloop_protocol::Task;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::control::{self, ControlAnswer, ControlCall, ControlSocket};
use crate::dispatcher::{
    Command, DispatchConfig, Dispatcher, Event, OperatorSignal, Progress, RunReport, Tick,
    WorkerId, WorkerRow,
};
use crate::history::{History, LifeChange, Sampled};
use crate::input::{InputFilter, InputMessage, InputSource};
use crate::link;
use crate::output::{OutputEnd, OutputTarget, OutputWriter};
use crate::process::{Spawner, WorkerSpec};
use crate::resume::{CrawlJournal, Identity, Journal};
use crate::sample::Sampler;
use crate::shard::Shard;
use crate::source::Source;

/// Everything a run needs.
#[derive(Debug)]
pub struct RunConfig {
    pub dispatch: DispatchConfig,
    pub input: InputSource,
    pub output: OutputTarget,
    pub worker_program: PathBuf,
    /// Arguments of the worker command before the standard options.
    pub worker_args: Vec<std::ffi::OsString>,
    pub concurrency: usize,
    pub max_frame: usize,
    pub identity: Identity,
    /// The output being resumed: its tasks are skipped.
    pub journal: Option<Arc<Journal>>,
    /// The crawl part of that journal: its frontier is queued first, its
    /// keys are seen.
    pub crawl_journal: Option<CrawlJournal>,
    /// Input lines are bare strings, sent as JSON strings (`--lines`).
    pub lines_as_strings: bool,
    /// `KEY=VALUE` settings passed to every worker.
    pub settings: Vec<(String, String)>,
    /// Only this slice of the input (`--shard`).
    pub shard: Option<Shard>,
    /// Keep task times and errors from the records in the run's history,
    /// for a report; costs a little per record.
    pub history_records: bool,
    /// The kind's records name a URL and a status (as `fetch`'s do): the
    /// history keeps a per-host table from them too.
    pub history_hosts: bool,
    /// Check that every result is one line of JSON before writing it
    /// (off only to measure what the check costs).
    pub screen_output: bool,
}

/// What stops a run before it starts, or breaks it while it runs.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Output(#[source] std::io::Error),
    #[error("cannot set up the supervisor: {0}")]
    Setup(#[source] std::io::Error),
}

/// Hooks for the human-facing side (progress, status tables, stats files),
/// so that the engine stays free of presentation.
pub trait Observer: Send {
    /// Called a few times a second.
    fn progress(&mut self, _progress: &Progress) {}
    /// SIGUSR1: show the per-worker table.
    fn status(&mut self, _rows: &[WorkerRow]) {}
    /// About once a second, after workers were sampled from `/proc`, with
    /// the run's history so far (the sample is in it).
    fn sampled(&mut self, _sample: &Sampled, _history: &History) {}
    /// A worker slot got a process, or one ended; `t` is seconds since the
    /// run started.
    fn life(&mut self, _t: f64, _change: &LifeChange) {}
    /// The run is over: its whole history, before the run's report.
    fn finished(&mut self, _history: &History) {}
}

/// An observer that shows nothing.
#[derive(Debug, Default)]
pub struct Quiet;
impl Observer for Quiet {}

/// The engine's handles to one worker process.
#[derive(Debug)]
struct WorkerChannels {
    /// Dropping it closes the worker's task pipe once queued batches are out.
    tasks: Option<mpsc::UnboundedSender<Vec<Task>>>,
    signals: mpsc::UnboundedSender<i32>,
}

/// Runs a whole batch; returns how it went.
pub async fn run(
    mut config: RunConfig,
    observer: &mut dyn Observer,
) -> Result<RunReport, RunError> {
    let (source, acks) = Source::new(config.input.clone());
    let output = OutputWriter::start(&config.output, acks).map_err(RunError::Output)?;
    let spawner = Spawner::start(tokio::runtime::Handle::current()).map_err(RunError::Setup)?;
    let mut signals = Signals::new().map_err(RunError::Setup)?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (input_tx, input_rx) = mpsc::channel(2);
    let filter = InputFilter {
        max_line: multiloop_protocol::max_task_payload(config.max_frame),
        identity: config.identity.clone(),
        journal: config.journal.clone(),
        lines_as_strings: config.lines_as_strings,
        shard: config.shard,
    };
    let source = source.start(filter, input_tx);

    let (calls_tx, mut calls) = mpsc::channel::<ControlCall>(16);
    let _socket = match ControlSocket::bind() {
        Ok((socket, listener)) => {
            debug!("control socket: {}", socket.path().display());
            tokio::spawn(control::serve(listener, calls_tx));
            Some(socket)
        }
        Err(error) => {
            warn!("no control socket ({error}); `supervisor ctl` and `top` will not see this run");
            None
        }
    };
    let mut sampler = Sampler::default();
    let mut sampling = tokio::time::interval(Duration::from_secs(1));
    sampling.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut progress = tokio::time::interval(Duration::from_millis(200));
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    let started = Instant::now();
    let mut dispatch = config.dispatch.clone();
    dispatch.crawl.max_payload = multiloop_protocol::max_task_payload(config.max_frame);
    let mut dispatcher = Dispatcher::new(dispatch, started);
    if let Some(crawl) = config.crawl_journal.take() {
        dispatcher.resume(crawl);
    }
    let mut engine = Engine {
        config: &config,
        spawner,
        events_tx,
        workers: HashMap::new(),
        input: Some(input_rx),
        output: output.tx.clone(),
        output_closed: false,
        pending: VecDeque::from([Event::Start]),
        calls: HashMap::new(),
        next_call: 0,
        finished: false,
        history: History::new(config.history_records, config.history_hosts),
        started,
    };
    // The one loop: every source becomes an event, every event goes
    // through the one `handle` below, and the engine only carries out what
    // comes back. Events the engine itself raises while carrying out
    // commands (output back-pressure, samples) wait in `pending`.
    while !engine.finished {
        let event = match engine.pending.pop_front() {
            Some(event) => event,
            None => {
                let deadline = dispatcher.next_deadline();
                tokio::select! {
                    Some(event) = events.recv() => event,
                    message = recv_input(&mut engine.input), if dispatcher.wants_input() => match message {
                        Some(InputMessage::Batch(items)) => Event::Input(items),
                        Some(InputMessage::End { lines }) => { engine.input = None; Event::InputEnded { lines } }
                        Some(InputMessage::Failed(error)) => { engine.input = None; Event::InputFailed(error) }
                        None => { engine.input = None; Event::InputEnded { lines: 0 } }
                    },
                    signal = signals.next() => Event::Signal(signal),
                    _ = sleep_until(deadline) => Event::Wake,
                    _ = progress.tick() => Event::Tick(Tick::Progress),
                    _ = sampling.tick() => Event::Tick(Tick::Sample),
                    Some(call) = calls.recv() => engine.call(call),
                }
            }
        };
        if let Event::Exited { worker, .. } | Event::SpawnFailed { worker, .. } = &event {
            engine.workers.remove(worker);
        }
        let commands = dispatcher.handle(event, Instant::now());
        engine.apply(commands, &mut sampler, observer).await;
    }
    debug_assert!(dispatcher.is_finished());
    observer.progress(&dispatcher.progress());
    let now = Instant::now();
    engine.sampled(dispatcher.progress(), dispatcher.rows(now), observer);
    observer.finished(&engine.history);
    drop(engine);
    let end = tokio::task::spawn_blocking(move || output.finish())
        .await
        .map_err(|e| RunError::Output(std::io::Error::other(e)))?
        .map_err(RunError::Output)?;
    // The writer is done, so every record is flushed: a queue acknowledges
    // the last ones and hands back the lines it held but did not finish.
    source.finish().await;
    let mut report = dispatcher.report(Instant::now());
    // Whatever the dispatcher concluded, a reader that went away decides:
    // the run was cut short by SIGPIPE.
    if let OutputEnd::BrokenPipe = end {
        report.outcome = crate::dispatcher::RunOutcome::Interrupted(libc::SIGPIPE);
    }
    Ok(report)
}

async fn recv_input(input: &mut Option<mpsc::Receiver<InputMessage>>) -> Option<InputMessage> {
    match input {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

struct Engine<'a> {
    config: &'a RunConfig,
    spawner: Spawner,
    events_tx: mpsc::UnboundedSender<Event>,
    workers: HashMap<WorkerId, WorkerChannels>,
    /// Batches from the input reader, until the input ends or is stopped.
    input: Option<mpsc::Receiver<InputMessage>>,
    output: mpsc::Sender<Vec<crate::record::Record>>,
    output_closed: bool,
    /// Events raised while carrying out commands, handled before any other.
    pending: VecDeque<Event>,
    /// Control calls waiting for the dispatcher's answer, by call number.
    calls: HashMap<u64, oneshot::Sender<ControlAnswer>>,
    next_call: u64,
    /// The dispatcher said the run is over.
    finished: bool,
    /// The run over time, for reports.
    history: History,
    started: Instant,
}

/// Shorter waits for the output writer are normal back-pressure.
const PAUSE_WORTH_TELLING: Duration = Duration::from_millis(100);

impl Engine<'_> {
    /// A control request becomes an event; its answer comes back as
    /// [`Command::Reply`].
    fn call(&mut self, call: ControlCall) -> Event {
        let id = self.next_call;
        self.next_call += 1;
        self.calls.insert(id, call.reply);
        Event::Control {
            call: id,
            request: call.request,
        }
    }

    async fn apply(
        &mut self,
        commands: Vec<Command>,
        sampler: &mut Sampler,
        observer: &mut dyn Observer,
    ) {
        let mut paused = Duration::ZERO;
        for command in commands {
            match command {
                Command::Spawn { worker, workers } => self.spawn(worker, workers),
                Command::Send { worker, tasks } => {
                    if let Some(tx) = self.workers.get(&worker).and_then(|w| w.tasks.as_ref()) {
                        let _ = tx.send(tasks);
                    }
                }
                Command::CloseInput { worker } => {
                    if let Some(channels) = self.workers.get_mut(&worker) {
                        channels.tasks = None;
                    }
                }
                Command::Signal { worker, signal } => {
                    if let Some(channels) = self.workers.get(&worker) {
                        let _ = channels.signals.send(signal);
                    }
                }
                Command::Emit(records) => {
                    let started = Instant::now();
                    self.history.records(&records);
                    if !self.output_closed && self.output.send(records).await.is_err() {
                        self.output_closed = true;
                        self.pending.push_back(Event::OutputClosed);
                    }
                    // A full output queue blocks this loop, heartbeats
                    // included: tell the dispatcher, so that the wait is not
                    // taken for hung workers.
                    paused += started.elapsed();
                }
                // Dropping the receiver stops the reader at its next batch.
                Command::StopInput => self.input = None,
                Command::ShowStatus(rows) => observer.status(&rows),
                Command::Progress(progress) => observer.progress(&progress),
                Command::Sample(workers) => {
                    let samples = sampler.sample(&workers);
                    self.pending.push_back(Event::Sampled(samples));
                }
                Command::Sampled { progress, rows } => self.sampled(progress, rows, observer),
                Command::Life(change) => {
                    let t = self.started.elapsed().as_secs_f64();
                    self.history.life(t, &change);
                    observer.life(t, &change);
                }
                Command::Reply { call, answer } => {
                    if let Some(reply) = self.calls.remove(&call) {
                        let _ = reply.send(answer);
                    }
                }
                Command::Finish => self.finished = true,
            }
        }
        if paused >= PAUSE_WORTH_TELLING {
            self.pending.push_back(Event::OutputPaused(paused));
        }
    }

    /// A sampling round's figures go into the history, then to the observer.
    fn sampled(&mut self, progress: Progress, rows: Vec<WorkerRow>, observer: &mut dyn Observer) {
        let sample = Sampled {
            t: self.started.elapsed().as_secs_f64(),
            progress,
            workers: rows,
        };
        self.history.sample(&sample);
        observer.sampled(&sample, &self.history);
    }

    /// Starts a worker process and the tasks that serve it. The channels
    /// exist at once, so commands for the worker can be queued while it
    /// starts.
    fn spawn(&mut self, worker: WorkerId, workers: usize) {
        let (tasks_tx, tasks_rx) = mpsc::unbounded_channel();
        let (signals_tx, signals_rx) = mpsc::unbounded_channel();
        self.workers.insert(
            worker,
            WorkerChannels {
                tasks: Some(tasks_tx),
                signals: signals_tx,
            },
        );
        let spec = WorkerSpec {
            program: self.config.worker_program.clone(),
            args: self.config.worker_args.clone(),
            kind: Some(self.config.dispatch.kind.clone()),
            index: worker.index,
            workers,
            concurrency: self.config.concurrency,
            task_timeout_ms: self
                .config
                .dispatch
                .fleet
                .life
                .task_timeout
                .map_or(0, |t| t.as_millis() as u64),
            heartbeat_ms: self.config.dispatch.fleet.life.heartbeat.as_millis() as u64,
            max_frame: self.config.max_frame,
            settings: self.config.settings.clone(),
        };
        let spawner = self.spawner.clone();
        let events = self.events_tx.clone();
        let max_frame = self.config.max_frame;
        let screen = self
            .config
            .screen_output
            .then(|| std::sync::Arc::from(self.config.worker_program.display().to_string()));
        tokio::spawn(async move {
            match spawner.spawn(spec).await {
                Err(error) => {
                    let _ = events.send(Event::SpawnFailed {
                        worker,
                        error: error.to_string(),
                    });
                }
                Ok(process) => {
                    debug!("worker {} started as pid {}", worker.index, process.pid);
                    let _ = events.send(Event::Spawned {
                        worker,
                        pid: process.pid,
                    });
                    tokio::spawn(link::write_tasks(tasks_rx, process.tasks, max_frame));
                    let frames = tokio::spawn(link::read_frames(
                        worker,
                        process.results,
                        max_frame,
                        screen,
                        events.clone(),
                    ));
                    tokio::spawn(link::forward_output(worker.index, process.stdout));
                    tokio::spawn(link::forward_output(worker.index, process.stderr));
                    link::watch_process(worker, process.child, signals_rx, events, frames).await;
                }
            }
        });
    }
}

/// The engine's handlers of [`OperatorSignal::ALL`]. What each means
/// (and that a second SIGINT stops at once) is the dispatcher's business.
struct Signals(Vec<(OperatorSignal, Signal)>);

impl Signals {
    fn new() -> std::io::Result<Self> {
        OperatorSignal::ALL
            .into_iter()
            .map(|which| Ok((which, signal(SignalKind::from_raw(which.number()))?)))
            .collect::<std::io::Result<_>>()
            .map(Self)
    }

    /// The next signal.
    async fn next(&mut self) -> OperatorSignal {
        std::future::poll_fn(|cx| {
            for (which, stream) in &mut self.0 {
                if let std::task::Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return std::task::Poll::Ready(*which);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}
