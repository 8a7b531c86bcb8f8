//! Stdin and stdout as non-blocking pipes on the runtime, when they are
//! pipes: a warm pool's driver writes one call per line into stdin and reads
//! each record from stdout, and `tokio::io::stdin` or the output thread
//! would wake another thread for every line each way.
//!
//! `O_NONBLOCK` belongs to the open file description, which whoever handed
//! us the pipe may share, so it is cleared again when the pipe is dropped.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;

/// One end of a pipe in non-blocking mode until dropped.
pub struct Pipe<End: AsFd>(End);

/// Stdin, if it is a pipe (or FIFO) open for reading.
pub fn stdin() -> Option<Pipe<pipe::Receiver>> {
    let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
    // Checks that it is a FIFO open for reading, and sets O_NONBLOCK.
    pipe::Receiver::from_owned_fd(fd).ok().map(Pipe)
}

/// Stdout, if it is a pipe (or FIFO) open for writing.
pub fn stdout() -> Option<Pipe<pipe::Sender>> {
    let fd = io::stdout().as_fd().try_clone_to_owned().ok()?;
    pipe::Sender::from_owned_fd(fd).ok().map(Pipe)
}

impl<End: AsFd> Drop for Pipe<End> {
    fn drop(&mut self) {
        let fd = self.0.as_fd();
        if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
            let blocking = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
            let _ = fcntl(fd, FcntlArg::F_SETFL(blocking));
        }
    }
}

impl AsyncRead for Pipe<pipe::Receiver> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pipe<pipe::Sender> {
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
