//! Wire protocol between the multiloop supervisor and its workers.
//!
//! Frames are a 4-byte big-endian length prefix followed by a postcard
//! payload. Task and result payloads are opaque JSON bytes: the supervisor
//! never parses them.

mod borrowed;
mod codec;
mod error;
mod messages;
mod pack;

pub use borrowed::{decode_from_worker, decode_to_worker};
pub use codec::{FrameCodec, DEFAULT_MAX_FRAME, LENGTH_PREFIX};
pub use error::ProtocolError;
pub use messages::{
    check_hello, Added, ErrorKind, FromWorker, Heartbeat, Held, Hello, Outcome, Task, TaskResult,
    ToWorker, Usage,
};
pub use pack::{
    max_result_payload, max_task_payload, pack, Packed, ADDED_OVERHEAD, ADDITIONS_OVERHEAD,
    BATCH_OVERHEAD, RESULT_OVERHEAD, TASK_OVERHEAD,
};

/// Version of the wire protocol. Bump it whenever a message changes shape.
pub const PROTOCOL_VERSION: u32 = 3;

/// File descriptor on which a worker reads task frames.
pub const TASK_FD: i32 = 3;

/// File descriptor on which a worker writes result frames.
pub const RESULT_FD: i32 = 4;
