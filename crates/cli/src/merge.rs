//! `supervisor merge`: shard outputs into one file in input order, saying
//! which tasks are missing and which were recorded more than once. Tasks
//! that handlers added count too: every task a kept record added must have
//! a record, and follows its parent in the merged file. Across the nodes of
//! a queue, an added task whose key the queue had seen is not pushed: it
//! needs no record of its own when another recorded task holds its key,
//! and no key may be held by two recorded tasks.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use multiloop_supervisor::{RecordHead, SeqHead};

use crate::exit::ExitCode;

/// How many missing or duplicated tasks are named one by one.
const NAMED: usize = 20;

/// `supervisor merge OUT1 OUT2 ... [--input FILE] [--output FILE]`
#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// Output files of the shards (or of any runs over the same input).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// The input they ran: with it, every non-blank line must have a
    /// record; without it, gaps in line numbers are reported.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Where to write the merged records [default: stdout].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// The files come from nodes of one queue (`--queue`), whose delivery
    /// is at least once: a task recorded by several nodes is not a
    /// conflict; its ok record wins, else the latest one. An added task
    /// whose key another recorded task holds (the queue's seen-set kept it
    /// out) is not missing; a key recorded twice is a duplicate.
    #[arg(long)]
    pub queue: bool,

    /// The crawl's --max-tasks: once the records reach it, an added task
    /// without a record was kept out by the limit (nodes of a queue do
    /// not know which of the tasks they listed the queue let in).
    #[arg(long, value_name = "N")]
    pub max_tasks: Option<u64>,
}

/// One record and where it came from.
struct Entry {
    file: usize,
    line: u64,
    failed: bool,
    /// How many tasks it added.
    added: u64,
    /// With `--queue`: the record's `--key` value as text, and the keys of
    /// what it added.
    key: Option<String>,
    added_keys: Vec<Option<String>>,
    text: Vec<u8>,
}

/// A task's identity as a path of numbers: `[5]` is input line 5, `[5, 3]`
/// the third task it added. Sorting these puts children after their parent.
type TaskPath = Vec<u64>;

fn spell(path: &[u64]) -> String {
    path.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn task_path(seq: SeqHead<'_>) -> Result<TaskPath, String> {
    match seq {
        SeqHead::Line(line) => Ok(vec![line]),
        SeqHead::Added(path) => {
            let parts: Option<TaskPath> = path.split('.').map(|part| part.parse().ok()).collect();
            match parts {
                Some(parts) if parts.len() > 1 => Ok(parts),
                _ => Err(format!("{path:?} is not a task's path")),
            }
        }
    }
}

pub fn main(args: &MergeArgs) -> i32 {
    match merge(args) {
        Ok(true) => ExitCode::AllOk.into(),
        Ok(false) => ExitCode::SomeFailed.into(),
        Err(error) => {
            eprintln!("supervisor merge: {error:#}");
            ExitCode::Usage.into()
        }
    }
}

/// Merges; returns whether the result is complete and without conflicts.
fn merge(args: &MergeArgs) -> Result<bool> {
    let mut records: BTreeMap<TaskPath, Vec<Entry>> = BTreeMap::new();
    for (file, path) in args.files.iter().enumerate() {
        read_records(path, file, args.queue, &mut records)?;
    }
    let expected = args.input.as_deref().map(task_lines).transpose()?;

    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut duplicated = Vec::new();
    let mut superseded = 0u64;
    let mut redelivered = 0u64;
    // Tasks the kept records added, by parent: each must have a record.
    let mut declared: BTreeMap<&TaskPath, u64> = BTreeMap::new();
    let mut kept_records: BTreeMap<&TaskPath, &Entry> = BTreeMap::new();
    for (seq, entries) in &records {
        // Last record wins: a later attempt (--resume-failed) supersedes
        // an earlier failure. Anything else recorded twice is a conflict,
        // except across the nodes of a queue, which may run a task twice.
        let (last, earlier) = entries.split_last().expect("at least one record");
        let kept = if earlier.iter().all(|e| e.failed && e.file == last.file) {
            superseded += earlier.len() as u64;
            last
        } else if args.queue {
            redelivered += 1;
            entries.iter().rev().find(|e| !e.failed).unwrap_or(last)
        } else {
            duplicated.push((seq, entries));
            last
        };
        if kept.added > 0 {
            declared.insert(seq, kept.added);
        }
        if args.queue {
            kept_records.insert(seq, kept);
        }
        out.write_all(&kept.text)?;
    }
    out.flush()?;
    let holders = key_holders(&kept_records);

    let lines_recorded: Vec<u64> = records
        .keys()
        .filter(|path| path.len() == 1)
        .map(|path| path[0])
        .collect();
    let mut missing: Vec<TaskPath> = match &expected {
        Some(lines) => lines
            .iter()
            .copied()
            .filter(|seq| lines_recorded.binary_search(seq).is_err())
            .map(|seq| vec![seq])
            .collect(),
        None => {
            let last = lines_recorded.last().copied().unwrap_or(0);
            (1..=last)
                .filter(|seq| lines_recorded.binary_search(seq).is_err())
                .map(|seq| vec![seq])
                .collect()
        }
    };
    for (parent, &count) in &declared {
        for n in 1..=count {
            let mut child = (*parent).clone();
            child.push(n);
            let held_elsewhere =
                || added_key(&kept_records, &child).is_some_and(|key| holders.contains_key(key));
            if !records.contains_key(&child) && !held_elsewhere() {
                missing.push(child);
            }
        }
    }
    // Added tasks the limit kept out are not missing.
    let mut capped = 0u64;
    if args
        .max_tasks
        .is_some_and(|max| records.len() as u64 >= max)
    {
        let before = missing.len();
        missing.retain(|path| path.len() == 1);
        capped = (before - missing.len()) as u64;
    }
    // A key held by two recorded tasks, one of them added: the seen-set
    // let a key in twice.
    let mut twice: Vec<(&str, &Vec<&TaskPath>)> = holders
        .iter()
        .filter(|(_, paths)| paths.len() > 1 && paths.iter().any(|p| p.len() > 1))
        .map(|(key, paths)| (key.as_str(), paths))
        .collect();
    twice.sort();
    // Records for lines the input does not have (past its end, a blank
    // line, or line 0) come from another input: the files do not belong
    // together.
    // An added task no kept record added is unexpected too.
    let unexpected: Vec<TaskPath> = records
        .keys()
        .filter(|path| match path.as_slice() {
            [seq] => {
                *seq == 0
                    || expected
                        .as_ref()
                        .is_some_and(|lines| lines.binary_search(seq).is_err())
            }
            [parent @ .., n] => {
                *n == 0
                    || declared
                        .get(&parent.to_vec())
                        .is_none_or(|&count| *n > count)
            }
            [] => true,
        })
        .cloned()
        .collect();
    let mut report = format!(
        "merged {} tasks from {} files",
        records.len(),
        args.files.len()
    );
    if superseded > 0 {
        report.push_str(&format!(
            "; {superseded} failed records superseded by a later attempt"
        ));
    }
    if redelivered > 0 {
        report.push_str(&format!(
            "; {redelivered} tasks recorded by more than one node (at-least-once delivery) resolved: the ok or the latest record kept"
        ));
    }
    if capped > 0 {
        report.push_str(&format!(
            "; {capped} added tasks without a record: the crawl reached --max-tasks"
        ));
    }
    eprintln!("{report}");
    if !missing.is_empty() {
        let named: Vec<String> = missing.iter().take(NAMED).map(|p| spell(p)).collect();
        eprintln!(
            "missing: {} tasks{}: lines {}{}",
            missing.len(),
            if expected.is_none() {
                " (or blank input lines; pass --input to check exactly)"
            } else {
                ""
            },
            named.join(", "),
            if missing.len() > NAMED { ", ..." } else { "" }
        );
    }
    if !unexpected.is_empty() {
        let named: Vec<String> = unexpected.iter().take(NAMED).map(|p| spell(p)).collect();
        eprintln!(
            "unexpected: {} records for lines that are not tasks of the input{}: lines {}{}",
            unexpected.len(),
            match &expected {
                Some(lines) => format!(
                    " ({} tasks, last on line {})",
                    lines.len(),
                    lines.last().unwrap_or(&0)
                ),
                None => String::new(),
            },
            named.join(", "),
            if unexpected.len() > NAMED {
                ", ..."
            } else {
                ""
            }
        );
    }
    for (seq, entries) in duplicated.iter().take(NAMED) {
        let places: Vec<String> = entries
            .iter()
            .map(|e| format!("{}:{}", args.files[e.file].display(), e.line))
            .collect();
        eprintln!(
            "duplicated: line {} recorded in {}",
            spell(seq),
            places.join(" and ")
        );
    }
    if duplicated.len() > NAMED {
        eprintln!("duplicated: {} tasks in all", duplicated.len());
    }
    if !duplicated.is_empty() {
        eprintln!(
            "(outputs of nodes sharing one --queue may repeat a task: merge them with --queue)"
        );
    }
    for (key, paths) in twice.iter().take(NAMED) {
        let named: Vec<String> = paths.iter().map(|p| spell(p)).collect();
        eprintln!(
            "duplicated key: {key:?} recorded by tasks {}",
            named.join(" and ")
        );
    }
    if twice.len() > NAMED {
        eprintln!("duplicated key: {} keys in all", twice.len());
    }
    Ok(missing.is_empty() && duplicated.is_empty() && unexpected.is_empty() && twice.is_empty())
}

/// The key the kept record of `child`'s parent gave it, if any.
fn added_key<'a>(kept: &BTreeMap<&TaskPath, &'a Entry>, child: &[u64]) -> Option<&'a str> {
    let (n, parent) = child.split_last()?;
    let entry = kept.get(&parent.to_vec())?;
    let index = usize::try_from(*n).ok()?.checked_sub(1)?;
    entry.added_keys.get(index)?.as_deref()
}

/// Which recorded tasks hold each key: input lines by their `--key`
/// value, added tasks by the key their parent gave them.
fn key_holders<'a>(kept: &BTreeMap<&'a TaskPath, &'a Entry>) -> HashMap<String, Vec<&'a TaskPath>> {
    let mut holders: HashMap<String, Vec<&TaskPath>> = HashMap::new();
    for (&path, entry) in kept {
        let key = match path.len() {
            1 => entry.key.as_deref(),
            _ => added_key(kept, path),
        };
        if let Some(key) = key {
            holders.entry(key.to_string()).or_default().push(path);
        }
    }
    holders
}

fn read_records(
    path: &Path,
    file: usize,
    queue: bool,
    records: &mut BTreeMap<TaskPath, Vec<Entry>>,
) -> Result<()> {
    let handle =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::new(handle);
    let mut line = 0u64;
    loop {
        let mut text = Vec::new();
        if reader.read_until(b'\n', &mut text)? == 0 {
            return Ok(());
        }
        line += 1;
        if text.last() != Some(&b'\n') {
            eprintln!(
                "{}:{line}: torn last record ignored (the run was killed; --resume repairs it)",
                path.display()
            );
            return Ok(());
        }
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let head = match RecordHead::parse(&text) {
            Ok(head) => match head.seq {
                Some(seq) => task_path(seq).map(|seq| {
                    let added = head.added.as_ref().map_or(0, |a| a.len() as u64);
                    let (key, added_keys) = if queue {
                        (
                            head.key.map(|raw| key_text(raw.get())),
                            head.added.as_ref().map_or_else(Vec::new, |a| {
                                a.iter().map(|entry| entry.key.clone()).collect()
                            }),
                        )
                    } else {
                        (None, Vec::new())
                    };
                    (seq, head.failed(), added, key, added_keys)
                }),
                None => Err("no \"seq\" field".to_string()),
            },
            Err(error) => Err(error.to_string()),
        };
        match head {
            Ok((seq, failed, added, key, added_keys)) => {
                records.entry(seq).or_default().push(Entry {
                    file,
                    line,
                    failed,
                    added,
                    key,
                    added_keys,
                    text,
                })
            }
            Err(error) => {
                anyhow::bail!("{}:{line}: not a multiloop record: {error}", path.display())
            }
        }
    }
}

/// An input line's `--key` value as the seen-set reads it: a JSON string
/// as its text, anything else as its JSON.
fn key_text(raw: &str) -> String {
    serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_string())
}

/// Line numbers of the non-blank lines of the input.
fn task_lines(path: &Path) -> Result<Vec<u64>> {
    let handle = std::fs::File::open(path)
        .with_context(|| format!("cannot open input {}", path.display()))?;
    let mut reader = BufReader::new(handle);
    let mut lines = Vec::new();
    let mut text = Vec::new();
    let mut seq = 0;
    loop {
        text.clear();
        if reader.read_until(b'\n', &mut text)? == 0 {
            return Ok(lines);
        }
        seq += 1;
        if !text.iter().all(u8::is_ascii_whitespace) {
            lines.push(seq);
        }
    }
}
