//! The built-in demo batch: `sim` tasks shaped like a crawl, seeded so that
//! every run is the same.

/// The demo's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoBatch {
    pub tasks: u64,
    pub seed: u64,
    pub sleep_ms: (u64, u64),
    pub iters: (u64, u64),
}

impl Default for DemoBatch {
    /// 10,000 tasks sleeping 200-1000 ms with 1-5 million iterations each
    /// (about a millisecond of CPU).
    fn default() -> Self {
        Self {
            tasks: 10_000,
            seed: 0x6d75_6c74_696c_6f6f,
            sleep_ms: (200, 1000),
            iters: (1_000_000, 5_000_000),
        }
    }
}

impl DemoBatch {
    /// The batch as JSONL, one `sim` task per line.
    pub fn to_jsonl(&self) -> Vec<u8> {
        let mut rng = SplitMix64(self.seed);
        let mut out = Vec::with_capacity(self.tasks as usize * 40);
        for _ in 0..self.tasks {
            let sleep_ms = rng.uniform(self.sleep_ms);
            let iters = rng.uniform(self.iters);
            out.extend_from_slice(
                format!("{{\"sleep_ms\":{sleep_ms},\"iters\":{iters}}}\n").as_bytes(),
            );
        }
        out
    }
}

/// SplitMix64: a tiny, well-known generator; plenty for a demo.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the modulo bias is irrelevant here).
    fn uniform(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_is_seeded_and_in_range() {
        let demo = DemoBatch::default();
        let text = demo.to_jsonl();
        assert_eq!(text, demo.to_jsonl());
        let lines: Vec<serde_json::Value> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 10_000);
        for line in &lines {
            let sleep = line["sleep_ms"].as_u64().unwrap();
            let iters = line["iters"].as_u64().unwrap();
            assert!((200..=1000).contains(&sleep));
            assert!((1_000_000..=5_000_000).contains(&iters));
        }
    }
}
