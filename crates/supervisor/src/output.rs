//! The output writer: formats records on its own thread, flushes once per
//! batch, and syncs the file at the end so that `--resume` can trust it.
//! Stdout that is a pipe (a warm pool's driver reading records) is written
//! by a task on the runtime instead: no thread to wake per record.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::ack::{AckSink, Flushed, Settled};
use crate::record::Record;
use crate::stdio_pipe;

/// Batches of records queued for the writer before the dispatcher waits.
const QUEUED_BATCHES: usize = 64;

/// Where records go.
#[derive(Debug, Clone)]
pub enum OutputTarget {
    Stdout,
    /// A file, truncated, or appended to when `append` (resume). `lock`
    /// holds an exclusive lock on it for as long as the run needs it.
    File {
        path: PathBuf,
        append: bool,
        lock: Arc<std::fs::File>,
    },
}

/// How writing ended.
#[derive(Debug)]
pub enum OutputEnd {
    /// Everything written, flushed and synced.
    Complete,
    /// The reader of stdout went away (`| head`): stop quietly.
    BrokenPipe,
}

/// The sending side of the writer.
#[derive(Debug)]
pub struct OutputWriter {
    pub tx: mpsc::Sender<Vec<Record>>,
    writer: Writer,
}

#[derive(Debug)]
enum Writer {
    /// Blocking writes on a thread of its own: files, terminals, and any
    /// output whose flushes are acknowledged (a queue's).
    Thread(std::thread::JoinHandle<io::Result<OutputEnd>>),
    /// Non-blocking writes to a stdout pipe, on the runtime.
    Task(tokio::task::JoinHandle<io::Result<OutputEnd>>),
}

impl OutputWriter {
    /// Opens the target (so that a bad path fails before any work) and
    /// starts the writer thread.
    /// With `acks`, each flushed batch is reported (after an fsync of a
    /// file, so that an acknowledged record survives a machine crash).
    pub fn start(target: &OutputTarget, acks: Option<AckSink>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        if let (OutputTarget::Stdout, None) = (target, &acks) {
            if let Some(pipe) = stdio_pipe::stdout() {
                let task = tokio::spawn(write_to_pipe(pipe, rx));
                return Ok(Self {
                    tx,
                    writer: Writer::Task(task),
                });
            }
        }
        let sink: Box<dyn Sink> = match target {
            OutputTarget::Stdout => Box::new(io::stdout()),
            OutputTarget::File { path, append, lock } => {
                // The lock lives with the writer thread, until the last
                // record is synced.
                let lock = lock.clone();
                let file = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(*append)
                    .truncate(!*append)
                    .open(path)
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("cannot open output {}: {e}", path.display()),
                        )
                    })?;
                Box::new(SyncedFile(file, lock))
            }
        };
        let thread = std::thread::Builder::new()
            .name("multiloop-output".into())
            .spawn(move || write_records(sink, rx, acks))?;
        Ok(Self {
            tx,
            writer: Writer::Thread(thread),
        })
    }

    /// Waits for everything queued to be written (blocking: call it where
    /// blocking is allowed, as `spawn_blocking` does).
    pub fn finish(self) -> io::Result<OutputEnd> {
        drop(self.tx);
        match self.writer {
            Writer::Thread(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the output thread panicked"))),
            Writer::Task(task) => tokio::runtime::Handle::current()
                .block_on(task)
                .unwrap_or_else(|error| {
                    Err(io::Error::other(format!("the output task failed: {error}")))
                }),
        }
    }
}

/// [`write_records`] for a stdout pipe: the same batching (everything queued
/// goes out in one write), awaiting the pipe instead of blocking on it.
async fn write_to_pipe(
    mut pipe: tokio::net::unix::pipe::Sender,
    mut rx: mpsc::Receiver<Vec<Record>>,
) -> io::Result<OutputEnd> {
    use tokio::io::AsyncWriteExt;
    const CHUNK: usize = 256 * 1024;
    let mut buf = Vec::with_capacity(CHUNK);
    let mut flushed = Vec::new();
    let result = async {
        while let Some(batch) = rx.recv().await {
            write_batch(&mut buf, &batch, &None, &mut flushed)?;
            while let Ok(batch) = rx.try_recv() {
                write_batch(&mut buf, &batch, &None, &mut flushed)?;
                if buf.len() >= CHUNK {
                    pipe.write_all(&buf).await?;
                    buf.clear();
                }
            }
            pipe.write_all(&buf).await?;
            buf.clear();
        }
        Ok::<(), io::Error>(())
    }
    .await;
    match result {
        Ok(()) => Ok(OutputEnd::Complete),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(OutputEnd::BrokenPipe),
        Err(e) => Err(e),
    }
}

fn write_records(
    sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<Vec<Record>>,
    acks: Option<AckSink>,
) -> io::Result<OutputEnd> {
    let mut out = BufWriter::with_capacity(256 * 1024, sink);
    let mut flushed = Vec::new();
    let result = (|| {
        while let Some(batch) = rx.blocking_recv() {
            write_batch(&mut out, &batch, &acks, &mut flushed)?;
            while let Ok(batch) = rx.try_recv() {
                write_batch(&mut out, &batch, &acks, &mut flushed)?;
            }
            // Flushed once the queue is empty: a killed supervisor loses at
            // most the batch in hand, and a reader sees records promptly.
            out.flush()?;
            if let Some(acks) = &acks {
                out.get_mut().sync()?;
                acks.flushed(std::mem::take(&mut flushed));
            }
        }
        out.flush()?;
        out.get_mut().flush()?;
        // `--resume` trusts what is on disk: an error here is the run's.
        out.get_mut().sync()
    })();
    match result {
        Ok(()) => Ok(OutputEnd::Complete),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(OutputEnd::BrokenPipe),
        Err(e) => Err(e),
    }
}

fn write_batch(
    out: &mut impl Write,
    batch: &[Record],
    acks: &Option<AckSink>,
    flushed: &mut Vec<Flushed>,
) -> io::Result<()> {
    if acks.is_some() {
        // Every task came from the source (a queue holds added tasks as
        // well as input lines); the additions go with their parent.
        flushed.extend(batch.iter().map(|record| Flushed {
            id: record.id,
            settled: Settled::of(&record.outcome),
            adds: record.adds.clone(),
        }));
    }
    batch.iter().try_for_each(|record| record.write_line(out))
}

/// Where the writer thread writes: something that can also be made
/// durable at the end.
trait Sink: Write + Send {
    /// Makes everything written durable (`sync_all` for a file).
    fn sync(&mut self) -> io::Result<()>;
}

impl Sink for io::Stdout {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The output file, with the lock that keeps other runs off it for as
/// long as the writer lives. Synced once, at the end, not per batch.
struct SyncedFile(std::fs::File, #[allow(dead_code)] Arc<std::fs::File>);

impl Write for SyncedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Sink for SyncedFile {
    fn sync(&mut self) -> io::Result<()> {
        // `--output /dev/null` or a FIFO cannot be synced (EINVAL) and has
        // nothing to resume from; only a regular file's sync is checked.
        if !self.0.metadata()?.is_file() {
            return Ok(());
        }
        self.0.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes every write; fails to sync, as a full or failing disk would.
    struct FailingSync(Vec<u8>);

    impl Write for FailingSync {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink for FailingSync {
        fn sync(&mut self) -> io::Result<()> {
            Err(io::Error::other("sync failed"))
        }
    }

    #[test]
    fn output_to_a_device_needs_no_sync() {
        let lock = Arc::new(std::fs::File::open("/dev/null").unwrap());
        let file = OpenOptions::new().write(true).open("/dev/null").unwrap();
        assert!(SyncedFile(file, lock).sync().is_ok());
    }

    #[test]
    fn a_failed_sync_is_an_error_of_the_run() {
        let (tx, rx) = mpsc::channel(1);
        tx.try_send(Vec::new()).unwrap();
        drop(tx);
        let result = write_records(Box::new(FailingSync(Vec::new())), rx, None);
        assert_eq!(result.unwrap_err().to_string(), "sync failed");
    }
}
