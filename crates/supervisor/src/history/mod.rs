//! The run's history for the report: a bounded time series sampled once a
//! second, the workers' lives, and what the records say about tasks (and,
//! for `fetch`, about hosts). The engine feeds it live; `supervisor report`
//! feeds it the same way from a finished run's files.

mod fetch;
mod lives;
mod points;
mod series;
mod store;
mod tasks;
mod view;

pub use fetch::{FetchStats, FetchSummary, HostRow, MAX_HOSTS};
pub use lives::{EndCause, Life, LifeChange, Lives, MAX_LIVES};
pub use points::{Gauge, RunPoint, WorkerGauges};
pub use series::{Series, COARSE, FINE};
pub use store::{History, Sampled};
pub use tasks::{Ending, ErrorExample, ErrorKindStats, TaskSummary, TaskTimes, SLOWEST};
pub use view::HistoryView;
