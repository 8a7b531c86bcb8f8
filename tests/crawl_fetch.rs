//! `fetch --follow` end to end: the real binaries crawl a generated site
//! (tests/site_graph: cycles, redirects and a redirect loop, 404s, links to
//! another host, `rel=nofollow`, relative and `<base>` links, fragments,
//! gzip) from its home page, and every page a breadth-first search of the
//! graph reaches is fetched exactly once: in one run, with workers
//! SIGKILLed every second, and with the supervisor SIGKILLed twice and
//! `--resume`d.
//!
//! The seed is `{"url": ...}` with `--key url`, in canonical form, so that
//! the links back to it are known as seen.

mod common;
mod site_graph;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use common::*;
use site_graph::{Node, Server, Site};

const LONG: Duration = Duration::from_secs(120);

/// Starts a crawl from `seed` in `dir` (its output is `out.jsonl`), with no
/// proxy settings from the environment: requests go straight to
/// 127.0.0.1.
fn start_crawl(dir: tempfile::TempDir, seed: &str, args: &[&str], resume: bool) -> Running {
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        serde_json::json!({ "url": seed }).to_string() + "\n",
    )
    .unwrap();
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("stderr.txt"))
        .unwrap();
    let mut command = supervisor();
    for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        command.env_remove(var).env_remove(var.to_uppercase());
    }
    command
        .args(["--task", "fetch", "--follow", "--key", "url", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("out.jsonl"))
        .args(args)
        .env("XDG_RUNTIME_DIR", dir.path())
        .stdout(Stdio::null())
        .stderr(stderr);
    if resume {
        command.arg("--resume");
    }
    Running {
        child: command.spawn().expect("supervisor starts"),
        dir,
        input: None,
    }
}

/// Checks that the records are the reachable set, each URL once, each with
/// the answer its node gives.
fn assert_crawled_once(records: &[Value], server: &Server, site: &Site) {
    let mut fetched: HashMap<String, &Value> = HashMap::new();
    for record in records {
        let ok = &record["ok"];
        let url = ok["url"]
            .as_str()
            .unwrap_or_else(|| panic!("a record without ok.url: {record}"));
        if let Some(earlier) = fetched.insert(url.to_string(), record) {
            panic!("{url} fetched twice:\n{earlier}\n{record}");
        }
    }
    let reachable = server.reachable(site);
    for url in &reachable {
        assert!(fetched.contains_key(url), "{url} was not fetched");
    }
    assert_eq!(
        fetched.len(),
        reachable.len(),
        "fetched pages outside the reachable set: {:?}",
        fetched
            .keys()
            .filter(|url| !reachable.contains(url))
            .collect::<Vec<_>>()
    );
    for (url, record) in &fetched {
        let path = &url[server.base.len()..];
        let ok = &record["ok"];
        match Node::parse(path, site.pages) {
            Some(Node::Page(_) | Node::Query(_)) => {
                assert_eq!(ok["status"], 200, "{record}");
                assert!(ok["follow"]["added"].as_u64().unwrap() >= 1, "{record}");
            }
            Some(Node::Missing(_)) => assert_eq!(ok["status"], 404, "{record}"),
            Some(Node::Redirect(i)) => {
                assert_eq!(ok["status"], 302, "{record}");
                let target = format!("{}{}", server.base, Node::Page(i).path());
                assert_eq!(ok["redirect"], target.as_str(), "{record}");
            }
            Some(Node::Loop(_)) => assert_eq!(ok["status"], 301, "{record}"),
            other => panic!("{url} is no node of the site the crawl should reach: {other:?}"),
        }
    }
}

#[test]
fn the_site_graph_has_every_feature_the_crawl_must_handle() {
    let site = Site {
        pages: 300,
        seed: 7,
    };
    let reachable = site.reachable(Node::Page(0));
    let has = |f: fn(&Node) -> bool| reachable.iter().any(f);
    assert!(has(|n| matches!(n, Node::Missing(_))));
    assert!(has(|n| matches!(n, Node::Redirect(_))));
    assert!(has(|n| matches!(n, Node::Query(_))));
    assert!(has(|n| *n == Node::Loop(true)));
    assert!(!has(|n| matches!(n, Node::Hidden(_))));
    let pages = reachable
        .iter()
        .filter(|n| matches!(n, Node::Page(_)))
        .count();
    assert!(pages > 250, "{pages} of 300 pages reachable");
    for node in &reachable {
        assert_eq!(Node::parse(&node.path(), site.pages), Some(*node));
    }
    let html = site.page_html(5, "127.0.0.1:80");
    assert!(html.contains("<base href=\"/\">"), "{html}");
}

/// The real binaries with `--follow` on chosen URLs of the site: each
/// record's `follow` counts put every link of the page in the right place,
/// and a redirect's record names its target. (This holds whatever the
/// supervisor then does with the added tasks.)
#[test]
fn each_page_counts_its_links_once_in_the_right_place() {
    let site = Site { pages: 60, seed: 5 };
    let server = Server::start(site);
    let host = &server.base["http://".len()..];
    let pages: Vec<u64> = (0..12).collect();
    let mut input: String = pages
        .iter()
        .map(|&i| {
            Value::String(format!("{}{}", server.base, Node::Page(i).path())).to_string() + "\n"
        })
        .collect();
    for node in [Node::Redirect(7), Node::Loop(false), Node::Missing(3)] {
        input += &(Value::String(format!("{}{}", server.base, node.path())).to_string() + "\n");
    }
    let mut command = supervisor();
    for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        command.env_remove(var).env_remove(var.to_uppercase());
    }
    // Depth 0: the input lines only; what they add is counted, not run.
    command.args(["--task", "fetch", "--follow", "--max-depth", "0"]);
    command.args(["--workers", "1", "--input", "-"]);
    let output = run_command(command, input.as_bytes());
    let records = records(&output.stdout);
    assert_eq!(
        records.len(),
        pages.len() + 3,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let by_url: HashMap<&str, &Value> = records
        .iter()
        .filter_map(|r| Some((r["ok"]["url"].as_str()?, r)))
        .collect();
    for &i in &pages {
        let url = format!("{}{}", server.base, Node::Page(i).path());
        let record = by_url
            .get(url.as_str())
            .unwrap_or_else(|| panic!("no record for {url}"));
        let links = site.links(i, host);
        let mut expected: HashMap<&str, u64> = HashMap::new();
        let mut targets = std::collections::HashSet::new();
        for link in &links {
            let count = match link.target {
                Ok(node) if targets.insert(node) => "added",
                Ok(_) => "repeated",
                Err(count) => count,
            };
            *expected.entry(count).or_default() += 1;
        }
        let follow = &record["ok"]["follow"];
        for count in [
            "added",
            "repeated",
            "nofollow",
            "out_of_scope",
            "not_http",
            "invalid",
        ] {
            assert_eq!(
                follow[count].as_u64(),
                Some(expected.get(count).copied().unwrap_or(0)),
                "{count} of page {i}: {record}"
            );
        }
        assert_eq!(
            record["ok"]["links"].as_u64(),
            Some(links.len() as u64),
            "{record}"
        );
    }
    let redirect = by_url[format!("{}/r/7", server.base).as_str()];
    assert_eq!(redirect["ok"]["status"], 302, "{redirect}");
    let target = format!("{}{}", server.base, Node::Page(7).path());
    assert_eq!(redirect["ok"]["redirect"], target.as_str(), "{redirect}");
    assert_eq!(redirect["ok"]["follow"]["added"], 1, "{redirect}");
    let missing = by_url[format!("{}/missing/3", server.base).as_str()];
    assert_eq!(missing["ok"]["status"], 404, "{missing}");
    assert_eq!(missing["ok"]["follow"]["added"], 0, "{missing}");
}

#[test]
fn a_crawl_fetches_every_reachable_page_exactly_once() {
    let site = Site {
        pages: 300,
        seed: 7,
    };
    let server = Server::start(site);
    let mut running = start_crawl(
        tempfile::tempdir().unwrap(),
        &format!("{}/", server.base),
        &["--workers", "2"],
        false,
    );
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    let records = running.output_records();
    assert_crawled_once(&records, &server, &site);
    // The seed is the one input line; every other record names its parent
    // and its depth.
    let seeds: Vec<&Value> = records.iter().filter(|r| r["parent"].is_null()).collect();
    assert_eq!(seeds.len(), 1, "one seed");
    assert!(records
        .iter()
        .all(|r| r["parent"].is_null() || r["depth"].as_u64() >= Some(1)));
}

#[test]
fn scope_any_and_nofollow_reach_more_of_the_same_server() {
    let site = Site { pages: 40, seed: 3 };
    let server = Server::start(site);
    let mut running = start_crawl(
        tempfile::tempdir().unwrap(),
        &format!("{}/", server.base),
        &["--workers", "1", "--scope", "any", "--follow-nofollow"],
        false,
    );
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    let urls: Vec<String> = running
        .output_records()
        .iter()
        .filter_map(|r| r["ok"]["url"].as_str().map(str::to_string))
        .collect();
    assert!(urls.iter().any(|u| u.contains("://localhost:")), "{urls:?}");
    assert!(urls.iter().any(|u| u.contains("/hidden/")), "{urls:?}");
    assert!(!urls.iter().any(|u| u.starts_with("mailto:")), "{urls:?}");
}

#[test]
fn a_crawl_with_workers_killed_every_second_still_fetches_each_page_once() {
    let site = Site {
        pages: 400,
        seed: 11,
    };
    let server = Server::start_with_delay(site, Duration::from_millis(20));
    let mut running = start_crawl(
        tempfile::tempdir().unwrap(),
        &format!("{}/", server.base),
        &["--workers", "2", "--per-host", "4"],
        false,
    );
    let mut kills = 0;
    let deadline = std::time::Instant::now() + LONG;
    while running.child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the crawl did not end"
        );
        // An event, not a sleep: one second passes, or the run ends.
        let tick = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < tick && running.child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(&pid) = workers_of(running.pid()).first() {
            kill(pid, libc::SIGKILL);
            kills += 1;
        }
    }
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    assert!(kills >= 1, "the crawl ended before a worker was killed");
    assert_crawled_once(&running.output_records(), &server, &site);
}

#[test]
fn a_crawl_whose_supervisor_is_killed_twice_and_resumed_fetches_each_page_once() {
    let site = Site {
        pages: 400,
        seed: 13,
    };
    let server = Server::start_with_delay(site, Duration::from_millis(20));
    let seed = format!("{}/", server.base);
    let args = ["--workers", "2", "--per-host", "4"];
    let mut running = start_crawl(tempfile::tempdir().unwrap(), &seed, &args, false);
    for round in 1..=2 {
        wait_until(LONG, "records before the kill", || {
            running.output_lines() >= round * 60
        });
        let workers = workers_of(running.pid());
        kill(running.pid(), libc::SIGKILL);
        running.wait(LONG);
        wait_until(LONG, "workers to die with their supervisor", || {
            workers.iter().all(|&pid| is_gone(pid))
        });
        let dir = std::mem::replace(&mut running.dir, tempfile::tempdir().unwrap());
        running = start_crawl(dir, &seed, &args, true);
    }
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    assert_crawled_once(&running.output_records(), &server, &site);
}
