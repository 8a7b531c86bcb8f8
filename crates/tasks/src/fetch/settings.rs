//! The settings the `fetch` kind reads from `--set KEY=VALUE`, with their
//! defaults and their parsing.

use std::fmt;
use std::time::Duration;

use multiloop_worker::WorkerInfo;

pub use super::follow::FollowSettings;
pub use super::hosts::PerHost;
use super::slots::MAX_SLOTS;

/// The `User-Agent` sent unless `--set user_agent=...` says otherwise.
pub const DEFAULT_USER_AGENT: &str = concat!("multiloop/", env!("CARGO_PKG_VERSION"));

/// How one worker's `fetch` client behaves. Every field has a setting of
/// the same name (`--set timeout_ms=5000`), except the two durations, which
/// are set in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSettings {
    /// `timeout_ms`: whole request, connect to last body byte; `0` = none.
    pub timeout: Option<Duration>,
    /// `connect_timeout_ms`: DNS + TCP + TLS of a new connection; `0` = none.
    pub connect_timeout: Option<Duration>,
    /// `max_body`: largest decoded body, in bytes (`KiB`/`MiB`/`GiB` suffixes
    /// allowed); a longer one is a `failed` record.
    pub max_body: u64,
    /// `max_redirects`: redirects followed per request; `0` = none followed
    /// (the 3xx response is the result).
    pub max_redirects: usize,
    /// `user_agent`.
    pub user_agent: String,
    /// `per_host`: most requests in flight to one host (`host:port`) in
    /// all workers together: a number, `0` for no limit, or `auto`.
    pub per_host: PerHost,
    /// `retries`: further attempts after a network error, a timeout or a
    /// `retry_status`; `0` = one attempt only.
    pub retries: u32,
    /// `retry_status`: statuses worth another attempt.
    pub retry_status: StatusList,
    /// `retry_backoff_ms`: the wait before the first retry; it doubles for
    /// each further one, times a random factor in 0.5-1.5.
    pub retry_backoff: Duration,
    /// `max_retry_wait_ms`: the longest wait before a retry, `Retry-After`
    /// included; a server asking for more gets no retry.
    pub max_retry_wait: Duration,
    /// `delay_ms`: time between request starts to one host (in all
    /// workers), times a random factor in 0.5-1.5; `0` = none.
    pub delay: Option<Duration>,
    /// `robots`: `obey` skips URLs that the host's `/robots.txt`
    /// disallows; `ignore` (the default) does not fetch it.
    pub robots: bool,
    /// `connections`: most requests in flight in this worker; by default
    /// [`DEFAULT_CONNECTIONS`], or half the descriptors the worker may
    /// open (less 64 for everything else) when that is fewer.
    pub connections: Option<usize>,
    /// `follow=true` (`--follow`): every page's in-scope links become new
    /// tasks, and redirects are not followed but added as tasks too; with
    /// `scope`, `allow`, `deny` and `nofollow` (see [`FollowSettings`]).
    pub follow: Option<FollowSettings>,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            timeout: Some(Duration::from_secs(30)),
            connect_timeout: Some(Duration::from_secs(10)),
            max_body: 10 * 1024 * 1024,
            max_redirects: 10,
            user_agent: DEFAULT_USER_AGENT.to_string(),
            per_host: PerHost::Fixed(DEFAULT_PER_HOST),
            retries: 2,
            retry_status: DEFAULT_RETRY_STATUS.parse().expect("a valid list"),
            retry_backoff: Duration::from_millis(250),
            max_retry_wait: Duration::from_secs(60),
            delay: None,
            robots: false,
            connections: None,
            follow: None,
        }
    }
}

impl FetchSettings {
    /// Reads the settings given to this worker; an unparsable one is an
    /// error naming its key, so a typo stops the run at start.
    pub fn from_info(info: &WorkerInfo) -> Result<Self, String> {
        let mut settings = Self::default();
        if let Some(ms) = info.parse_setting::<u64>("timeout_ms")? {
            settings.timeout = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if let Some(ms) = info.parse_setting::<u64>("connect_timeout_ms")? {
            settings.connect_timeout = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if let Some(text) = info.setting("max_body") {
            settings.max_body =
                parse_bytes(text).map_err(|e| format!("setting max_body={text:?}: {e}"))?;
        }
        if let Some(n) = info.parse_setting("max_redirects")? {
            settings.max_redirects = n;
        }
        if let Some(agent) = info.setting("user_agent") {
            settings.user_agent = agent.to_string();
        }
        if let Some(text) = info.setting("per_host") {
            settings.per_host =
                parse_per_host(text).map_err(|e| format!("setting per_host={text:?}: {e}"))?;
        }
        if let Some(n) = info.parse_setting("retries")? {
            settings.retries = n;
        }
        if let Some(ms) = info.parse_setting::<u64>("retry_backoff_ms")? {
            settings.retry_backoff = Duration::from_millis(ms);
        }
        if let Some(ms) = info.parse_setting::<u64>("max_retry_wait_ms")? {
            settings.max_retry_wait = Duration::from_millis(ms);
        }
        if let Some(ms) = info.parse_setting::<u64>("delay_ms")? {
            settings.delay = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if let Some(text) = info.setting("robots") {
            settings.robots = match text {
                "obey" => true,
                "ignore" => false,
                _ => return Err(format!("setting robots={text:?}: use obey or ignore")),
            };
        }
        if let Some(n) = info.parse_setting::<usize>("connections")? {
            if n == 0 {
                return Err("setting connections=0: must be at least 1".into());
            }
            settings.connections = Some(n);
        }
        let mut follow = FollowSettings::default();
        if let Some(scope) = info.parse_setting("scope")? {
            follow.scope = scope;
        }
        follow.allow = info.parse_setting("allow")?;
        follow.deny = info.parse_setting("deny")?;
        if let Some(text) = info.setting("nofollow") {
            follow.follow_nofollow = match text {
                "follow" => true,
                "skip" => false,
                _ => return Err(format!("setting nofollow={text:?}: use skip or follow")),
            };
        }
        if info.parse_setting::<bool>("follow")? == Some(true) {
            settings.follow = Some(follow);
        }
        if let Some(text) = info.setting("retry_status") {
            settings.retry_status = text
                .parse()
                .map_err(|e| format!("setting retry_status={text:?}: {e}"))?;
        }
        Ok(settings)
    }
}

/// Requests in flight to one host, in all workers, unless `per_host` says
/// otherwise: Scrapy's `CONCURRENT_REQUESTS_PER_DOMAIN`, a little above
/// the 6 of browsers.
pub const DEFAULT_PER_HOST: usize = 8;

/// Requests in flight (so connections) per worker unless `connections`
/// says otherwise: ten times aiohttp's default of 100 per session, since a
/// worker here is one of several and a crawl spans many hosts; on one fast
/// host it keeps every connection busy and reused (at 20 ms a page, 1,024
/// connections carry 50,000 pages/s, more than one core can parse).
pub const DEFAULT_CONNECTIONS: usize = 1024;

/// Statuses retried unless `retry_status` says otherwise (Scrapy's list
/// without 522/524, which are one CDN's).
pub const DEFAULT_RETRY_STATUS: &str = "408,429,500,502,503,504";

/// `8`, `0` (no limit) or `auto`.
pub fn parse_per_host(text: &str) -> Result<PerHost, String> {
    match text.trim() {
        "auto" => Ok(PerHost::Auto),
        "0" => Ok(PerHost::Unlimited),
        n => match n.parse::<usize>() {
            Ok(n) if n <= MAX_SLOTS => Ok(PerHost::Fixed(n)),
            Ok(_) => Err(format!("at most {MAX_SLOTS}")),
            Err(_) => Err("a number of requests, 0 for no limit, or auto".into()),
        },
    }
}

/// `123`, `64KiB`, `10MiB`, `1GiB`.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected a number of bytes, like 1048576 or 1MiB".to_string())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(scale).ok_or_else(|| "too large".to_string())
}

/// A set of HTTP statuses, written `429,500-599`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusList {
    ranges: Vec<(u16, u16)>,
}

impl StatusList {
    pub fn contains(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(low, high)| (low..=high).contains(&status))
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

impl std::str::FromStr for StatusList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let status = |part: &str| -> Result<u16, String> {
            match part.trim().parse::<u16>() {
                Ok(n) if (100..=999).contains(&n) => Ok(n),
                _ => Err(format!("{part:?} is not an HTTP status (100-999)")),
            }
        };
        let mut ranges = Vec::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let range = match part.split_once('-') {
                Some((low, high)) => (status(low)?, status(high)?),
                None => (status(part)?, status(part)?),
            };
            if range.0 > range.1 {
                return Err(format!("{part:?} is an empty range"));
            }
            ranges.push(range);
        }
        Ok(Self { ranges })
    }
}

impl fmt::Display for StatusList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(low, high)) in self.ranges.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if low == high {
                write!(f, "{sep}{low}")?;
            } else {
                write!(f, "{sep}{low}-{high}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_parse_single_codes_and_ranges() {
        let list: StatusList = "429, 500-599".parse().unwrap();
        assert!(list.contains(429) && list.contains(500) && list.contains(599));
        assert!(!list.contains(404) && !list.contains(600));
        assert_eq!(list.to_string(), "429,500-599");
        assert!("".parse::<StatusList>().unwrap().is_empty());
        assert!("5xx".parse::<StatusList>().is_err());
        assert!("600-500".parse::<StatusList>().is_err());
        assert!("42".parse::<StatusList>().is_err());
    }

    #[test]
    fn per_host_takes_a_number_zero_or_auto() {
        assert_eq!(parse_per_host("8"), Ok(PerHost::Fixed(8)));
        assert_eq!(parse_per_host("0"), Ok(PerHost::Unlimited));
        assert_eq!(parse_per_host("auto"), Ok(PerHost::Auto));
        assert!(parse_per_host("many").is_err());
        assert!(parse_per_host("99999999").is_err());
        assert_eq!(FetchSettings::default().per_host, PerHost::Fixed(8));
        assert!(FetchSettings::default().retry_status.contains(503));
        assert!(!FetchSettings::default().retry_status.contains(501));
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_bytes("10MiB"), Ok(10 << 20));
        assert!(parse_bytes("10MB").is_err());
        assert!(parse_bytes("big").is_err());
    }
}
