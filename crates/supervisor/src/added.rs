//! Tasks that add tasks, as records spell them. An added task is known by
//! its path: its parent's identity, a dot, and its place (from 1) among
//! the tasks the parent added and the run accepted — `"5.3"` is the third
//! task input line 5 added, `"5.3.1"` the first one that task added. The
//! path is derived, never counted: it is the same after any resume, needs
//! no counter in the journal, and cannot collide with a line number
//! however long a stdin input turns out to be.

use std::fmt::Write as _;
use std::io::{self, Write};

use bytes::Bytes;

/// What a completed task added, as its record carries it: the output file
/// is the journal, so `--resume` rebuilds the frontier from these.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Adds {
    /// Accepted additions in order; the n-th (from 1) is task `<parent>.n`.
    pub entries: Vec<AddedEntry>,
    /// Additions the run did not accept, by reason.
    pub kept_out: KeptOut,
}

/// One accepted addition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddedEntry {
    /// A task to run: its input line and its dedupe key.
    Task { payload: Bytes, key: Option<String> },
    /// An addition that cannot run (not JSON, over the frame limit): its
    /// own `bad_input` record says why.
    Bad(String),
}

/// Additions the run kept out, by reason. Never dropped silently: the
/// parent's record, the summary and the stats count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeptOut {
    /// Their key was seen before (input, added, or the resumed journal).
    pub seen: u64,
    /// Deeper than `--max-depth`.
    pub max_depth: u64,
    /// Past `--max-tasks`.
    pub max_tasks: u64,
}

impl KeptOut {
    pub fn total(&self) -> u64 {
        self.seen + self.max_depth + self.max_tasks
    }

    pub fn add(&mut self, other: &KeptOut) {
        self.seen += other.seen;
        self.max_depth += other.max_depth;
        self.max_tasks += other.max_tasks;
    }
}

/// The path of the `n`-th (from 1) task added by the task known as
/// `parent_path`, or by input line `parent_seq` when it has no path.
pub fn child_path(parent_seq: u64, parent_path: Option<&str>, n: usize) -> Box<str> {
    let mut path = match parent_path {
        Some(path) => path.to_owned(),
        None => parent_seq.to_string(),
    };
    let _ = write!(path, ".{n}");
    path.into_boxed_str()
}

/// How many additions away from an input line: 0 for an input line.
pub fn depth(path: Option<&str>) -> u32 {
    path.map_or(0, |path| path.bytes().filter(|&b| b == b'.').count() as u32)
}

/// The identity of the task that added `path`.
pub fn parent_of(path: &str) -> &str {
    path.rsplit_once('.').map_or(path, |(parent, _)| parent)
}

/// Writes `"seq":"5.3","parent":5,"depth":1` for an added task: the parent
/// as a number when it is an input line, as a path when it was added too.
pub fn write_identity(out: &mut impl Write, path: &str) -> io::Result<()> {
    let parent = parent_of(path);
    let mut n = itoa::Buffer::new();
    out.write_all(b"\"seq\":\"")?;
    out.write_all(path.as_bytes())?;
    out.write_all(b"\",\"parent\":")?;
    if parent.contains('.') {
        out.write_all(b"\"")?;
        out.write_all(parent.as_bytes())?;
        out.write_all(b"\"")?;
    } else {
        out.write_all(parent.as_bytes())?;
    }
    out.write_all(b",\"depth\":")?;
    out.write_all(n.format(depth(Some(path))).as_bytes())
}

/// Writes `,"added":[...]` and, when anything was kept out,
/// `,"kept_out":{...}` (only the reasons that kept something out).
pub fn write_adds(out: &mut impl Write, adds: &Adds) -> io::Result<()> {
    let mut n = itoa::Buffer::new();
    out.write_all(b",\"added\":[")?;
    for (i, entry) in adds.entries.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        match entry {
            AddedEntry::Task { payload, key } => {
                out.write_all(b"{\"task\":")?;
                out.write_all(payload)?;
                if let Some(key) = key {
                    out.write_all(b",\"key\":")?;
                    serde_json::to_writer(&mut *out, key)?;
                }
                out.write_all(b"}")?;
            }
            AddedEntry::Bad(message) => {
                out.write_all(b"{\"bad\":")?;
                serde_json::to_writer(&mut *out, message)?;
                out.write_all(b"}")?;
            }
        }
    }
    out.write_all(b"]")?;
    let kept = adds.kept_out;
    if kept.total() > 0 {
        out.write_all(b",\"kept_out\":{")?;
        let mut first = true;
        for (name, count) in [
            ("seen", kept.seen),
            ("max_depth", kept.max_depth),
            ("max_tasks", kept.max_tasks),
        ] {
            if count == 0 {
                continue;
            }
            if !first {
                out.write_all(b",")?;
            }
            first = false;
            write!(out, "\"{name}\":")?;
            out.write_all(n.format(count).as_bytes())?;
        }
        out.write_all(b"}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_parent_and_depth() {
        let child = child_path(5, None, 3);
        assert_eq!(&*child, "5.3");
        let grandchild = child_path(0, Some(&child), 1);
        assert_eq!(&*grandchild, "5.3.1");
        assert_eq!(depth(Some(&grandchild)), 2);
        assert_eq!(depth(None), 0);
        assert_eq!(parent_of(&grandchild), "5.3");
    }

    #[test]
    fn identity_spells_the_parent_by_its_kind() {
        let mut out = Vec::new();
        write_identity(&mut out, "5.3").unwrap();
        assert_eq!(out, br#""seq":"5.3","parent":5,"depth":1"#);
        out.clear();
        write_identity(&mut out, "5.3.10").unwrap();
        assert_eq!(out, br#""seq":"5.3.10","parent":"5.3","depth":2"#);
    }

    #[test]
    fn adds_are_valid_json() {
        let adds = Adds {
            entries: vec![
                AddedEntry::Task {
                    payload: Bytes::from_static(br#"{"n":1}"#),
                    key: Some("k\"1".into()),
                },
                AddedEntry::Bad("not \"JSON\"".into()),
            ],
            kept_out: KeptOut {
                seen: 2,
                max_depth: 0,
                max_tasks: 1,
            },
        };
        let mut out = b"{\"x\":1".to_vec();
        write_adds(&mut out, &adds).unwrap();
        out.push(b'}');
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["added"][0]["task"]["n"], 1);
        assert_eq!(value["added"][0]["key"], "k\"1");
        assert_eq!(value["added"][1]["bad"], "not \"JSON\"");
        assert_eq!(
            value["kept_out"],
            serde_json::json!({"seen": 2, "max_tasks": 1})
        );
    }
}
