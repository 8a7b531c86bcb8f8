//! The history as the page wants it: columns of numbers (one value per
//! point, `null` where a worker had no process), the lives, and the task
//! and fetch summaries. Values are rounded to what a chart can show, which
//! keeps the page small.

use std::collections::BTreeMap;

use serde::Serialize;

use super::fetch::{FetchStats, FetchSummary};
use super::lives::{EndCause, Life, Lives};
use super::points::{Gauge, RunPoint};
use super::series::Series;
use super::tasks::{TaskSummary, TaskTimes};
use crate::dispatcher::Progress;

/// One worker slot's columns.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerColumns {
    pub slot: usize,
    /// Mean CPU %, 100 = one core.
    pub cpu: Vec<Option<f64>>,
    /// Peak RSS, MiB.
    pub rss_mib: Vec<Option<f64>>,
    /// Peak event-loop lag, ms.
    pub lag_ms: Vec<Option<f64>>,
    /// Mean share of time the loop was held by single polls, 0-1.
    pub blocked: Vec<Option<f64>>,
}

/// Everything the page draws.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    /// Samples merged into each of the older points.
    pub bucket_samples: usize,
    /// Seconds since the start, at the end of each point.
    pub t: Vec<f64>,
    pub span: Vec<f64>,
    pub done: Vec<u64>,
    pub failed: Vec<u64>,
    pub restarts: Vec<u64>,
    pub in_flight: Vec<Option<f64>>,
    pub in_flight_max: Vec<Option<f64>>,
    pub queued: Vec<Option<f64>>,
    pub alive: Vec<Option<f64>>,
    pub workers: Vec<WorkerColumns>,
    pub progress: Option<Progress>,
    pub lives: Vec<Life>,
    /// Older ended lives left out of `lives`.
    pub lives_forgotten: u64,
    /// Ended lives by cause, over the whole run.
    pub ends: BTreeMap<EndCause, u64>,
    pub probes: u64,
    pub tasks: Option<TaskSummary>,
    pub fetch: Option<FetchSummary>,
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn mean(gauge: &Gauge, places: i32) -> Option<f64> {
    gauge.mean().map(|v| round(v, places))
}

fn peak(gauge: &Gauge, places: i32) -> Option<f64> {
    gauge.max().map(|v| round(v, places))
}

impl HistoryView {
    pub(super) fn of(
        run: &Series<RunPoint>,
        progress: Option<Progress>,
        lives: &Lives,
        tasks: Option<&TaskTimes>,
        fetch: Option<&FetchStats>,
    ) -> Self {
        let points: Vec<&RunPoint> = run.iter().collect();
        let slots = points.iter().map(|p| p.workers.len()).max().unwrap_or(0);
        let column = |f: &dyn Fn(&RunPoint) -> Option<f64>| -> Vec<Option<f64>> {
            points.iter().map(|p| f(p)).collect()
        };
        let workers = (0..slots)
            .map(|slot| {
                let of = |f: &dyn Fn(&super::points::WorkerGauges) -> Option<f64>| {
                    column(&|p: &RunPoint| p.workers.get(slot).and_then(f))
                };
                WorkerColumns {
                    slot,
                    cpu: of(&|w| mean(&w.cpu, 1)),
                    rss_mib: of(&|w| peak(&w.rss_bytes, 0).map(|b| round(b / 1_048_576.0, 1))),
                    lag_ms: of(&|w| peak(&w.lag_ms, 1)),
                    blocked: of(&|w| mean(&w.blocked, 3)),
                }
            })
            .collect();
        Self {
            bucket_samples: run.bucket_width(),
            t: points.iter().map(|p| round(p.t, 2)).collect(),
            span: points.iter().map(|p| round(p.span, 2)).collect(),
            done: points.iter().map(|p| p.done).collect(),
            failed: points.iter().map(|p| p.failed).collect(),
            restarts: points.iter().map(|p| p.restarts).collect(),
            in_flight: column(&|p| mean(&p.in_flight, 1)),
            in_flight_max: column(&|p| peak(&p.in_flight, 0)),
            queued: column(&|p| mean(&p.queued, 1)),
            alive: column(&|p| mean(&p.alive, 1)),
            workers,
            progress,
            lives: lives.iter().cloned().collect(),
            lives_forgotten: lives.forgotten(),
            ends: lives.ends().clone(),
            probes: lives.probes(),
            tasks: tasks.map(TaskTimes::summary),
            fetch: fetch.map(FetchStats::summary),
        }
    }
}
