//! The `fetch` task without multiloop around it: one thread, one tokio
//! event loop, every URL of a file in flight at once through the same
//! [`Fetcher`] a worker uses (connection budget, no per-host limit), each
//! answer written as a JSON line. What this costs per page is the floor of
//! the HTTP client, the page scan and the hash; what `supervisor --task
//! fetch --workers 1` costs on top is the worker protocol and the
//! supervisor. `scripts/bench_fetch.py` runs both on the same URLs.
//!
//! ```text
//! fetch_inprocess URLS_FILE [OUTPUT]     (stdout without OUTPUT)
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::rc::Rc;

use multiloop_tasks::{FetchInput, FetchSettings, Fetcher, PerHost};
use tokio::task::JoinSet;

// The same allocator as the `worker` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: fetch_inprocess URLS_FILE [OUTPUT]");
        return ExitCode::from(2);
    };
    let output: Box<dyn Write> = match args.next() {
        None => Box::new(std::io::stdout().lock()),
        Some(out) => match File::create(&out) {
            Ok(file) => Box::new(file),
            Err(error) => {
                eprintln!("fetch_inprocess: cannot create {out}: {error}");
                return ExitCode::from(2);
            }
        },
    };
    let urls = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("fetch_inprocess: cannot read {path}: {error}");
            return ExitCode::from(2);
        }
    };
    let settings = FetchSettings {
        per_host: PerHost::Unlimited,
        ..FetchSettings::default()
    };
    let fetcher = match Fetcher::new(settings) {
        Ok(fetcher) => Rc::new(fetcher),
        Err(error) => {
            eprintln!("fetch_inprocess: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build tokio runtime");
    let local = tokio::task::LocalSet::new();
    let failed = local.block_on(&runtime, async {
        let mut tasks = JoinSet::new();
        for (line, url) in urls.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let fetcher = fetcher.clone();
            let input = FetchInput::Url(url.trim().to_string());
            tasks.spawn_local(async move { (line as u64 + 1, fetcher.fetch(input).await) });
        }
        let mut out = BufWriter::with_capacity(256 << 10, output);
        let mut failed = 0u64;
        while let Some(joined) = tasks.join_next().await {
            let (seq, result) = joined.expect("a fetch task panicked");
            let written = match result {
                Ok(page) => {
                    serde_json::to_writer(&mut out, &serde_json::json!({"seq": seq, "ok": page}))
                }
                Err(error) => {
                    failed += 1;
                    serde_json::to_writer(
                        &mut out,
                        &serde_json::json!({"seq": seq, "error": error.message}),
                    )
                }
            };
            if written.is_err() || out.write_all(b"\n").is_err() {
                eprintln!("fetch_inprocess: cannot write the output");
                return u64::MAX;
            }
        }
        if out.flush().is_err() {
            return u64::MAX;
        }
        failed
    });
    match failed {
        0 => ExitCode::SUCCESS,
        u64::MAX => ExitCode::from(2),
        n => {
            eprintln!("fetch_inprocess: {n} fetches failed");
            ExitCode::from(1)
        }
    }
}
