//! Stdin and stdout as non-blocking pipes on the runtime, when they are
//! pipes: a warm pool's driver writes one call per line into stdin and reads
//! each record from stdout, and `tokio::io::stdin` or the output thread
//! would wake another thread for every line each way.
//!
//! The pipe is opened again through `/proc/self/fd/N`, not duplicated:
//! `O_NONBLOCK` belongs to the open file description, which a duplicate
//! shares with whoever handed us the pipe (and with our stderr after
//! `2>&1`, whose writes would then fail on a full pipe). A description of
//! our own carries the flag alone, and nothing needs putting back, even
//! after a SIGKILL.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use tokio::net::unix::pipe;

/// Stdin, if it is a pipe (or FIFO) we can open again for reading.
pub fn stdin() -> Option<pipe::Receiver> {
    let fd = reopen(io::stdin().as_fd(), OFlag::O_RDONLY)?;
    pipe::Receiver::from_owned_fd(fd).ok()
}

/// Stdout, if it is a pipe (or FIFO) we can open again for writing.
pub fn stdout() -> Option<pipe::Sender> {
    let fd = reopen(io::stdout().as_fd(), OFlag::O_WRONLY)?;
    pipe::Sender::from_owned_fd(fd).ok()
}

/// A new open file description of the pipe `fd` is, non-blocking; `None`
/// for anything else (a file opened again would start at offset 0) or when
/// it cannot be opened (a pipe whose reader has gone: `ENXIO`).
fn reopen(fd: BorrowedFd<'_>, access: OFlag) -> Option<OwnedFd> {
    let kind = SFlag::from_bits_truncate(fstat(fd).ok()?.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFIFO {
        return None;
    }
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    open(
        path.as_str(),
        access | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()
}
