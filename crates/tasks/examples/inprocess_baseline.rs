//! The in-process baseline: the same `sim` job on one multi-thread tokio
//! runtime in a single process, writing the supervisor's output records.
//!
//! ```text
//! inprocess_baseline [FILE|-] [--concurrency N] [--threads N]
//! ```
//!
//! Input is JSONL (`{"sleep_ms":u64,"iters":u64}`), read lazily from FILE or
//! stdin; output is one record per task on stdout:
//! `{"seq":<line>,"worker":0,"attempts":1,"ms":<float>,"ok":{"sum":N}}`.
//! A summary goes to stderr.
//!
//! Three pieces, each owning its own state, joined by bounded channels so
//! memory stays flat however long the input is:
//! a reader thread (buffered reads, JSON parsing, batches of lines),
//! the runtime (one spawned task per line, at most `--concurrency` in
//! flight), and a writer thread (buffered, flushed only when no result is
//! waiting, like the supervisor's writer).

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use multiloop_tasks::{sim, SimInput, SimOutput};

// The same allocator as the `supervisor` and `worker` binaries, so that the
// comparison measures the pipes and processes, not malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio::sync::{mpsc, Semaphore};

/// Lines handed from the reader to the runtime in one message, at most.
const READ_BATCH: usize = 1024;
/// Results taken by the writer in one wake-up, at most.
const WRITE_BATCH: usize = 4096;
/// I/O buffer sizes: large enough that a syscall carries many records.
const IO_BUF: usize = 256 << 10;

#[derive(Debug)]
struct Args {
    input: Option<String>,
    concurrency: usize,
    threads: usize,
}

/// One parsed input line, or the reason it is not a task.
type Line = (u64, Result<SimInput, String>);

#[derive(Debug)]
enum Record {
    Ok { seq: u64, micros: u64, sum: u64 },
    BadInput { seq: u64, message: String },
}

fn usage() -> &'static str {
    "usage: inprocess_baseline [FILE|-] [--concurrency N] [--threads N]\n\
     \x20 FILE           JSONL tasks {\"sleep_ms\":u64,\"iters\":u64}; stdin if absent or -\n\
     \x20 --concurrency  tasks in flight at most (default 1024 x threads)\n\
     \x20 --threads      runtime worker threads (default: available cores)"
}

fn parse_args() -> Result<Args, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut input = None;
    let mut concurrency = None;
    let mut threads = cores;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<usize, String> {
            let v = inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))?;
            match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{name}: {v:?} is not a positive integer")),
            }
        };
        match flag.as_str() {
            "--concurrency" | "-c" => concurrency = Some(value("--concurrency")?),
            "--threads" | "-t" => threads = value("--threads")?,
            "--help" | "-h" => return Err(String::new()),
            "-" if input.is_none() => input = Some("-".to_string()),
            f if f.starts_with('-') => return Err(format!("unknown option {f}")),
            _ if input.is_none() => input = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok(Args {
        input: input.filter(|p| p != "-"),
        concurrency: concurrency.unwrap_or(1024 * cores),
        threads,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("inprocess_baseline: {message}");
            }
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    let source: Box<dyn Read + Send> = match &args.input {
        None => Box::new(std::io::stdin()),
        Some(path) => match std::fs::File::open(path) {
            Ok(file) => Box::new(file),
            Err(err) => {
                eprintln!("inprocess_baseline: cannot open {path}: {err}");
                return ExitCode::from(2);
            }
        },
    };
    let started = Instant::now();

    let (line_tx, line_rx) = mpsc::channel::<Vec<Line>>(4);
    let (rec_tx, rec_rx) = mpsc::channel::<Record>(WRITE_BATCH.max(args.concurrency.min(1 << 16)));
    let reader = std::thread::Builder::new()
        .name("reader".into())
        .spawn(move || read_lines(source, line_tx))
        .expect("spawn reader thread");
    let writer = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || write_records(rec_rx))
        .expect("spawn writer thread");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_time()
        .build()
        .expect("build tokio runtime");
    runtime.block_on(dispatch(line_rx, rec_tx, args.concurrency));
    drop(runtime);

    let read = reader.join().expect("reader thread panicked");
    let written = writer.join().expect("writer thread panicked");
    let secs = started.elapsed().as_secs_f64();
    let (tasks, bad) = match (read, written) {
        (Ok(()), Ok(counts)) => counts,
        (Err(err), _) => {
            eprintln!("inprocess_baseline: reading input: {err}");
            return ExitCode::from(2);
        }
        (_, Err(err)) => {
            eprintln!("inprocess_baseline: writing output: {err}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "inprocess_baseline: {tasks} tasks ({bad} bad input) in {secs:.3} s = {:.0} tasks/s \
         ({} threads, concurrency {})",
        tasks as f64 / secs.max(1e-9),
        args.threads,
        args.concurrency
    );
    ExitCode::from(if bad > 0 { 1 } else { 0 })
}

/// Reads and parses lines; a batch leaves as soon as the read buffer is
/// empty, so a slow producer is never kept waiting for a full batch.
fn read_lines(source: Box<dyn Read + Send>, tx: mpsc::Sender<Vec<Line>>) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(IO_BUF, source);
    let mut line = Vec::with_capacity(256);
    let mut batch = Vec::with_capacity(READ_BATCH);
    let mut seq = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        seq += 1;
        let text = line.trim_ascii();
        if !text.is_empty() {
            let task = serde_json::from_slice::<SimInput>(text).map_err(|e| e.to_string());
            batch.push((seq, task));
        }
        if batch.len() >= READ_BATCH || (!batch.is_empty() && reader.buffer().is_empty()) {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(READ_BATCH));
            if tx.blocking_send(full).is_err() {
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(batch);
    }
    Ok(())
}

/// Spawns one task per line, holding a permit until its result is queued,
/// so at most `concurrency` tasks and their results are alive at once.
async fn dispatch(
    mut rx: mpsc::Receiver<Vec<Line>>,
    out: mpsc::Sender<Record>,
    concurrency: usize,
) {
    let permits = Arc::new(Semaphore::new(concurrency));
    while let Some(batch) = rx.recv().await {
        for (seq, task) in batch {
            let input = match task {
                Ok(input) => input,
                Err(message) => {
                    let _ = out.send(Record::BadInput { seq, message }).await;
                    continue;
                }
            };
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore open");
            let out = out.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let output = sim(input).await.unwrap_or_else(|never| match never {});
                let micros = started.elapsed().as_micros() as u64;
                let _ = out
                    .send(Record::Ok {
                        seq,
                        micros,
                        sum: output.sum,
                    })
                    .await;
                drop(permit);
            });
        }
    }
    // Every task holds a permit: having them all back means all are done.
    let _ = permits.acquire_many(concurrency as u32).await;
}

/// Formats records; flushes when no result is waiting (or the buffer fills).
/// Returns (tasks, bad input lines).
fn write_records(mut rx: mpsc::Receiver<Record>) -> std::io::Result<(u64, u64)> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(IO_BUF, stdout.lock());
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let (mut tasks, mut bad) = (0u64, 0u64);
    while rx.blocking_recv_many(&mut batch, WRITE_BATCH) > 0 {
        for record in batch.drain(..) {
            tasks += 1;
            match record {
                Record::Ok { seq, micros, sum } => {
                    write!(
                        out,
                        r#"{{"seq":{seq},"worker":0,"attempts":1,"ms":{}.{:03},"ok":"#,
                        micros / 1000,
                        micros % 1000
                    )?;
                    serde_json::to_writer(&mut out, &SimOutput { sum })?;
                    out.write_all(b"}\n")?;
                }
                Record::BadInput { seq, message } => {
                    bad += 1;
                    let error = serde_json::json!({"kind": "bad_input", "message": message});
                    writeln!(
                        out,
                        r#"{{"seq":{seq},"worker":0,"attempts":1,"ms":0.000,"error":{error}}}"#
                    )?;
                }
            }
        }
        if rx.is_empty() {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok((tasks, bad))
}
