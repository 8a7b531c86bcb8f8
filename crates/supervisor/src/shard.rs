//! Shards: one deterministic slice of the input per machine, so that an
//! existing scheduler (a Kubernetes Indexed Job, a Slurm array) can run a
//! fleet of supervisors without talking to each other.

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Whether this shard runs the task on line `seq` (1-based) with this
    /// `--key` value. By key, the slice is a hash of the key, so it stays
    /// the same when the input is reordered or grows; by line, lines are
    /// dealt round-robin.
    pub fn takes(&self, seq: u64, key: Option<&[u8]>) -> bool {
        let spot = match key {
            Some(key) => fnv1a(key),
            None => seq.saturating_sub(1),
        };
        spot % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// 64-bit FNV-1a: tiny, and fixed forever, which a shard assignment must
/// be (std's hashers may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fnv1a_matches_the_reference() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    proptest! {
        /// Every line and every key belongs to exactly one shard.
        #[test]
        fn shards_partition(seq in 1u64..1_000_000, key in proptest::collection::vec(any::<u8>(), 0..16), count in 1u64..9) {
            let by_line = (0..count).filter(|&i| Shard { index: i, count }.takes(seq, None)).count();
            let by_key = (0..count).filter(|&i| Shard { index: i, count }.takes(seq, Some(&key))).count();
            prop_assert_eq!((by_line, by_key), (1, 1));
        }
    }
}
