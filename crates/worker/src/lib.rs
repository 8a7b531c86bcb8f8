//! Worker runtime for multiloop: turns an async handler into a worker
//! process that the `supervisor` binary can start, feed and watch.
//!
//! ```no_run
//! #[derive(serde::Deserialize)]
//! struct Input { n: u64 }
//!
//! fn main() {
//!     multiloop_worker::run(|input: Input| async move {
//!         Ok::<_, std::convert::Infallible>(serde_json::json!({ "double": input.n * 2 }))
//!     })
//! }
//! ```

mod adds;
mod args;
mod handler;
mod os;
mod runtime;
mod watchdog;
mod worker;

pub use adds::add;
pub use args::WorkerArgs;
pub use handler::TaskError;
pub use multiloop_protocol::ErrorKind;
pub use os::raise_nofile_limit;
pub use runtime::request_retry;
pub use worker::{run, Worker, WorkerInfo};
