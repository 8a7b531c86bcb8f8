//! Errors a peer's bytes can cause; none of them is ever a panic.

/// A protocol violation or I/O failure on a frame stream.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The length prefix announces more bytes than the configured limit.
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    FrameTooLong { len: usize, max: usize },
    /// A frame arrived whole but its payload is not a valid message.
    #[error("frame of {len} bytes does not decode")]
    Decode {
        len: usize,
        #[source]
        source: postcard::Error,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    TruncatedFrame { buffered: usize },
    /// A message could not be encoded (for example it is over the limit).
    #[error("message does not encode")]
    Encode(#[source] postcard::Error),
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: worker speaks {worker}, supervisor speaks {supervisor}")]
    VersionMismatch { worker: u32, supervisor: u32 },
    /// The first frame was not a handshake.
    #[error("expected a handshake as the first frame, got {got}")]
    NotHello { got: &'static str },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
