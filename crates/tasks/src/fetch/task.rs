//! One worker's fetcher: the HTTP client, the per-host limits and the
//! settings, built once per worker process; and the `fetch` task itself.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use multiloop_worker::{request_retry, TaskError, WorkerInfo};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{redirect, Method, Url};
use serde::Serialize;

use super::errors::{describe, Limits, RedirectError};
use super::hosts::HostLimits;
use super::input::FetchInput;
use super::page::{scan_html, PageInfo};
use super::settings::FetchSettings;

/// What a `fetch` task answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FetchOutput {
    pub status: u16,
    /// The final URL, after redirects.
    pub url: String,
    /// Length of the decoded body.
    pub bytes: u64,
    pub content_type: Option<String>,
    pub title: Option<String>,
    pub links: u64,
    /// BLAKE3 of the decoded body, hex.
    pub hash: String,
    pub timings: Timings,
}

/// Milliseconds from the request's start (after any wait for a per-host
/// slot). There is no `connect_ms`: with connection reuse most requests
/// open no connection, and the client does not say which one a request
/// used, so a connect time could not be told honestly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timings {
    /// Until the response headers arrived (after the last redirect).
    pub first_byte_ms: f64,
    /// Until the last body byte arrived.
    pub total_ms: f64,
}

/// The handler future of the `fetch` kind.
pub type FetchFuture = Pin<Box<dyn Future<Output = Result<FetchOutput, TaskError>>>>;

/// The setup of the `fetch` kind for [`multiloop_worker::Worker::kind_with`]:
/// one client (and so one connection pool) per worker process.
pub async fn fetch_setup(
    info: WorkerInfo,
) -> Result<impl Fn(FetchInput) -> FetchFuture + 'static, String> {
    let fetcher = Rc::new(Fetcher::new(FetchSettings::from_info(&info)?)?);
    Ok(move |input: FetchInput| {
        let fetcher = fetcher.clone();
        Box::pin(async move { fetcher.fetch(input).await }) as FetchFuture
    })
}

/// Fetches pages for one worker's event loop.
#[derive(Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    hosts: HostLimits,
    settings: FetchSettings,
}

impl Fetcher {
    pub fn new(settings: FetchSettings) -> Result<Self, String> {
        // reqwest is built without a default crypto provider so that
        // aws-lc-rs (cmake, a long build) stays out; ring is installed for
        // the process. An error only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(settings.user_agent.as_str())
            .redirect(redirect_policy(settings.max_redirects));
        if let Some(timeout) = settings.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(timeout) = settings.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            client,
            hosts: HostLimits::new(settings.per_host),
            settings,
        })
    }

    pub fn settings(&self) -> &FetchSettings {
        &self.settings
    }

    /// Runs one task. Network errors are `failed` or `timeout`; any HTTP
    /// status, 4xx and 5xx included, is an ok output.
    pub async fn fetch(&self, input: FetchInput) -> Result<FetchOutput, TaskError> {
        let request = self.build_request(input)?;
        let host = host_key(request.url());
        let slot = self.hosts.acquire(&host).await;
        let limits = Limits {
            timeout: self.settings.timeout,
            connect_timeout: self.settings.connect_timeout,
        };
        let started = Instant::now();
        let mut response = self
            .client
            .execute(request)
            .await
            .map_err(|e| describe(&e, limits))?;
        let first_byte = started.elapsed();
        let status = response.status().as_u16();
        let url = response.url().to_string();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let max_body = self.settings.max_body;
        let over = || TaskError::failed(format!("body over {max_body} bytes"));
        // Known only for bodies that are not compressed: reqwest drops the
        // header when it decodes. Compressed bodies are capped as they are
        // decoded, which also stops a decompression bomb.
        let declared = response.content_length().unwrap_or(0);
        if declared > max_body {
            return Err(over());
        }
        let mut body = Vec::with_capacity(declared as usize);
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e, limits))? {
            if (body.len() + chunk.len()) as u64 > max_body {
                return Err(over());
            }
            body.extend_from_slice(&chunk);
        }
        let total = started.elapsed();
        // The slot covers the network part only; parsing needs no host.
        drop(slot);

        let page = if is_html(content_type.as_deref()) {
            scan_html(&body)
        } else {
            PageInfo::default()
        };
        if self.settings.retry_status.contains(status) {
            request_retry();
        }
        Ok(FetchOutput {
            status,
            url,
            bytes: body.len() as u64,
            content_type,
            title: page.title,
            links: page.links,
            hash: blake3::hash(&body).to_hex().to_string(),
            timings: Timings {
                first_byte_ms: millis(first_byte),
                total_ms: millis(total),
            },
        })
    }

    /// Checks the line's URL, method and headers; any problem is
    /// `bad_input`, since another attempt cannot fix it.
    fn build_request(&self, input: FetchInput) -> Result<reqwest::Request, TaskError> {
        let request = input.into_request();
        let url = Url::parse(&request.url)
            .map_err(|e| TaskError::bad_input(format!("invalid URL {:?}: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TaskError::bad_input(format!(
                "unsupported scheme {:?} in {:?} (http and https only)",
                url.scheme(),
                request.url
            )));
        }
        let method = match request.method {
            None => Method::GET,
            Some(name) => Method::from_bytes(name.to_ascii_uppercase().as_bytes())
                .map_err(|_| TaskError::bad_input(format!("invalid HTTP method {name:?}")))?,
        };
        let mut built = reqwest::Request::new(method, url);
        for (name, value) in request.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| TaskError::bad_input(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::from_str(&value)
                .map_err(|_| TaskError::bad_input(format!("invalid value for header {name:?}")))?;
            built.headers_mut().append(header, value);
        }
        Ok(built)
    }
}

/// Follows up to `max` redirects and stops at the first URL seen twice
/// (without a cookie store, a repeat is a loop, not a login dance).
fn redirect_policy(max: usize) -> redirect::Policy {
    if max == 0 {
        return redirect::Policy::none();
    }
    redirect::Policy::custom(move |attempt| {
        // `previous` starts with the original URL, which is no redirect.
        if attempt.previous().len() > max {
            attempt.error(RedirectError::TooMany(max))
        } else if attempt.previous().contains(attempt.url()) {
            let url = attempt.url().to_string();
            attempt.error(RedirectError::Loop(url))
        } else {
            attempt.follow()
        }
    })
}

/// The per-host limit's key: host and port, as connections are pooled.
fn host_key(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// HTML, or no content type at all (then the body is probably HTML too).
fn is_html(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return true;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "text/html" || essence == "application/xhtml+xml"
}

fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_told_by_its_content_type() {
        assert!(is_html(Some("text/html; charset=utf-8")));
        assert!(is_html(Some("Application/XHTML+XML")));
        assert!(is_html(None));
        assert!(!is_html(Some("application/json")));
        assert!(!is_html(Some("image/png")));
    }

    #[test]
    fn hosts_are_keyed_with_their_port() {
        let key = |u: &str| host_key(&Url::parse(u).unwrap());
        assert_eq!(key("https://Example.com/a"), "example.com:443");
        assert_eq!(key("http://127.0.0.1:8080/"), "127.0.0.1:8080");
    }

    #[test]
    fn bad_lines_are_bad_input() {
        let fetcher = Fetcher::new(FetchSettings::default()).unwrap();
        for (line, message) in [
            (r#""not a url""#, "invalid URL"),
            (r#""ftp://example.com/""#, "unsupported scheme"),
            (
                r#"{"url":"http://a/","method":"GE T"}"#,
                "invalid HTTP method",
            ),
            (
                r#"{"url":"http://a/","headers":{"bad name":"x"}}"#,
                "invalid header name",
            ),
            (
                r#"{"url":"http://a/","headers":{"x":"a\nb"}}"#,
                "invalid value",
            ),
        ] {
            let input: FetchInput = serde_json::from_str(line).unwrap();
            let error = fetcher.build_request(input).unwrap_err();
            assert_eq!(error.kind, multiloop_worker::ErrorKind::BadInput, "{line}");
            assert!(error.message.contains(message), "{line}: {}", error.message);
        }
        let input: FetchInput =
            serde_json::from_str(r#"{"url":"http://a/x","method":"head","headers":{"X-A":"1"}}"#)
                .unwrap();
        let request = fetcher.build_request(input).unwrap();
        assert_eq!(request.method(), Method::HEAD);
        assert_eq!(request.headers()["x-a"], "1");
    }
}
