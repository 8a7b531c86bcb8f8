//! What `fetch` records say about the web: status codes, and per host the
//! requests, HTTP errors and latency. The per-host limits live in the
//! workers and never reach the supervisor; a record of a failed request
//! (DNS, refused, timeout) names no host, so those are counted apart.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::tasks::{bucket_high, bucket_of};

/// Hosts tracked one by one; the rest are summed as one row (a crawl can
/// touch millions).
pub const MAX_HOSTS: usize = 1_000;
/// Hosts shown on the page, busiest first.
const HOSTS_SHOWN: usize = 50;

/// The part of a `fetch` output the report reads.
#[derive(Debug, Deserialize)]
struct Page<'a> {
    status: u16,
    #[serde(borrow)]
    url: std::borrow::Cow<'a, str>,
    timings: Option<PageTimings>,
}

#[derive(Debug, Deserialize)]
struct PageTimings {
    total_ms: f64,
}

/// One host's counts and a sparse latency histogram (µs buckets).
#[derive(Debug, Clone, Default)]
struct HostStats {
    requests: u64,
    errors: u64,
    latency: BTreeMap<u16, u64>,
}

impl HostStats {
    fn add(&mut self, status: u16, micros: u64) {
        self.requests += 1;
        self.errors += u64::from(status >= 400);
        *self.latency.entry(bucket_of(micros) as u16).or_default() += 1;
    }

    fn quantile(&self, q: f64) -> f64 {
        let rank = ((q * self.requests as f64).ceil() as u64).clamp(1, self.requests.max(1));
        let mut seen = 0;
        for (&bucket, &n) in &self.latency {
            seen += n;
            if seen >= rank {
                return bucket_high(usize::from(bucket));
            }
        }
        0.0
    }

    fn merge(&mut self, other: &HostStats) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (&bucket, &n) in &other.latency {
            *self.latency.entry(bucket).or_default() += n;
        }
    }
}

/// A row of the per-host table.
#[derive(Debug, Clone, Serialize)]
pub struct HostRow {
    pub host: String,
    pub requests: u64,
    /// Responses with status 400 or more.
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The fetch section of the page.
#[derive(Debug, Clone, Serialize)]
pub struct FetchSummary {
    pub statuses: BTreeMap<u16, u64>,
    /// Records without a response (their host is not in the record).
    pub no_response: u64,
    pub hosts: Vec<HostRow>,
    /// Tracked hosts summed into the `(other hosts)` row (with any beyond
    /// [`MAX_HOSTS`], which are not counted one by one).
    pub more_hosts: usize,
}

/// Status codes and hosts of a `fetch` run.
#[derive(Debug, Clone, Default)]
pub struct FetchStats {
    statuses: BTreeMap<u16, u64>,
    no_response: u64,
    hosts: HashMap<String, HostStats>,
    others: HostStats,
}

impl FetchStats {
    /// Counts an ok record's output; false if it is not a fetch output.
    pub fn page(&mut self, output: &[u8]) -> bool {
        let Ok(page) = serde_json::from_slice::<Page<'_>>(output) else {
            return false;
        };
        let micros = page.timings.map_or(0, |t| (t.total_ms * 1000.0) as u64);
        *self.statuses.entry(page.status).or_default() += 1;
        let host = host_of(&page.url);
        let full = self.hosts.len() >= MAX_HOSTS;
        match self.hosts.get_mut(host) {
            Some(stats) => stats.add(page.status, micros),
            None if full => self.others.add(page.status, micros),
            None => {
                let mut stats = HostStats::default();
                stats.add(page.status, micros);
                self.hosts.insert(host.to_string(), stats);
            }
        }
        true
    }

    /// A failed record: no response, no host.
    pub fn failed(&mut self) {
        self.no_response += 1;
    }

    pub fn summary(&self) -> FetchSummary {
        let mut hosts: Vec<(&String, &HostStats)> = self.hosts.iter().collect();
        hosts.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(b.0)));
        let more = hosts.len().saturating_sub(HOSTS_SHOWN);
        let mut rest = self.others.clone();
        for (_, stats) in hosts.iter().skip(HOSTS_SHOWN) {
            rest.merge(stats);
        }
        let row = |host: String, stats: &HostStats| HostRow {
            host,
            requests: stats.requests,
            errors: stats.errors,
            p50_ms: stats.quantile(0.5) / 1000.0,
            p99_ms: stats.quantile(0.99) / 1000.0,
        };
        let mut rows: Vec<HostRow> = hosts
            .iter()
            .take(HOSTS_SHOWN)
            .map(|(host, stats)| row((*host).clone(), stats))
            .collect();
        if rest.requests > 0 {
            rows.push(row("(other hosts)".into(), &rest));
        }
        FetchSummary {
            statuses: self.statuses.clone(),
            no_response: self.no_response,
            hosts: rows,
            more_hosts: more,
        }
    }
}

/// `host[:port]` of a URL, without user info; the whole text if it has no
/// scheme.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_from_urls() {
        assert_eq!(host_of("https://a.example/x?y"), "a.example");
        assert_eq!(host_of("http://u:p@b.example:8080#f"), "b.example:8080");
        assert_eq!(host_of("c.example"), "c.example");
    }

    #[test]
    fn counts_pages_by_status_and_host() {
        let mut stats = FetchStats::default();
        for (status, url) in [(200, "http://a/1"), (404, "http://a/2"), (200, "http://b/")] {
            let page = format!(
                r#"{{"status":{status},"url":"{url}","bytes":1,"timings":{{"first_byte_ms":1.0,"total_ms":2.5}}}}"#
            );
            assert!(stats.page(page.as_bytes()));
        }
        assert!(!stats.page(b"{\"sum\":3}"));
        stats.failed();
        let summary = stats.summary();
        assert_eq!(summary.statuses[&200], 2);
        assert_eq!(summary.no_response, 1);
        assert_eq!(summary.hosts[0].host, "a");
        assert_eq!((summary.hosts[0].requests, summary.hosts[0].errors), (2, 1));
        assert!(summary.hosts[0].p50_ms >= 2.5 && summary.hosts[0].p50_ms < 2.7);
    }
}
