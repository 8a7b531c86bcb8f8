//! The multiloop engine: worker processes, the dispatcher, merging and
//! supervision.

mod demo;
pub mod dispatcher;
mod engine;
mod input;
mod lines;
mod link;
mod output;
mod process;
mod record;
mod reorder;
mod resume;
mod shard;
mod term;

pub use demo::DemoBatch;
pub use dispatcher::{Backoff, DispatchConfig, Request, RunOutcome, RunReport, WorkerRow};
pub use engine::{run, Observer, Quiet, RunConfig, RunError};
pub use input::InputSource;
pub use output::OutputTarget;
pub use record::Record;
pub use resume::{Identity, Journal};
pub use shard::Shard;
pub use term::write_stderr;
