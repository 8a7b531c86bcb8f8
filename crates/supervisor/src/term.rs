//! Writing to our stderr without ever getting stuck on it.

use std::io::{ErrorKind, Write};
use std::sync::OnceLock;

type Hook = Box<dyn Fn(&[u8]) + Send + Sync>;

static HOOK: OnceLock<Hook> = OnceLock::new();

/// Routes every stderr line through `hook` (a progress bar hides itself
/// while the line is written). Set once, before the run.
pub fn set_stderr_hook(hook: impl Fn(&[u8]) + Send + Sync + 'static) {
    let _ = HOOK.set(Box::new(hook));
}

/// Writes a line to stderr, through the hook if one is set.
pub fn write_stderr(bytes: &[u8]) {
    match HOOK.get() {
        Some(hook) => hook(bytes),
        None => write_stderr_raw(bytes),
    }
}

/// Writes `bytes` to stderr, best effort. A write interrupted by a signal
/// is dropped rather than retried: with SIGTTOU handled and `tostop` set on
/// the terminal, a background process would otherwise retry forever.
pub fn write_stderr_raw(bytes: &[u8]) {
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
