//! Stdin and stdout as non-blocking pipes on the runtime, when they are
//! pipes: a warm pool's driver writes one call per line into stdin and reads
//! each record from stdout, and `tokio::io::stdin` or the output thread
//! would wake another thread for every line each way.
//!
//! `O_NONBLOCK` belongs to the open file description, which whoever handed
//! us the pipe may share, so it is cleared again when the pipe is dropped.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;

/// Stdin, if it is a pipe (or FIFO) open for reading.
pub struct StdinPipe(pipe::Receiver);

impl StdinPipe {
    pub fn open() -> Option<Self> {
        let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
        // Checks that it is a FIFO open for reading, and sets O_NONBLOCK.
        pipe::Receiver::from_owned_fd(fd).ok().map(Self)
    }
}

impl Drop for StdinPipe {
    fn drop(&mut self) {
        set_blocking(self.0.as_fd());
    }
}

impl AsyncRead for StdinPipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

/// Stdout, if it is a pipe (or FIFO) open for writing.
pub struct StdoutPipe(pipe::Sender);

impl StdoutPipe {
    pub fn open() -> Option<Self> {
        let fd = io::stdout().as_fd().try_clone_to_owned().ok()?;
        pipe::Sender::from_owned_fd(fd).ok().map(Self)
    }
}

impl Drop for StdoutPipe {
    fn drop(&mut self) {
        set_blocking(self.0.as_fd());
    }
}

impl AsyncWrite for StdoutPipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn set_blocking(fd: BorrowedFd<'_>) {
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK),
        );
    }
}
