//! The worker's event loop: read task frames, run handlers with bounded
//! concurrency, batch results into frames for the watchdog thread, and
//! tell the watchdog which task each poll is for.

use std::cell::Cell;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::{FutureExt, StreamExt};
use multiloop_protocol::{
    decode_to_worker, FrameCodec, FromWorker, Hello, Outcome, ProtocolError, Task, TaskResult,
    ToWorker,
};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::MissedTickBehavior;
use tokio_util::codec::{Encoder, FramedRead};

use crate::adds::{self, Additions};
use crate::handler::{ErasedHandler, TaskError};
use crate::os;
use crate::watchdog::{Outgoing, Watchdog, GAUGE};

/// Most results gathered into one frame before it is written.
const MAX_RESULTS_PER_FRAME: usize = 8192;

/// Room kept in a frame for everything but a result's payload.
const RESULT_OVERHEAD: usize = 64;

/// What stops a worker before its input ends.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    #[error("task pipe: {0}")]
    Tasks(#[source] ProtocolError),
    #[error("result pipe: {0}")]
    Results(#[source] ProtocolError),
}

/// Settings of one serving loop.
pub(crate) struct ServeConfig {
    pub concurrency: usize,
    pub task_timeout: Option<Duration>,
    pub heartbeat: Duration,
    pub max_frame: usize,
    pub kinds: Vec<String>,
}

/// Serves tasks from `tasks` until it ends, then sends the final usage.
pub(crate) async fn serve(
    config: ServeConfig,
    handler: ErasedHandler,
    tasks: OwnedFd,
    results: OwnedFd,
) -> Result<(), ServeError> {
    let receiver = pipe::Receiver::from_owned_fd(tasks).map_err(|e| ServeError::Tasks(e.into()))?;
    os::set_blocking(&results).map_err(|e| ServeError::Results(e.into()))?;
    let hello = Hello::new(std::process::id(), config.kinds.clone(), "rust");
    let mut hello_frame = BytesMut::new();
    FrameCodec::new(config.max_frame)
        .encode(&FromWorker::Hello(hello), &mut hello_frame)
        .map_err(ServeError::Results)?;
    let watchdog = Watchdog::start(
        results,
        &GAUGE,
        config.heartbeat,
        config.max_frame,
        hello_frame.freeze(),
    )
    .map_err(|e| ServeError::Results(e.into()))?;
    let mut out = FrameWriter::new(watchdog, config.max_frame);

    let (result_tx, mut result_rx) = mpsc::unbounded_channel();
    let reader = tokio::task::spawn_local(read_tasks(
        receiver,
        handler,
        result_tx,
        config.concurrency,
        config.task_timeout,
        config.max_frame,
    ));

    // The loop's own timer: how late it fires is the loop's lag. The
    // watchdog thread sends the heartbeats, with the last lag measured here.
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut max_lag = Duration::ZERO;
    let mut batch = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            n = result_rx.recv_many(&mut batch, MAX_RESULTS_PER_FRAME) => {
                if n == 0 {
                    break; // The reader and every task have finished.
                }
                out.send_results(&mut batch)?;
            }
            deadline = heartbeat.tick() => {
                let lag = deadline.elapsed();
                max_lag = max_lag.max(lag);
                GAUGE.lag_us.store(lag.as_micros() as u64, Ordering::Relaxed);
                GAUGE.max_lag_us.store(max_lag.as_micros() as u64, Ordering::Relaxed);
            }
        }
    }
    match reader.await {
        Ok(result) => result?,
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
    out.send(&FromWorker::Bye(os::usage()))?;
    out.watchdog.finish().map_err(ServeError::Results)
}

/// A task's future that tells the watchdog which task the loop is polling.
struct Tracked<F> {
    id: u64,
    future: Pin<Box<F>>,
}

impl<F: Future<Output = ()>> Future for Tracked<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let previous = GAUGE.enter(self.id);
        let polled = self.future.as_mut().poll(cx);
        GAUGE.leave(previous);
        polled
    }
}

/// Reads task frames and starts one local task per task, at most
/// `concurrency` at once; returns at end of input.
async fn read_tasks(
    receiver: pipe::Receiver,
    handler: ErasedHandler,
    results: mpsc::UnboundedSender<TaskResult>,
    concurrency: usize,
    timeout: Option<Duration>,
    max_frame: usize,
) -> Result<(), ServeError> {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let max_output = max_frame.saturating_sub(RESULT_OVERHEAD);
    let max_added = multiloop_protocol::max_task_payload(max_frame);
    let mut frames = FramedRead::new(receiver, FrameCodec::new(max_frame));
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(ServeError::Tasks)?;
        let ToWorker::Tasks(tasks) =
            decode_to_worker(&frame.freeze()).map_err(ServeError::Tasks)?;
        for task in tasks {
            let slot = slots
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            GAUGE.received.store(
                GAUGE.received.load(Ordering::Relaxed) + 1,
                Ordering::Relaxed,
            );
            let handler = handler.clone();
            let results = results.clone();
            let id = task.id;
            let mut run = Tracked {
                id,
                future: Box::pin(async move {
                    let result = run_task(&handler, task, timeout, max_output, max_added).await;
                    // The writer outlives every task, so a send cannot fail
                    // unless the worker is already going down.
                    let _ = results.send(result);
                    drop(slot);
                }),
            };
            // A task that finishes without waiting (pure CPU, a cache hit)
            // is done here, without the cost of scheduling a task for it.
            if futures::poll!(&mut run).is_pending() {
                tokio::task::spawn_local(run);
            }
        }
    }
    Ok(())
}

/// Runs one task: a panic, a timeout or an oversize output become results.
/// The tasks it added go with an output only: an error adds nothing.
async fn run_task(
    handler: &ErasedHandler,
    task: Task,
    timeout: Option<Duration>,
    max_output: usize,
    max_added: usize,
) -> TaskResult {
    let started = Instant::now();
    let additions = Additions::new(max_output, max_added);
    let retry = RETRY.scope(
        Cell::new(false),
        adds::scope(additions, async {
            let run = async {
                let future = std::panic::catch_unwind(AssertUnwindSafe(|| handler(task.payload)))?;
                AssertUnwindSafe(future).catch_unwind().await
            };
            let outcome = match timeout {
                None => run.await,
                Some(limit) => match tokio::time::timeout(limit, run).await {
                    Ok(outcome) => outcome,
                    Err(_) => Ok(Err(TaskError::timeout(format!(
                        "task took longer than {} ms",
                        limit.as_millis()
                    )))),
                },
            };
            (outcome, RETRY.with(Cell::get))
        }),
    );
    let ((outcome, retry), additions) = retry.await;
    let mut added = Vec::new();
    let outcome = match outcome {
        Ok(Ok(output)) if output.len() + additions.bytes() > max_output => Outcome::Err {
            kind: multiloop_protocol::ErrorKind::Failed,
            message: if additions.bytes() == 0 {
                format!(
                    "output of {} bytes is over the frame limit ({max_output} bytes)",
                    output.len()
                )
            } else {
                format!(
                    "output of {} bytes and added tasks of {} bytes are over the frame limit \
                     ({max_output} bytes)",
                    output.len(),
                    additions.bytes()
                )
            },
        },
        Ok(Ok(output)) => {
            added = additions.into_added();
            Outcome::Ok(output.into())
        }
        Ok(Err(TaskError { kind, message })) => Outcome::Err {
            kind,
            message: truncate(message, max_output),
        },
        Err(panic) => Outcome::Err {
            kind: multiloop_protocol::ErrorKind::Panicked,
            message: truncate(panic_message(panic.as_ref()), max_output),
        },
    };
    TaskResult {
        id: task.id,
        micros: started.elapsed().as_micros() as u64,
        outcome,
        retry,
        added,
    }
}

tokio::task_local! {
    /// Set by [`request_retry`] while a handler runs.
    static RETRY: Cell<bool>;
}

/// Asks the supervisor to run the current task again, as long as
/// `--retries` allow; the output of the last attempt is what is recorded.
/// For results that are not errors but are worth another try, like an HTTP
/// 503. Outside a handler it does nothing.
pub fn request_retry() {
    let _ = RETRY.try_with(|retry| retry.set(true));
}

/// Cuts an error message to fit in a frame, at a character boundary.
fn truncate(mut message: String, max: usize) -> String {
    if message.len() > max {
        let mut end = max.saturating_sub(3);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("handler panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("handler panicked: {s}")
    } else {
        "handler panicked".to_string()
    }
}

/// Encodes messages into frames for the watchdog thread, which owns the
/// result pipe; one hand-over per batch.
struct FrameWriter {
    watchdog: Watchdog,
    codec: FrameCodec,
    buf: BytesMut,
}

impl FrameWriter {
    fn new(watchdog: Watchdog, max_frame: usize) -> Self {
        Self {
            watchdog,
            codec: FrameCodec::new(max_frame),
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    fn send(&mut self, message: &FromWorker) -> Result<(), ServeError> {
        self.codec
            .encode(message, &mut self.buf)
            .map_err(ServeError::Results)?;
        self.flush(0)
    }

    /// Sends `batch` in as few frames as the frame limit allows; leaves it
    /// empty with its allocation kept.
    fn send_results(&mut self, batch: &mut Vec<TaskResult>) -> Result<(), ServeError> {
        let count = batch.len() as u64;
        let (codec, buf) = (&mut self.codec, &mut self.buf);
        multiloop_protocol::pack(batch.drain(..), codec.max_frame(), |chunk| {
            codec.encode(&FromWorker::Results(chunk), buf)
        })
        .map_err(ServeError::Results)?;
        self.flush(count)
    }

    fn flush(&mut self, results: u64) -> Result<(), ServeError> {
        let bytes = self.buf.split().freeze();
        self.watchdog
            .send(Outgoing { bytes, results })
            .map_err(ServeError::Results)
    }
}
