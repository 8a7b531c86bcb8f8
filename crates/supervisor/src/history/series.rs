//! A time series whose memory is bounded however long the run: the last
//! [`FINE`] points are kept as sampled, older ones are merged into at most
//! [`COARSE`] buckets whose width doubles whenever they run out.

use std::collections::VecDeque;

/// Points kept at full resolution (one a second: the last five minutes).
pub const FINE: usize = 300;
/// Buckets of older points. When they are full, neighbours merge pairwise
/// and the bucket width doubles, so a run of any length fits: after three
/// days of one point a second, a bucket spans 1,024 s.
pub const COARSE: usize = 300;

/// A point that can absorb the point after it.
pub trait Merge {
    fn merge(&mut self, later: &Self);
}

/// A bounded series of points, oldest first.
#[derive(Debug, Clone)]
pub struct Series<P> {
    coarse: Vec<P>,
    /// Points merged into each coarse bucket (the last may hold fewer).
    width: usize,
    /// Points in the last coarse bucket.
    last_fill: usize,
    fine: VecDeque<P>,
}

impl<P> Default for Series<P> {
    fn default() -> Self {
        Self {
            coarse: Vec::new(),
            width: 1,
            last_fill: 0,
            fine: VecDeque::new(),
        }
    }
}

impl<P: Merge + Clone> Series<P> {
    pub fn push(&mut self, point: P) {
        self.fine.push_back(point);
        if self.fine.len() > FINE {
            let old = self.fine.pop_front().expect("more than FINE points");
            self.age(old);
        }
    }

    fn age(&mut self, point: P) {
        match self.coarse.last_mut() {
            Some(last) if self.last_fill < self.width => {
                last.merge(&point);
                self.last_fill += 1;
                return;
            }
            _ => {}
        }
        if self.coarse.len() == COARSE {
            self.halve();
        }
        match self.coarse.last_mut() {
            Some(last) if self.last_fill < self.width => {
                last.merge(&point);
                self.last_fill += 1;
            }
            _ => {
                self.coarse.push(point);
                self.last_fill = 1;
            }
        }
    }

    /// Merges neighbouring buckets: half as many, twice as wide. Called
    /// only when every bucket is full (and [`COARSE`] is even), so every
    /// merged bucket is full too.
    fn halve(&mut self) {
        let old = std::mem::take(&mut self.coarse);
        for (i, point) in old.into_iter().enumerate() {
            if i % 2 == 0 {
                self.coarse.push(point);
            } else {
                self.coarse.last_mut().expect("pushed above").merge(&point);
            }
        }
        self.width *= 2;
        self.last_fill = self.width;
    }

    /// Every point, oldest first: the coarse buckets, then the fine ones.
    pub fn iter(&self) -> impl Iterator<Item = &P> {
        self.coarse.iter().chain(self.fine.iter())
    }

    pub fn len(&self) -> usize {
        self.coarse.len() + self.fine.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many samples one coarse bucket holds now.
    pub fn bucket_width(&self) -> usize {
        self.width
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Count {
        first: u64,
        n: u64,
        sum: u64,
    }

    impl Merge for Count {
        fn merge(&mut self, later: &Self) {
            assert_eq!(self.first + self.n, later.first, "only neighbours merge");
            self.n += later.n;
            self.sum += later.sum;
        }
    }

    proptest! {
        #[test]
        fn bounded_ordered_and_nothing_lost(n in 0u64..5_000) {
            let mut series = Series::default();
            for i in 0..n {
                series.push(Count { first: i, n: 1, sum: i });
                prop_assert!(series.len() <= FINE + COARSE);
            }
            let points: Vec<_> = series.iter().cloned().collect();
            prop_assert_eq!(points.iter().map(|p| p.n).sum::<u64>(), n);
            prop_assert_eq!(points.iter().map(|p| p.sum).sum::<u64>(), n * n.saturating_sub(1) / 2);
            let mut next = 0;
            for p in &points {
                prop_assert_eq!(p.first, next);
                next += p.n;
            }
            // The newest points keep their full resolution.
            prop_assert!(points.iter().rev().take(FINE).all(|p| p.n == 1));
            // Coarse buckets are all the same width but the last.
            let coarse = points.len().saturating_sub(FINE);
            for p in points.iter().take(coarse.saturating_sub(1)) {
                prop_assert_eq!(p.n as usize, series.bucket_width());
            }
        }
    }

    #[test]
    fn three_days_fit() {
        let mut series = Series::default();
        for i in 0..3 * 86_400 {
            series.push(Count {
                first: i,
                n: 1,
                sum: 0,
            });
        }
        assert!(series.len() <= FINE + COARSE);
        assert_eq!(series.bucket_width(), 1024);
    }
}
