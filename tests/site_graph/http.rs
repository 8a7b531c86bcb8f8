//! The HTTP side of the generated sites: HTML answers, gzip when the client
//! offers it, and the hyper accept loop on a runtime of their own.
//!
//! Shared by the site graph (`tests/site_graph`, so `tests/crawl_fetch.rs`
//! and `site_graph_server`) and `crates/tasks/examples/fetch_bench_server.rs`
//! (through `#[path]`), so the servers the tests and benchmarks fetch from
//! answer the same way.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

pub type Reply = Response<Full<Bytes>>;

/// An HTML answer with `status`.
pub fn html(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// An HTML answer whose `body` is already gzip-compressed.
pub fn html_gzip(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut response = html(status, body);
    response
        .headers_mut()
        .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    response
}

/// Whether the request's `Accept-Encoding` offers gzip.
pub fn offers_gzip(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"))
}

/// `body` gzip-compressed at `level`.
pub fn gzip(body: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut out = flate2::write::GzEncoder::new(Vec::new(), level);
    out.write_all(body).expect("writing to a Vec");
    out.finish().expect("writing to a Vec")
}

/// A multi-thread tokio runtime of `threads` workers.
pub fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A listener on 127.0.0.1:`port` (0: any free port).
pub async fn bind(port: u16) -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind 127.0.0.1")
}

/// Serves HTTP/1.1 on `listener` until the runtime stops, each request
/// answered by `answer` (a clone of it per connection).
pub async fn serve<F, A>(listener: tokio::net::TcpListener, answer: F)
where
    F: Fn(Request<Incoming>) -> A + Clone + Send + Sync + 'static,
    A: Future<Output = Reply> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Small answers: sent at once, not held back for more.
        let _ = stream.set_nodelay(true);
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let reply = answer(request);
                async move { Ok::<_, Infallible>(reply.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
