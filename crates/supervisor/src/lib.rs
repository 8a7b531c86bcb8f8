//! The multiloop engine: worker processes, the dispatcher, merging and
//! supervision.

pub mod ack;
mod added;
pub mod control;
mod demo;
mod dispatcher;
mod engine;
pub mod fingerprint;
pub mod history;
mod input;
pub mod limits;
mod lines;
mod link;
mod output;
mod process;
pub mod queue;
mod record;
mod reorder;
mod resume;
mod sample;
mod screen;
pub mod seen;
mod shard;
pub mod socket_dir;
pub mod source;
pub mod spill;
mod stdio_pipe;
mod term;

pub use added::{AddedEntry, Adds, KeptOut};
pub use demo::DemoBatch;
pub use dispatcher::{
    Backoff, CrawlCounts, CrawlLimits, DispatchConfig, FleetConfig, LifeLimits, Progress,
    RunOutcome, RunReport, WorkerRow, WorkerState,
};
pub use engine::{run, Observer, Quiet, RunConfig, RunError};
pub use input::InputSource;
pub use limits::{check_fleet_size, fleet_limit, max_fleet_size, FleetLimit, FleetTooLarge};
pub use output::OutputTarget;
pub use record::{Record, RecordHead, SeqHead};
pub use reorder::REORDER_BYTES;
pub use resume::{CrawlJournal, Discovered, Identity, Journal};
pub use shard::Shard;
pub use spill::{SpillConfig, FRONTIER_MEMORY};
pub use term::{set_stderr_hook, write_stderr, write_stderr_raw};
