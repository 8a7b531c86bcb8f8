//! What the records say about tasks, in bounded memory: the distribution
//! of task time (a log histogram with 16 buckets per doubling, so a
//! percentile is within 4.4 % of the true value), the slowest tasks by
//! `seq`, and the error kinds with counts and a few examples.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::Serialize;

/// Buckets per doubling of the task time.
const PER_OCTAVE: f64 = 16.0;
/// Bucket 0 holds 0 µs; bucket `i` holds `[2^((i-1)/16), 2^(i/16))` µs; the
/// last one also holds everything above (2^42 µs is 50 days).
const BUCKETS: usize = 42 * 16 + 2;
/// Slowest tasks kept.
pub const SLOWEST: usize = 20;
/// Examples kept per error kind, and their longest message.
const EXAMPLES: usize = 5;
const EXAMPLE_CHARS: usize = 300;

/// How one record ended, as the report needs it.
#[derive(Debug, Clone, Copy)]
pub enum Ending<'a> {
    /// The handler's output, as JSON.
    Ok(&'a [u8]),
    Err {
        kind: &'a str,
        message: &'a str,
    },
}

/// An error kind: how often, and the first few.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorKindStats {
    pub count: u64,
    pub examples: Vec<ErrorExample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorExample {
    pub seq: u64,
    pub message: String,
}

/// Task-time distribution, slowest tasks and errors of a run.
#[derive(Debug, Clone)]
pub struct TaskTimes {
    buckets: Vec<u64>,
    count: u64,
    ok: u64,
    max_us: u64,
    sum_us: u128,
    slowest: BinaryHeap<Reverse<(u64, u64)>>,
    errors: BTreeMap<String, ErrorKindStats>,
}

impl Default for TaskTimes {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
            ok: 0,
            max_us: 0,
            sum_us: 0,
            slowest: BinaryHeap::with_capacity(SLOWEST + 1),
            errors: BTreeMap::new(),
        }
    }
}

/// The bucket of a task time.
pub fn bucket_of(micros: u64) -> usize {
    if micros == 0 {
        return 0;
    }
    let index = 1 + ((micros as f64).log2() * PER_OCTAVE).floor() as usize;
    index.min(BUCKETS - 1)
}

/// The smallest time in bucket `index` (µs).
pub fn bucket_low(index: usize) -> f64 {
    match index {
        0 => 0.0,
        i => ((i - 1) as f64 / PER_OCTAVE).exp2(),
    }
}

/// The time just above bucket `index` (µs).
pub fn bucket_high(index: usize) -> f64 {
    match index {
        0 => 1.0,
        i => (i as f64 / PER_OCTAVE).exp2(),
    }
}

/// The distribution's summary, for the page.
#[derive(Debug, Clone, Serialize)]
pub struct TaskSummary {
    pub count: u64,
    pub ok: u64,
    pub failed: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: u64,
    /// Non-empty buckets: `[low µs, high µs, count]`.
    pub histogram: Vec<(f64, f64, u64)>,
    /// `[seq, µs]`, slowest first.
    pub slowest: Vec<(u64, u64)>,
    pub errors: BTreeMap<String, ErrorKindStats>,
}

impl TaskTimes {
    pub fn add(&mut self, seq: u64, micros: u64, ending: Ending<'_>) {
        self.buckets[bucket_of(micros)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(micros);
        self.sum_us += u128::from(micros);
        if self.slowest.len() < SLOWEST {
            self.slowest.push(Reverse((micros, seq)));
        } else if self
            .slowest
            .peek()
            .is_some_and(|Reverse(min)| *min < (micros, seq))
        {
            self.slowest.pop();
            self.slowest.push(Reverse((micros, seq)));
        }
        match ending {
            Ending::Ok(_) => self.ok += 1,
            Ending::Err { kind, message } => {
                let entry = match self.errors.get_mut(kind) {
                    Some(entry) => entry,
                    None => self.errors.entry(kind.to_string()).or_default(),
                };
                entry.count += 1;
                if entry.examples.len() < EXAMPLES {
                    entry.examples.push(ErrorExample {
                        seq,
                        message: message.chars().take(EXAMPLE_CHARS).collect(),
                    });
                }
            }
        }
    }

    /// The time at or below which a share `q` of the tasks took: the top
    /// of the bucket that holds that rank, or the maximum if lower.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_high(index).min(self.max_us as f64);
            }
        }
        self.max_us as f64
    }

    pub fn summary(&self) -> TaskSummary {
        let mut slowest: Vec<(u64, u64)> = self
            .slowest
            .iter()
            .map(|Reverse((us, seq))| (*seq, *us))
            .collect();
        slowest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        TaskSummary {
            count: self.count,
            ok: self.ok,
            failed: self.count - self.ok,
            mean_us: self.sum_us as f64 / self.count.max(1) as f64,
            p50_us: self.quantile(0.50),
            p90_us: self.quantile(0.90),
            p99_us: self.quantile(0.99),
            max_us: self.max_us,
            histogram: self
                .buckets
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(i, &n)| (bucket_low(i), bucket_high(i), n))
                .collect(),
            slowest,
            errors: self.errors.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_time_lies_in_its_bucket(micros in 1u64..(1 << 41)) {
            let index = bucket_of(micros);
            // A hair of slack for the float edges.
            prop_assert!(bucket_low(index) <= micros as f64 * (1.0 + 1e-12));
            prop_assert!((micros as f64) < bucket_high(index) * (1.0 + 1e-12));
        }

        #[test]
        fn quantiles_are_close_above_the_truth(mut times in proptest::collection::vec(0u64..10_000_000, 1..400)) {
            let mut stats = TaskTimes::default();
            for (seq, &t) in times.iter().enumerate() {
                stats.add(seq as u64 + 1, t, Ending::Ok(b"1"));
            }
            times.sort_unstable();
            for q in [0.5, 0.9, 0.99, 1.0] {
                let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len());
                let truth = times[rank - 1] as f64;
                let told = stats.quantile(q);
                prop_assert!(told >= truth && told <= (truth * 1.0444).max(1.0), "q {q}: {told} vs {truth}");
            }
        }
    }

    #[test]
    fn slowest_and_errors_are_bounded() {
        let mut stats = TaskTimes::default();
        for seq in 1..=1000u64 {
            let ending = if seq % 10 == 0 {
                Ending::Err {
                    kind: "failed",
                    message: "boom",
                }
            } else {
                Ending::Ok(b"{}")
            };
            stats.add(seq, seq * 3, ending);
        }
        let summary = stats.summary();
        assert_eq!(summary.slowest.len(), SLOWEST);
        assert_eq!(summary.slowest[0], (1000, 3000));
        assert_eq!(summary.errors["failed"].count, 100);
        assert_eq!(summary.errors["failed"].examples.len(), EXAMPLES);
        assert_eq!(
            (summary.ok, summary.failed, summary.max_us),
            (900, 100, 3000)
        );
    }
}
