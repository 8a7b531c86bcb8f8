//! Handlers: a user's typed async function, erased to bytes in, bytes out.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::rc::Rc;

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use multiloop_protocol::ErrorKind;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a task produced no output. Return it from a handler to choose the
/// kind; any other error type becomes [`ErrorKind::Failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    pub kind: ErrorKind,
    pub message: String,
}

impl TaskError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// Keeps the kind of a `TaskError`; names any other error `failed`.
    fn from_display<E: fmt::Display + 'static>(error: E) -> Self {
        match (&error as &dyn Any).downcast_ref::<TaskError>() {
            Some(task_error) => task_error.clone(),
            None => Self::failed(format!("{error:#}")),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for TaskError {}

/// A handler after type erasure: JSON bytes in, JSON bytes or an error out.
pub(crate) type ErasedHandler =
    Rc<dyn Fn(Bytes) -> LocalBoxFuture<'static, Result<Vec<u8>, TaskError>>>;

/// Wraps a typed handler: decodes its input with serde_json (a decode error
/// is `bad_input`), runs it, and encodes its output.
pub(crate) fn erase<I, O, E, F, Fut>(handler: F) -> ErasedHandler
where
    I: DeserializeOwned + 'static,
    O: Serialize + 'static,
    E: fmt::Display + 'static,
    F: Fn(I) -> Fut + 'static,
    Fut: Future<Output = Result<O, E>> + 'static,
{
    Rc::new(
        move |payload: Bytes| match serde_json::from_slice::<I>(&payload) {
            Err(error) => futures::future::ready(Err(TaskError::bad_input(format!(
                "input does not decode: {error}"
            ))))
            .boxed_local(),
            Ok(input) => handler(input)
                .map(|result| match result {
                    Ok(output) => serde_json::to_vec(&output).map_err(|error| {
                        TaskError::failed(format!("output does not encode as JSON: {error}"))
                    }),
                    Err(error) => Err(TaskError::from_display(error)),
                })
                .boxed_local(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Plain;
    impl fmt::Display for Plain {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("plain error")
        }
    }

    #[test]
    fn task_error_keeps_its_kind_and_others_are_failed() {
        let timeout = TaskError::from_display(TaskError::timeout("slow"));
        assert_eq!(timeout.kind, ErrorKind::Timeout);
        let plain = TaskError::from_display(Plain);
        assert_eq!(plain, TaskError::failed("plain error"));
    }

    #[test]
    fn bad_json_is_bad_input() {
        let handler = erase(|n: u64| async move { Ok::<_, Plain>(n + 1) });
        let out = handler(Bytes::from_static(b"41")).now_or_never().unwrap();
        assert_eq!(out.unwrap(), b"42");
        let err = handler(Bytes::from_static(b"{oops"))
            .now_or_never()
            .unwrap();
        assert_eq!(err.unwrap_err().kind, ErrorKind::BadInput);
    }
}
