//! Resume: the output file is the journal. Reading it tells which tasks
//! are already answered; a torn last line is cut off so that appending
//! continues a well-formed file.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use bytes::Bytes;

use crate::added::{self, AddedEntry};
use crate::record::{RecordHead, SeqHead};
use crate::seen::{self, SeenSet};
use crate::spill::{self, Spill, SpillConfig, SpillError, SpillQueue};

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
    /// Input lines whose record added tasks.
    parents: LineSet,
    keys: HashSet<Box<[u8]>>,
    /// Records read (including failed ones that will run again).
    pub records: u64,
    /// Records of failed tasks that will run again (`--resume-failed`).
    pub rerun_failed: u64,
    /// Bytes cut off the end: a record torn by a crash.
    pub torn_bytes: u64,
    /// Lines in the middle of the file that were not records.
    pub unreadable: u64,
    /// What the journal says about tasks that added tasks.
    pub crawl: CrawlJournal,
}

/// A crawl as its journal left it: the tasks added and not recorded (the
/// frontier), and every dedupe key it met.
#[derive(Debug, Default)]
pub struct CrawlJournal {
    /// Every added task, in the order they were added: those recorded are
    /// skipped as the frontier is taken ([`CrawlJournal::next_task`]), since a
    /// record comes after the task's addition in the file. Bounded in
    /// memory: the rest waits in a scratch file (see [`crate::spill`]).
    added_tasks: SpillQueue<Discovered>,
    /// Fingerprints of the input `--key` values and added tasks' keys.
    pub seen: SeenSet,
    /// Tasks added in the journal (recorded or not).
    pub added: u64,
    /// Added tasks recorded in the journal (and not to run again).
    pub recorded: u64,
    /// Records of input lines in the journal (for `--max-tasks`).
    pub lines: u64,
    /// Paths of recorded added tasks, by fingerprint.
    done: HashSet<u64>,
}

/// An added task of the journal still to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub path: Box<str>,
    pub entry: AddedEntry,
}

impl Journal {
    /// Reads `path` (a missing file is an empty journal) and truncates a
    /// torn last line. Its frontier waits past `spill.memory` bytes in a
    /// scratch file in `spill.dir`.
    pub fn load(
        path: &Path,
        identity: &Identity,
        rerun_failed: bool,
        spill: &SpillConfig,
    ) -> io::Result<Self> {
        let mut journal = Journal::default();
        journal.crawl.added_tasks = SpillQueue::new(spill.clone());
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
                Ok(head) => journal
                    .add(head, identity, rerun_failed)
                    .map_err(io::Error::other)?,
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

    fn add(
        &mut self,
        head: RecordHead<'_>,
        identity: &Identity,
        rerun_failed: bool,
    ) -> Result<(), SpillError> {
        self.records += 1;
        self.crawl.read(&head)?;
        if let (Some(SeqHead::Line(seq)), Some(added)) = (head.seq, &head.added) {
            if !added.is_empty() {
                self.parents.insert(seq);
            }
        }
        if rerun_failed && head.failed() {
            self.rerun_failed += 1;
            return Ok(());
        }
        if let Some(SeqHead::Added(path)) = head.seq {
            self.crawl.recorded(path);
            return Ok(());
        }
        let line = head.seq.and_then(SeqHead::line);
        match identity {
            Identity::Line => {
                if let Some(seq) = line {
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
                    if let Some(seq) = line {
                        self.lines.insert(seq);
                    }
                }
            },
        }
        Ok(())
    }

    /// Whether the task on line `seq` (with this `--key` value) is done.
    pub fn contains(&self, seq: u64, key: Option<&[u8]>) -> bool {
        match key {
            Some(key) => self.keys.contains(key),
            None => self.lines.contains(seq),
        }
    }

    /// Whether the record of input line `seq` added tasks. A queue node
    /// runs such a line again when the queue hands it back after a
    /// restart, rather than acknowledging it unrun: the acknowledgement
    /// is what pushes its children, and the restart lost them.
    pub fn added_by(&self, seq: u64) -> bool {
        self.parents.contains(seq)
    }

    /// Tasks recorded as done.
    pub fn done(&self) -> u64 {
        self.lines.len + self.keys.len() as u64
    }
}

impl CrawlJournal {
    /// Takes in one record: its `--key` and its additions are seen keys,
    /// its additions are discovered.
    fn read(&mut self, head: &RecordHead<'_>) -> Result<(), SpillError> {
        if let Some(key) = head.key {
            self.seen
                .insert(seen::fingerprint_json(key.get().as_bytes()));
        }
        if let Some(SeqHead::Line(_)) = head.seq {
            self.lines += 1;
        }
        let (Some(adds), Some(seq)) = (&head.added, head.seq) else {
            return Ok(());
        };
        let (line, parent) = match seq {
            SeqHead::Line(line) => (line, None),
            SeqHead::Added(path) => (0, Some(path)),
        };
        for (i, entry) in adds.iter().enumerate() {
            self.added += 1;
            if let Some(key) = &entry.key {
                self.seen.insert(seen::fingerprint(key));
            }
            let entry = match (entry.task, &entry.bad) {
                (Some(task), _) => AddedEntry::Task {
                    payload: Bytes::copy_from_slice(task.get().as_bytes()),
                    key: entry.key.clone(),
                },
                (None, Some(bad)) => AddedEntry::Bad(bad.clone()),
                (None, None) => AddedEntry::Bad("an added task without \"task\"".into()),
            };
            self.added_tasks.push(Discovered {
                path: added::child_path(line, parent, i + 1),
                entry,
            })?;
        }
        Ok(())
    }

    fn recorded(&mut self, path: &str) {
        if self.done.insert(seen::fingerprint(path)) {
            self.recorded += 1;
        }
    }

    /// Tasks of the frontier: added and not recorded.
    pub fn frontier_len(&self) -> u64 {
        self.added.saturating_sub(self.recorded)
    }

    /// The next task of the frontier (what was added and not recorded),
    /// in the order they were added.
    pub fn next_task(&mut self) -> Result<Option<Discovered>, SpillError> {
        while let Some(task) = self.added_tasks.pop()? {
            if !self.done.contains(&seen::fingerprint(&task.path)) {
                return Ok(Some(task));
            }
        }
        // Taken whole: the recorded paths are not needed any more.
        self.done = HashSet::new();
        Ok(None)
    }
}

/// On disk: the path, then a tag (`t` a task, with its payload and, after
/// a `k`, its key; `b` a bad addition with its message), each field with
/// its length.
impl Spill for Discovered {
    fn cost(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.path.len()
            + match &self.entry {
                AddedEntry::Task { payload, key } => {
                    payload.len() + key.as_ref().map_or(0, String::len)
                }
                AddedEntry::Bad(message) => message.len(),
            }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        spill::put_field(out, self.path.as_bytes());
        match &self.entry {
            AddedEntry::Task { payload, key } => {
                out.push(b't');
                spill::put_field(out, payload);
                if let Some(key) = key {
                    out.push(b'k');
                    spill::put_field(out, key.as_bytes());
                }
            }
            AddedEntry::Bad(message) => {
                out.push(b'b');
                spill::put_field(out, message.as_bytes());
            }
        }
    }

    fn decode(mut bytes: &[u8]) -> Result<Self, &'static str> {
        let text = |field: &[u8]| {
            std::str::from_utf8(field)
                .map(str::to_owned)
                .map_err(|_| "a text field that is not UTF-8")
        };
        let path = text(spill::take_field(&mut bytes)?)?.into_boxed_str();
        let (&tag, rest) = bytes.split_first().ok_or("an item without its tag")?;
        bytes = rest;
        let entry = match tag {
            b't' => {
                let payload = Bytes::copy_from_slice(spill::take_field(&mut bytes)?);
                let key = match bytes.split_first() {
                    Some((b'k', rest)) => {
                        bytes = rest;
                        Some(text(spill::take_field(&mut bytes)?)?)
                    }
                    _ => None,
                };
                AddedEntry::Task { payload, key }
            }
            b'b' => AddedEntry::Bad(text(spill::take_field(&mut bytes)?)?),
            _ => return Err("an item with an unknown tag"),
        };
        if !bytes.is_empty() {
            return Err("bytes after the end of an item");
        }
        Ok(Discovered { path, entry })
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

    /// Nothing in memory: every added task of the journal goes through
    /// the scratch file.
    fn spill_config() -> SpillConfig {
        SpillConfig::in_temp_dir(0)
    }

    #[test]
    fn torn_last_line_is_cut_and_done_lines_are_known() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let good = "{\"seq\":1,\"ok\":1}\n{\"seq\":3,\"error\":{\"kind\":\"failed\"}}\ngarbage\n";
        std::fs::write(&path, format!("{good}{{\"seq\":4,\"o")).unwrap();
        let journal = Journal::load(&path, &Identity::Line, false, &spill_config()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
        assert_eq!(journal.torn_bytes, "{\"seq\":4,\"o".len() as u64);
        assert_eq!(journal.unreadable, 1);
        assert!(journal.contains(1, None) && journal.contains(3, None));
        assert!(!journal.contains(2, None) && !journal.contains(4, None));

        let rerun = Journal::load(&path, &Identity::Line, true, &spill_config()).unwrap();
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
        let journal =
            Journal::load(&path, &Identity::Key("id".into()), false, &spill_config()).unwrap();
        assert!(journal.contains(1, Some(b"\"a\"")));
        assert!(journal.contains(1, Some(b"17")));
        assert!(!journal.contains(9, Some(b"\"b\"")));
        assert_eq!(journal.done(), 2);
    }

    #[test]
    fn the_frontier_is_what_was_added_and_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"seq\":1,\"ok\":1,\"added\":[{\"task\":{\"n\":1},\"key\":\"a\"},{\"bad\":\"no\"},{\"task\":2}]}\n",
                "{\"seq\":\"1.1\",\"parent\":1,\"depth\":1,\"ok\":1,\"added\":[{\"task\":3,\"key\":\"b\"}]}\n",
                "{\"seq\":\"1.2\",\"parent\":1,\"depth\":1,\"error\":{\"kind\":\"bad_input\"}}\n",
            ),
        )
        .unwrap();
        let mut journal = Journal::load(&path, &Identity::Line, false, &spill_config()).unwrap();
        let crawl = &mut journal.crawl;
        assert_eq!(crawl.frontier_len(), 2);
        let mut frontier = Vec::new();
        while let Some(task) = crawl.next_task().unwrap() {
            frontier.push(task);
        }
        let paths: Vec<&str> = frontier.iter().map(|d| &*d.path).collect();
        assert_eq!(paths, ["1.3", "1.1.1"]);
        assert_eq!(crawl.added, 4);
        assert_eq!(crawl.recorded, 2);
        assert_eq!(crawl.lines, 1);
        let crawl = &journal.crawl;
        assert_eq!(journal.done(), 1);
        assert!(journal.added_by(1) && !journal.added_by(2));
        assert!(crawl.seen.contains(seen::fingerprint("a")));
        assert!(crawl.seen.contains(seen::fingerprint("b")));
        assert_eq!(
            frontier[0].entry,
            AddedEntry::Task {
                payload: Bytes::from_static(b"2"),
                key: None
            }
        );
    }

    #[test]
    fn discovered_tasks_come_back_from_disk_as_they_went() {
        let tasks = [
            Discovered {
                path: "1.2".into(),
                entry: AddedEntry::Task {
                    payload: Bytes::from("{\"n\":\"é\"}"),
                    key: Some("k".into()),
                },
            },
            Discovered {
                path: "3.1.4".into(),
                entry: AddedEntry::Task {
                    payload: Bytes::from_static(b"7"),
                    key: None,
                },
            },
            Discovered {
                path: "2.1".into(),
                entry: AddedEntry::Bad("not JSON".into()),
            },
        ];
        for task in tasks {
            let mut bytes = Vec::new();
            task.encode(&mut bytes);
            assert_eq!(Discovered::decode(&bytes), Ok(task.clone()));
            assert!(Discovered::decode(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn missing_file_is_an_empty_journal() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::load(
            &dir.path().join("none"),
            &Identity::Line,
            false,
            &spill_config(),
        )
        .unwrap();
        assert_eq!(journal.done(), 0);
    }
}
