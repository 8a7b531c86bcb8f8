//! The generated site of `scripts/bench_crawl.py` (and of `tests/crawl_fetch.rs`,
//! which runs the same module in-process): a seeded graph of pages with
//! cycles, redirects, 404s, links out of scope and `rel=nofollow`.
//!
//! ```text
//! site_graph_server [--port 0] [--pages 1000] [--seed 1] [--delay-ms 0]
//!                   [--threads N] [--list FILE]
//! ```
//!
//! With `--list FILE`, writes the URLs a crawl from the home page must
//! fetch (a breadth-first search of the graph, one per line) to FILE
//! first. Then prints `listening on http://127.0.0.1:PORT` on stdout and
//! serves until killed.

#[path = "../../../tests/site_graph/mod.rs"]
mod site_graph;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use site_graph::{http, Node, Site};

struct Options {
    port: u16,
    site: Site,
    delay: Duration,
    threads: usize,
    list: Option<PathBuf>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        port: 0,
        site: Site {
            pages: 1000,
            seed: 1,
        },
        delay: Duration::ZERO,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        list: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--port" => {
                options.port = u16::try_from(number(&value)?).map_err(|e| format!("--port: {e}"))?
            }
            "--pages" => options.site.pages = number(&value)?.max(1),
            "--seed" => options.site.seed = number(&value)?,
            "--delay-ms" => options.delay = Duration::from_millis(number(&value)?),
            "--threads" => options.threads = number(&value)?.max(1) as usize,
            "--list" => options.list = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

fn main() {
    let options = parse_options().unwrap_or_else(|e| {
        eprintln!("site_graph_server: {e}");
        std::process::exit(2)
    });
    let runtime = http::runtime(options.threads);
    runtime.block_on(async move {
        let listener = http::bind(options.port).await;
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        if let Some(path) = &options.list {
            let write = || -> std::io::Result<()> {
                let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
                for node in options.site.reachable(Node::Page(0)) {
                    writeln!(out, "{base}{}", node.path())?;
                }
                out.flush()
            };
            if let Err(e) = write() {
                eprintln!("site_graph_server: --list {}: {e}", path.display());
                std::process::exit(2);
            }
        }
        println!("listening on {base}");
        let _ = std::io::stdout().flush();
        site_graph::serve(options.site, listener, options.delay).await;
    });
}
