//! The multiloop engine: worker processes, the dispatcher, merging and
//! supervision.

pub mod control;
mod demo;
pub mod dispatcher;
mod engine;
mod input;
mod lines;
mod link;
pub mod loop_watch;
mod output;
mod process;
mod record;
mod reorder;
mod resume;
mod sample;
mod shard;
mod term;

pub use demo::DemoBatch;
pub use dispatcher::{
    Backoff, DispatchConfig, Progress, Request, RunOutcome, RunReport, WorkerRow,
};
pub use engine::{run, Observer, Quiet, RunConfig, RunError};
pub use input::InputSource;
pub use output::OutputTarget;
pub use record::Record;
pub use resume::{Identity, Journal};
pub use shard::Shard;
pub use term::{set_stderr_hook, write_stderr, write_stderr_raw};
