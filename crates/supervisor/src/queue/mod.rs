//! Many machines pulling from one Redis Streams queue: the URL, the Redis
//! commands, the consuming node, and `queue push`.

mod ack_push;
mod consume;
mod push;
mod store;
mod url;

pub use consume::{consume, QueueSpec};
pub use push::{push, PushReport, OVERSIZE_NAMED};
pub use store::{NodeStatus, QueueError, QueueStatus, Store};
pub use url::{QueueUrl, UrlError};

/// The queue's state, as `queue status` shows it.
pub async fn status(url: &QueueUrl) -> Result<QueueStatus, QueueError> {
    Store::connect(url).await?.status().await
}
