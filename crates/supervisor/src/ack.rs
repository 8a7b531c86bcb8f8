//! The acknowledgement boundary between the output writer and a task
//! source: which records reached the output for good ("flushed id N") and
//! how each ended. A module of its own so that the writer, the source and
//! the queue consumer all depend on it and not on each other.

use multiloop_protocol::{ErrorKind, Outcome};
use tokio::sync::mpsc;

use crate::added::Adds;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flushed {
    /// The task id the source gave the line.
    pub id: u64,
    pub settled: Settled,
    /// The additions the record carries (accepted by the node's checks):
    /// a queue pushes them when it acknowledges the record, so that they
    /// enter the queue exactly when their parent leaves it.
    pub adds: Option<Box<Adds>>,
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

/// The source's end of the sink: flushed batches, in order.
pub type AckReceiver = mpsc::UnboundedReceiver<Vec<Flushed>>;

/// A sink and the receiver its reports arrive on.
pub fn channel() -> (AckSink, AckReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (AckSink(tx), rx)
}
