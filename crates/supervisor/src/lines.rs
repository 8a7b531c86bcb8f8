//! Splits a byte stream into lines with a length limit, so that one huge
//! line can neither exhaust memory nor stop the stream.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes asked of the reader per read.
const READ_CHUNK: usize = 256 * 1024;

/// One line, without its `\n` (or `\r\n`).
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Complete(&'a [u8]),
    /// A line longer than the limit; its bytes were discarded as they came.
    TooLong {
        len: usize,
    },
}

/// Reads lines of at most `max_len` bytes from `reader`.
#[derive(Debug)]
pub struct LineReader<R> {
    reader: R,
    buf: BytesMut,
    max_len: usize,
    /// Bytes of the current line already scanned for `\n`.
    scanned: usize,
    /// Length so far of an over-long line being skipped.
    discarding: Option<usize>,
    /// Length of the line returned last, consumed on the next call.
    consume: usize,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(reader: R, max_len: usize) -> Self {
        Self {
            reader,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_len,
            scanned: 0,
            discarding: None,
            consume: 0,
            eof: false,
        }
    }

    /// The next line, reading as needed; `None` at end of input.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        loop {
            if self.split_buffered() {
                return Ok(self.take_split());
            }
            if self.eof {
                return Ok(None);
            }
            self.buf.reserve(READ_CHUNK);
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                self.eof = true;
            }
        }
    }

    /// The next line if it is already buffered, without reading.
    pub fn next_buffered(&mut self) -> Option<Line<'_>> {
        if self.split_buffered() {
            self.take_split()
        } else {
            None
        }
    }

    /// Finds the end of the next line in the buffer; true when one (or the
    /// end of a too-long line, or the unterminated last line) is there.
    fn split_buffered(&mut self) -> bool {
        self.buf.advance(std::mem::take(&mut self.consume));
        if let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            self.scanned += pos;
            return true;
        }
        self.scanned = self.buf.len();
        if self.scanned > self.max_len || self.discarding.is_some() {
            // Drop what we have of an over-long line and keep scanning.
            *self.discarding.get_or_insert(0) += self.buf.len();
            self.buf.clear();
            self.scanned = 0;
        }
        self.eof && (!self.buf.is_empty() || self.discarding.is_some())
    }

    /// Returns the line found by [`Self::split_buffered`] and arranges for
    /// it (and its `\n`) to be consumed on the next call.
    fn take_split(&mut self) -> Option<Line<'_>> {
        let end = self.scanned;
        let terminated = end < self.buf.len();
        self.consume = end + usize::from(terminated);
        self.scanned = 0;
        if let Some(skipped) = self.discarding.take() {
            return Some(Line::TooLong { len: skipped + end });
        }
        if end > self.max_len {
            return Some(Line::TooLong { len: end });
        }
        let line = &self.buf[..end];
        Some(Line::Complete(line.strip_suffix(b"\r").unwrap_or(line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    async fn collect(input: &[u8], max_len: usize) -> Vec<Result<Vec<u8>, usize>> {
        let mut reader = LineReader::new(input, max_len);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            out.push(match line {
                Line::Complete(bytes) => Ok(bytes.to_vec()),
                Line::TooLong { len } => Err(len),
            });
        }
        out
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn splits_lines_and_strips_cr() {
        let lines = block_on(collect(b"a\r\nbb\n\nccc", 10));
        assert_eq!(
            lines,
            vec![
                Ok(b"a".to_vec()),
                Ok(b"bb".to_vec()),
                Ok(vec![]),
                Ok(b"ccc".to_vec())
            ]
        );
    }

    #[test]
    fn over_long_lines_are_reported_and_skipped() {
        let mut input = b"ok\n".to_vec();
        input.extend(vec![b'x'; 1_000_000]);
        input.extend(b"\nafter\n");
        input.extend(vec![b'y'; 700_000]);
        let lines = block_on(collect(&input, 100));
        assert_eq!(
            lines,
            vec![
                Ok(b"ok".to_vec()),
                Err(1_000_000),
                Ok(b"after".to_vec()),
                Err(700_000)
            ]
        );
    }

    proptest! {
        #[test]
        fn matches_split_for_any_input(text in "[ab\n]{0,200}", max_len in 1usize..8) {
            let expected: Vec<Result<Vec<u8>, usize>> = {
                let mut parts: Vec<&str> = text.split('\n').collect();
                if text.ends_with('\n') || text.is_empty() {
                    parts.pop();
                }
                parts.iter().map(|p| if p.len() > max_len { Err(p.len()) } else { Ok(p.as_bytes().to_vec()) }).collect()
            };
            prop_assert_eq!(block_on(collect(text.as_bytes(), max_len)), expected);
        }
    }
}
