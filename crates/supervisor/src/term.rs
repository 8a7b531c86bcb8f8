//! Writing to our stderr without ever getting stuck on it.

use std::io::{ErrorKind, Write};

/// Writes `bytes` to stderr, best effort. A write interrupted by a signal
/// is dropped rather than retried: with SIGTTOU handled and `tostop` set on
/// the terminal, a background process would otherwise retry forever.
pub fn write_stderr(bytes: &[u8]) {
    let mut stderr = std::io::stderr().lock();
    let mut rest = bytes;
    while !rest.is_empty() {
        match stderr.write(rest) {
            Ok(0) => return,
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => return,
            Err(_) => return,
        }
    }
}
