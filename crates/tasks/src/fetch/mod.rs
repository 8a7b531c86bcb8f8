//! `fetch`: a real HTTP client as a task kind. A URL in; status, final URL,
//! size, `<title>`, link count, content hash and timings out; with
//! `--follow`, the page's links out as new tasks.

mod budget;
mod charset;
mod errors;
mod follow;
mod hosts;
mod input;
mod markup;
mod page;
mod robots;
mod settings;
mod slots;
mod task;

pub use follow::{canonical, Discovered, FollowCounts, FollowSettings, Pattern, Scope};
pub use input::{FetchInput, FetchRequest};
pub use page::{scan_html, scan_html_links, Href, PageInfo, PageLinks};
pub use settings::{FetchSettings, PerHost, StatusList, DEFAULT_PER_HOST, DEFAULT_RETRY_STATUS};
pub use task::{fetch_setup, FetchFuture, FetchOutput, Fetcher, Timings};

/// A random factor in [0, 1) for backoff and delay jitter: xorshift seeded
/// from the clock and the pid, one per thread (no need for a crypto RNG).
pub(crate) fn jitter() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (nanos ^ (u64::from(std::process::id()) << 32)) | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}
