//! `queue push`: stores an input file's lines in a queue, each under its
//! line number, so that records keep `seq` and pushing twice adds nothing.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Duration;

use super::consume::connect;
use super::store::{Meta, QueueError};
use super::url::QueueUrl;
use crate::input::key_of;
use crate::seen;

/// Lines per pipelined round trip.
const PUSH_BATCH: usize = 2000;

/// Oversized lines named one by one in a push report; the rest are counted.
pub const OVERSIZE_NAMED: usize = 10;

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// Tasks (non-blank lines) in the file.
    pub total: u64,
    /// Added by this push.
    pub added: u64,
    /// Already in the queue (an earlier, maybe interrupted, push).
    pub present: u64,
    /// Lines longer than a task may be (`--max-frame`): pushed all the
    /// same, so that line numbers and counts stay whole, and recorded
    /// `bad_input` by the node that pulls them.
    pub oversize: u64,
    /// The first [`OVERSIZE_NAMED`] of them: (line number, bytes).
    pub oversize_lines: Vec<(u64, usize)>,
    /// The longest line a task may be.
    pub max_line: usize,
}

/// Pushes every non-blank line of `path` to the queue. The entry id of
/// line N is `N-0`: Redis refuses an id at or below the stream's last, so a
/// repeated or concurrent push of the same file adds each line once, and an
/// interrupted push continues where it stopped. A different file (by
/// content digest) is refused. Lines too long for a task in frames of
/// `max_frame` bytes are counted in the report. With `key` (the nodes'
/// `--key FIELD`), each line's key joins the queue's seen-set, so that a
/// task that adds a seed's key again adds nothing.
pub async fn push(
    url: &QueueUrl,
    path: &Path,
    max_frame: usize,
    key: Option<&str>,
) -> Result<PushReport, QueueError> {
    let max_line = multiloop_protocol::max_task_payload(max_frame);
    let (digest, lines, total) = describe(path)?;
    let mut store = connect(url, Duration::from_secs(10)).await?;
    let meta = Meta {
        digest,
        source: path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        lines,
        total,
        ..Meta::default()
    };
    let last = store.begin_push(&meta).await?;
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut report = PushReport {
        total,
        added: 0,
        present: 0,
        oversize: 0,
        oversize_lines: Vec::new(),
        max_line,
    };
    let mut seq = 0u64;
    let mut text: Vec<Vec<u8>> = Vec::with_capacity(PUSH_BATCH);
    let mut seqs: Vec<u64> = Vec::with_capacity(PUSH_BATCH);
    let mut seeds: Vec<u64> = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line)?;
        if n > 0 {
            seq += 1;
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                if line.len() > max_line {
                    report.oversize += 1;
                    if report.oversize_lines.len() < OVERSIZE_NAMED {
                        report.oversize_lines.push((seq, line.len()));
                    }
                }
                // A line without the field is recorded bad_input by the
                // node that pulls it; it seeds nothing. Seeds of lines
                // already there go in again: the set keeps one of each.
                if let Some(Ok(raw)) = key.map(|field| key_of(&line, field)) {
                    seeds.push(seen::shared_fingerprint_json(&raw));
                }
                if seq <= last {
                    report.present += 1;
                } else {
                    seqs.push(seq);
                    text.push(line);
                }
            }
        }
        if seqs.len().max(seeds.len()) >= PUSH_BATCH
            || (n == 0 && !(seqs.is_empty() && seeds.is_empty()))
        {
            let batch: Vec<(u64, &[u8])> = seqs
                .iter()
                .copied()
                .zip(text.iter().map(Vec::as_slice))
                .collect();
            let added = store.push(&batch, &seeds).await?;
            report.present += batch.len() as u64 - added;
            report.added += added;
            seqs.clear();
            text.clear();
            seeds.clear();
        }
        if n == 0 {
            break;
        }
    }
    store.end_push().await?;
    Ok(report)
}

/// (content digest, lines, non-blank lines) of the file.
fn describe(path: &Path) -> Result<(String, u64, u64), QueueError> {
    let mut file = std::fs::File::open(path).map_err(|e| {
        QueueError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot open input {}: {e}", path.display()),
        ))
    })?;
    let mut buf = vec![0u8; 1 << 20];
    // FNV-1a over the bytes: fixed forever, and enough to tell two inputs
    // apart (this is not a defence against a forged file).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let (mut lines, mut total, mut blank, mut last) = (0u64, 0u64, true, b'\n');
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for &byte in &buf[..n] {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            if byte == b'\n' {
                lines += 1;
                total += u64::from(!blank);
                blank = true;
            } else if !byte.is_ascii_whitespace() {
                blank = false;
            }
        }
        last = buf[n - 1];
    }
    if last != b'\n' {
        lines += 1;
        total += u64::from(!blank);
    }
    Ok((format!("{hash:016x}"), lines, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_counts_lines_and_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{}\n\n  \n{}\n{}").unwrap();
        let (digest, lines, total) = describe(&path).unwrap();
        assert_eq!((lines, total), (5, 3));
        std::fs::write(&path, "{}\n\n  \n{}\n{}\n").unwrap();
        let (other, lines, total) = describe(&path).unwrap();
        assert_eq!((lines, total), (5, 3));
        assert_ne!(digest, other);
    }
}
