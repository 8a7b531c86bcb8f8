//! The `fetch` kind end to end: real `supervisor` and `worker` binaries
//! against an HTTP server this test starts on 127.0.0.1 (hyper, on its own
//! tokio runtime), with compressed bodies, redirects, slow and broken
//! endpoints; and the `resolve` example worker under `--worker`.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, LOCATION};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

use common::*;

// ---------------------------------------------------------------- server

/// What the server saw, for assertions about the client's behaviour.
#[derive(Debug, Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
    /// Requests whose `Accept-Encoding` lacked gzip, br or deflate.
    no_compression: AtomicUsize,
    /// `/hold/*` requests in flight now, and at most.
    holding: AtomicUsize,
    held_max: AtomicUsize,
    /// `/flaky/ID` requests so far, by ID.
    flaky: Mutex<HashMap<String, u32>>,
    /// When each `/busy/ID` request arrived.
    busy_at: Mutex<Vec<(String, std::time::Instant)>>,
}

/// The test server; dropping it stops its runtime.
struct Server {
    base: String,
    seen: Arc<Seen>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Seen::default());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = seen.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                state.connections.fetch_add(1, SeqCst);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(respond(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server {
            base,
            seen,
            _runtime: runtime,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
    response
}

fn redirect(to: &str) -> Reply {
    let mut response = reply(302, "text/plain", "moved");
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_str(to).unwrap());
    response
}

fn encoded(mut response: Reply, encoding: &str, body: &[u8]) -> Reply {
    let compressed = compress(encoding, body);
    *response.body_mut() = Full::new(Bytes::from(compressed));
    if encoding != "identity" {
        response
            .headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_str(encoding).unwrap());
    }
    response
}

fn compress(encoding: &str, body: &[u8]) -> Vec<u8> {
    match encoding {
        "identity" => body.to_vec(),
        "gzip" => {
            let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            out.write_all(body).unwrap();
            out.finish().unwrap()
        }
        // HTTP's "deflate" is the zlib format.
        "deflate" => {
            let mut out = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            out.write_all(body).unwrap();
            out.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            writer.write_all(body).unwrap();
            drop(writer);
            out
        }
        other => panic!("unknown encoding {other}"),
    }
}

fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// Page `i`: a title full of entities inside whitespace, `i % 7` links
/// plus one in capitals, and markup that must not count (script, comment,
/// an anchor without href).
fn page_html(i: u64) -> String {
    let mut html = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>\n  Page {i} &amp; \
         &lt;friends&gt; &quot;q&quot; &#39;s\n</title></head><body>\n\
         <script>var s = '<a href=\"/fake\">';</script><!-- <a href=\"/comment\"> -->\n"
    );
    for j in 0..i % 7 {
        html += &format!("<p><a href=\"/page/{}\">next {j}</a></p>\n", i + j + 1);
    }
    html += "<A HREF=/>home</A> <a name=top>top</a>\n";
    html += &"<p>some text for the compressors to chew on</p>\n".repeat((i % 5) as usize);
    html + "</body></html>\n"
}

fn page_title(i: u64) -> String {
    format!("Page {i} & <friends> \"q\" 's")
}

fn page_links(i: u64) -> u64 {
    i % 7 + 1
}

async fn respond(seen: &Seen, request: Request<Incoming>) -> Reply {
    seen.requests.fetch_add(1, SeqCst);
    let offered = request
        .headers()
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !["gzip", "br", "deflate"]
        .iter()
        .all(|e| offered.contains(e))
    {
        seen.no_compression.fetch_add(1, SeqCst);
    }
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["page", i] => {
            let i: u64 = i.parse().unwrap();
            let html = page_html(i);
            let encoding = param(&query, "enc").unwrap_or("identity");
            encoded(
                reply(200, "text/html; charset=utf-8", ""),
                encoding,
                html.as_bytes(),
            )
        }
        ["redirect", i] => redirect(&format!("/page/{i}?enc=gzip")),
        ["loop", "a"] => redirect("/loop/b"),
        ["loop", "b"] => redirect("/loop/a"),
        ["chain", "0"] => reply(200, "text/html", "<title>end of chain</title>"),
        ["chain", n] => redirect(&format!("/chain/{}", n.parse::<u32>().unwrap() - 1)),
        ["status", code] => {
            let code: u16 = code.parse().unwrap();
            reply(code, "text/html", format!("<title>status {code}</title>"))
        }
        ["json"] => reply(200, "application/json", r#"{"title":"<title>no</title>"}"#),
        // "Привет & мир" in windows-1251, declared by the header.
        ["charset", "header"] => reply(
            200,
            "text/html; charset=windows-1251",
            &b"<title>\xcf\xf0\xe8\xe2\xe5\xf2 &amp; \xec\xe8\xf0</title>"[..],
        ),
        // "日本" in Shift_JIS, declared by a meta.
        ["charset", "meta"] => reply(
            200,
            "text/html",
            &b"<meta http-equiv=content-type content='text/html; charset=Shift_JIS'><title>\x93\xfa\x96\x7b</title>"[..],
        ),
        ["slow"] => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            reply(200, "text/html", "<title>too late</title>")
        }
        ["big"] => reply(200, "text/plain", vec![b'x'; 2_000_000]),
        ["bomb"] => encoded(reply(200, "text/plain", ""), "gzip", &vec![0u8; 8 << 20]),
        ["hold", _] => {
            let now = seen.holding.fetch_add(1, SeqCst) + 1;
            seen.held_max.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen.holding.fetch_sub(1, SeqCst);
            reply(200, "text/html", "<title>held</title>")
        }
        ["flaky", id] => {
            let hits = {
                let mut flaky = seen.flaky.lock().unwrap();
                let hits = flaky.entry(id.to_string()).or_insert(0);
                *hits += 1;
                *hits
            };
            let fail: u32 = param(&query, "fail").unwrap().parse().unwrap();
            let code: u16 = param(&query, "code").unwrap_or("503").parse().unwrap();
            if hits <= fail {
                reply(
                    code,
                    "text/html",
                    format!("<title>try again {hits}</title>"),
                )
            } else {
                reply(200, "text/html", format!("<title>ok after {hits}</title>"))
            }
        }
        ["robots.txt"] => reply(
            200,
            "text/plain",
            "User-agent: *\nDisallow: /page/1\nAllow: /page/1/ok\n",
        ),
        ["busy", id] => {
            let hits = {
                let mut flaky = seen.flaky.lock().unwrap();
                let hits = flaky.entry(format!("busy/{id}")).or_insert(0);
                *hits += 1;
                *hits
            };
            seen.busy_at
                .lock()
                .unwrap()
                .push((id.to_string(), std::time::Instant::now()));
            let fail: u32 = param(&query, "fail").unwrap().parse().unwrap();
            if hits <= fail {
                let mut response = reply(429, "text/html", "<title>slow down</title>");
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
                response
            } else {
                reply(200, "text/html", format!("<title>ok after {hits}</title>"))
            }
        }
        ["echo"] => {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string()
            };
            let title = format!(
                "{} {} {}",
                request.method(),
                header("x-test"),
                header("user-agent")
            );
            reply(200, "text/html", format!("<title>{title}</title>"))
        }
        _ => reply(404, "text/html", "<title>not found</title>"),
    }
}

/// A port that accepts, reads the request, and resets the connection
/// (SO_LINGER 0 makes `close` send RST instead of FIN).
fn resetting_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid socket fd and a pointer to a live `linger`
            // of the size passed.
            unsafe {
                use std::os::fd::AsRawFd;
                libc::setsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
            drop(stream);
        }
    });
    port
}

/// A port nobody listens on (bound, then closed).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------- running

/// Runs the supervisor on `input` through stdin, with no proxy settings
/// from the environment (requests must go straight to 127.0.0.1).
fn run_fetch(args: &[&str], input: &str) -> Output {
    let mut command = supervisor();
    for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        command.env_remove(var).env_remove(var.to_uppercase());
    }
    command.args(["--task", "fetch", "--input", "-"]).args(args);
    run_command(command, input.as_bytes())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json_line(value: &str) -> String {
    Value::String(value.to_string()).to_string() + "\n"
}

/// What one input line must give.
#[derive(Debug)]
enum Expect {
    Page {
        i: u64,
        path: String,
    },
    Status(u16),
    /// A page whose title is in another encoding than UTF-8.
    Title(&'static str),
    Echo,
    Error {
        kind: &'static str,
        text: &'static str,
    },
}

// ---------------------------------------------------------------- tests

#[test]
fn two_thousand_urls_each_answered_once_with_the_right_fields() {
    let server = Server::start();
    let reset = resetting_port();
    let refused = closed_port();
    let mut lines: Vec<(String, Expect)> = Vec::new();
    let encodings = ["identity", "gzip", "br", "deflate"];
    let error = |kind, text| Expect::Error { kind, text };
    let mut specials: Vec<(String, Expect)> = Vec::new();
    for i in 0..50 {
        specials.push((
            json_line(&server.url(&format!("/redirect/{i}"))),
            Expect::Page {
                i,
                path: format!("/page/{i}?enc=gzip"),
            },
        ));
    }
    for code in [404, 500] {
        for _ in 0..10 {
            specials.push((
                json_line(&server.url(&format!("/status/{code}"))),
                Expect::Status(code),
            ));
        }
    }
    for _ in 0..5 {
        let url = |path: &str| json_line(&server.url(path));
        specials.push((url("/loop/a"), error("failed", "redirect loop")));
        specials.push((
            url("/chain/12"),
            error("failed", "too many redirects (more than 10)"),
        ));
        specials.push((url("/big"), error("failed", "body over 1000000 bytes")));
        specials.push((url("/bomb"), error("failed", "body over 1000000 bytes")));
    }
    specials.push((json_line(&server.url("/chain/10")), Expect::Status(200)));
    for (path, title) in [
        ("/charset/header", "Привет & мир"),
        ("/charset/meta", "日本"),
    ] {
        specials.push((json_line(&server.url(path)), Expect::Title(title)));
    }
    for _ in 0..3 {
        specials.push((
            json_line(&server.url("/slow")),
            error("timeout", "timed out after 5000 ms"),
        ));
        specials.push((
            json_line(&format!("http://127.0.0.1:{reset}/")),
            error("failed", "connection reset"),
        ));
        specials.push((
            json_line(&format!("http://127.0.0.1:{refused}/")),
            error("failed", "connect: connection refused"),
        ));
    }
    for _ in 0..2 {
        // A label over 63 bytes: the resolver rejects it without a query,
        // so the test stays off the network.
        let name = format!("http://{}.invalid/", "a".repeat(64));
        specials.push((json_line(&name), error("failed", "dns: ")));
        // TLS spoken to a plain-HTTP port.
        let tls = server.base.replace("http://", "https://") + "/";
        specials.push((json_line(&tls), error("failed", "tls: ")));
    }
    specials.push(("\"not a url\"\n".into(), error("bad_input", "invalid URL")));
    specials.push((
        json_line("ftp://127.0.0.1/"),
        error("bad_input", "unsupported scheme"),
    ));
    specials.push((
        "42\n".into(),
        error("bad_input", "a URL string or an object"),
    ));
    specials.push((
        format!(
            "{{\"url\":{:?},\"method\":\"post\",\"headers\":{{\"X-Test\":\"yes\"}}}}\n",
            server.url("/echo")
        ),
        Expect::Echo,
    ));
    let pages = 2000 - specials.len();
    for i in 0..pages as u64 {
        let path = format!("/page/{i}?enc={}", encodings[(i % 4) as usize]);
        lines.push((json_line(&server.url(&path)), Expect::Page { i, path }));
    }
    // Spread the special lines through the pages.
    for (n, special) in specials.into_iter().enumerate() {
        let at = (n * 13) % lines.len();
        lines.insert(at, special);
    }
    assert_eq!(lines.len(), 2000);
    let input: String = lines.iter().map(|(line, _)| line.as_str()).collect();

    let output = run_fetch(
        &[
            "--workers",
            "2",
            "--concurrency",
            "64",
            "--set",
            // 5 s, not 1.5 s: on a busy 2-core machine a healthy fetch among
            // 2,000 can take longer than that; only /slow (30 s) must time out.
            "timeout_ms=5000",
            "--set",
            "max_body=1000000",
        ],
        &input,
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "some failed: {}",
        stderr(&output)
    );
    let map = by_seq(&records(&output.stdout));
    assert_eq!(map.len(), 2000, "one record per line");
    let mut hashes: HashMap<u64, String> = HashMap::new();
    for (n, (line, expect)) in lines.iter().enumerate() {
        let seq = n as u64 + 1;
        let record = &map[&seq];
        let what = format!("line {seq} {line:?}: {record}");
        assert_eq!(record["attempts"], 1, "{what}");
        let ok = &record["ok"];
        match expect {
            Expect::Page { i, path } => {
                let html = page_html(*i);
                assert_eq!(ok["status"], 200, "{what}");
                assert_eq!(ok["url"], server.url(path), "{what}");
                assert_eq!(ok["bytes"], html.len(), "{what}");
                assert_eq!(ok["title"], page_title(*i), "{what}");
                assert_eq!(ok["links"], page_links(*i), "{what}");
                assert_eq!(ok["content_type"], "text/html; charset=utf-8", "{what}");
                let hash = ok["hash"].as_str().unwrap().to_string();
                assert_eq!(hash.len(), 64, "{what}");
                // The same page under another encoding has the same hash.
                assert_eq!(hashes.entry(*i).or_insert(hash.clone()), &hash, "{what}");
                let timings = &ok["timings"];
                let first = timings["first_byte_ms"].as_f64().unwrap();
                let total = timings["total_ms"].as_f64().unwrap();
                assert!(0.0 < first && first <= total, "{what}");
            }
            Expect::Status(code) => {
                assert_eq!(ok["status"], *code, "{what}");
                assert_eq!(ok["links"], 0, "{what}");
            }
            Expect::Title(title) => {
                assert_eq!(ok["status"], 200, "{what}");
                assert_eq!(ok["title"], *title, "{what}");
            }
            Expect::Echo => {
                let version = env!("CARGO_PKG_VERSION");
                assert_eq!(
                    ok["title"],
                    format!("POST yes multiloop/{version}"),
                    "{what}"
                );
            }
            Expect::Error { kind, text } => {
                assert_eq!(record["error"]["kind"], *kind, "{what}");
                let message = record["error"]["message"].as_str().unwrap();
                assert!(message.contains(text), "{what}");
            }
        }
    }
    let seen = &server.seen;
    assert_eq!(
        seen.no_compression.load(SeqCst),
        0,
        "gzip, br and deflate offered"
    );
    // Connections are reused: about one per request slot, not per request.
    let connections = seen.connections.load(SeqCst);
    let requests = seen.requests.load(SeqCst);
    assert!(requests > 2000, "{requests} requests");
    assert!(
        connections <= 2 * 64 + 40,
        "{connections} connections for {requests} requests"
    );
}

#[test]
fn per_host_holds_across_all_workers() {
    let urls = |server: &Server| -> String {
        (0..60)
            .map(|i| json_line(&server.url(&format!("/hold/{i}"))))
            .collect()
    };
    for (args, most) in [
        (&["--workers", "2", "--per-host", "3"][..], 3),
        (&["--workers", "3", "--per-host", "2"][..], 2),
        // The default: 8 in all, whatever the number of workers.
        (&["--workers", "2"][..], 8),
    ] {
        let server = Server::start();
        let output = run_fetch(args, &urls(&server));
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(records(&output.stdout).len(), 60);
        let max = server.seen.held_max.load(SeqCst);
        assert_eq!(max, most, "{args:?}: at most {most} at once in all workers");
    }

    let unlimited = Server::start();
    let output = run_fetch(&["--workers", "2", "--per-host", "0"], &urls(&unlimited));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let max = unlimited.seen.held_max.load(SeqCst);
    assert!(max > 8, "with --per-host 0 many more run at once: {max}");
}

/// A plain HTTP/1.0 server on its own threads: `listen(backlog)`, one
/// response per connection (`Connection: close`) after `delay`. It counts
/// the connections open at once, from accept to its own close, and
/// records every time that count went past `limit`.
struct RawServer {
    port: u16,
    open: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
    over: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
}

impl RawServer {
    fn start(backlog: i32, threaded: bool, delay: Duration, limit: usize) -> Self {
        let listener = listen(backlog);
        let port = listener.local_addr().unwrap().port();
        let server = RawServer {
            port,
            open: Arc::default(),
            max_open: Arc::default(),
            over: Arc::default(),
            served: Arc::default(),
        };
        let (open, max_open, over, served) = (
            server.open.clone(),
            server.max_open.clone(),
            server.over.clone(),
            server.served.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let now = open.fetch_add(1, SeqCst) + 1;
                max_open.fetch_max(now, SeqCst);
                if now > limit {
                    over.fetch_add(1, SeqCst);
                }
                let (open, served) = (open.clone(), served.clone());
                let serve = move || {
                    // The count drops just before the response goes out: a
                    // client can free its slot (and so connect again) only
                    // after it has the response, so any later connect is
                    // caused by this one ending, while counting on to the
                    // close would race the client's next connect.
                    answer(stream, delay, || {
                        open.fetch_sub(1, SeqCst);
                    });
                    served.fetch_add(1, SeqCst);
                };
                if threaded {
                    std::thread::spawn(serve);
                } else {
                    serve();
                }
            }
        });
        server
    }

    fn urls(&self, n: usize) -> String {
        (0..n)
            .map(|i| json_line(&format!("http://127.0.0.1:{}/page/{i}", self.port)))
            .collect()
    }
}

/// A listening socket with the given backlog (std's is 128).
fn listen(backlog: i32) -> std::net::TcpListener {
    use std::os::fd::FromRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fd = std::os::fd::IntoRawFd::into_raw_fd(listener);
    // SAFETY: `fd` is a bound socket we own; listen only changes its queue.
    unsafe {
        assert_eq!(libc::listen(fd, backlog), 0);
        std::net::TcpListener::from_raw_fd(fd)
    }
}

/// Reads one request and answers it (calling `done` just before), then closes.
fn answer(mut stream: std::net::TcpStream, delay: Duration, done: impl FnOnce()) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return done(),
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    let body = "<title>small</title>";
    done();
    let _ = write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

#[test]
fn a_server_counting_connections_never_sees_more_than_per_host() {
    for (args, limit) in [
        (&["--workers", "2", "--per-host", "4"][..], 4),
        (&["--workers", "3"][..], 8),
        (&["--workers", "2", "--per-host", "auto"][..], usize::MAX),
    ] {
        let server = RawServer::start(128, true, Duration::from_millis(20), limit);
        let output = run_fetch(args, &server.urls(300));
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(records(&output.stdout).len(), 300);
        let over = server.over.load(SeqCst);
        assert_eq!(over, 0, "{args:?}: {over} connections past {limit}");
        let max = server.max_open.load(SeqCst);
        assert!(max >= 2, "{args:?}: the limit is used ({max})");
    }
}

#[test]
fn a_small_server_with_a_tiny_backlog_gets_every_page_with_default_flags() {
    // Single-threaded, one request at a time, a listen backlog of 5: what
    // thousands of simultaneous connects make drop handshakes.
    let server = RawServer::start(5, false, Duration::ZERO, usize::MAX);
    let output = run_fetch(&[], &server.urls(500));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let map = by_seq(&records(&output.stdout));
    assert_eq!(map.len(), 500);
    for record in map.values() {
        assert_eq!(record["ok"]["status"], 200, "{record}");
        assert_eq!(record["ok"]["attempts"], 1, "{record}");
    }
    assert_eq!(server.served.load(SeqCst), 500);

    // The adaptive limit gets them all too.
    let server = RawServer::start(5, false, Duration::ZERO, usize::MAX);
    let output = run_fetch(&["--per-host", "auto"], &server.urls(500));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(records(&output.stdout).len(), 500);
}

#[test]
fn under_ulimit_256_no_task_fails_for_want_of_descriptors() {
    let server = Server::start();
    let input: String = (0..1500)
        .map(|i| json_line(&server.url(&format!("/hold/{i}"))))
        .collect();
    for per_host in [None, Some("0")] {
        let mut command = supervisor();
        for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
            command.env_remove(var).env_remove(var.to_uppercase());
        }
        command.args(["--task", "fetch", "--input", "-", "--workers", "2"]);
        if let Some(n) = per_host {
            command.args(["--per-host", n]);
        }
        // SAFETY: setrlimit is async-signal-safe; no allocation here.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 256,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let output = run_command(command, input.as_bytes());
        let log = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(0),
            "--per-host {per_host:?}: {log}"
        );
        let map = by_seq(&records(&output.stdout));
        assert_eq!(map.len(), 1500);
        assert!(map.values().all(|r| r["ok"]["status"] == 200));
        assert!(!log.contains("os error 24"), "{log}");
        if per_host.is_some() {
            let max = server.seen.held_max.load(SeqCst);
            assert!(max > 8, "many at once within the budget: {max}");
            assert!(
                log.contains("connection budget"),
                "says once what limited it: {log}"
            );
        }
    }
}

#[test]
fn status_429_waits_for_retry_after_and_resets_are_retried() {
    let server = Server::start();
    let reset = resetting_port();
    let input = format!(
        "{}{}{}",
        json_line(&server.url("/busy/a?fail=2")),
        json_line(&format!("http://127.0.0.1:{reset}/")),
        json_line(&server.url("/page/2")),
    );
    let output = run_fetch(&["--workers", "1"], &input);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let map = by_seq(&records(&output.stdout));
    let busy = &map[&1]["ok"];
    assert_eq!(busy["status"], 200, "{busy}");
    assert_eq!(busy["attempts"], 3, "{busy}");
    assert_eq!(
        busy["retried"],
        serde_json::json!(["status 429", "status 429"])
    );
    let times: Vec<std::time::Instant> = server
        .seen
        .busy_at
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(times.len(), 3);
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(990),
            "Retry-After: 1 honoured: {gap:?}"
        );
    }
    let error = &map[&2]["error"];
    assert_eq!(error["kind"], "failed", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("connection reset by peer (attempt 3; retried after: "),
        "{message}"
    );
    // Other hosts did not wait for the busy one.
    let page = &map[&3]["ok"];
    assert_eq!(page["attempts"], 1);

    // --retries 0: one attempt, the 429 is the answer.
    let output = run_fetch(
        &["--retries", "0"],
        &json_line(&server.url("/busy/b?fail=1")),
    );
    let record = &records(&output.stdout)[0];
    assert_eq!(record["ok"]["status"], 429, "{record}");
    assert_eq!(record["ok"]["attempts"], 1, "{record}");
}

#[test]
fn robots_obey_skips_disallowed_urls() {
    let server = Server::start();
    let input = format!(
        "{}{}",
        json_line(&server.url("/page/1")),
        json_line(&server.url("/page/2")),
    );
    let output = run_fetch(&["--workers", "1", "--set", "robots=obey"], &input);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let map = by_seq(&records(&output.stdout));
    let message = map[&1]["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("skipped: ")
            && message.contains("robots.txt disallows it (Disallow: /page/1)"),
        "{message}"
    );
    assert_eq!(map[&2]["ok"]["status"], 200);
}

#[test]
fn retry_status_runs_the_task_again_and_keeps_the_last_answer() {
    let server = Server::start();
    let lines = [
        ("/flaky/a?fail=2", 200, 3),          // recovers on the last try
        ("/flaky/b?fail=9", 503, 3),          // never does: the last 503 is kept
        ("/flaky/c?fail=1&code=502", 200, 2), // in the 500-599 range
        ("/flaky/d?fail=1&code=429", 200, 2), // listed alone
        ("/flaky/e?fail=1&code=404", 404, 1), // not listed
        ("/page/1", 200, 1),
    ];
    let input: String = lines
        .iter()
        .map(|(p, ..)| json_line(&server.url(p)))
        .collect();
    let output = run_fetch(
        &[
            "--workers",
            "2",
            "--retry-status",
            "429,500-599",
            "--retries",
            "2",
            "--set",
            "retry_backoff_ms=10",
        ],
        &input,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let map = by_seq(&records(&output.stdout));
    for (n, (path, status, attempts)) in lines.iter().enumerate() {
        let record = &map[&(n as u64 + 1)];
        assert_eq!(record["ok"]["status"], *status, "{path}: {record}");
        // Retried inside the worker: one supervisor attempt.
        assert_eq!(record["ok"]["attempts"], *attempts, "{path}: {record}");
        assert_eq!(record["attempts"], 1, "{path}: {record}");
    }

    // Statuses off the list are answers like any other.
    let output = run_fetch(
        &["--retry-status", "500", "--set", "retry_backoff_ms=10"],
        &json_line(&server.url("/flaky/f?fail=1")),
    );
    let record = &records(&output.stdout)[0];
    assert_eq!(record["ok"]["status"], 503, "{record}");
    assert_eq!(record["ok"]["attempts"], 1, "{record}");
}

#[test]
fn lines_takes_bare_urls() {
    let server = Server::start();
    let input = format!(
        "{}\n\n{}\n{}\n",
        server.url("/page/3?enc=br"),
        server.url("/redirect/4"),
        server.url("/json")
    );
    let output = run_fetch(&["--workers", "1", "--lines"], &input);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let map = by_seq(&records(&output.stdout));
    assert_eq!(map.len(), 3, "the blank line is no task");
    assert_eq!(map[&1]["ok"]["title"], page_title(3));
    assert_eq!(map[&3]["ok"]["url"], server.url("/page/4?enc=gzip"));
    assert_eq!(map[&3]["ok"]["links"], page_links(4));
    // Not HTML: no title or links are looked for.
    assert_eq!(map[&4]["ok"]["title"], Value::Null);
    assert_eq!(map[&4]["ok"]["content_type"], "application/json");
}

#[test]
fn a_bad_setting_stops_the_run_with_its_name() {
    let output = run_fetch(
        &[
            "--workers",
            "1",
            "--set",
            "timeout_ms=soon",
            "--max-restarts",
            "2",
        ],
        "\"http://127.0.0.1:9/\"\n",
    );
    // A setup error, as promised: exit 2, not just any failure.
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let stderr = stderr(&output);
    assert!(stderr.contains("timeout_ms"), "{stderr}");
}

// ---------------------------------------------------------------- example

/// The `resolve` example of `multiloop-worker`. `cargo test --workspace`
/// builds every member's examples before running tests; when only this
/// test is run, it is built here.
fn resolve_example() -> PathBuf {
    let release = std::path::Path::new(SUPERVISOR).parent().unwrap();
    let path = release.join("examples").join("resolve");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "multiloop-worker", "--example", "resolve"]);
        if release.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the resolve example");
    }
    path
}

#[test]
fn the_resolve_example_runs_under_the_supervisor() {
    let worker = resolve_example();
    let name = "a".repeat(64) + ".invalid";
    let input = format!(
        "\"localhost\"\n{{\"name\":\"127.0.0.1\"}}\n\"localhost\"\n{}",
        json_line(&name)
    );
    let output = supervisor()
        .arg("--worker")
        .arg(&worker)
        .args(["--workers", "1", "--concurrency", "1", "--set", "family=4"])
        .args(["--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(input.as_bytes())?;
            Ok(wait_output(child, RUN_LIMIT, "the resolve example"))
        })
        .expect("supervisor runs");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let map = by_seq(&records(&output.stdout));
    assert_eq!(map[&1]["ok"]["addrs"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(map[&1]["ok"]["cached"], false);
    assert_eq!(map[&2]["ok"]["addrs"], serde_json::json!(["127.0.0.1"]));
    // One worker, one task at a time: the second lookup is the cache's.
    assert_eq!(map[&3]["ok"]["cached"], true);
    assert_eq!(map[&4]["error"]["kind"], "failed");
    let message = map[&4]["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("cannot resolve"), "{message}");
}

/// A keep-alive server that closes its connections early the way a busy
/// one does: on each connection it answers the first request in full (HTTP/1.1,
/// kept alive), then reads the next one and closes without a word (FIN);
/// paths under `/cut` instead get half their body, then the close.
fn closing_keep_alive_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                for served in 0.. {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    if served > 0 {
                        return; // Closes the kept-alive connection unanswered.
                    }
                    let body = "<title>kept alive</title>".repeat(40);
                    let cut = request.starts_with(b"GET /cut");
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{}",
                        body.len(),
                        if cut { &body[..body.len() / 2] } else { &body[..] }
                    );
                    let _ = stream.flush();
                    if cut {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn connections_closed_early_by_a_keep_alive_server_are_retried() {
    let port = closing_keep_alive_port();
    let mut input = String::new();
    for i in 0..40 {
        input.push_str(&json_line(&format!("http://127.0.0.1:{port}/page/{i}")));
    }
    // One request at a time: every request after a connection's first
    // meets the close, and is retried (the pool may hand it another used
    // connection, hence the room for retries).
    let output = run_fetch(
        &["--workers", "1", "--per-host", "1", "--retries", "6"],
        &input,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let pages = records(&output.stdout);
    assert_eq!(pages.len(), 40, "{}", stderr(&output));
    let mut retried = 0;
    for record in &pages {
        let ok = &record["ok"];
        assert_eq!(ok["status"], 200, "{record}");
        if ok["attempts"] != 1 {
            retried += 1;
            let reasons = ok["retried"].to_string();
            assert!(reasons.contains("connection closed before"), "{record}");
        }
    }
    assert!(retried > 0, "the server closed kept-alive connections");

    // Cut mid-body on every attempt: retried, then failed, named.
    let cut = json_line(&format!("http://127.0.0.1:{port}/cut/1"));
    let output = run_fetch(&["--workers", "1", "--retries", "1"], &cut);
    let record = &records(&output.stdout)[0];
    let message = record["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("connection closed before"), "{record}");
    assert!(message.contains("(attempt 2; retried after: "), "{record}");
}

#[test]
fn max_redirects_0_gives_the_redirect_itself_as_the_result() {
    let server = Server::start();
    let url = server.url("/redirect/4");
    let output = run_fetch(
        &["--workers", "1", "--set", "max_redirects=0"],
        &json_line(&url),
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let record = &records(&output.stdout)[0];
    let ok = &record["ok"];
    assert_eq!(ok["status"], 302, "{record}");
    assert_eq!(ok["url"], url, "not followed: {record}");
}
