//! [`History`]: the one owner of everything the report shows over time,
//! fed samples, life changes and records.

use crate::dispatcher::{Progress, WorkerRow};
use crate::record::Record;
use multiloop_protocol::Outcome;

use super::fetch::FetchStats;
use super::lives::{LifeChange, Lives};
use super::points::{Gauge, RunPoint, WorkerGauges};
use super::series::Series;
use super::tasks::{Ending, TaskTimes};
use super::view::HistoryView;

/// One second's figures, as the engine samples them and `--stats` keeps
/// them (one JSON line each).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sampled {
    /// Seconds since the run started.
    pub t: f64,
    pub progress: Progress,
    pub workers: Vec<WorkerRow>,
}

/// The run over time, in bounded memory (see [`super::series`],
/// [`super::lives`], [`super::tasks`] and [`super::fetch`] for the bounds).
#[derive(Debug, Clone, Default)]
pub struct History {
    run: Series<RunPoint>,
    /// The cumulative counters at the last sample, for the differences.
    last: Option<(f64, Progress)>,
    lives: Lives,
    tasks: Option<TaskTimes>,
    fetch: Option<FetchStats>,
}

impl History {
    /// `records`: keep task times and errors from the records (costs a
    /// little per record); `fetch`: read them as `fetch` outputs too.
    pub fn new(records: bool, fetch: bool) -> Self {
        Self {
            tasks: records.then(TaskTimes::default),
            fetch: (records && fetch).then(FetchStats::default),
            ..Self::default()
        }
    }

    /// Adds one sample of the run.
    pub fn sample(&mut self, sampled: &Sampled) {
        let Sampled {
            t,
            progress,
            workers,
        } = sampled;
        let (since, before) = self.last.unwrap_or_default();
        let mut point = RunPoint {
            t: *t,
            span: (t - since).max(0.0),
            done: progress.done.saturating_sub(before.done),
            failed: progress.failed.saturating_sub(before.failed),
            restarts: progress.restarts.saturating_sub(before.restarts),
            in_flight: Gauge::of(workers.iter().map(|w| w.in_flight as f64).sum()),
            queued: Gauge::of(progress.queued as f64),
            alive: Gauge::of(progress.alive as f64),
            workers: Vec::new(),
        };
        let slots = workers.iter().map(|w| w.index + 1).max().unwrap_or(0);
        point.workers.resize(slots, WorkerGauges::default());
        for row in workers.iter().filter(|w| w.pid.is_some()) {
            point.workers[row.index] = WorkerGauges {
                cpu: Gauge::of(row.cpu_percent),
                rss_bytes: Gauge::of(row.rss_bytes as f64),
                lag_ms: Gauge::of(row.lag_us as f64 / 1000.0),
                blocked: Gauge::of(row.blocked_share),
            };
        }
        self.run.push(point);
        self.last = Some((*t, *progress));
    }

    pub fn life(&mut self, t: f64, change: &LifeChange) {
        self.lives.change(t, change);
    }

    /// Adds one record (only when keeping records).
    pub fn record(&mut self, seq: u64, micros: u64, ending: Ending<'_>) {
        let Some(tasks) = &mut self.tasks else { return };
        tasks.add(seq, micros, ending);
        if let Some(fetch) = &mut self.fetch {
            match ending {
                Ending::Ok(output) => {
                    fetch.page(output);
                }
                Ending::Err { .. } => fetch.failed(),
            }
        }
    }

    /// Adds records as the engine emits them.
    pub fn records(&mut self, records: &[Record]) {
        if self.tasks.is_none() {
            return;
        }
        for record in records {
            let ending = match &record.outcome {
                Outcome::Ok(output) => Ending::Ok(output),
                Outcome::Err { kind, message } => Ending::Err {
                    kind: kind.as_str(),
                    message,
                },
            };
            self.record(record.seq, record.micros, ending);
        }
    }

    /// Everything the page draws, as plain data.
    pub fn view(&self) -> HistoryView {
        HistoryView::of(
            &self.run,
            self.last.map(|(_, progress)| progress),
            &self.lives,
            self.tasks.as_ref(),
            self.fetch.as_ref(),
        )
    }
}
