//! Which input an output file was written from, so that `--resume` with a
//! different input is caught. Records know tasks by line number: resuming
//! `out.jsonl` with another file would skip the wrong lines and mix the
//! two runs without a word.
//!
//! The fingerprint sits beside the output (`out.jsonl.input`), not in it:
//! the output stays pure records for `merge`, `jq` and everything else. It
//! covers the input's first MiB, so an input that only grew (lines appended
//! before resuming) still matches, and checking it costs one short read.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bytes of the input the fingerprint covers.
const PREFIX: u64 = 1 << 20;

/// The start of an input file: its length and a hash of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The input's path as given, for messages.
    pub input: String,
    /// Bytes hashed: the input's length, or [`PREFIX`] if it was longer.
    pub bytes: u64,
    /// FNV-1a (64 bits) of those bytes, in hex: stable across Rust
    /// versions and machines, unlike the std hasher.
    pub fnv1a: String,
}

impl Fingerprint {
    /// The fingerprint of the input file at `path`.
    pub fn of_file(path: &Path) -> io::Result<Self> {
        let (bytes, hash) = hash_prefix(path, PREFIX)?;
        Ok(Self {
            input: path.display().to_string(),
            bytes,
            fnv1a: format!("{hash:016x}"),
        })
    }

    /// Whether the file at `path` starts with the bytes this fingerprint
    /// was taken of.
    pub fn matches(&self, path: &Path) -> io::Result<bool> {
        let (bytes, hash) = hash_prefix(path, self.bytes)?;
        Ok(bytes == self.bytes && format!("{hash:016x}") == self.fnv1a)
    }

    /// Where the fingerprint of `output`'s input is kept.
    pub fn sidecar(output: &Path) -> PathBuf {
        let mut name = output.as_os_str().to_owned();
        name.push(".input");
        PathBuf::from(name)
    }

    /// Writes this fingerprint beside `output`.
    pub fn save(&self, output: &Path) -> io::Result<()> {
        let mut text = serde_json::to_vec(self)?;
        text.push(b'\n');
        std::fs::write(Self::sidecar(output), text)
    }

    /// The fingerprint kept beside `output`, if there is one.
    pub fn load(output: &Path) -> io::Result<Option<Self>> {
        match std::fs::read(Self::sidecar(output)) {
            Ok(text) => serde_json::from_slice(&text)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the fingerprint beside `output` (a run from stdin has none,
    /// and a stale one would be checked against on resume).
    pub fn forget(output: &Path) -> io::Result<()> {
        match std::fs::remove_file(Self::sidecar(output)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// (bytes read, FNV-1a hash) of at most `limit` bytes from the start.
fn hash_prefix(path: &Path, limit: u64) -> io::Result<(u64, u64)> {
    let mut file = std::fs::File::open(path)?.take(limit);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((total, hash));
        }
        total += n as u64;
        for &byte in &buf[..n] {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, b"a").unwrap();
        assert_eq!(
            hash_prefix(&path, PREFIX).unwrap(),
            (1, 0xaf63_dc4c_8601_ec8c)
        );
        std::fs::write(&path, b"").unwrap();
        assert_eq!(
            hash_prefix(&path, PREFIX).unwrap(),
            (0, 0xcbf2_9ce4_8422_2325)
        );
    }

    #[test]
    fn an_input_that_only_grew_matches_another_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        let output = dir.path().join("out.jsonl");
        std::fs::write(&input, "{\"iters\":1}\n{\"iters\":2}\n").unwrap();
        Fingerprint::of_file(&input).unwrap().save(&output).unwrap();
        let kept = Fingerprint::load(&output).unwrap().unwrap();
        assert!(kept.matches(&input).unwrap());
        std::fs::write(&input, "{\"iters\":1}\n{\"iters\":2}\n{\"iters\":3}\n").unwrap();
        assert!(kept.matches(&input).unwrap(), "lines appended");
        std::fs::write(&input, "{\"iters\":9}\n{\"iters\":2}\n").unwrap();
        assert!(!kept.matches(&input).unwrap(), "a line changed");
        std::fs::write(&input, "{\"iters\":1}\n").unwrap();
        assert!(!kept.matches(&input).unwrap(), "lines removed");
        Fingerprint::forget(&output).unwrap();
        assert_eq!(Fingerprint::load(&output).unwrap(), None);
        Fingerprint::forget(&output).unwrap();
    }
}
