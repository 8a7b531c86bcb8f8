//! Length-prefixed postcard frames, with a size limit checked before any
//! allocation.

use bytes::{Buf, BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder};

use crate::ProtocolError;

/// Bytes of the big-endian length prefix in front of every frame.
pub const LENGTH_PREFIX: usize = 4;

/// Frame limit when none is configured: large enough for any sane task
/// line, small enough that a corrupt prefix cannot make us allocate much.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Splits a byte stream into frames and encodes messages as frames.
///
/// Decoding yields the raw payload so that the caller can treat the first
/// frame (the handshake) differently from the rest; see [`FrameCodec::decode_message`].
#[derive(Debug)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Decodes one frame's payload as a message.
    pub fn decode_message<T: DeserializeOwned>(frame: &[u8]) -> Result<T, ProtocolError> {
        postcard::from_bytes(frame).map_err(|source| ProtocolError::Decode {
            len: frame.len(),
            source,
        })
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, ProtocolError> {
        // Stateless: the prefix stays in `src` until the whole frame is there,
        // so the limit is checked before we reserve room for the body.
        if src.len() < LENGTH_PREFIX {
            return Ok(None);
        }
        let len = (&src[..LENGTH_PREFIX]).get_u32() as usize;
        if len > self.max_frame {
            return Err(ProtocolError::FrameTooLong {
                len,
                max: self.max_frame,
            });
        }
        if src.len() < LENGTH_PREFIX + len {
            src.reserve(LENGTH_PREFIX + len - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX);
        Ok(Some(src.split_to(len)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, ProtocolError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(ProtocolError::TruncatedFrame {
                buffered: src.len(),
            }),
        }
    }
}

impl<T: Serialize> Encoder<&T> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: &T, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        let start = dst.len();
        dst.put_u32(0);
        if let Err(source) = postcard::to_io(item, dst.writer()) {
            dst.truncate(start);
            return Err(ProtocolError::Encode(source));
        }
        let len = dst.len() - start - LENGTH_PREFIX;
        if len > self.max_frame {
            dst.truncate(start);
            return Err(ProtocolError::FrameTooLong {
                len,
                max: self.max_frame,
            });
        }
        dst[start..start + LENGTH_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Added, ErrorKind, FromWorker, Heartbeat, Outcome, Task, TaskResult, ToWorker};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn arb_task() -> impl Strategy<Value = Task> {
        (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(id, p)| Task {
            id,
            payload: Bytes::from(p),
        })
    }

    fn arb_result() -> impl Strategy<Value = TaskResult> {
        let outcome = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|p| Outcome::Ok(p.into())),
            ".{0,20}".prop_map(|message| Outcome::Err {
                kind: ErrorKind::Panicked,
                message
            }),
        ];
        let added = proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..32),
                proptest::option::of(".{0,12}"),
            )
                .prop_map(|(payload, key)| Added {
                    payload: payload.into(),
                    key,
                }),
            0..4,
        );
        (any::<u64>(), any::<u64>(), outcome, any::<bool>(), added).prop_map(
            |(id, micros, outcome, retry, added)| TaskResult {
                id,
                micros,
                outcome,
                retry,
                added,
            },
        )
    }

    fn arb_from_worker() -> impl Strategy<Value = FromWorker> {
        prop_oneof![
            proptest::collection::vec(arb_result(), 0..8).prop_map(FromWorker::Results),
            (any::<u64>(), any::<u32>()).prop_map(|(lag_us, in_flight)| {
                FromWorker::Heartbeat(Heartbeat {
                    lag_us,
                    in_flight,
                    ..Heartbeat::default()
                })
            }),
        ]
    }

    fn encode_all<T: Serialize>(messages: &[T]) -> BytesMut {
        let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::new();
        for m in messages {
            codec.encode(m, &mut buf).unwrap();
        }
        buf
    }

    proptest! {
        #[test]
        fn tasks_round_trip(batches in proptest::collection::vec(proptest::collection::vec(arb_task(), 0..16), 0..8)) {
            let messages: Vec<ToWorker> = batches.into_iter().map(ToWorker::Tasks).collect();
            let mut buf = encode_all(&messages);
            let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME);
            let mut decoded = Vec::new();
            while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
                let frame = frame.freeze();
                let copied = FrameCodec::decode_message::<ToWorker>(&frame).unwrap();
                prop_assert_eq!(&crate::decode_to_worker(&frame).unwrap(), &copied);
                decoded.push(copied);
            }
            prop_assert_eq!(decoded, messages);
        }

        /// However the stream is cut into reads, the same messages come out.
        #[test]
        fn stream_cut_anywhere_decodes_the_same(
            messages in proptest::collection::vec(arb_from_worker(), 1..8),
            cuts in proptest::collection::vec(1usize..40, 1..64),
        ) {
            let whole = encode_all(&messages).freeze();
            let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME);
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            let mut pos = 0;
            let mut cut = cuts.iter().cycle();
            while pos < whole.len() {
                let end = (pos + cut.next().unwrap()).min(whole.len());
                buf.extend_from_slice(&whole[pos..end]);
                pos = end;
                while let Some(frame) = codec.decode(&mut buf).unwrap() {
                    decoded.push(crate::decode_from_worker(&frame.freeze()).unwrap());
                }
            }
            prop_assert!(codec.decode_eof(&mut buf).unwrap().is_none());
            prop_assert_eq!(decoded, messages);
        }

        /// Arbitrary bytes give frames, errors or "need more", never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = FrameCodec::new(256);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
                let frame = frame.freeze();
                let _ = crate::decode_from_worker(&frame);
                let _ = crate::decode_to_worker(&frame);
                let _ = crate::check_hello(&frame);
            }
        }
    }

    #[test]
    fn oversize_prefix_is_refused_before_allocation() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..]);
        match codec.decode(&mut buf) {
            Err(ProtocolError::FrameTooLong { len, max }) => {
                assert_eq!((len, max), (u32::MAX as usize, 1024));
            }
            other => panic!("expected FrameTooLong, got {other:?}"),
        }
    }

    #[test]
    fn oversize_message_is_not_encoded() {
        let mut codec = FrameCodec::new(16);
        let mut buf = BytesMut::new();
        let task = ToWorker::Tasks(vec![Task {
            id: 1,
            payload: Bytes::from(vec![b'x'; 64]),
        }]);
        assert!(matches!(
            codec.encode(&task, &mut buf),
            Err(ProtocolError::FrameTooLong { .. })
        ));
        assert!(buf.is_empty(), "a refused message leaves nothing behind");
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let mut buf = encode_all(&[FromWorker::Heartbeat(Heartbeat::default())]);
        buf.truncate(buf.len() - 1);
        let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(ProtocolError::TruncatedFrame { .. })
        ));
    }
}
