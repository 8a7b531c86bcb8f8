//! What the machine can hold: the largest fleet that the supervisor will
//! start or scale to, checked by the CLI's `--workers` and by `ctl scale`
//! and SIGTTIN alike.

use std::sync::OnceLock;

/// Workers per core beyond which a fleet is a mistake, not a plan: I/O
/// bound tasks run many per loop, so more processes than this buy nothing.
const PER_CORE: usize = 64;

/// Descriptors the supervisor holds per worker (task, result, stdout and
/// stderr pipes, a pidfd) with room to spare.
const FDS_PER_WORKER: u64 = 8;

/// Descriptors kept for everything else (input, output, sockets, logs).
const FDS_RESERVED: u64 = 64;

/// The largest fleet, and which limit sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLimit {
    pub max: usize,
    /// The binding limit, for the error message.
    pub why: String,
}

/// The largest number of workers this machine can hold.
pub fn max_fleet_size() -> usize {
    fleet_limit().max
}

/// The largest fleet and the limit that sets it, computed once.
pub fn fleet_limit() -> &'static FleetLimit {
    static LIMIT: OnceLock<FleetLimit> = OnceLock::new();
    LIMIT.get_or_init(compute)
}

fn compute() -> FleetLimit {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut limit = FleetLimit {
        max: cores * PER_CORE,
        why: format!("{PER_CORE} per core on {cores} cores"),
    };
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft != RLIM_INFINITY {
            let by_fds = (soft.saturating_sub(FDS_RESERVED) / FDS_PER_WORKER) as usize;
            if by_fds < limit.max {
                limit = FleetLimit {
                    max: by_fds,
                    why: format!(
                        "open files limit {soft} (ulimit -n), {FDS_PER_WORKER} per worker"
                    ),
                };
            }
        }
    }
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NPROC) {
        if soft != RLIM_INFINITY {
            // The limit counts every process of the user, not only ours.
            let by_procs = (soft / 2) as usize;
            if by_procs < limit.max {
                limit = FleetLimit {
                    max: by_procs,
                    why: format!("process limit {soft} (ulimit -u), half of it"),
                };
            }
        }
    }
    limit.max = limit.max.max(1);
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_sane() {
        let limit = fleet_limit();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(limit.max >= 1 && limit.max <= cores * PER_CORE, "{limit:?}");
        assert!(!limit.why.is_empty());
    }
}
