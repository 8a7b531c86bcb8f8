//! The dispatcher: the one owner of worker and task state.

mod blame;
mod core;
mod dispatch;
mod events;
mod fleet;
mod lifecycle;
mod policy;
mod reports;
mod requests;
mod status;
#[cfg(test)]
mod tests;

pub use self::core::{DispatchConfig, Dispatcher};
pub use blame::{Blame, Evidence, Verdict};
pub use events::{Command, Event, ExitStatus, Request, Sample, WorkerId};
pub use fleet::KillReason;
pub use policy::{Backoff, RestartIntensity};
pub use status::{Progress, RunOutcome, RunReport, WorkerRow};
