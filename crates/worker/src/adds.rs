//! Tasks that add tasks: the additions of the handler that is running,
//! gathered in a task-local scope around its future and sent with its
//! result.

use std::cell::RefCell;
use std::future::Future;

use bytes::Bytes;
use multiloop_protocol::{Added, Packed};
use serde::Serialize;

use crate::handler::TaskError;

tokio::task_local! {
    /// Set by the runtime around every handler future.
    static ADDS: RefCell<Additions>;
}

/// The tasks one attempt has added so far, and the room its result frame
/// leaves for them.
#[derive(Debug)]
pub(crate) struct Additions {
    added: Vec<Added>,
    /// Bytes the additions take in the result frame, per [`Packed`].
    bytes: usize,
    /// Room in the result frame for the output and the additions together.
    room: usize,
    /// The longest payload a task frame can carry.
    max_payload: usize,
}

impl Additions {
    pub(crate) fn new(room: usize, max_payload: usize) -> Self {
        Self {
            added: Vec::new(),
            bytes: 0,
            room,
            max_payload,
        }
    }

    /// Bytes the additions take in the result frame.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn into_added(self) -> Vec<Added> {
        self.added
    }

    fn push(&mut self, payload: Vec<u8>, key: Option<&str>) -> Result<(), TaskError> {
        if payload.len() > self.max_payload {
            return Err(TaskError::bad_input(format!(
                "added task of {} bytes is over the frame limit ({} bytes)",
                payload.len(),
                self.max_payload
            )));
        }
        let added = Added {
            payload: Bytes::from(payload),
            key: key.map(str::to_owned),
        };
        let bytes = self.bytes + added.encoded_bound();
        if bytes > self.room {
            return Err(TaskError::failed(format!(
                "the {} tasks added so far take {bytes} bytes, over the frame limit ({} bytes)",
                self.added.len() + 1,
                self.room
            )));
        }
        self.bytes = bytes;
        self.added.push(added);
        Ok(())
    }
}

/// Runs `future` (one handler attempt) with its own additions; returns its
/// output and what it added.
pub(crate) async fn scope<F: Future>(additions: Additions, future: F) -> (F::Output, Additions) {
    ADDS.scope(RefCell::new(additions), async move {
        let output = future.await;
        let additions =
            ADDS.with(|adds| std::mem::replace(&mut *adds.borrow_mut(), Additions::new(0, 0)));
        (output, additions)
    })
    .await
}

/// Inside a running handler: queue a follow-up task. `task` is encoded with
/// serde_json as the new task's input line; `key`, when given, dedupes it
/// against every key the run has seen (input `--key` values and earlier
/// additions). The additions travel with this attempt's result and count
/// only if it completes with an output: an attempt that fails, times out or
/// whose worker dies adds nothing.
///
/// Errors: called outside a handler, a task that does not encode as JSON or
/// is over the frame limit, or additions that no longer fit in the result
/// frame. The handler decides what to do with the error; the task is not
/// added.
pub fn add<T: Serialize + ?Sized>(task: &T, key: Option<&str>) -> Result<(), TaskError> {
    let payload = serde_json::to_vec(task)
        .map_err(|error| TaskError::bad_input(format!("added task does not encode: {error}")))?;
    ADDS.try_with(|adds| adds.borrow_mut().push(payload, key))
        .map_err(|_| TaskError::failed("multiloop_worker::add called outside a handler"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiloop_protocol::ErrorKind;

    fn run<T>(additions: Additions, f: impl Future<Output = T>) -> (T, Additions) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(scope(additions, f))
    }

    #[test]
    fn additions_are_kept_in_order_with_their_keys() {
        let (out, additions) = run(Additions::new(1000, 100), async {
            add(&serde_json::json!({"n": 1}), Some("one"))?;
            add("two", None)?;
            Ok::<_, TaskError>(())
        });
        out.unwrap();
        let added = additions.into_added();
        assert_eq!(added.len(), 2);
        assert_eq!(&added[0].payload[..], br#"{"n":1}"#);
        assert_eq!(added[0].key.as_deref(), Some("one"));
        assert_eq!(&added[1].payload[..], br#""two""#);
        assert_eq!(added[1].key, None);
    }

    #[test]
    fn outside_a_handler_it_is_an_error() {
        let err = add(&1, None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Failed);
        assert!(err.message.contains("outside a handler"), "{err}");
    }

    #[test]
    fn an_oversize_task_is_bad_input_and_not_added() {
        let (err, additions) = run(Additions::new(1000, 8), async {
            add(&"x".repeat(20), None).unwrap_err()
        });
        assert_eq!(err.kind, ErrorKind::BadInput);
        assert!(err.message.contains("over the frame limit"), "{err}");
        assert!(additions.into_added().is_empty());
    }

    #[test]
    fn additions_past_the_frame_are_refused() {
        let (errors, additions) = run(Additions::new(100, 100), async {
            (0..10)
                .map(|i| add(&i, Some("0123456789")).is_err())
                .collect::<Vec<_>>()
        });
        let kept = errors.iter().filter(|failed| !**failed).count();
        assert!(kept > 0 && kept < 10, "{errors:?}");
        assert!(additions.bytes() <= 100);
        assert_eq!(additions.into_added().len(), kept);
    }

    #[test]
    fn scopes_do_not_share_additions() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        let (a, b) = local.block_on(&rt, async {
            let a = tokio::task::spawn_local(scope(Additions::new(1000, 100), async {
                add(&"a", None).unwrap();
                tokio::task::yield_now().await;
                add(&"a2", None).unwrap();
            }));
            let b = tokio::task::spawn_local(scope(Additions::new(1000, 100), async {
                add(&"b", None).unwrap();
            }));
            (a.await.unwrap().1, b.await.unwrap().1)
        });
        assert_eq!(a.into_added().len(), 2);
        assert_eq!(b.into_added().len(), 1);
    }
}
