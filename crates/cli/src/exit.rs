//! Exit statuses, named.

use multiloop_supervisor::RunOutcome;

/// What the `supervisor` process exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Every task succeeded.
    AllOk,
    /// Some tasks failed (their records say why).
    SomeFailed,
    /// Bad arguments or configuration, or a worker binary that cannot serve.
    Usage,
    /// The restart-intensity limit tripped.
    GaveUp,
    /// Stopped by a signal: 128 + its number (130 for SIGINT, 143 for SIGTERM).
    Interrupted(i32),
}

impl ExitCode {
    pub fn of(outcome: &RunOutcome) -> Self {
        match outcome {
            RunOutcome::AllOk => ExitCode::AllOk,
            RunOutcome::SomeFailed => ExitCode::SomeFailed,
            RunOutcome::GaveUp(_) => ExitCode::GaveUp,
            RunOutcome::Interrupted(signal) => ExitCode::Interrupted(*signal),
            RunOutcome::Fatal(_) => ExitCode::Usage,
        }
    }
}

impl From<ExitCode> for i32 {
    fn from(code: ExitCode) -> i32 {
        match code {
            ExitCode::AllOk => 0,
            ExitCode::SomeFailed => 1,
            ExitCode::Usage => 2,
            ExitCode::GaveUp => 3,
            ExitCode::Interrupted(signal) => 128 + signal,
        }
    }
}
