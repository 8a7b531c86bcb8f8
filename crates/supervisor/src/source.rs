//! The task-source / result-sink boundary. A source hands the dispatcher
//! numbered lines (`InputMessage`s); a sink hears which records reached
//! the output ("flushed id N") so that a source that must acknowledge work
//! (the Redis queue) can do so only once the record is safe. The file,
//! stdin and demo inputs need no acknowledgement; another queue engine
//! (NATS JetStream, SQS) would slot in beside `queue::consume`.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ack::{self, AckReceiver, AckSink};
use crate::input::{read_input, InputFilter, InputMessage, InputSource, LineInput, Reading};
use crate::queue::QueueSpec;

/// A source before it starts: the sink exists first, so that the output
/// writer can be started (and fail on a bad path) before any work.
#[derive(Debug)]
pub struct Source(Pending);

/// What a source will read: lines, or a queue with the receiver of its
/// acknowledgements. A queue never reaches the line reader: the type
/// leaves no way to pass it.
#[derive(Debug)]
enum Pending {
    Lines(LineInput),
    Queue { spec: QueueSpec, acks: AckReceiver },
}

/// A running source.
#[derive(Debug)]
pub struct RunningSource {
    /// Only sources that acknowledge are waited for at the end.
    acknowledging: Option<JoinHandle<()>>,
}

impl Source {
    /// The source of `input`, and the sink the output writer reports to
    /// (none for inputs that need no acknowledgement).
    pub fn new(input: InputSource) -> (Self, Option<AckSink>) {
        match input.reading() {
            Reading::Lines(lines) => (Self(Pending::Lines(lines)), None),
            Reading::Queue(spec) => {
                let (sink, acks) = ack::channel();
                (Self(Pending::Queue { spec, acks }), Some(sink))
            }
        }
    }

    /// Starts feeding `tx`; it ends when the input does, or when the
    /// receiver is dropped (drain).
    pub fn start(self, filter: InputFilter, tx: mpsc::Sender<InputMessage>) -> RunningSource {
        match self.0 {
            Pending::Lines(lines) => {
                tokio::spawn(read_input(lines, filter, tx));
                RunningSource {
                    acknowledging: None,
                }
            }
            Pending::Queue { spec, acks } => RunningSource {
                acknowledging: Some(tokio::spawn(crate::queue::consume(spec, filter, tx, acks))),
            },
        }
    }
}

impl RunningSource {
    /// Waits until the source has acknowledged every flushed record and
    /// handed back what it held but did not finish. Call it after the
    /// output writer is done (its end closes the sink).
    pub async fn finish(self) {
        if let Some(task) = self.acknowledging {
            let _ = task.await;
        }
    }
}
