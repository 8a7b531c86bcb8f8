//! The connection budget of one worker's fetcher: how many requests may be
//! in flight at once, sized from the descriptor limit and shrunk when the
//! system runs out anyway.

use std::cell::Cell;

use tokio::sync::{Semaphore, SemaphorePermit};

use super::settings::DEFAULT_CONNECTIONS;

/// The connection budget of one worker: requests in flight, each of which
/// may hold a socket. Sized from the descriptor limit, and shrunk when the
/// system still runs out, so that "too many open files" holds requests
/// back instead of failing them.
#[derive(Debug)]
pub(super) struct Budget {
    permits: Semaphore,
    size: Cell<usize>,
    nofile: u64,
    said_full: Cell<bool>,
    said_out: Cell<bool>,
}

impl Budget {
    pub(super) fn new(size: usize, nofile: u64) -> Self {
        Self {
            permits: Semaphore::new(size),
            size: Cell::new(size),
            nofile,
            said_full: Cell::new(false),
            said_out: Cell::new(false),
        }
    }

    pub(super) async fn acquire(&self) -> SemaphorePermit<'_> {
        if let Ok(permit) = self.permits.try_acquire() {
            return permit;
        }
        if !self.said_full.replace(true) {
            eprintln!(
                "fetch: {} requests in flight, the connection budget of this worker \
                 (descriptor limit {}; --set connections=N changes it); more tasks wait for a connection",
                self.size.get(),
                self.nofile
            );
        }
        self.permits.acquire().await.expect("never closed")
    }

    /// The system said "too many open files" with `permit` held: one
    /// connection fewer from now on (never below one), and a wait for
    /// another request to end before this one goes again.
    pub(super) fn shrink(&self, permit: SemaphorePermit<'_>) {
        if !self.said_out.replace(true) {
            eprintln!(
                "fetch: out of file descriptors at {} connections (limit {}); \
                 holding requests back until one is free",
                self.size.get() - self.permits.available_permits(),
                self.nofile
            );
        }
        if self.size.get() > 1 {
            self.size.set(self.size.get() - 1);
            permit.forget();
        }
    }
}

/// Requests in flight per worker without `--set connections=N`: the
/// default budget, or half the descriptor limit (less 64 for everything
/// else) when that is lower. The cap matters as much as the descriptors:
/// a pool only reuses a connection that is idle, so a worker with 10,000
/// tasks in flight and no cap opens 10,000 connections to one host and
/// pays a handshake per request on both ends (twice the CPU per page, and
/// a listen queue no small server has).
pub(super) fn default_connections(nofile: u64) -> usize {
    (nofile.saturating_sub(64) / 2).clamp(8, DEFAULT_CONNECTIONS as u64) as usize
}

/// This process's soft limit on open descriptors (already raised to the
/// hard limit by the worker runtime).
pub(super) fn nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid resource and a pointer to a live `rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_budget_is_capped_and_fits_the_descriptors() {
        assert_eq!(default_connections(1 << 20), DEFAULT_CONNECTIONS);
        assert_eq!(default_connections(1024), 480);
        assert_eq!(default_connections(100), 18);
        assert_eq!(default_connections(10), 8);
    }
}
