//! The dispatcher: the one owner of worker and task state. Inside, three
//! owners with private fields keep their own invariants — the fleet
//! (slots and their counts; each incarnation owns its own life), the task
//! book (tasks) and the run state (phase, record counts, signals) — and
//! the dispatcher coordinates them, one event at a time. No owner hands
//! out its fields: counts change through one method each.

mod blame;
mod book;
mod coalesce;
mod core;
mod death;
mod events;
mod fleet;
mod frontier;
mod incarnation;
mod intake;
mod loop_watch;
mod operator;
mod policy;
mod reasons;
mod run;
mod status;
#[cfg(test)]
mod tests;

pub use self::core::{DispatchConfig, Dispatcher};
pub use events::{Command, Event, ExitStatus, LinkFailure, OperatorSignal, Sample, Tick, WorkerId};
pub use fleet::FleetConfig;
pub use frontier::{CrawlCounts, CrawlLimits};
pub use incarnation::LifeLimits;
pub use policy::Backoff;
pub use status::{Progress, RunOutcome, RunReport, WorkerRow, WorkerState};
