//! A first-in first-out queue that holds its oldest items in memory up to
//! a byte bound and the rest in a scratch file, read back in chunks as the
//! queue drains: what keeps a crawl's frontier of millions of tasks in
//! bounded memory.
//!
//! The file is created only when the bound is first passed, in the temp
//! dir (`TMPDIR`), and has no name from the moment it is opened (Linux
//! `O_TMPFILE`, else created and unlinked at once), so it never outlives
//! the run, however the run ends. It is scratch, not truth: the journal
//! holds every added task, and `--resume` rebuilds the frontier from it.
//!
//! Encoding: one frame per item, a little-endian `u32` length and the
//! item's bytes ([`Spill::encode`]). Writes go out in chunks of
//! [`WRITE_CHUNK`]; reads come back in chunks of [`READ_CHUNK`]. When every
//! item on disk was read back, the file is truncated to nothing and reused.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Bytes of a crawl's pending added tasks (payload, path and the task's
/// own bookkeeping) held in memory before the rest waits on disk.
pub const FRONTIER_MEMORY: usize = 16 << 20;

/// Encoded items are written in chunks of this size.
pub const WRITE_CHUNK: usize = 256 << 10;
/// The file is read back in chunks of this size (more for one larger item).
pub const READ_CHUNK: usize = 256 << 10;

/// An item the queue can write to disk and read back.
pub trait Spill: Sized {
    /// The bytes the item holds in memory: what the bound counts.
    fn cost(&self) -> usize;
    /// Appends the item's encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// The item `encode` wrote, or what is wrong with the bytes.
    fn decode(bytes: &[u8]) -> Result<Self, &'static str>;
    /// The item as memory holds it: with nothing shared with other
    /// allocations (a slice of a larger buffer would keep all of it alive,
    /// past what the bound counts).
    fn owned(self) -> Self {
        self
    }
}

/// Why the queue cannot go on. Every one of them stops the run: a task the
/// queue cannot keep must not vanish silently.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("cannot create the frontier's spill file in {dir}: {source}")]
    Create { dir: PathBuf, source: io::Error },
    #[error(
        "cannot write {bytes} bytes at offset {offset} of the frontier's spill file: {source}"
    )]
    Write {
        offset: u64,
        bytes: usize,
        source: io::Error,
    },
    #[error("cannot read the frontier's spill file at offset {offset}: {source}")]
    Read { offset: u64, source: io::Error },
    #[error("the frontier's spill file is corrupt at offset {offset}: {what}")]
    Corrupt { offset: u64, what: &'static str },
}

/// Where a queue spills, and from how many bytes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillConfig {
    /// Bytes of items held in memory before the rest waits on disk.
    pub memory: usize,
    /// The directory of the scratch file.
    pub dir: PathBuf,
}

impl SpillConfig {
    /// `memory` bytes in memory; the scratch file in the temp dir.
    pub fn in_temp_dir(memory: usize) -> Self {
        Self {
            memory,
            dir: std::env::temp_dir(),
        }
    }
}

/// A FIFO queue bounded in memory; see the module docs.
#[derive(Debug)]
pub struct SpillQueue<T> {
    config: SpillConfig,
    /// The oldest items. While anything is on disk, every newer item goes
    /// to disk too, so the order holds.
    memory: VecDeque<T>,
    memory_bytes: usize,
    file: Option<File>,
    /// Encoded items after the file's end, not yet written.
    write_buf: Vec<u8>,
    /// Bytes written to the file.
    written: u64,
    /// Bytes of the file read into `read_buf`.
    read: u64,
    /// Bytes read from the file and not yet decoded, from `read_pos`.
    read_buf: Vec<u8>,
    read_pos: usize,
    /// Items on disk (in the file or its buffers), not yet in `memory`.
    on_disk: u64,
    /// Items that went through disk since the queue was made.
    spilled: u64,
}

impl<T: Spill> Default for SpillQueue<T> {
    /// [`FRONTIER_MEMORY`] in memory; the rest in the temp dir.
    fn default() -> Self {
        Self::new(SpillConfig::in_temp_dir(FRONTIER_MEMORY))
    }
}

impl<T: Spill> SpillQueue<T> {
    pub fn new(config: SpillConfig) -> Self {
        Self {
            config,
            memory: VecDeque::new(),
            memory_bytes: 0,
            file: None,
            write_buf: Vec::new(),
            written: 0,
            read: 0,
            read_buf: Vec::new(),
            read_pos: 0,
            on_disk: 0,
            spilled: 0,
        }
    }

    /// Items waiting, in memory and on disk.
    pub fn len(&self) -> u64 {
        self.memory.len() as u64 + self.on_disk
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items that went through disk since the queue was made.
    pub fn spilled(&self) -> u64 {
        self.spilled
    }

    /// Bytes of items held in memory now.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Adds `item` at the back: in memory if nothing waits on disk and it
    /// fits the bound, else on disk.
    pub fn push(&mut self, item: T) -> Result<(), SpillError> {
        let cost = item.cost();
        if self.on_disk == 0 && self.memory_bytes + cost <= self.config.memory {
            self.memory_bytes += cost;
            self.memory.push_back(item.owned());
            return Ok(());
        }
        let start = self.write_buf.len();
        self.write_buf.extend_from_slice(&[0; 4]);
        item.encode(&mut self.write_buf);
        let Ok(len) = u32::try_from(self.write_buf.len() - start - 4) else {
            self.write_buf.truncate(start);
            return Err(SpillError::Corrupt {
                offset: self.written + start as u64,
                what: "an item of 4 GiB or more",
            });
        };
        self.write_buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.on_disk += 1;
        self.spilled += 1;
        if self.write_buf.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Takes the oldest item; reads the next chunk from disk when memory
    /// holds none.
    pub fn pop(&mut self) -> Result<Option<T>, SpillError> {
        if self.memory.is_empty() && self.on_disk > 0 {
            self.refill()?;
        }
        Ok(self.memory.pop_front().inspect(|item| {
            self.memory_bytes -= item.cost();
        }))
    }

    /// Drops every item waiting; returns how many. The file is emptied.
    pub fn clear(&mut self) -> Result<u64, SpillError> {
        let dropped = self.len();
        self.memory.clear();
        self.memory_bytes = 0;
        self.on_disk = 0;
        self.reset_disk()?;
        Ok(dropped)
    }

    /// Writes the encoded items of `write_buf` at the end of the file,
    /// creating the file the first time.
    fn flush(&mut self) -> Result<(), SpillError> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = tempfile::tempfile_in(&self.config.dir).map_err(|source| {
                    SpillError::Create {
                        dir: self.config.dir.clone(),
                        source,
                    }
                })?;
                self.file.insert(file)
            }
        };
        file.write_all_at(&self.write_buf, self.written)
            .map_err(|source| SpillError::Write {
                offset: self.written,
                bytes: self.write_buf.len(),
                source,
            })?;
        self.written += self.write_buf.len() as u64;
        self.write_buf.clear();
        Ok(())
    }

    /// Moves the oldest items on disk into memory: up to the bound, and at
    /// least one (an item larger than the bound still gets through).
    fn refill(&mut self) -> Result<(), SpillError> {
        while self.on_disk > 0 {
            let Some(len) = self.next_len()? else {
                self.read_more(4)?;
                continue;
            };
            let available = self.read_buf.len() - self.read_pos - 4;
            if available < len {
                self.read_more(4 + len)?;
                continue;
            }
            let offset = self.offset_of_pos();
            let start = self.read_pos + 4;
            let item = T::decode(&self.read_buf[start..start + len])
                .map_err(|what| SpillError::Corrupt { offset, what })?;
            let cost = item.cost();
            if !self.memory.is_empty() && self.memory_bytes + cost > self.config.memory {
                // Decoded again next time: cheaper than a side slot.
                break;
            }
            self.read_pos = start + len;
            self.memory_bytes += cost;
            self.memory.push_back(item);
            self.on_disk -= 1;
        }
        if self.on_disk == 0 {
            self.reset_disk()?;
        }
        Ok(())
    }

    /// The length of the next frame, if its prefix was read.
    fn next_len(&self) -> Result<Option<usize>, SpillError> {
        let Some(prefix) = self.read_buf.get(self.read_pos..self.read_pos + 4) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
        Ok(Some(len))
    }

    /// The file offset of `read_pos`.
    fn offset_of_pos(&self) -> u64 {
        self.read - (self.read_buf.len() - self.read_pos) as u64
    }

    /// Reads the next chunk so that at least `need` bytes from `read_pos`
    /// are in `read_buf`. Items not yet written are written first: they
    /// are what comes next.
    fn read_more(&mut self, need: usize) -> Result<(), SpillError> {
        self.read_buf.drain(..self.read_pos);
        self.read_pos = 0;
        let missing = need.saturating_sub(self.read_buf.len());
        if self.read + missing as u64 > self.written {
            self.flush()?;
        }
        let left = self.written - self.read;
        if left < missing as u64 {
            return Err(SpillError::Corrupt {
                offset: self.offset_of_pos(),
                what: "a frame longer than what was written",
            });
        }
        let want = (missing.max(READ_CHUNK) as u64).min(left) as usize;
        let have = self.read_buf.len();
        self.read_buf.resize(have + want, 0);
        let file = self.file.as_ref().ok_or(SpillError::Corrupt {
            offset: self.read,
            what: "items on disk but no file",
        })?;
        file.read_exact_at(&mut self.read_buf[have..], self.read)
            .map_err(|source| SpillError::Read {
                offset: self.read,
                source,
            })?;
        self.read += want as u64;
        Ok(())
    }

    /// Nothing is left on disk: the file is emptied for reuse and the
    /// buffers let go of their memory.
    fn reset_disk(&mut self) -> Result<(), SpillError> {
        self.write_buf = Vec::new();
        self.read_buf = Vec::new();
        self.read_pos = 0;
        self.read = 0;
        if self.written > 0 {
            self.written = 0;
            if let Some(file) = &self.file {
                file.set_len(0).map_err(|source| SpillError::Write {
                    offset: 0,
                    bytes: 0,
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// The length of the scratch file (for tests).
    #[cfg(test)]
    fn file_len(&self) -> u64 {
        self.file
            .as_ref()
            .map_or(0, |file| file.metadata().unwrap().len())
    }
}

/// Reads a little-endian `u32` length and that many bytes off the front of
/// `bytes`.
pub fn take_field<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], &'static str> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or("a field without its length")?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err("a field longer than its item");
    }
    let (field, rest) = rest.split_at(len);
    *bytes = rest;
    Ok(field)
}

/// Writes `field` with its little-endian `u32` length.
pub fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_le_bytes());
    out.extend_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test item: a number and some filler that sets its size.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Item(u64, Vec<u8>);

    impl Spill for Item {
        fn cost(&self) -> usize {
            8 + self.1.len()
        }
        fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.0.to_le_bytes());
            put_field(out, &self.1);
        }
        fn decode(mut bytes: &[u8]) -> Result<Self, &'static str> {
            let (n, rest) = bytes.split_first_chunk::<8>().ok_or("short")?;
            bytes = rest;
            let filler = take_field(&mut bytes)?.to_vec();
            Ok(Item(u64::from_le_bytes(*n), filler))
        }
    }

    fn item(n: u64) -> Item {
        Item(n, vec![n as u8; (n % 37) as usize])
    }

    fn queue(memory: usize) -> (tempfile::TempDir, SpillQueue<Item>) {
        let dir = tempfile::tempdir().unwrap();
        let config = SpillConfig {
            memory,
            dir: dir.path().to_path_buf(),
        };
        (dir, SpillQueue::new(config))
    }

    #[test]
    fn order_holds_across_memory_and_disk_through_many_refills() {
        let (_dir, mut queue) = queue(1_000);
        let mut next_in = 0;
        let mut next_out = 0;
        // Pushes outrun pops, then pops outrun pushes, many times over:
        // items cross the bound both ways.
        for round in 0..40u64 {
            let (push, pop) = if round % 2 == 0 {
                (3_000, 1_000)
            } else {
                (500, 2_400)
            };
            for _ in 0..push {
                queue.push(item(next_in)).unwrap();
                next_in += 1;
            }
            for _ in 0..pop {
                let Some(got) = queue.pop().unwrap() else {
                    break;
                };
                assert_eq!(got, item(next_out));
                next_out += 1;
                assert!(queue.memory_bytes() <= 1_000);
            }
            assert_eq!(queue.len(), next_in - next_out);
        }
        while let Some(got) = queue.pop().unwrap() {
            assert_eq!(got, item(next_out));
            next_out += 1;
        }
        assert_eq!(next_out, next_in);
        assert!(queue.spilled() > next_in / 2, "{} spilled", queue.spilled());
        assert_eq!(queue.file_len(), 0, "an empty queue leaves an empty file");
    }

    #[test]
    fn nothing_is_written_under_the_bound() {
        let (dir, mut queue) = queue(1 << 20);
        for n in 0..1_000 {
            queue.push(item(n)).unwrap();
        }
        for n in 0..1_000 {
            assert_eq!(queue.pop().unwrap(), Some(item(n)));
        }
        assert_eq!(queue.pop().unwrap(), None);
        assert_eq!(queue.spilled(), 0);
        assert!(queue.file.is_none(), "no file below the bound");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_zero_bound_sends_every_item_through_disk_one_at_a_time() {
        let (dir, mut queue) = queue(0);
        let big = Item(7, vec![1; 3 * READ_CHUNK]);
        queue.push(item(1)).unwrap();
        queue.push(big.clone()).unwrap();
        queue.push(item(2)).unwrap();
        assert_eq!(queue.spilled(), 3);
        assert_eq!(queue.pop().unwrap(), Some(item(1)));
        assert_eq!(queue.pop().unwrap(), Some(big));
        queue.push(item(3)).unwrap();
        assert_eq!(queue.pop().unwrap(), Some(item(2)));
        assert_eq!(queue.pop().unwrap(), Some(item(3)));
        assert_eq!(queue.pop().unwrap(), None);
        assert_eq!(queue.file_len(), 0);
        // The file has no name: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn clear_drops_what_waits_and_empties_the_file() {
        let (_dir, mut queue) = queue(100);
        for n in 0..50_000 {
            queue.push(item(n)).unwrap();
        }
        assert!(queue.file_len() > 0);
        assert_eq!(queue.clear().unwrap(), 50_000);
        assert_eq!(queue.file_len(), 0);
        assert_eq!(queue.pop().unwrap(), None);
        queue.push(item(9)).unwrap();
        assert_eq!(queue.pop().unwrap(), Some(item(9)));
    }

    #[test]
    fn a_missing_directory_is_a_one_line_error() {
        let (dir, mut queue) = queue(0);
        queue.config.dir = dir.path().join("gone");
        for n in 0..100_000 {
            if let Err(error) = queue.push(item(n)) {
                let message = error.to_string();
                assert!(message.contains("cannot create the frontier's spill file"));
                assert!(message.contains("gone") && !message.contains('\n'));
                return;
            }
        }
        panic!("no error");
    }

    #[test]
    fn a_corrupt_frame_is_named_not_a_panic() {
        let (_dir, mut queue) = queue(0);
        queue.push(item(1)).unwrap();
        // Damage the length prefix in the buffer before it is written.
        queue.write_buf[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = queue.pop().unwrap_err().to_string();
        assert!(error.contains("corrupt at offset 0"), "{error}");
    }
}
