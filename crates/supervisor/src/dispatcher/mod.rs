//! The dispatcher: the one owner of worker and task state. Inside, three
//! owners keep their own invariants — the fleet (workers), the task book
//! (tasks) and the run state (phase, counters, signals) — and the
//! dispatcher coordinates them, one event at a time.

mod blame;
mod book;
mod core;
mod events;
mod fleet;
mod frontier;
mod incarnation;
mod policy;
mod reasons;
mod run;
mod status;
#[cfg(test)]
mod tests;

pub use self::core::{DispatchConfig, Dispatcher};
pub use events::{Command, Event, ExitStatus, LinkFailure, Sample, Tick, WorkerId};
pub use frontier::{CrawlCounts, CrawlLimits};
pub use policy::Backoff;
pub use status::{Progress, RunOutcome, RunReport, WorkerRow, WorkerState};
