//! Resume: the output file is the journal. Reading it tells which tasks
//! are already answered; a torn last line is cut off so that appending
//! continues a well-formed file.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use crate::record::RecordHead;

/// How a task is identified across runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// By input line number (`seq`).
    Line,
    /// By the JSON value of this field of the input line (`--key`).
    Key(String),
}

/// The tasks already recorded in an output file.
#[derive(Debug, Default)]
pub struct Journal {
    lines: LineSet,
    keys: HashSet<Box<[u8]>>,
    /// Records read (including failed ones that will run again).
    pub records: u64,
    /// Records of failed tasks that will run again (`--resume-failed`).
    pub rerun_failed: u64,
    /// Bytes cut off the end: a record torn by a crash.
    pub torn_bytes: u64,
    /// Lines in the middle of the file that were not records.
    pub unreadable: u64,
}

impl Journal {
    /// Reads `path` (a missing file is an empty journal) and truncates a
    /// torn last line.
    pub fn load(path: &Path, identity: &Identity, rerun_failed: bool) -> io::Result<Self> {
        let mut journal = Journal::default();
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(journal),
            Err(e) => return Err(e),
        };
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut line = Vec::new();
        let mut good_end = 0u64;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                // The writer died in the middle of this record.
                journal.torn_bytes = n as u64;
                break;
            }
            good_end += n as u64;
            match RecordHead::parse(&line[..n - 1]) {
                Ok(head) => journal.add(head, identity, rerun_failed),
                Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
                Err(_) => journal.unreadable += 1,
            }
        }
        drop(reader);
        if journal.torn_bytes > 0 {
            file.set_len(good_end)?;
            (&file).seek(SeekFrom::End(0))?;
            file.sync_all()?;
        }
        Ok(journal)
    }

    fn add(&mut self, head: RecordHead<'_>, identity: &Identity, rerun_failed: bool) {
        self.records += 1;
        if rerun_failed && head.failed() {
            self.rerun_failed += 1;
            return;
        }
        match identity {
            Identity::Line => {
                if let Some(seq) = head.seq {
                    self.lines.insert(seq);
                }
            }
            Identity::Key(_) => match head.key {
                Some(key) => {
                    self.keys.insert(key.get().as_bytes().into());
                }
                // A line that had no key (rejected as bad input) is known
                // by its line number.
                None => {
                    if let Some(seq) = head.seq {
                        self.lines.insert(seq);
                    }
                }
            },
        }
    }

    /// Whether the task on line `seq` (with this `--key` value) is done.
    pub fn contains(&self, seq: u64, key: Option<&[u8]>) -> bool {
        match key {
            Some(key) => self.keys.contains(key),
            None => self.lines.contains(seq),
        }
    }

    /// Tasks recorded as done.
    pub fn done(&self) -> u64 {
        self.lines.len + self.keys.len() as u64
    }
}

/// A set of line numbers as a bitmap: a few MiB for tens of millions.
#[derive(Debug, Default)]
struct LineSet {
    words: Vec<u64>,
    len: u64,
}

impl LineSet {
    fn insert(&mut self, n: u64) {
        let (word, bit) = ((n / 64) as usize, n % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        if self.words[word] & (1 << bit) == 0 {
            self.words[word] |= 1 << bit;
            self.len += 1;
        }
    }

    fn contains(&self, n: u64) -> bool {
        self.words
            .get((n / 64) as usize)
            .is_some_and(|w| w & (1 << (n % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_cut_and_done_lines_are_known() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let good = "{\"seq\":1,\"ok\":1}\n{\"seq\":3,\"error\":{\"kind\":\"failed\"}}\ngarbage\n";
        std::fs::write(&path, format!("{good}{{\"seq\":4,\"o")).unwrap();
        let journal = Journal::load(&path, &Identity::Line, false).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
        assert_eq!(journal.torn_bytes, "{\"seq\":4,\"o".len() as u64);
        assert_eq!(journal.unreadable, 1);
        assert!(journal.contains(1, None) && journal.contains(3, None));
        assert!(!journal.contains(2, None) && !journal.contains(4, None));

        let rerun = Journal::load(&path, &Identity::Line, true).unwrap();
        assert!(
            !rerun.contains(3, None),
            "--resume-failed runs failed tasks again"
        );
        assert_eq!(rerun.rerun_failed, 1);
    }

    #[test]
    fn keys_are_compared_as_raw_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(
            &path,
            "{\"seq\":9,\"key\":\"a\",\"ok\":1}\n{\"seq\":2,\"key\":17,\"ok\":1}\n",
        )
        .unwrap();
        let journal = Journal::load(&path, &Identity::Key("id".into()), false).unwrap();
        assert!(journal.contains(1, Some(b"\"a\"")));
        assert!(journal.contains(1, Some(b"17")));
        assert!(!journal.contains(9, Some(b"\"b\"")));
        assert_eq!(journal.done(), 2);
    }

    #[test]
    fn missing_file_is_an_empty_journal() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::load(&dir.path().join("none"), &Identity::Line, false).unwrap();
        assert_eq!(journal.done(), 0);
    }
}
