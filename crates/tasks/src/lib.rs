//! The task kinds built into the `worker` binary.

mod chaos;
mod fetch;
mod sim;
mod tree;

pub use chaos::{chaos, ChaosInput, Fault};
pub use fetch::{
    canonical, fetch_setup, scan_html, scan_html_links, Discovered, FetchFuture, FetchInput,
    FetchOutput, FetchRequest, FetchSettings, Fetcher, FollowCounts, FollowSettings, Href,
    PageInfo, PageLinks, Pattern, PerHost, Scope, StatusList, Timings, DEFAULT_PER_HOST,
    DEFAULT_RETRY_STATUS,
};
pub use sim::{expected_sum, sim, SimInput, SimOutput};
pub use tree::{tree, tree_children, tree_crashes, tree_nodes, TreeInput, TreeOutput};

use multiloop_worker::Worker;

/// A worker serving every built-in kind.
pub fn builtin_worker() -> Worker {
    Worker::new()
        .kind("sim", sim)
        .kind_with("fetch", fetch_setup)
        .kind("chaos", chaos)
        .kind("tree", tree)
}
