//! Whether an unnamed stdin (no `--input`, not a terminal) is empty. Such a
//! stdin is refused, because it is almost always the quick-start command
//! pasted where no one types (a Dockerfile `RUN`, a CI step,
//! `ssh host '...'`), not an empty batch.

use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::libc;

/// Waits until stdin has a byte or is at its end, then says whether it is
/// at its end before the first byte (`/dev/null`, an empty file, a pipe
/// closed unwritten). Nothing is consumed. The wait has no deadline on
/// purpose: it is the same wait as reading the input, which a slow producer
/// may take any time to start. A kind of file that cannot be probed counts
/// as not empty, and is read as before.
pub fn is_empty() -> bool {
    let stdin = std::io::stdin();
    let fd = stdin.as_raw_fd();
    wait_readable(fd);
    match bytes_ready(fd) {
        Some(count) => count == 0,
        // FIONREAD answers for pipes, sockets and regular files; of the
        // rest only /dev/null is known to be empty without reading it.
        None => is_dev_null(&stdin),
    }
}

/// Blocks until `fd` is readable or at its end (or invalid: the read that
/// follows then reports that).
fn wait_readable(fd: RawFd) {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, count 1, no timeout.
        let ready = unsafe { libc::poll(&mut poll, 1, -1) };
        if ready >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Bytes readable from `fd` without blocking (0 at its end), if the kind
/// of file answers FIONREAD.
fn bytes_ready(fd: RawFd) -> Option<u64> {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid.
    let status = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut count) };
    (status == 0).then(|| u64::try_from(count).unwrap_or(0))
}

fn is_dev_null(stdin: &impl AsFd) -> bool {
    let (Ok(ours), Ok(null)) = (
        nix::sys::stat::fstat(stdin.as_fd()),
        nix::sys::stat::stat("/dev/null"),
    ) else {
        return false;
    };
    let is_char = |mode: libc::mode_t| mode & libc::S_IFMT == libc::S_IFCHR;
    is_char(ours.st_mode) && is_char(null.st_mode) && ours.st_rdev == null.st_rdev
}
