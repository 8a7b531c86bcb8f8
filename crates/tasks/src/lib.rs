//! The task kinds built into the `worker` binary.

mod chaos;
mod sim;

pub use chaos::{chaos, ChaosInput, Fault};
pub use sim::{expected_sum, sim, SimInput, SimOutput};

use multiloop_worker::Worker;

/// A worker serving every built-in kind.
pub fn builtin_worker() -> Worker {
    Worker::new().kind("sim", sim).kind("chaos", chaos)
}
