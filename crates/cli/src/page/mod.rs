//! The HTML report: one self-contained file (chart code, styles and data
//! inlined) that opens without a network.

mod data;
mod render;

pub use data::{unix_ms, PageData, RunEnd, RunMeta};
pub use render::{render, write_atomically, CHART_LIBRARY};
