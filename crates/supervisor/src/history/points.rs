//! What one sample of the run holds (counts over its span, gauges with
//! their mean and peak, one set per worker slot), and how two neighbouring
//! samples merge into one coarser point.

use super::series::Merge;

/// A measured level (tasks in flight, CPU %, RSS): its mean and peak over a
/// point's samples. `f32` halves the memory of a long run's per-worker
/// series; the charts need no more digits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gauge {
    sum: f32,
    max: f32,
    n: u32,
}

impl Gauge {
    pub fn of(value: f64) -> Self {
        Self {
            sum: value as f32,
            max: value as f32,
            n: 1,
        }
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| f64::from(self.sum) / f64::from(self.n))
    }

    pub fn max(&self) -> Option<f64> {
        (self.n > 0).then_some(f64::from(self.max))
    }

    fn merge(&mut self, later: &Self) {
        self.max = if self.n == 0 {
            later.max
        } else if later.n == 0 {
            self.max
        } else {
            self.max.max(later.max)
        };
        self.sum += later.sum;
        self.n += later.n;
    }
}

/// One worker slot's levels in a point; all empty while the slot has no
/// live process (restarting, retired).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorkerGauges {
    /// CPU use, 100 = one core.
    pub cpu: Gauge,
    pub rss_bytes: Gauge,
    /// Event-loop lag, milliseconds.
    pub lag_ms: Gauge,
    /// Share of time the loop was held by single polls, 0-1.
    pub blocked: Gauge,
}

impl WorkerGauges {
    fn merge(&mut self, later: &Self) {
        self.cpu.merge(&later.cpu);
        self.rss_bytes.merge(&later.rss_bytes);
        self.lag_ms.merge(&later.lag_ms);
        self.blocked.merge(&later.blocked);
    }
}

/// One sample of the run, or a bucket of merged samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunPoint {
    /// Seconds since the run started, at the end of the point's span.
    pub t: f64,
    /// Seconds the point covers.
    pub span: f64,
    /// Records written during the span (ok + failed), and the failed ones.
    pub done: u64,
    pub failed: u64,
    /// Worker restarts during the span.
    pub restarts: u64,
    pub in_flight: Gauge,
    /// Tasks read and waiting for a worker.
    pub queued: Gauge,
    /// Worker processes alive.
    pub alive: Gauge,
    /// By slot index.
    pub workers: Vec<WorkerGauges>,
}

impl Merge for RunPoint {
    fn merge(&mut self, later: &Self) {
        self.t = later.t;
        self.span += later.span;
        self.done += later.done;
        self.failed += later.failed;
        self.restarts += later.restarts;
        self.in_flight.merge(&later.in_flight);
        self.queued.merge(&later.queued);
        self.alive.merge(&later.alive);
        if self.workers.len() < later.workers.len() {
            self.workers
                .resize(later.workers.len(), WorkerGauges::default());
        }
        for (mine, theirs) in self.workers.iter_mut().zip(&later.workers) {
            mine.merge(theirs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_keep_mean_and_peak_and_ignore_gaps() {
        let mut a = Gauge::of(10.0);
        a.merge(&Gauge::default());
        a.merge(&Gauge::of(30.0));
        assert_eq!(a.mean(), Some(20.0));
        assert_eq!(a.max(), Some(30.0));
        let mut empty = Gauge::default();
        empty.merge(&Gauge::of(-1.0));
        assert_eq!(empty.max(), Some(-1.0));
        assert_eq!(Gauge::default().mean(), None);
    }

    #[test]
    fn points_add_counts_and_grow_slots() {
        let mut a = RunPoint {
            t: 1.0,
            span: 1.0,
            done: 5,
            workers: vec![WorkerGauges::default()],
            ..RunPoint::default()
        };
        let b = RunPoint {
            t: 2.0,
            span: 1.0,
            done: 7,
            workers: vec![WorkerGauges::default(); 3],
            ..RunPoint::default()
        };
        a.merge(&b);
        assert_eq!((a.t, a.span, a.done, a.workers.len()), (2.0, 2.0, 12, 3));
    }
}
