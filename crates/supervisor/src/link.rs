//! A worker's pipes and process as seen from the engine: tasks out, frames
//! in, output lines forwarded, exit status reported. Each piece is a task
//! that turns what it sees into dispatcher events.

use futures::StreamExt;
use multiloop_protocol::{
    check_hello, decode_from_worker, pack, FrameCodec, FromWorker, ProtocolError, Task, ToWorker,
};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_util::codec::{Encoder, FramedRead};

use crate::dispatcher::{Event, ExitStatus, LinkFailure, WorkerId};
use crate::lines::{Line, LineReader};

/// How long the last frames of an exited worker are waited for.
const FRAMES_AFTER_EXIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Largest first frame: a hello is a version, a pid, a runtime name and a
/// list of task kinds.
const MAX_HELLO: usize = 64 * 1024;

/// Longest worker output line forwarded whole.
const MAX_OUTPUT_LINE: usize = 64 * 1024;

/// Reads result frames and turns them into events. Stops at the first
/// violation: the dispatcher kills the worker, and its exit explains.
/// With `screen`, results that are not one line of JSON become failures
/// naming `program` (see [`crate::screen`]).
pub async fn read_frames(
    worker: WorkerId,
    results: pipe::Receiver,
    max_frame: usize,
    screen: Option<std::sync::Arc<str>>,
    events: mpsc::UnboundedSender<Event>,
) {
    // Until the handshake, frames are held to the size a hello can have:
    // a peer that is not a worker at all (random bytes on fd 4) would
    // otherwise announce a frame of gigabytes and be waited for.
    let mut frames = FramedRead::new(results, FrameCodec::new(MAX_HELLO.min(max_frame)));
    let mut greeted = false;
    while let Some(frame) = frames.next().await {
        let event = match frame {
            // Cut off by the worker's death: its exit status says why.
            Err(ProtocolError::TruncatedFrame { .. }) => return,
            // Before a hello, anything wrong is a failed handshake: a setup
            // error (exit 2), not a crash to restart until the limit.
            Err(error) if !greeted => Event::LinkFailed {
                worker,
                failure: LinkFailure::Handshake(error.to_string()),
            },
            Err(error) => Event::LinkFailed {
                worker,
                failure: LinkFailure::Violation(error.to_string()),
            },
            Ok(frame) if !greeted => match check_hello(&frame) {
                Ok(hello) => {
                    greeted = true;
                    *frames.decoder_mut() = FrameCodec::new(max_frame);
                    Event::Hello { worker, hello }
                }
                Err(error) => Event::LinkFailed {
                    worker,
                    failure: LinkFailure::Handshake(error.to_string()),
                },
            },
            Ok(frame) => match decode_from_worker(&frame.freeze()) {
                Ok(FromWorker::Results(mut results)) => {
                    if let Some(program) = &screen {
                        let name = format!("worker {} ({program})", worker.index);
                        crate::screen::screen_results(&mut results, &name);
                    }
                    Event::Results { worker, results }
                }
                Ok(FromWorker::Heartbeat(heartbeat)) => Event::Heartbeat { worker, heartbeat },
                Ok(FromWorker::Bye(usage)) => Event::Bye { worker, usage },
                Ok(FromWorker::Hello(_)) => Event::LinkFailed {
                    worker,
                    failure: LinkFailure::Violation("a second handshake".into()),
                },
                Err(error) => Event::LinkFailed {
                    worker,
                    failure: LinkFailure::Violation(error.to_string()),
                },
            },
        };
        let failed = matches!(event, Event::LinkFailed { .. });
        if events.send(event).is_err() || failed {
            return;
        }
    }
}

/// Writes task batches as frames; everything ready is one write. Ends when
/// the dispatcher closes the worker's input (the pipe closes with it) or
/// the worker is gone.
pub async fn write_tasks(
    mut tasks: mpsc::UnboundedReceiver<Vec<Task>>,
    mut pipe: pipe::Sender,
    max_frame: usize,
) {
    let mut codec = FrameCodec::new(max_frame);
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    let mut ready = Vec::new();
    while tasks.recv_many(&mut ready, 64).await > 0 {
        let packed = pack(ready.drain(..).flatten(), max_frame, |batch| {
            codec.encode(&ToWorker::Tasks(batch), &mut buf)
        });
        // Every payload was held to `max_task_payload` when it became a
        // task (`input::line_item`, for files and queues alike), and `pack`
        // cuts batches by postcard's worst case, so a batch encodes. Should
        // one not, the worker's pipe closes: the worker finishes what it
        // has, and its exit puts the rest back through the dispatcher's
        // crash policy, which ends in a record, never in a panic here.
        if let Err(error) = packed {
            tracing::error!(
                "a task batch does not fit a frame ({error}); closing the worker's task pipe"
            );
            return;
        }
        if pipe.write_all(&buf).await.is_err() {
            return; // The worker is gone; its exit is reported elsewhere.
        }
        buf.clear();
    }
}

/// Waits for the worker to exit, delivering signals meanwhile. Signals go
/// through here because only the owner of `Child` knows whether the pid is
/// still ours (not yet reaped).
pub async fn watch_process(
    worker: WorkerId,
    mut child: Child,
    mut signals: mpsc::UnboundedReceiver<i32>,
    events: mpsc::UnboundedSender<Event>,
    frames: tokio::task::JoinHandle<()>,
) {
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(signal) = signals.recv() => {
                if let Some(pid) = child.id() {
                    if let Ok(signal) = nix::sys::signal::Signal::try_from(signal) {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
                    }
                }
            }
        }
    };
    let status = match status {
        Ok(status) => ExitStatus::from_std(status),
        Err(_) => ExitStatus::Code(-1),
    };
    // The worker's last results must reach the dispatcher before its exit,
    // or they would be taken for tasks it died with. The frame reader ends
    // at end-of-file, which follows the exit unless a grandchild still
    // holds the pipe: then give up waiting after a moment.
    let _ = tokio::time::timeout(FRAMES_AFTER_EXIT, frames).await;
    let _ = events.send(Event::Exited { worker, status });
}

/// Forwards a worker's stdout or stderr to our stderr, line by line,
/// prefixed with the worker index.
pub async fn forward_output(index: usize, stream: impl AsyncRead + Unpin) {
    let mut lines = LineReader::new(stream, MAX_OUTPUT_LINE);
    while let Ok(Some(line)) = lines.next_line().await {
        let mut text = format!("[w{index}] ").into_bytes();
        match line {
            Line::Complete(bytes) => text.extend_from_slice(bytes),
            Line::TooLong { len } => {
                text.extend_from_slice(format!("(a {len}-byte line, not shown)").as_bytes())
            }
        }
        text.push(b'\n');
        crate::term::write_stderr(&text);
    }
}
