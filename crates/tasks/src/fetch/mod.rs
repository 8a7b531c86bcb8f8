//! `fetch`: a real HTTP client as a task kind. A URL in; status, final URL,
//! size, `<title>`, link count, content hash and timings out.

mod errors;
mod hosts;
mod input;
mod page;
mod settings;
mod task;

pub use input::{FetchInput, FetchRequest};
pub use page::{scan_html, PageInfo};
pub use settings::{FetchSettings, StatusList};
pub use task::{fetch_setup, FetchFuture, FetchOutput, Fetcher, Timings};
