//! Log lines on stderr through `tracing`: `-v`, `-q` and `RUST_LOG`.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;

/// Sets up logging: info by default, debug with `-v`, warnings only with
/// `-q`; `RUST_LOG` overrides all three.
pub fn init(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| StderrLine)
        .try_init();
}

/// Writes through [`multiloop_supervisor::write_stderr`], which never
/// blocks forever on a stopped terminal.
struct StderrLine;

impl Write for StderrLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        multiloop_supervisor::write_stderr(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
