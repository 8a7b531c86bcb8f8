//! The seen-set of a crawl: every dedupe key the run has met (input
//! `--key` values, keys of added tasks, and those of the journal it
//! resumed), held as 64-bit fingerprints rather than strings.
//!
//! Memory: a `HashSet<u64>` is a table of 8-byte slots plus one control
//! byte each, at most 7/8 full and doubled when it fills, so a key costs
//! between 10.3 and 20.6 bytes (about 31 for the moment a doubling copies
//! the old table into the new). The price of fingerprints is a false
//! "seen" when two distinct keys share 64 bits: with n keys the chance that
//! any pair does is about n²/2^65, 3·10⁻⁶ for ten million keys.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A 64-bit fingerprint of a key: std's SipHash with its fixed keys, well
/// spread and the same in every process of one build, which is all it
/// needs (the set is rebuilt from the keys' text on resume, never stored).
pub fn fingerprint(key: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The fingerprint of an input line's `--key` value, given as raw JSON: a
/// JSON string counts as its text (so the input key `"https://a/"` and a
/// task added with the key `https://a/` are one key), anything else as its
/// JSON text.
pub fn fingerprint_json(raw: &[u8]) -> u64 {
    match serde_json::from_slice::<String>(raw) {
        Ok(text) => fingerprint(&text),
        Err(_) => fingerprint(&String::from_utf8_lossy(raw)),
    }
}

/// The fingerprint of a key in a queue's seen-set (Redis), shared by
/// nodes that may run different builds: SipHash-1-3 with zero keys from a
/// crate that fixes the algorithm, where std's hasher may change between
/// Rust releases.
pub fn shared_fingerprint(key: &str) -> u64 {
    siphasher::sip::SipHasher13::new().hash(key.as_bytes())
}

/// [`shared_fingerprint`] of an input line's `--key` value given as raw
/// JSON, read as [`fingerprint_json`] reads it.
pub fn shared_fingerprint_json(raw: &[u8]) -> u64 {
    match serde_json::from_slice::<String>(raw) {
        Ok(text) => shared_fingerprint(&text),
        Err(_) => shared_fingerprint(&String::from_utf8_lossy(raw)),
    }
}

/// Fingerprints are already uniform: the table uses them as they are.
#[derive(Debug, Default, Clone, Copy)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The keys seen so far, as fingerprints.
#[derive(Debug, Default, Clone)]
pub struct SeenSet {
    set: HashSet<u64, BuildHasherDefault<Identity>>,
}

impl SeenSet {
    /// Records `fingerprint`; false if it was seen before.
    pub fn insert(&mut self, fingerprint: u64) -> bool {
        self.set.insert(fingerprint)
    }

    pub fn contains(&self, fingerprint: u64) -> bool {
        self.set.contains(&fingerprint)
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_seen_once() {
        let mut seen = SeenSet::default();
        assert!(seen.insert(fingerprint("https://a.example/")));
        assert!(!seen.insert(fingerprint("https://a.example/")));
        assert!(seen.insert(fingerprint("https://a.example/x")));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn an_input_key_string_is_its_text() {
        assert_eq!(fingerprint_json(b"\"k\\u0041\""), fingerprint("kA"));
        assert_eq!(fingerprint_json(b"17"), fingerprint("17"));
        assert_ne!(fingerprint("a"), fingerprint("b"));
    }

    #[test]
    fn shared_fingerprints_are_fixed_forever() {
        // The value Redis seen-sets already hold: it must never change.
        assert_eq!(shared_fingerprint(""), 0xd1fb_a762_150c_532c);
        assert_eq!(
            shared_fingerprint_json(b"\"k\\u0041\""),
            shared_fingerprint("kA")
        );
    }

    #[test]
    fn fingerprints_are_stable_within_a_build() {
        assert_eq!(fingerprint("same"), fingerprint("same"));
    }
}
