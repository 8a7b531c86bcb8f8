//! What the worker asks of the operating system: its pipes, its name, its
//! resource usage.

use std::os::fd::{FromRawFd, OwnedFd};

use multiloop_protocol::Usage;
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use nix::sys::stat::{fstat, SFlag};
use nix::sys::time::TimeValLike;

/// Takes ownership of an inherited pipe end, checking that it is one.
pub(crate) fn inherited_pipe(fd: i32, role: &str) -> Result<OwnedFd, String> {
    let not_started_by_supervisor = || {
        format!(
            "fd {fd} ({role}) is not a pipe: a worker is started by the multiloop supervisor \
             (try `supervisor --worker {}`)",
            std::env::args().next().unwrap_or_else(|| "worker".into())
        )
    };
    // SAFETY: `borrow_raw` requires `fd` to be open and to stay open for
    // as long as the borrow lives. The borrow lives only for this `fstat`
    // call, and nothing owns (and so nothing closes) this inherited
    // descriptor until it is taken over below. If it is not open at all,
    // the contract is not met for an fd number that no object owns, and
    // fstat only reports EBADF, which becomes the error below.
    let stat = fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
        .map_err(|_| not_started_by_supervisor())?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFIFO {
        return Err(not_started_by_supervisor());
    }
    // SAFETY: the supervisor passed this descriptor to us for our exclusive
    // use, and nothing else in this process has taken ownership of it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Not for a handler's subprocesses: one that outlived us would hold the
    // pipe open and hide our death from the supervisor.
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| format!("fd {fd} ({role}): cannot set close-on-exec: {e}"))?;
    Ok(owned)
}

/// Names the process for `top` (`multiloop-w3`).
pub(crate) fn set_process_name(index: usize) {
    if let Ok(name) = std::ffi::CString::new(format!("multiloop-w{index}")) {
        let _ = nix::sys::prctl::set_name(&name);
    }
}

/// This process's CPU time and peak RSS so far.
pub(crate) fn usage() -> Usage {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => Usage {
            user_us: usage.user_time().num_microseconds().max(0) as u64,
            system_us: usage.system_time().num_microseconds().max(0) as u64,
            // Linux reports ru_maxrss in KiB.
            max_rss_bytes: usage.max_rss().max(0) as u64 * 1024,
        },
        Err(_) => Usage::default(),
    }
}

/// Current resident set size, from `/proc/self/statm`.
pub(crate) fn current_rss() -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

/// Raises the soft limit on open descriptors to the hard limit: the soft
/// limit is 1024 in many logins and containers, far below what a worker
/// with thousands of sockets needs, and only the hard limit is a policy.
/// Returns the soft limit in force afterwards; a failure keeps the old one.
pub fn raise_nofile_limit() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    // An infinite hard limit cannot be a soft one on Linux: the ceiling is
    // fs.nr_open.
    let target = if hard == nix::libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(soft)
    } else {
        hard
    };
    if target > soft && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        return target;
    }
    soft
}

/// Clears `O_NONBLOCK` on a descriptor: the watchdog thread writes the
/// result pipe with plain blocking writes.
pub(crate) fn set_blocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(std::io::Error::from)?;
    Ok(())
}
