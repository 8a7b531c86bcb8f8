//! How many workers this machine can hold: checked before a fleet is
//! started (`--workers N`) or grown (`ctl scale N`, SIGTTIN), so an
//! impossible size is refused with one line instead of ending in a stall,
//! a flood of spawn errors, or descriptors running out mid-run.

use std::fmt;

/// Workers per core past which a size is taken for a typo. Workers are
/// event loops with many tasks each; more of them than cores only helps
/// when tasks block their loop, and even then a few per core is plenty.
pub const WORKERS_PER_CORE: usize = 32;

/// File descriptors the supervisor holds per worker: the task pipe, the
/// result pipe, the worker's stdout and stderr, and slack for a pidfd and
/// a replacement that starts before the worker it replaces has exited.
pub const FDS_PER_WORKER: u64 = 8;

/// Descriptors kept for everything else: input, output, the control
/// socket and its clients, the runtime's own.
const FDS_RESERVED: u64 = 64;

/// Tasks (threads) a worker process counts against the user's process
/// limit: its event loop, its heartbeat watchdog, and room for a blocking
/// thread or two (DNS lookups).
pub const THREADS_PER_WORKER: u64 = 4;

/// The largest fleet this machine can hold, and what sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLimit {
    pub max: usize,
    pub bound: Bound,
}

/// What bounds the fleet size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// [`WORKERS_PER_CORE`] times the cores this process may use.
    Cores { cores: usize },
    /// The open-file limit (`ulimit -n`).
    Descriptors { limit: u64 },
    /// The user's process limit (`ulimit -u`).
    Processes { limit: u64 },
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Cores { cores } => write!(
                f,
                "{WORKERS_PER_CORE} per core, {cores} core{}",
                if *cores == 1 { "" } else { "s" }
            ),
            Bound::Descriptors { limit } => write!(
                f,
                "open-file limit {limit} (ulimit -n), {FDS_PER_WORKER} per worker"
            ),
            Bound::Processes { limit } => write!(
                f,
                "process limit {limit} (ulimit -u), {THREADS_PER_WORKER} threads per worker"
            ),
        }
    }
}

/// A fleet size over the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{wanted} workers is more than this machine can hold: at most {} ({})", limit.max, limit.bound)]
pub struct FleetTooLarge {
    pub wanted: usize,
    pub limit: FleetLimit,
}

/// Refuses a fleet of `wanted` workers that this machine cannot hold.
pub fn check_fleet_size(wanted: usize) -> Result<(), FleetTooLarge> {
    let limit = fleet_limit();
    if wanted > limit.max {
        return Err(FleetTooLarge { wanted, limit });
    }
    Ok(())
}

/// The largest number of workers this machine can hold now.
pub fn max_fleet_size() -> usize {
    fleet_limit().max
}

/// The fleet limit from this process's cores and resource limits now.
pub fn fleet_limit() -> FleetLimit {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let descriptors = soft_limit(nix::sys::resource::Resource::RLIMIT_NOFILE);
    // Root is not held to RLIMIT_NPROC by the kernel.
    let processes = if nix::unistd::geteuid().is_root() {
        None
    } else {
        soft_limit(nix::sys::resource::Resource::RLIMIT_NPROC)
    };
    limit_for(cores, descriptors, processes)
}

/// The limit for these numbers (None: unlimited); the smallest bound wins.
pub fn limit_for(cores: usize, descriptors: Option<u64>, processes: Option<u64>) -> FleetLimit {
    let mut limit = FleetLimit {
        max: cores.max(1).saturating_mul(WORKERS_PER_CORE),
        bound: Bound::Cores { cores },
    };
    let mut consider = |max: u64, bound: Bound| {
        let max = usize::try_from(max).unwrap_or(usize::MAX).max(1);
        if max < limit.max {
            limit = FleetLimit { max, bound };
        }
    };
    if let Some(n) = descriptors {
        consider(
            n.saturating_sub(FDS_RESERVED) / FDS_PER_WORKER,
            Bound::Descriptors { limit: n },
        );
    }
    if let Some(n) = processes {
        // The supervisor's own threads count against the same limit.
        consider(
            n.saturating_sub(16) / THREADS_PER_WORKER,
            Bound::Processes { limit: n },
        );
    }
    limit
}

/// Raises the open-file soft limit to the hard one, as servers do at
/// start: a soft limit of 1024 is a historical default, not a decision.
/// Returns the soft limit in force afterwards (None: unlimited).
pub fn raise_descriptor_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    // An infinite hard limit cannot be a soft one on Linux: the kernel's
    // ceiling for one process is fs.nr_open.
    let target = if hard == nix::sys::resource::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(soft)
    } else {
        hard
    };
    if soft < target {
        // Failing to raise it is no error: the check then uses the old one.
        let _ = setrlimit(Resource::RLIMIT_NOFILE, target, hard);
    }
    soft_limit(Resource::RLIMIT_NOFILE)
}

fn soft_limit(resource: nix::sys::resource::Resource) -> Option<u64> {
    let (soft, _) = nix::sys::resource::getrlimit(resource).ok()?;
    (soft != nix::sys::resource::RLIM_INFINITY).then_some(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_bound_wins_and_is_named() {
        let cores = limit_for(2, None, None);
        assert_eq!(cores.max, 64);
        assert_eq!(cores.bound, Bound::Cores { cores: 2 });
        let fds = limit_for(64, Some(1024), Some(1_000_000));
        assert_eq!(fds.max, (1024 - 64) / 8);
        assert!(matches!(fds.bound, Bound::Descriptors { limit: 1024 }));
        let procs = limit_for(64, Some(1 << 20), Some(400));
        assert_eq!(procs.max, (400 - 16) / 4);
        assert!(matches!(procs.bound, Bound::Processes { limit: 400 }));
    }

    #[test]
    fn tiny_limits_still_allow_one_worker() {
        assert_eq!(limit_for(0, Some(10), Some(3)).max, 1);
    }

    #[test]
    fn the_refusal_is_one_clear_line() {
        let error = FleetTooLarge {
            wanted: 100_000,
            limit: limit_for(2, Some(20_000), None),
        }
        .to_string();
        assert_eq!(
            error,
            "100000 workers is more than this machine can hold: at most 64 (32 per core, 2 cores)"
        );
        assert!(check_fleet_size(1).is_ok());
        assert!(check_fleet_size(usize::MAX).is_err());
    }
}
