//! The HTML report, checked in a real browser: a real run with failures,
//! a crash and a worker killed on request writes `--report` (mid-run and
//! at the end) and `--stats`; `supervisor report` rebuilds the page from
//! the files; headless Chromium loads both pages, and the DOM it leaves
//! must show no script error, every chart drawn, and the numbers of the
//! output file. Chromium is Debian's `chromium` package: without it the
//! test is skipped, unless `CI` is set (`.ci/run` installs it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);
/// A browser loading a local page: generous, for a loaded machine.
const BROWSER: Duration = Duration::from_secs(90);

/// Charts every page with samples has, by element id.
const CHARTS: [&str; 8] = [
    "chart-throughput",
    "chart-load",
    "chart-lives",
    "chart-cpu",
    "chart-rss",
    "chart-lag",
    "chart-blocked",
    "chart-task-times",
];

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|dir| Path::new(dir).join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed, and CI must run the report test (apt-get install chromium)"
        );
        eprintln!("skipped: chromium is not installed (apt-get install chromium)");
    }
    found
}

/// Runs headless Chromium on a page with `extra` arguments, with a
/// deadline; returns what it wrote to stdout.
fn browse(browser: &Path, profile: &Path, page: &Path, extra: &[&str]) -> String {
    let stdout_path = profile.with_extension("stdout");
    let stdout = std::fs::File::create(&stdout_path).unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + BROWSER;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within {BROWSER:?} on {}",
                page.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read_to_string(&stdout_path).unwrap()
}

/// The opening tag that contains `needle` (cut at the start of `dom`).
fn tag_with<'a>(dom: &'a str, needle: &str) -> &'a str {
    let at = dom
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle} in the page"));
    let start = dom[..at].rfind('<').unwrap_or(0);
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

/// The value of attribute `name` in `tag`.
fn attr(tag: &str, name: &str) -> String {
    let key = format!("{name}=\"");
    let at = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    tag[at..at + tag[at..].find('"').unwrap()].to_string()
}

fn number(tag: &str, name: &str) -> f64 {
    attr(tag, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} of {tag} is not a number"))
}

/// The exact nearest-rank quantile of `sorted` (µs).
fn quantile(sorted: &[u64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

/// Checks one page's DOM against the output records.
fn check_page(dom: &str, records: &[Value], what: &str) {
    let root = tag_with(dom, "<html");
    assert!(
        !root.contains("data-errors"),
        "{what}: script errors:\n{}",
        &dom[dom.find("script-errors").unwrap()..][..2000.min(dom.len())]
    );
    assert_eq!(attr(root, "data-rendered"), "yes", "{what}: {root}");
    assert_eq!(number(root, "data-charts") as usize, CHARTS.len(), "{what}");
    assert!(tag_with(dom, "id=\"script-errors\"").contains("hidden"));
    for id in CHARTS {
        let tag = tag_with(dom, &format!("id=\"{id}\""));
        assert!(number(tag, "data-series") >= 1.0, "{what}: {tag}");
        assert!(number(tag, "data-points") >= 2.0, "{what}: {tag}");
        // uPlot's canvas inside it has a size.
        let inside = &dom[dom.find(tag).unwrap()..];
        let canvas = tag_with(inside, "<canvas");
        assert!(
            number(canvas, "width") > 0.0 && number(canvas, "height") > 0.0,
            "{what}: {id}: {canvas}"
        );
    }

    // The tables say what the output file says.
    let failed = records.iter().filter(|r| r.get("error").is_some()).count() as f64;
    let ok = records.len() as f64 - failed;
    let totals = tag_with(dom, "id=\"totals\"");
    assert_eq!(number(totals, "data-ok"), ok, "{what}: header");
    assert_eq!(number(totals, "data-failed"), failed, "{what}: header");
    let table = &dom[dom.find("id=\"task-summary\"").unwrap()..];
    assert_eq!(
        number(tag_with(table, "data-count=\""), "data-count"),
        records.len() as f64,
        "{what}"
    );
    assert_eq!(
        number(tag_with(table, "data-ok=\""), "data-ok"),
        ok,
        "{what}"
    );
    assert_eq!(
        number(tag_with(table, "data-failed=\""), "data-failed"),
        failed,
        "{what}"
    );
    let mut micros: Vec<u64> = records
        .iter()
        .map(|r| (r["ms"].as_f64().unwrap() * 1000.0).round() as u64)
        .collect();
    micros.sort_unstable();
    let cells: Vec<f64> = table
        .match_indices("data-us=\"")
        .take(5)
        .map(|(at, _)| number(tag_with(&table[at..], "data-us"), "data-us"))
        .collect();
    // mean, p50, p90, p99, max
    for (told, q) in cells[1..4].iter().zip([0.5, 0.9, 0.99]) {
        let truth = quantile(&micros, q);
        assert!(
            *told >= truth && *told <= truth * 1.0444 + 1.0,
            "{what}: p{q}: page says {told} µs, the output {truth} µs"
        );
    }
    assert_eq!(cells[4], *micros.last().unwrap() as f64, "{what}: max");
    let slowest = number(tag_with(dom, "data-seq=\""), "data-seq") as u64;
    let max_ms = records.iter().find(|r| r["seq"] == slowest).unwrap()["ms"]
        .as_f64()
        .unwrap();
    assert_eq!((max_ms * 1000.0).round() as u64, *micros.last().unwrap());
    for kind in ["panicked", "crashed"] {
        let count = records
            .iter()
            .filter(|r| r["error"]["kind"] == kind)
            .count() as f64;
        assert!(count > 0.0, "the run has {kind} records");
        let at = dom.find(&format!("data-kind=\"{kind}\"")).unwrap();
        let cell = tag_with(&dom[at..], "data-count=\"");
        assert_eq!(number(cell, "data-count"), count, "{what}: {kind}");
    }
    // The lives: the kill on request and the crashes, by cause.
    let killed = tag_with(dom, "data-cause=\"killed_on_request\" data-count");
    assert_eq!(number(killed, "data-count"), 1.0, "{what}");
    let crashed = tag_with(dom, "data-cause=\"crashed\" data-count");
    assert!(number(crashed, "data-count") >= 1.0, "{what}");
}

#[test]
fn report_of_a_troubled_run_draws_in_a_browser() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("run.html");
    let stats = dir.path().join("stats.jsonl");
    let output = dir.path().join("out.jsonl");
    let stderr = std::fs::File::create(dir.path().join("stderr.txt")).unwrap();
    let child = supervisor()
        .args(["--workers", "2", "--task", "chaos", "--concurrency", "8"])
        .args(["--progress", "never", "--input", "-", "--output"])
        .arg(&output)
        .arg("--report")
        .arg(&page)
        .arg("--stats")
        .arg(&stats)
        .env("XDG_RUNTIME_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("supervisor starts");
    // Its input stays open until the kill: the run cannot end before.
    let mut running = Running {
        child,
        dir,
        input: None,
    };
    running.input = running.child.stdin.take();
    let n = 400u64;
    let line = |i: u64| match i {
        _ if i % 37 == 5 => "{\"sleep_ms\":3,\"iters\":10,\"fault\":\"panic\"}\n".to_string(),
        200 => "{\"sleep_ms\":3,\"iters\":10,\"fault\":\"abort\"}\n".to_string(),
        _ => format!("{{\"sleep_ms\":{},\"iters\":1000}}\n", 2 + i % 25),
    };
    let first: String = (0..n / 2).map(line).collect();
    running.feed(&first);
    // The page is written while the run goes (the input is still open).
    wait_until(LONG, "the page written mid-run", || page.exists());
    let mid = std::fs::read_to_string(&page).unwrap();
    assert!(
        mid.contains("\"finished\":false") && !mid.contains("\"end\":{"),
        "a page of a run still going"
    );
    wait_until(LONG, "the control socket", || {
        running
            .runtime_dir()
            .join("multiloop")
            .join(format!("{}.sock", running.pid()))
            .exists()
    });
    let (code, _, stderr) = running.ctl(&["kill", "0"]);
    assert_eq!(code, 0, "{stderr}");
    let rest: String = (n / 2..n).map(line).collect();
    running.feed(&rest);
    running.close_input();
    assert_eq!(running.wait(LONG), 1, "some failed: {}", running.stderr());
    let records = records(&std::fs::read(&output).unwrap());
    assert_eq!(by_seq(&records).len() as u64, n, "every line once");

    // The same page, rebuilt from the files.
    let rebuilt = running.dir.path().join("rebuilt.html");
    let mut report = Command::new(SUPERVISOR);
    report
        .arg("report")
        .arg(&output)
        .arg("--stats")
        .arg(&stats)
        .arg("-o")
        .arg(&rebuilt);
    let done = run_command(report, b"");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );

    let base = running.dir.path().to_path_buf();
    for (what, file) in [("--report", &page), ("supervisor report", &rebuilt)] {
        let profile = base.join(format!("profile-{}", what.len()));
        let dom = browse(&browser, &profile, file, &["--dump-dom"]);
        check_page(&dom, &records, what);
    }
    let shot = base.join("report.png");
    browse(
        &browser,
        &base.join("profile-shot"),
        &page,
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn report_needs_its_output_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    std::fs::write(&out, "{\"seq\":1,\"ms\":1.5,\"ok\":1}\nnot json\n").unwrap();
    let page = dir.path().join("p.html");
    let mut command = Command::new(SUPERVISOR);
    command.arg("report").arg(&out).arg("-o").arg(&page);
    let done = run_command(command, b"");
    assert_eq!(done.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(!page.exists(), "no page from a bad output");
}
