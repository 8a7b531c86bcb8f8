//! The task-source / result-sink boundary. A source hands the dispatcher
//! numbered lines (`InputMessage`s); a sink hears which records reached
//! the output ("flushed id N") so that a source that must acknowledge work
//! (the Redis queue) can do so only once the record is safe. The file,
//! stdin and demo inputs need no acknowledgement; another queue engine
//! (NATS JetStream, SQS) would slot in beside `queue::consume`.

use multiloop_protocol::{ErrorKind, Outcome};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::input::{read_input, InputFilter, InputMessage, InputSource};

/// How a flushed record ended, for a source's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Ok,
    Failed,
    Crashed,
}

impl Settled {
    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Ok(_) => Settled::Ok,
            Outcome::Err {
                kind: ErrorKind::Crashed,
                ..
            } => Settled::Crashed,
            Outcome::Err { .. } => Settled::Failed,
        }
    }
}

/// One record that is in the output for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// The task id the source gave the line.
    pub id: u64,
    pub settled: Settled,
}

/// The writer's end of the sink: it reports each flushed batch.
#[derive(Debug, Clone)]
pub struct AckSink(mpsc::UnboundedSender<Vec<Flushed>>);

impl AckSink {
    pub fn flushed(&self, batch: Vec<Flushed>) {
        // A source that stopped listening has nothing left to acknowledge.
        let _ = self.0.send(batch);
    }
}

/// A source before it starts: the sink exists first, so that the output
/// writer can be started (and fail on a bad path) before any work.
#[derive(Debug)]
pub struct Source {
    input: InputSource,
    acks: Option<mpsc::UnboundedReceiver<Vec<Flushed>>>,
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
        match input {
            InputSource::Queue(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (
                    Self {
                        input,
                        acks: Some(rx),
                    },
                    Some(AckSink(tx)),
                )
            }
            _ => (Self { input, acks: None }, None),
        }
    }

    /// Starts feeding `tx`; it ends when the input does, or when the
    /// receiver is dropped (drain).
    pub fn start(self, filter: InputFilter, tx: mpsc::Sender<InputMessage>) -> RunningSource {
        match (self.input, self.acks) {
            (InputSource::Queue(spec), Some(acks)) => RunningSource {
                acknowledging: Some(tokio::spawn(crate::queue::consume(spec, filter, tx, acks))),
            },
            (input, _) => {
                tokio::spawn(read_input(input, filter, tx));
                RunningSource {
                    acknowledging: None,
                }
            }
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
