//! Turns what went wrong on the network into a task error with the right
//! kind and a message that names the cause: DNS, refused, reset, TLS,
//! timeout, redirects, body size.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use multiloop_worker::TaskError;

/// Why the redirect policy stopped following a response.
#[derive(Debug)]
pub(crate) enum RedirectError {
    TooMany(usize),
    Loop(String),
}

impl fmt::Display for RedirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedirectError::TooMany(max) => write!(f, "too many redirects (more than {max})"),
            RedirectError::Loop(url) => write!(f, "redirect loop: back to {url}"),
        }
    }
}

impl StdError for RedirectError {}

/// The limits a message may quote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
}

/// The record for a failed request: `timeout` for timeouts, `failed` for
/// everything else, with a message that starts with the stage it failed in.
pub(crate) fn describe(error: &reqwest::Error, limits: Limits) -> TaskError {
    if let Some(redirect) = find::<RedirectError>(error) {
        return TaskError::failed(redirect.to_string());
    }
    if error.is_timeout() {
        return if error.is_connect() {
            TaskError::timeout(format!(
                "connect timed out after {} (connect_timeout_ms)",
                ms(limits.connect_timeout)
            ))
        } else {
            TaskError::timeout(format!(
                "timed out after {} (timeout_ms)",
                ms(limits.timeout)
            ))
        };
    }
    if let Some(tls) = find_tls(error) {
        return TaskError::failed(format!("tls: {}", lowercase_first(&tls.to_string())));
    }
    let cause = lowercase_first(&root_cause(error));
    if error.is_dns() {
        return TaskError::failed(format!("dns: {cause}"));
    }
    if error.is_connect() {
        return TaskError::failed(format!("connect: {cause}"));
    }
    if let Some(io) = find_io(error) {
        let what = match io.kind() {
            io::ErrorKind::ConnectionReset => Some("connection reset by peer"),
            io::ErrorKind::ConnectionAborted => Some("connection aborted"),
            io::ErrorKind::BrokenPipe => Some("connection closed while sending (broken pipe)"),
            io::ErrorKind::UnexpectedEof => Some("connection closed before the end of the body"),
            _ => None,
        };
        if let Some(what) = what {
            return TaskError::failed(what);
        }
    }
    if closed_early(error) {
        return TaskError::failed("connection closed before the response was complete");
    }
    let stage = if error.is_decode() {
        "decoding the body"
    } else if error.is_body() {
        "reading the body"
    } else if error.is_builder() {
        "building the request"
    } else {
        "request"
    };
    TaskError::failed(format!("{stage}: {cause}"))
}

/// Whether a failed request is worth another attempt, and whether it says
/// the host is overloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// A certificate, a redirect loop, a body over the cap: the same again.
    No,
    /// A transient network error (Scrapy's list: DNS, refused, reset,
    /// closed early, timeouts); `congestion` when it hints at an
    /// overloaded host (timeouts, refused or reset connections).
    Yes { congestion: bool },
}

pub(crate) fn retry_of(error: &reqwest::Error) -> Retry {
    if find::<RedirectError>(error).is_some() || find_tls(error).is_some() {
        return Retry::No;
    }
    if error.is_timeout() {
        return Retry::Yes { congestion: true };
    }
    let io_kind = find_io(error).map(io::Error::kind);
    let reset = matches!(
        io_kind,
        Some(io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused)
    );
    if error.is_dns() {
        return Retry::Yes { congestion: false };
    }
    if error.is_connect() || reset {
        return Retry::Yes { congestion: true };
    }
    let closed = matches!(
        io_kind,
        Some(
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        )
    ) || closed_early(error);
    if closed {
        return Retry::Yes { congestion: false };
    }
    Retry::No
}

/// Hyper's text for a connection closed before a message was complete.
const INCOMPLETE_MESSAGE: &str = "connection closed before message completed";

/// Whether the connection closed under the request: hyper's incomplete
/// message, a request canceled because its (kept-alive) connection went
/// away, or a dispatch channel closed with the connection. Some paths
/// (a pooled connection's error handed through hyper-util) carry hyper's
/// error as text only, so its message is matched too: a stock nginx
/// closing keep-alive connections under load produced errors that the
/// type checks alone missed, and they were not retried.
pub(crate) fn closed_early(error: &reqwest::Error) -> bool {
    chain(error).any(|e| match e.downcast_ref::<hyper::Error>() {
        Some(hyper) => hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed(),
        None => e.to_string().contains(INCOMPLETE_MESSAGE),
    })
}

/// True when the request failed because this process (or the system) is
/// out of file descriptors: not the task's fault, so not its failure.
pub(crate) fn out_of_descriptors(error: &reqwest::Error) -> bool {
    chain(error)
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(|io| matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)))
}

fn ms(duration: Option<Duration>) -> String {
    match duration {
        Some(d) => format!("{} ms", d.as_millis()),
        None => "no limit".to_string(),
    }
}

/// The sources of `error`, itself included, looking into `io::Error`s too
/// (their `source()` skips the error they wrap).
fn chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = Some(error);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.downcast_ref::<io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => current.source(),
        };
        Some(current)
    })
}

fn find<E: StdError + 'static>(error: &reqwest::Error) -> Option<&E> {
    chain(error).find_map(|e| e.downcast_ref::<E>())
}

fn find_tls(error: &reqwest::Error) -> Option<&rustls::Error> {
    find::<rustls::Error>(error)
}

/// The innermost `io::Error` that carries an OS-level kind.
fn find_io(error: &reqwest::Error) -> Option<&io::Error> {
    chain(error)
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .last()
}

/// The innermost cause's text, which is the specific one ("Connection
/// refused (os error 111)"); the outer layers only say where it happened.
fn root_cause(error: &reqwest::Error) -> String {
    chain(error)
        .last()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        // "TLS", "DNS": a leading acronym keeps its case.
        Some(first) if !chars.next().is_some_and(|c| c.is_ascii_uppercase()) => first
            .to_lowercase()
            .chain(text[first.len_utf8()..].chars())
            .collect(),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_lowercase_but_acronyms_stay() {
        assert_eq!(
            lowercase_first("Connection refused (os error 111)"),
            "connection refused (os error 111)"
        );
        assert_eq!(lowercase_first("TLS alert"), "TLS alert");
        assert_eq!(lowercase_first(""), "");
    }

    #[test]
    fn the_chain_looks_inside_io_errors() {
        let inner = RedirectError::TooMany(3);
        let io = io::Error::other(inner);
        let found: Vec<String> = chain(&io).map(|e| e.to_string()).collect();
        assert_eq!(found.len(), 2);
        assert!(chain(&io).any(|e| e.is::<RedirectError>()));
    }
}
