//! The input reader: turns the input (a file, stdin or the built-in demo)
//! into numbered tasks, lazily, in batches the dispatcher asks for.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::demo::DemoBatch;
use crate::lines::{Line, LineReader};
use crate::queue::QueueSpec;
use crate::record::{InputItem, TaskEntry};
use crate::resume::{Identity, Journal};
use crate::shard::Shard;

/// Lines per batch handed to the dispatcher.
const BATCH: usize = 1024;

/// Where tasks come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    File(PathBuf),
    Stdin,
    Demo(DemoBatch),
    /// Tasks pulled from a shared queue (`--queue`); see `crate::queue`.
    Queue(QueueSpec),
}

impl InputSource {
    /// How it is read: as lines, or as the queue it pulls from (which has
    /// its own reader, `crate::queue::consume`).
    pub fn reading(self) -> Reading {
        match self {
            InputSource::File(path) => Reading::Lines(LineInput::File(path)),
            InputSource::Stdin => Reading::Lines(LineInput::Stdin),
            InputSource::Demo(demo) => Reading::Lines(LineInput::Demo(demo)),
            InputSource::Queue(spec) => Reading::Queue(spec),
        }
    }
}

impl std::fmt::Display for InputSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.clone().reading() {
            Reading::Lines(lines) => lines.fmt(f),
            Reading::Queue(spec) => write!(f, "queue {}", spec.url),
        }
    }
}

/// How an input is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    Lines(LineInput),
    Queue(QueueSpec),
}

/// An input read line by line: every input but a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineInput {
    File(PathBuf),
    Stdin,
    Demo(DemoBatch),
}

impl std::fmt::Display for LineInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineInput::File(path) => write!(f, "{}", path.display()),
            LineInput::Stdin => f.write_str("stdin"),
            LineInput::Demo(_) => f.write_str("the demo batch"),
        }
    }
}

/// What the reader sends the dispatcher.
#[derive(Debug)]
pub enum InputMessage {
    Batch(Vec<InputItem>),
    /// The input ended after `lines` lines.
    End {
        lines: u64,
    },
    /// The input could not be read to its end.
    Failed(String),
}

/// Decides which lines become tasks.
#[derive(Debug, Clone)]
pub struct InputFilter {
    /// Longest line that fits in a frame.
    pub max_line: usize,
    /// How tasks are identified (and what `"key"` records carry).
    pub identity: Identity,
    /// Tasks already answered in the output being resumed.
    pub journal: Option<Arc<Journal>>,
    /// Each line is a bare string, to be sent as a JSON string.
    pub lines_as_strings: bool,
    /// Only this slice of the input (`--shard`).
    pub shard: Option<Shard>,
}

/// Reads `source` to its end, sending batches of tasks on `tx`. The bounded
/// channel is the backpressure: the reader waits while the dispatcher has
/// enough.
pub async fn read_input(source: LineInput, filter: InputFilter, tx: mpsc::Sender<InputMessage>) {
    let result = match &source {
        LineInput::File(path) => match tokio::fs::File::open(path).await {
            Ok(file) => read_lines(file, &filter, &tx).await,
            Err(error) => Err(format!("cannot open input {}: {error}", path.display())),
        },
        LineInput::Stdin => match crate::stdio_pipe::stdin() {
            Some(pipe) => read_lines(pipe, &filter, &tx).await,
            None => read_lines(tokio::io::stdin(), &filter, &tx).await,
        },
        LineInput::Demo(demo) => read_lines(demo.to_jsonl().as_slice(), &filter, &tx).await,
    };
    let message = match result {
        Ok(lines) => InputMessage::End { lines },
        Err(error) => InputMessage::Failed(format!("reading {source}: {error}")),
    };
    let _ = tx.send(message).await;
}

async fn read_lines<R: AsyncRead + Unpin>(
    reader: R,
    filter: &InputFilter,
    tx: &mpsc::Sender<InputMessage>,
) -> Result<u64, String> {
    let mut lines = LineReader::new(reader, filter.max_line);
    let mut numbering = Numbering::default();
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        match lines.next_line().await.map_err(|e| e.to_string())? {
            None => return Ok(numbering.seq),
            Some(line) => numbering.push(line, filter, &mut batch),
        }
        while batch.len() < BATCH {
            match lines.next_buffered() {
                Some(line) => numbering.push(line, filter, &mut batch),
                None => break,
            }
        }
        if !batch.is_empty() && tx.send(InputMessage::Batch(batch)).await.is_err() {
            // The dispatcher stopped reading (drain or shutdown).
            return Ok(numbering.seq);
        }
    }
}

/// Line numbers (every line) and task ids (lines that became items).
#[derive(Debug, Default)]
struct Numbering {
    seq: u64,
    next_id: u64,
}

impl Numbering {
    fn push(&mut self, line: Line<'_>, filter: &InputFilter, batch: &mut Vec<InputItem>) {
        self.seq += 1;
        if let Some(item) = line_item(self.seq, self.next_id, line, filter) {
            self.next_id += 1;
            batch.push(item);
        }
    }
}

/// What input line `seq` becomes as task `id`: `None` when it is blank,
/// another shard's, or already answered in the output being resumed.
pub(crate) fn line_item(
    seq: u64,
    id: u64,
    line: Line<'_>,
    filter: &InputFilter,
) -> Option<InputItem> {
    // A line that did not pass through a `LineReader` (a queue entry) is
    // held to the same limit here, so that no task reaches a worker's pipe
    // too big for a frame.
    let line = match line {
        Line::Complete(bytes) if bytes.len() > filter.max_line => {
            Line::TooLong { len: bytes.len() }
        }
        line => line,
    };
    let (payload, key) = match line {
        Line::Complete(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => return None,
        Line::Complete(bytes) => match &filter.identity {
            Identity::Line => (Ok(bytes), None),
            Identity::Key(field) => match key_of(bytes, field) {
                Ok(key) => (Ok(bytes), Some(key)),
                Err(message) => (Err(format!("line {seq}: {message}")), None),
            },
        },
        Line::TooLong { len } => (
            Err(format!(
                "line {seq}: {len} bytes is over the frame limit of {} bytes (see --max-frame)",
                filter.max_line
            )),
            None,
        ),
    };
    if let Some(shard) = &filter.shard {
        if !shard.takes(seq, key.as_deref()) {
            return None;
        }
    }
    if let Some(journal) = &filter.journal {
        if journal.contains(seq, key.as_deref()) {
            return None;
        }
    }
    let payload = payload.and_then(|bytes| {
        if filter.lines_as_strings {
            // Escaping can make a line several times longer.
            as_json_string(bytes)
                .and_then(|json| match json.len() {
                    len if len > filter.max_line => Err(format!(
                        "{len} bytes as a JSON string is over the frame limit of {} bytes (see --max-frame)",
                        filter.max_line
                    )),
                    _ => Ok(json),
                })
                .map_err(|message| format!("line {seq}: {message}"))
        } else {
            Ok(Bytes::copy_from_slice(bytes))
        }
    });
    Some(match payload {
        Ok(payload) => InputItem::Task(TaskEntry {
            id,
            seq,
            payload,
            key,
            attempts: 0,
            blame: Default::default(),
            path: None,
        }),
        Err(message) => InputItem::Rejected { id, seq, message },
    })
}

/// A bare line as a JSON string (`--lines`), trimmed.
fn as_json_string(line: &[u8]) -> Result<Bytes, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let json = serde_json::to_vec(text.trim()).map_err(|e| e.to_string())?;
    Ok(Bytes::from(json))
}

/// The raw JSON of `field` in the object on this line.
pub(crate) fn key_of(line: &[u8], field: &str) -> Result<Bytes, String> {
    use serde_json::value::RawValue;
    use std::collections::HashMap;
    let object: HashMap<std::borrow::Cow<'_, str>, &RawValue> = serde_json::from_slice(line)
        .map_err(|e| format!("not a JSON object, so it has no --key field: {e}"))?;
    match object.get(field) {
        Some(value) => Ok(Bytes::copy_from_slice(value.get().as_bytes())),
        None => Err(format!("no field {field:?} (--key)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_raw_json_of_the_field() {
        assert_eq!(
            key_of(br#"{"id":"a-1","x":2}"#, "id").unwrap(),
            Bytes::from_static(b"\"a-1\"")
        );
        assert_eq!(
            key_of(br#"{"x":2,"id":17}"#, "id").unwrap(),
            Bytes::from_static(b"17")
        );
        assert!(key_of(br#"{"x":2}"#, "id")
            .unwrap_err()
            .contains("no field \"id\""));
        assert!(key_of(b"[1,2]", "id")
            .unwrap_err()
            .contains("not a JSON object"));
    }
}
