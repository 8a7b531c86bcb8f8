//! One worker's fetcher: the HTTP client, the per-host limits and the
//! settings, built once per worker process; and the `fetch` task itself.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use multiloop_worker::{TaskError, WorkerInfo};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE, LOCATION};
use reqwest::{redirect, Method, Url};
use serde::Serialize;
use tokio::sync::OnceCell;

use super::budget::{default_connections, nofile_limit, Budget};
use super::errors::{describe, out_of_descriptors, retry_of, Limits, RedirectError, Retry};
use super::follow::{Discovered, FollowCounts};
use super::hosts::{Hosts, PerHost};
use super::input::FetchInput;
use super::jitter;
use super::page::{scan_html, scan_html_links, PageInfo, PageLinks};
use super::robots::Robots;
use super::settings::FetchSettings;
use super::slots::SlotFile;

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
    /// Requests made for this task: 1, or more after retries.
    pub attempts: u32,
    /// Why each earlier attempt was tried again (`"status 503"`,
    /// `"connection reset by peer"`); the last one's end is the record.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retried: Vec<String>,
    /// A 3xx's `Location`, resolved against the URL that answered (seen
    /// with `--follow`, or `max_redirects=0`: otherwise redirects are
    /// followed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    /// With `--follow`: what became of the page's links (or of its
    /// redirect's target), each counted once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow: Option<FollowCounts>,
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
    // The supervisor is our parent; its workers share the per-host slots.
    let supervisor = std::os::unix::process::parent_id();
    let fetcher = Rc::new(Fetcher::shared(
        FetchSettings::from_info(&info)?,
        supervisor,
    )?);
    Ok(move |input: FetchInput| {
        let fetcher = fetcher.clone();
        Box::pin(async move { fetcher.fetch(input).await }) as FetchFuture
    })
}

/// Fetches pages for one worker's event loop.
#[derive(Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    hosts: Rc<Hosts>,
    budget: Budget,
    robots: RefCell<HashMap<String, Rc<OnceCell<Robots>>>>,
    settings: FetchSettings,
}

/// How one attempt ended.
enum Attempt {
    Answer(Box<Answer>),
    Failed(TaskError, Retry),
}

/// A response: the output, the `Retry-After` it asked for, and the page's
/// links (read only with `--follow`).
struct Answer {
    output: FetchOutput,
    asked: Option<Duration>,
    links: PageLinks,
}

impl Fetcher {
    /// A fetcher whose per-host limits hold in this process only.
    pub fn new(settings: FetchSettings) -> Result<Self, String> {
        Self::with_slots(settings, SlotFile::private()?)
    }

    /// A fetcher whose per-host limits hold across all the workers of the
    /// supervisor `supervisor_pid`.
    pub fn shared(settings: FetchSettings, supervisor_pid: u32) -> Result<Self, String> {
        Self::with_slots(settings, SlotFile::shared(supervisor_pid)?)
    }

    fn with_slots(settings: FetchSettings, slots: SlotFile) -> Result<Self, String> {
        // reqwest is built without a default crypto provider so that
        // aws-lc-rs (cmake, a long build) stays out; ring is installed for
        // the process. An error only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nofile = nofile_limit();
        let connections = settings
            .connections
            .unwrap_or_else(|| default_connections(nofile));
        let mut builder = reqwest::Client::builder()
            .user_agent(settings.user_agent.as_str())
            // With --follow a redirect's target is a new task, so that
            // the run's seen-set decides whether it is fetched.
            .redirect(redirect_policy(if settings.follow.is_some() {
                0
            } else {
                settings.max_redirects
            }))
            // Idle keep-alive sockets hold descriptors too: few per host,
            // and not for long.
            .pool_max_idle_per_host(match settings.per_host {
                PerHost::Fixed(n) => n.min(connections),
                _ => connections,
            })
            .pool_idle_timeout(Duration::from_secs(15));
        if let Some(timeout) = settings.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(timeout) = settings.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let hosts = Hosts::new(settings.per_host, connections, settings.delay, slots);
        Ok(Self {
            client,
            hosts: Rc::new(hosts),
            budget: Budget::new(connections, nofile),
            robots: RefCell::default(),
            settings,
        })
    }

    pub fn settings(&self) -> &FetchSettings {
        &self.settings
    }

    /// Runs one task: up to `1 + retries` attempts. Network errors are
    /// `failed` or `timeout`; any HTTP status, 4xx and 5xx included, is an
    /// ok output (the last attempt's, when a status was retried). With
    /// `--follow`, the page's links (or its redirect's target) that pass
    /// the scope and filters are added as new tasks.
    pub async fn fetch(&self, input: FetchInput) -> Result<FetchOutput, TaskError> {
        let request = self.build_request(input)?;
        let page = request.url().clone();
        let (mut output, links) = self.fetch_request(request).await?;
        if let Some(follow) = &self.settings.follow {
            let found = match &output.redirect {
                Some(location) => follow.redirect(&page, location),
                None => follow.discover(&page, links.base.as_deref(), &links.hrefs),
            };
            output.follow = Some(self.add_tasks(found).await?);
        }
        Ok(output)
    }

    /// Adds the discovered URLs as tasks, their canonical form as the key
    /// (so the run fetches each once), after robots.txt where it is
    /// obeyed: a disallowed URL is not even queued.
    async fn add_tasks(&self, found: Discovered) -> Result<FollowCounts, TaskError> {
        let mut counts = found.counts;
        for url in found.urls {
            if self.settings.robots && self.robots_disallows(&url).await.is_some() {
                counts.added -= 1;
                counts.robots += 1;
                continue;
            }
            multiloop_worker::add(url.as_str(), Some(url.as_str()))?;
        }
        Ok(counts)
    }

    async fn fetch_request(
        &self,
        request: reqwest::Request,
    ) -> Result<(FetchOutput, PageLinks), TaskError> {
        let host = host_key(request.url());
        if self.settings.robots {
            if let Some((robots_url, rule)) = self.robots_disallows(request.url()).await {
                return Err(TaskError::failed(format!(
                    "skipped: {robots_url} disallows it ({rule})"
                )));
            }
        }
        let mut retried: Vec<String> = Vec::new();
        loop {
            let attempt = retried.len() as u32 + 1;
            let copy = request
                .try_clone()
                .ok_or_else(|| TaskError::failed("request body cannot be sent twice"))?;
            let (reason, asked) = match self.attempt(copy, &host).await {
                Attempt::Answer(answer)
                    if self.settings.retry_status.contains(answer.output.status)
                        && attempt <= self.settings.retries =>
                {
                    let Answer {
                        output,
                        asked,
                        links,
                    } = *answer;
                    (
                        format!("status {}", output.status),
                        (asked, Ok((output, links))),
                    )
                }
                Attempt::Failed(error, Retry::Yes { .. }) if attempt <= self.settings.retries => {
                    (error.message.clone(), (None, Err(error)))
                }
                Attempt::Answer(answer) => {
                    let Answer {
                        mut output, links, ..
                    } = *answer;
                    output.attempts = attempt;
                    output.retried = retried;
                    return Ok((output, links));
                }
                Attempt::Failed(error, _) => return Err(with_attempts(error, &retried)),
            };
            let (asked, last) = asked;
            let backoff = self
                .settings
                .retry_backoff
                .saturating_mul(1 << (attempt - 1).min(16))
                .mul_f64(0.5 + jitter());
            let wait = asked.map_or(backoff, |asked| asked.max(backoff));
            if wait > self.settings.max_retry_wait {
                // The server asks for more patience than we have: its
                // answer stands.
                return match last {
                    Ok((mut output, links)) => {
                        output.attempts = attempt;
                        output.retried = retried;
                        Ok((output, links))
                    }
                    Err(error) => Err(with_attempts(error, &retried)),
                };
            }
            if asked.is_some() {
                self.hosts.pause(&host, Instant::now() + wait);
            }
            // The wait is this task's and its host's: other tasks, other
            // hosts go on.
            tokio::time::sleep(wait).await;
            retried.push(reason);
        }
    }

    /// One request: a slot on its host, a connection from the budget, the
    /// response and its body. Running out of descriptors is no outcome:
    /// the request waits for one and goes again.
    async fn attempt(&self, request: reqwest::Request, host: &str) -> Attempt {
        let limits = Limits {
            timeout: self.settings.timeout,
            connect_timeout: self.settings.connect_timeout,
        };
        loop {
            let slot = self.hosts.acquire(host).await;
            let connection = self.budget.acquire().await;
            let copy = request.try_clone().expect("checked by the caller");
            let started = Instant::now();
            let mut response = match self.client.execute(copy).await {
                Ok(response) => response,
                Err(error) if out_of_descriptors(&error) => {
                    self.budget.shrink(connection);
                    continue;
                }
                Err(error) => {
                    let retry = retry_of(&error);
                    if retry == (Retry::Yes { congestion: true }) {
                        slot.congestion();
                    }
                    return Attempt::Failed(describe(&error, limits), retry);
                }
            };
            let first_byte = started.elapsed();
            let status = response.status().as_u16();
            let asked = retry_after(response.headers());
            let url = response.url().to_string();
            let redirect = response
                .status()
                .is_redirection()
                .then(|| response.headers().get(LOCATION))
                .flatten()
                .and_then(|location| response.url().join(location.to_str().ok()?).ok())
                .map(String::from);
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
            let max_body = self.settings.max_body;
            let over = || {
                Attempt::Failed(
                    TaskError::failed(format!("body over {max_body} bytes")),
                    Retry::No,
                )
            };
            // Known only for bodies that are not compressed: reqwest drops
            // the header when it decodes. Compressed bodies are capped as
            // they are decoded, which also stops a decompression bomb.
            let declared = response.content_length().unwrap_or(0);
            if declared > max_body {
                return over();
            }
            let mut body = Vec::with_capacity(declared as usize);
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        if (body.len() + chunk.len()) as u64 > max_body {
                            return over();
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(error) => {
                        let retry = retry_of(&error);
                        if retry == (Retry::Yes { congestion: true }) {
                            slot.congestion();
                        }
                        return Attempt::Failed(describe(&error, limits), retry);
                    }
                }
            }
            let total = started.elapsed();
            if status == 429 || status == 503 {
                slot.congestion();
            } else {
                slot.success(total);
            }
            // The slot covers the network part only; parsing needs no host.
            drop(connection);
            drop(slot);

            // A redirect's target is its one link (its body is a note for
            // people).
            let (page, links) = if !is_html(content_type.as_deref()) {
                (PageInfo::default(), PageLinks::default())
            } else if self.settings.follow.is_some() && redirect.is_none() {
                scan_html_links(&body, content_type.as_deref())
            } else {
                (
                    scan_html(&body, content_type.as_deref()),
                    PageLinks::default(),
                )
            };
            let output = FetchOutput {
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
                attempts: 1,
                retried: Vec::new(),
                redirect,
                follow: None,
            };
            return Attempt::Answer(Box::new(Answer {
                output,
                asked,
                links,
            }));
        }
    }

    /// The robots.txt URL and rule that disallow `url`, if its host's
    /// file does; the file is fetched once per host by this worker and
    /// kept for the run.
    async fn robots_disallows(&self, url: &Url) -> Option<(Url, String)> {
        let host = host_key(url);
        let cell = self
            .robots
            .borrow_mut()
            .entry(host.clone())
            .or_default()
            .clone();
        let mut robots_url = url.clone();
        robots_url.set_path("/robots.txt");
        robots_url.set_query(None);
        robots_url.set_fragment(None);
        let rules = cell
            .get_or_init(|| self.fetch_robots(robots_url.clone(), &host))
            .await;
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        let rule = rules.disallows(&path)?;
        Some((robots_url, rule))
    }

    async fn fetch_robots(&self, url: Url, host: &str) -> Robots {
        let agent = self
            .settings
            .user_agent
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        let _slot = self.hosts.acquire(host).await;
        let _connection = self.budget.acquire().await;
        let Ok(mut response) = self.client.get(url).send().await else {
            return Robots::disallow_all();
        };
        let status = response.status().as_u16();
        if (400..500).contains(&status) {
            return Robots::allow_all();
        }
        if !(200..300).contains(&status) {
            return Robots::disallow_all();
        }
        // Google reads the first 500 KiB; so do we.
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ROBOTS_BYTES {
                body.truncate(MAX_ROBOTS_BYTES);
                break;
            }
        }
        Robots::parse(&String::from_utf8_lossy(&body), &agent)
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

/// Largest `robots.txt` read.
const MAX_ROBOTS_BYTES: usize = 500 * 1024;

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

/// The error of the last attempt, saying how many were made and why the
/// earlier ones were retried.
fn with_attempts(mut error: TaskError, retried: &[String]) -> TaskError {
    if !retried.is_empty() {
        error.message = format!(
            "{} (attempt {}; retried after: {})",
            error.message,
            retried.len() + 1,
            retried.join(", ")
        );
    }
    error
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
