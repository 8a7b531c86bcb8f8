//! The local HTTP server of `scripts/bench_fetch.py`: small HTML pages,
//! gzip-compressed once at start, each answered after a fixed delay.
//!
//! ```text
//! fetch_bench_server [--port 0] [--delay-ms 20] [--threads N] [--pages 1000]
//! ```
//!
//! Prints `listening on http://127.0.0.1:PORT` on stdout, then serves until
//! killed. `GET /page/N` answers page `N % pages` (gzip when the request
//! offers it, identity otherwise); anything else is a 404. It is written to
//! cost as little CPU per request as possible (precomputed bodies, no
//! logging), so that the clients under test, not the server, set the pace.

#[path = "../../../tests/site_graph/http.rs"]
mod http;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use http::Reply;

struct Page {
    plain: Bytes,
    gzip: Bytes,
}

struct Options {
    port: u16,
    delay: Duration,
    threads: usize,
    pages: usize,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        port: 0,
        delay: Duration::from_millis(20),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        pages: 1000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--port" => options.port = number(&value)? as u16,
            "--delay-ms" => options.delay = Duration::from_millis(number(&value)?),
            "--threads" => options.threads = number(&value)?.max(1) as usize,
            "--pages" => options.pages = number(&value)?.max(1) as usize,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

/// A plausible small page: a title, a navigation of 20-40 links, a few
/// paragraphs; about 3-6 KB of HTML, 1-2 KB gzipped.
fn page_html(i: usize) -> String {
    const WORDS: [&str; 16] = [
        "event",
        "loop",
        "worker",
        "supervisor",
        "process",
        "crawl",
        "fetch",
        "parse",
        "core",
        "batch",
        "result",
        "output",
        "restart",
        "signal",
        "merge",
        "stream",
    ];
    let word = |k: usize| WORDS[(i * 7 + k * 13) % WORDS.len()];
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Page {i}: {} &amp; {}</title>\
         <link rel=\"stylesheet\" href=\"/style.css\"></head><body><nav><ul>",
        word(1),
        word(2)
    );
    for k in 0..20 + i % 21 {
        html += &format!(
            "<li><a href=\"/page/{}\">{} {k}</a></li>",
            i * 31 + k,
            word(k)
        );
    }
    html += "</ul></nav><main>";
    for p in 0..4 + i % 5 {
        html += "<p>";
        for k in 0..40 {
            html += word(p * 40 + k);
            html.push(' ');
        }
        html += "</p>";
    }
    html + "</main></body></html>\n"
}

fn build_pages(count: usize) -> Vec<Page> {
    (0..count)
        .map(|i| {
            let plain = page_html(i).into_bytes();
            Page {
                gzip: http::gzip(&plain, flate2::Compression::default()).into(),
                plain: plain.into(),
            }
        })
        .collect()
}

async fn respond(pages: Arc<Vec<Page>>, delay: Duration, request: Request<Incoming>) -> Reply {
    let page = request
        .uri()
        .path()
        .strip_prefix("/page/")
        .and_then(|n| n.parse::<usize>().ok())
        .map(|n| &pages[n % pages.len()]);
    let Some(page) = page else {
        let mut response = Response::new(Full::new(Bytes::from_static(b"not found")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let gzip = http::offers_gzip(&request);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if gzip {
        http::html_gzip(StatusCode::OK, page.gzip.clone())
    } else {
        http::html(StatusCode::OK, page.plain.clone())
    }
}

fn main() {
    let options = parse_options().unwrap_or_else(|e| {
        eprintln!("fetch_bench_server: {e}");
        std::process::exit(2)
    });
    let pages = Arc::new(build_pages(options.pages));
    let runtime = http::runtime(options.threads);
    runtime.block_on(async move {
        let listener = http::bind(options.port).await;
        println!("listening on http://{}", listener.local_addr().unwrap());
        let _ = std::io::stdout().flush();
        let delay = options.delay;
        http::serve(listener, move |request| {
            respond(pages.clone(), delay, request)
        })
        .await;
    });
}
