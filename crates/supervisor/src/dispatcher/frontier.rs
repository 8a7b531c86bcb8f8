//! The crawl's side of the task book: which of a completed task's
//! additions the run accepts (dedupe by key, `--max-depth`,
//! `--max-tasks`, JSON and size checks), the tasks they become, where they
//! wait until the book has room for them (in memory up to a bound, then in
//! a scratch file: [`crate::spill`]), and the counts of what was kept out.

use bytes::Bytes;
use multiloop_protocol::Added;

use crate::added::{self, AddedEntry, Adds, KeptOut};
use crate::record::{InputItem, Record, TaskEntry};
use crate::resume::{CrawlJournal, Discovered};
use crate::seen::{self, SeenSet};
use crate::spill::{self, Spill, SpillConfig, SpillError, SpillQueue, FRONTIER_MEMORY};

/// Ids of added tasks start here, far above any input line's id, so they
/// never meet the dense input ids that `--keep-order` orders by.
pub const ADDED_IDS: u64 = 1 << 62;

/// The limits of a crawl.
#[derive(Debug, Clone)]
pub struct CrawlLimits {
    /// `--max-tasks`: input lines plus added tasks.
    pub max_tasks: Option<u64>,
    /// `--max-depth`: additions deeper than this are kept out.
    pub max_depth: Option<u32>,
    /// The longest task payload a frame carries (from `--max-frame`; the
    /// engine sets it).
    pub max_payload: usize,
    /// The run consumes a queue (`--queue`): additions go to the queue
    /// with their parent's acknowledgement, deduplicated and counted
    /// against `--max-tasks` by Redis across all nodes. Here they are
    /// only checked (JSON, size, `--max-depth`) and left on the record.
    pub queue: bool,
    /// How much of the pending added tasks memory holds, and where the
    /// rest waits.
    pub spill: SpillConfig,
}

impl Default for CrawlLimits {
    /// No limits; [`FRONTIER_MEMORY`] in memory, the rest in the temp dir.
    fn default() -> Self {
        Self {
            max_tasks: None,
            max_depth: None,
            max_payload: usize::MAX,
            queue: false,
            spill: SpillConfig::in_temp_dir(FRONTIER_MEMORY),
        }
    }
}

/// Counts of a crawl, for the summary and the stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrawlCounts {
    /// Additions accepted as tasks (including `bad_input` ones).
    pub added: u64,
    /// Additions kept out, by reason.
    pub kept_out: KeptOut,
    /// The additions went to a queue, which decided on keys and
    /// `--max-tasks` (its counts are the queue's).
    pub queue: bool,
    /// Added tasks that waited on disk (past the memory bound).
    pub spilled: u64,
}

/// The crawl state the dispatcher owns.
#[derive(Debug)]
pub(super) struct Frontier {
    limits: CrawlLimits,
    seen: SeenSet,
    next_id: u64,
    /// Tasks counted against `--max-tasks`.
    tasks: u64,
    counts: CrawlCounts,
    /// Added tasks waiting for room in the book, oldest first.
    pending: SpillQueue<TaskEntry>,
}

impl Frontier {
    pub fn new(limits: CrawlLimits) -> Self {
        Self {
            pending: SpillQueue::new(limits.spill.clone()),
            limits,
            seen: SeenSet::default(),
            next_id: ADDED_IDS,
            tasks: 0,
            counts: CrawlCounts::default(),
        }
    }

    pub fn counts(&self) -> CrawlCounts {
        CrawlCounts {
            queue: self.limits.queue,
            spilled: self.pending.spilled(),
            ..self.counts
        }
    }

    /// Takes over a resumed journal's seen keys and task count (its input
    /// lines and additions count against `--max-tasks`); its frontier is
    /// then taken with [`Frontier::resumed`].
    pub fn resume(&mut self, journal: &mut CrawlJournal) {
        self.seen = std::mem::take(&mut journal.seen);
        self.tasks += journal.added + journal.lines;
    }

    /// The next task of a resumed journal's frontier, to queue like a new
    /// addition (or its `bad_input` answer).
    pub fn resumed(&mut self, journal: &mut CrawlJournal) -> Result<Option<InputItem>, SpillError> {
        Ok(journal
            .next_task()?
            .map(|Discovered { path, entry }| self.item(path, entry)))
    }

    /// An added task waits for room in the book: behind every other one.
    pub fn queue(&mut self, task: TaskEntry) -> Result<(), SpillError> {
        self.pending.push(task)
    }

    /// The oldest added task waiting.
    pub fn next_task(&mut self) -> Result<Option<TaskEntry>, SpillError> {
        self.pending.pop()
    }

    /// Added tasks waiting, in memory and on disk.
    pub fn pending(&self) -> u64 {
        self.pending.len()
    }

    /// The run stops taking work: what waits is left for `--resume` (the
    /// journal holds it). Returns how many.
    pub fn drop_pending(&mut self) -> Result<u64, SpillError> {
        self.pending.clear()
    }

    /// An input line became a task: it counts, and its key is seen.
    pub fn input(&mut self, key: Option<&[u8]>) {
        self.tasks += 1;
        if let Some(key) = key {
            self.seen.insert(seen::fingerprint_json(key));
        }
    }

    /// What a worker sent as the additions of an `Ok` result, before the
    /// run decides on them.
    pub fn proposed(added: Vec<Added>) -> Option<Box<Adds>> {
        (!added.is_empty()).then(|| {
            Box::new(Adds {
                entries: added
                    .into_iter()
                    .map(|Added { payload, key }| AddedEntry::Task { payload, key })
                    .collect(),
                kept_out: KeptOut::default(),
            })
        })
    }

    /// Decides on the additions `record` carries: keeps the accepted ones
    /// in it (as the journal will hold them) with the counts of the rest,
    /// and returns the tasks (or `bad_input` answers) they become. In
    /// queue mode it returns none: the queue pushes what the record keeps.
    pub fn admit(&mut self, record: &mut Record) -> Vec<InputItem> {
        let Some(adds) = record.adds.as_mut() else {
            return Vec::new();
        };
        let depth = added::depth(record.path.as_deref()) + 1;
        let mut kept_out = KeptOut::default();
        let mut accepted = Vec::with_capacity(adds.entries.len());
        for entry in std::mem::take(&mut adds.entries) {
            let entry = match entry {
                AddedEntry::Task { payload, key } => match self.check(&payload) {
                    Ok(()) => AddedEntry::Task { payload, key },
                    Err(message) => AddedEntry::Bad(message),
                },
                bad => bad,
            };
            if self.limits.max_depth.is_some_and(|max| depth > max) {
                kept_out.max_depth += 1;
                continue;
            }
            if self.limits.queue {
                accepted.push(entry);
                continue;
            }
            if let AddedEntry::Task { key: Some(key), .. } = &entry {
                if self.seen.contains(seen::fingerprint(key)) {
                    kept_out.seen += 1;
                    continue;
                }
            }
            if self.limits.max_tasks.is_some_and(|max| self.tasks >= max) {
                kept_out.max_tasks += 1;
                continue;
            }
            if let AddedEntry::Task { key: Some(key), .. } = &entry {
                self.seen.insert(seen::fingerprint(key));
            }
            self.tasks += 1;
            accepted.push(entry);
        }
        self.counts.added += accepted.len() as u64;
        self.counts.kept_out.add(&kept_out);
        if self.limits.queue {
            adds.entries = accepted;
            adds.kept_out = kept_out;
            return Vec::new();
        }
        let items = accepted
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let path = added::child_path(record.seq, record.path.as_deref(), i + 1);
                self.item(path, entry.clone())
            })
            .collect();
        adds.entries = accepted;
        adds.kept_out = kept_out;
        items
    }

    /// An added task ready to queue, or its `bad_input` answer.
    fn item(&mut self, path: Box<str>, entry: AddedEntry) -> InputItem {
        let id = self.next_id;
        self.next_id += 1;
        match entry {
            AddedEntry::Task { payload, .. } => InputItem::Task(TaskEntry {
                id,
                seq: 0,
                payload,
                key: None,
                attempts: 0,
                blame: Default::default(),
                path: Some(path),
            }),
            AddedEntry::Bad(message) => InputItem::Answered(Record::bad_added(id, &path, &message)),
        }
    }

    /// An added task must be one JSON value that fits a task frame: the
    /// journal splices it into its parent's record as it is.
    fn check(&self, payload: &Bytes) -> Result<(), String> {
        if payload.len() > self.limits.max_payload {
            return Err(format!(
                "{} bytes is over the frame limit of {} bytes (see --max-frame)",
                payload.len(),
                self.limits.max_payload
            ));
        }
        serde_json::from_slice::<serde::de::IgnoredAny>(payload)
            .map(|_| ())
            .map_err(|error| format!("not valid JSON: {error}"))
    }
}

/// On disk: the id, the path and the payload (each with its length). A
/// pending task is a fresh one: no attempts, no blame, no `--key`.
impl Spill for TaskEntry {
    fn cost(&self) -> usize {
        std::mem::size_of::<Self>() + self.payload.len() + self.path.as_deref().map_or(0, str::len)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.attempts == 0 && self.key.is_none() && self.path.is_some());
        out.extend_from_slice(&self.id.to_le_bytes());
        spill::put_field(out, self.path.as_deref().unwrap_or_default().as_bytes());
        spill::put_field(out, &self.payload);
    }

    /// A worker's additions are slices of its whole results frame: a copy
    /// lets the frame go.
    fn owned(self) -> Self {
        TaskEntry {
            payload: Bytes::copy_from_slice(&self.payload),
            ..self
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let (id, mut bytes) = bytes
            .split_first_chunk::<8>()
            .ok_or("a task without its id")?;
        let path = std::str::from_utf8(spill::take_field(&mut bytes)?)
            .map_err(|_| "a path that is not UTF-8")?;
        let payload = Bytes::copy_from_slice(spill::take_field(&mut bytes)?);
        if !bytes.is_empty() {
            return Err("bytes after the end of a task");
        }
        Ok(TaskEntry {
            id: u64::from_le_bytes(*id),
            seq: 0,
            payload,
            key: None,
            attempts: 0,
            blame: Default::default(),
            path: Some(path.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiloop_protocol::Outcome;

    #[test]
    fn a_pending_task_comes_back_from_disk_as_it_went() {
        let task = TaskEntry {
            id: ADDED_IDS + 9,
            seq: 0,
            payload: Bytes::from_static(br#"{"node":"r0/1"}"#),
            key: None,
            attempts: 0,
            blame: Default::default(),
            path: Some("3.1.12".into()),
        };
        let mut bytes = Vec::new();
        task.encode(&mut bytes);
        assert_eq!(TaskEntry::decode(&bytes), Ok(task));
        assert!(TaskEntry::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(TaskEntry::decode(&bytes[..5]).is_err());
    }

    fn parent(seq: u64, added: Vec<(&'static [u8], Option<&str>)>) -> Record {
        Record {
            id: seq - 1,
            seq,
            key: None,
            worker: Some(0),
            attempts: 1,
            micros: 1,
            outcome: Outcome::Ok(Bytes::from_static(b"1")),
            path: None,
            adds: Frontier::proposed(
                added
                    .into_iter()
                    .map(|(payload, key)| Added {
                        payload: Bytes::from_static(payload),
                        key: key.map(str::to_owned),
                    })
                    .collect(),
            ),
        }
    }

    fn paths(items: &[InputItem]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                InputItem::Task(task) => task.path.as_deref().unwrap().to_string(),
                InputItem::Answered(record) => format!("bad {}", record.path.as_deref().unwrap()),
                InputItem::Rejected { .. } => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn seen_keys_are_kept_out_and_the_rest_numbered_in_order() {
        let mut frontier = Frontier::new(CrawlLimits {
            max_payload: 100,
            ..Default::default()
        });
        frontier.input(Some(b"\"seed\""));
        let mut record = parent(
            5,
            vec![
                (b"1", Some("seed")),
                (b"2", Some("a")),
                (b"{oops", None),
                (b"3", Some("a")),
                (b"4", None),
            ],
        );
        let items = frontier.admit(&mut record);
        assert_eq!(paths(&items), ["5.1", "bad 5.2", "5.3"]);
        let adds = record.adds.unwrap();
        assert_eq!(adds.entries.len(), 3);
        assert_eq!(adds.kept_out.seen, 2);
        assert_eq!(frontier.counts().added, 3);
        assert_eq!(frontier.counts().kept_out.seen, 2);
    }

    #[test]
    fn depth_and_task_limits_keep_out_and_count() {
        let mut frontier = Frontier::new(CrawlLimits {
            max_tasks: Some(3),
            max_depth: Some(1),
            max_payload: 100,
            ..Default::default()
        });
        frontier.input(None);
        let mut record = parent(1, vec![(b"1", None), (b"2", None), (b"3", None)]);
        let items = frontier.admit(&mut record);
        assert_eq!(paths(&items), ["1.1", "1.2"]);
        assert_eq!(record.adds.as_ref().unwrap().kept_out.max_tasks, 1);
        let InputItem::Task(child) = &items[0] else {
            unreachable!()
        };
        let mut grandparent = Record {
            path: child.path.clone(),
            ..parent(1, vec![(b"9", None)])
        };
        assert!(frontier.admit(&mut grandparent).is_empty());
        assert_eq!(frontier.counts().kept_out.max_depth, 1);
    }

    #[test]
    fn in_queue_mode_accepted_additions_stay_on_the_record() {
        let mut frontier = Frontier::new(CrawlLimits {
            max_tasks: Some(1),
            max_depth: Some(1),
            max_payload: 100,
            queue: true,
            ..Default::default()
        });
        frontier.input(Some(b"\"seed\""));
        let mut record = parent(
            5,
            vec![(b"1", Some("seed")), (b"{oops", None), (b"2", None)],
        );
        assert!(frontier.admit(&mut record).is_empty());
        // Keys and --max-tasks are the queue's to decide, across nodes.
        let adds = record.adds.as_ref().unwrap();
        assert_eq!(adds.entries.len(), 3);
        assert!(matches!(adds.entries[1], AddedEntry::Bad(_)));
        assert_eq!(adds.kept_out, KeptOut::default());
        let mut deep = Record {
            path: Some("5.1".into()),
            ..parent(5, vec![(b"3", None)])
        };
        assert!(frontier.admit(&mut deep).is_empty());
        assert!(deep.adds.as_ref().unwrap().entries.is_empty());
        assert_eq!(deep.adds.as_ref().unwrap().kept_out.max_depth, 1);
    }
}
