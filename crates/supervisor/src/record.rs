//! Tasks as the supervisor holds them, and the output records they become.
//! The record format lives here alone: [`Record::write_line`] writes it,
//! [`RecordHead`] reads back what `--resume` and `merge` need.

use std::io::{self, Write};

use bytes::Bytes;
use multiloop_protocol::{ErrorKind, Outcome};

use crate::added::{self, Adds};

/// One input line that became a task. `id` is dense and internal (the
/// protocol id and the reorder position); `seq` is the 1-based input line
/// number that users see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEntry {
    pub id: u64,
    pub seq: u64,
    pub payload: Bytes,
    /// The `--key` value of the line, as raw JSON, when a key is configured.
    pub key: Option<Bytes>,
    /// How often the task was started on a worker.
    pub attempts: u32,
    /// Blame bookkeeping; see `dispatcher::blame`.
    pub blame: BlameMarks,
    /// For a task a handler added: its path (`"5.3"`, see [`crate::added`]);
    /// `None` for an input line.
    pub path: Option<Box<str>>,
}

/// What the blame policy remembers about one task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlameMarks {
    /// Weighted crashes while the task ran alone on its worker.
    pub strikes: u32,
    /// Times it was in flight on a worker killed from outside.
    pub coincidences: u32,
}

/// What the input reader hands over for one non-blank line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputItem {
    Task(TaskEntry),
    /// A line that cannot become a task; it is answered as `bad_input`.
    Rejected {
        id: u64,
        seq: u64,
        message: String,
    },
    /// A line its source answered without running it (a queue task
    /// delivered too often: the nodes that held it died).
    Answered(Record),
}

/// One output line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub seq: u64,
    pub key: Option<Bytes>,
    /// Index of the worker that produced the outcome; `None` when the
    /// supervisor decided it alone (an input line it could not send).
    pub worker: Option<usize>,
    pub attempts: u32,
    pub micros: u64,
    pub outcome: Outcome,
    /// For an added task: its path; `None` for an input line.
    pub path: Option<Box<str>>,
    /// What the task added (an `Ok` record only): as the worker sent it
    /// until the dispatcher accepts it, then as the journal keeps it.
    pub adds: Option<Box<Adds>>,
}

impl Record {
    /// The `bad_input` answer of a line or an added task that never ran.
    pub fn bad_input(id: u64, seq: u64, path: Option<Box<str>>, message: String) -> Self {
        Self {
            id,
            seq,
            key: None,
            worker: None,
            attempts: 0,
            micros: 0,
            outcome: Outcome::Err {
                kind: ErrorKind::BadInput,
                message,
            },
            path,
            adds: None,
        }
    }

    /// The `bad_input` answer of the task at `path` that its parent added
    /// (locally or through a queue), naming both.
    pub fn bad_added(id: u64, path: &str, message: &str) -> Self {
        let message = format!(
            "task {path} added by {}: {message}",
            crate::added::parent_of(path)
        );
        Self::bad_input(id, 0, Some(path.into()), message)
    }

    /// The record of `task`, answered by worker `worker`.
    pub fn of(task: TaskEntry, worker: usize, micros: u64, outcome: Outcome) -> Self {
        Self {
            id: task.id,
            seq: task.seq,
            key: task.key,
            worker: Some(worker),
            attempts: task.attempts,
            micros,
            outcome,
            path: task.path,
            adds: None,
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    /// Writes the record as one JSON line. Handler output is spliced in as
    /// it came from the worker, never parsed or re-encoded.
    pub fn write_line(&self, out: &mut impl Write) -> io::Result<()> {
        // itoa rather than `write!`: formatting is most of the writer
        // thread's time per record.
        let mut n = itoa::Buffer::new();
        match &self.path {
            None => {
                out.write_all(b"{\"seq\":")?;
                out.write_all(n.format(self.seq).as_bytes())?;
            }
            Some(path) => {
                out.write_all(b"{")?;
                added::write_identity(out, path)?;
            }
        }
        if let Some(key) = &self.key {
            out.write_all(b",\"key\":")?;
            out.write_all(key)?;
        }
        out.write_all(b",\"worker\":")?;
        match self.worker {
            Some(worker) => out.write_all(n.format(worker).as_bytes())?,
            None => out.write_all(b"null")?,
        }
        out.write_all(b",\"attempts\":")?;
        out.write_all(n.format(self.attempts).as_bytes())?;
        out.write_all(b",\"ms\":")?;
        out.write_all(n.format(self.micros / 1000).as_bytes())?;
        let fraction = self.micros % 1000;
        out.write_all(&[
            b'.',
            b'0' + (fraction / 100) as u8,
            b'0' + (fraction / 10 % 10) as u8,
            b'0' + (fraction % 10) as u8,
        ])?;
        match &self.outcome {
            Outcome::Ok(output) => {
                out.write_all(b",\"ok\":")?;
                out.write_all(output)?;
                if let Some(adds) = &self.adds {
                    added::write_adds(out, adds)?;
                }
            }
            Outcome::Err { kind, message } => {
                write!(
                    out,
                    ",\"error\":{{\"kind\":\"{}\",\"message\":",
                    kind.as_str()
                )?;
                serde_json::to_writer(&mut *out, message)?;
                out.write_all(b"}")?;
            }
        }
        out.write_all(b"}\n")
    }
}

/// The fields of a written record that resume and merge read back:
/// its identity (a line number, or an added task's path), its `--key`
/// value as raw JSON, whether it failed, and what it added. Everything
/// else (the handler's output) is skipped unparsed.
#[derive(Debug, serde::Deserialize)]
pub struct RecordHead<'a> {
    #[serde(borrow)]
    pub seq: Option<SeqHead<'a>>,
    #[serde(borrow)]
    pub key: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    error: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    pub added: Option<Vec<AddedHead<'a>>>,
}

/// A record's identity: an input line's number or an added task's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum SeqHead<'a> {
    Line(u64),
    Added(&'a str),
}

impl SeqHead<'_> {
    /// The input line number, for a record of an input line.
    pub fn line(self) -> Option<u64> {
        match self {
            SeqHead::Line(seq) => Some(seq),
            SeqHead::Added(_) => None,
        }
    }
}

/// One entry of a record's `added` list, as written by
/// [`crate::added::write_adds`].
#[derive(Debug, serde::Deserialize)]
pub struct AddedHead<'a> {
    #[serde(borrow)]
    pub task: Option<&'a serde_json::value::RawValue>,
    pub key: Option<String>,
    pub bad: Option<String>,
}

impl<'a> RecordHead<'a> {
    /// Reads one record line (without its newline).
    pub fn parse(line: &'a [u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(line)
    }

    /// The task failed (an `error` record).
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiloop_protocol::ErrorKind;

    #[test]
    fn heads_read_back_what_write_line_writes() {
        let record = Record {
            id: 4,
            seq: 5,
            key: Some(Bytes::from_static(b"{\"a\":[1,2]}")),
            worker: Some(0),
            attempts: 2,
            micros: 10,
            outcome: Outcome::Err {
                kind: ErrorKind::Crashed,
                message: "x".into(),
            },
            path: None,
            adds: None,
        };
        let text = line(&record);
        let head = RecordHead::parse(text.trim_end().as_bytes()).unwrap();
        assert_eq!(head.seq, Some(SeqHead::Line(5)));
        assert_eq!(head.key.unwrap().get(), "{\"a\":[1,2]}");
        assert!(head.failed());
        let ok = line(&Record {
            outcome: Outcome::Ok(Bytes::from_static(b"{\"error\":1}")),
            ..record
        });
        assert!(!RecordHead::parse(ok.trim_end().as_bytes())
            .unwrap()
            .failed());
    }

    /// Sample records as a golden file that the Python driver's tests read
    /// (`python/tests/test_contracts.py`), so `multiloop.pool` reads what
    /// this module writes: each exact LINE with the FIELDS it stands for.
    /// `MULTILOOP_BLESS=1 cargo test -p multiloop-supervisor golden_records`
    /// rewrites it after a deliberate change of the format.
    #[test]
    fn golden_records_match_the_file() {
        const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/records.json");
        let base = Record {
            id: 0,
            seq: 1,
            key: None,
            worker: Some(0),
            attempts: 1,
            micros: 4_205,
            outcome: Outcome::Ok(Bytes::from_static(br#"{"sum":6}"#)),
            path: None,
            adds: None,
        };
        let error = |kind, message: &str| Outcome::Err {
            kind,
            message: message.into(),
        };
        let samples = [
            base.clone(),
            Record {
                seq: 2,
                key: Some(Bytes::from_static(br#""https://example.com/a""#)),
                worker: Some(11),
                attempts: 3,
                micros: 1_000_000_007,
                outcome: Outcome::Ok(Bytes::from_static(b"null")),
                ..base.clone()
            },
            Record {
                seq: 3,
                // An output that looks like an error record's fields.
                outcome: Outcome::Ok(Bytes::from_static(
                    br#"{"error":{"kind":"failed"},"seq":99,"ok":[1,"\u00e9\n"]}"#,
                )),
                micros: 0,
                ..base.clone()
            },
            Record {
                seq: 4,
                key: Some(Bytes::from_static(br#"{"id":[1,2]}"#)),
                micros: 999,
                outcome: error(
                    ErrorKind::Failed,
                    "ValueError: bad \u{e9} \"quoted\"\nTraceback",
                ),
                ..base.clone()
            },
            Record {
                seq: 5,
                worker: None,
                attempts: 0,
                micros: 0,
                outcome: error(
                    ErrorKind::BadInput,
                    "line 5: expected value at line 1 column 1",
                ),
                ..base.clone()
            },
            Record {
                seq: 6,
                attempts: 2,
                outcome: error(ErrorKind::Crashed, "worker 0 died of signal SIGKILL"),
                ..base.clone()
            },
            Record {
                seq: 7,
                outcome: error(ErrorKind::Timeout, "task took longer than 5000 ms"),
                ..base.clone()
            },
            Record {
                seq: 8,
                outcome: Outcome::Ok(Bytes::from_static(b"\"a string\"")),
                ..base.clone()
            },
            Record {
                seq: 9,
                outcome: error(ErrorKind::Panicked, "handler panicked: boom"),
                ..base.clone()
            },
            // A crawl: a parent that added two tasks (one of them bad) and
            // had one kept out as seen, and tasks added at depth 1 and 2.
            Record {
                seq: 10,
                adds: Some(Box::new(crate::added::Adds {
                    entries: vec![
                        crate::added::AddedEntry::Task {
                            payload: Bytes::from_static(br#"{"url":"https://example.com/b"}"#),
                            key: Some("https://example.com/b".into()),
                        },
                        crate::added::AddedEntry::Bad("not JSON: expected value".into()),
                    ],
                    kept_out: crate::added::KeptOut {
                        seen: 1,
                        ..Default::default()
                    },
                })),
                ..base.clone()
            },
            Record {
                seq: 0,
                path: Some("10.1".into()),
                ..base.clone()
            },
            Record {
                seq: 0,
                path: Some("10.1.3".into()),
                outcome: error(ErrorKind::Failed, "status 404"),
                ..base
            },
        ];
        let parse = |raw: &[u8]| serde_json::from_slice::<serde_json::Value>(raw).unwrap();
        let cases: Vec<serde_json::Value> = samples
            .iter()
            .map(|record| {
                let mut fields = serde_json::json!({
                    "seq": record.seq,
                    "key": record.key.as_deref().map(parse),
                    "worker": record.worker,
                    "attempts": record.attempts,
                    "ms": record.micros as f64 / 1000.0,
                });
                if let Some(path) = record.path.as_deref() {
                    let parent = crate::added::parent_of(path);
                    fields["seq"] = path.into();
                    fields["parent"] = match parent.parse::<u64>() {
                        Ok(line) => line.into(),
                        Err(_) => parent.into(),
                    };
                    fields["depth"] = crate::added::depth(Some(path)).into();
                }
                if let Some(adds) = &record.adds {
                    let entries: Vec<serde_json::Value> = adds
                        .entries
                        .iter()
                        .map(|entry| match entry {
                            crate::added::AddedEntry::Task { payload, key } => {
                                let mut task = serde_json::json!({ "task": parse(payload) });
                                if let Some(key) = key {
                                    task["key"] = key.as_str().into();
                                }
                                task
                            }
                            crate::added::AddedEntry::Bad(message) => {
                                serde_json::json!({ "bad": message })
                            }
                        })
                        .collect();
                    fields["added"] = entries.into();
                    let kept = adds.kept_out;
                    let mut kept_out = serde_json::Map::new();
                    for (name, count) in [
                        ("seen", kept.seen),
                        ("max_depth", kept.max_depth),
                        ("max_tasks", kept.max_tasks),
                    ] {
                        if count > 0 {
                            kept_out.insert(name.into(), count.into());
                        }
                    }
                    if !kept_out.is_empty() {
                        fields["kept_out"] = kept_out.into();
                    }
                }
                match &record.outcome {
                    Outcome::Ok(output) => fields["ok"] = parse(output),
                    Outcome::Err { kind, message } => {
                        fields["error"] =
                            serde_json::json!({"kind": kind.as_str(), "message": message})
                    }
                }
                serde_json::json!({ "line": line(record).trim_end(), "fields": fields })
            })
            .collect();
        let file = serde_json::json!({
            "about": "Output records as the supervisor writes them (crates/supervisor/src/record.rs): \
                      each LINE and the FIELDS it stands for (key null: no --key; an added task's seq is \
                      its path, with parent and depth; a parent lists what it added). Written by \
                      record.rs's tests; read by python/tests/test_contracts.py.",
            "records": cases,
        });
        let expected = serde_json::to_string_pretty(&file).unwrap() + "\n";
        if std::env::var_os("MULTILOOP_BLESS").is_some() {
            std::fs::write(GOLDEN, &expected).expect("write golden file");
            return;
        }
        let actual = std::fs::read_to_string(GOLDEN).expect("read golden file");
        assert_eq!(
            actual, expected,
            "records.json is stale: rerun with MULTILOOP_BLESS=1 and check the Python driver"
        );
    }

    fn line(record: &Record) -> String {
        let mut out = Vec::new();
        record.write_line(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ok_record_splices_output() {
        let record = Record {
            id: 0,
            seq: 17,
            key: None,
            worker: Some(3),
            attempts: 1,
            micros: 4_205,
            outcome: Outcome::Ok(Bytes::from_static(br#"{"sum":6}"#)),
            path: None,
            adds: None,
        };
        assert_eq!(
            line(&record),
            "{\"seq\":17,\"worker\":3,\"attempts\":1,\"ms\":4.205,\"ok\":{\"sum\":6}}\n"
        );
    }

    #[test]
    fn error_record_escapes_message() {
        let record = Record {
            id: 0,
            seq: 2,
            key: Some(Bytes::from_static(b"\"a\"")),
            worker: None,
            attempts: 0,
            micros: 0,
            outcome: Outcome::Err {
                kind: ErrorKind::BadInput,
                message: "line 2: \"quoted\"\n".into(),
            },
            path: None,
            adds: None,
        };
        let text = line(&record);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["error"]["kind"], "bad_input");
        assert_eq!(value["error"]["message"], "line 2: \"quoted\"\n");
        assert_eq!(value["key"], "a");
        assert!(value["worker"].is_null());
    }
}
