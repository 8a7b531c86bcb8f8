//! Fills the page template: the vendored uPlot (code, styles, licence),
//! our own script and styles, and the data as JSON.

use std::io::Write as _;
use std::path::Path;

use super::data::PageData;

const TEMPLATE: &str = include_str!("template.html");
const SCRIPT: &str = include_str!("report.js");
const STYLE: &str = include_str!("report.css");
const UPLOT_JS: &str = include_str!("../../vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../vendor/uplot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../../vendor/uplot/LICENSE");

/// The chart library's name and version, as the page's footer says.
pub const CHART_LIBRARY: &str = "uPlot 1.6.32 (MIT)";

/// The whole page.
pub fn render(data: &PageData<'_>) -> String {
    let json = serde_json::to_string(data).expect("page data is plain data");
    // Inside <script>, `</script>` or `<!--` in a string would end or
    // confuse the element; `<` never appears outside JSON strings, where
    // `\u003c` means the same.
    let json = json.replace('<', "\\u003c");
    let title = data
        .meta
        .map(|m| format!("multiloop run: {} on {}", m.kind, m.host))
        .unwrap_or_else(|| "multiloop run".to_string());
    // The replacements are applied in this order and none of the inserted
    // texts is searched again, so a placeholder inside the data or the
    // library cannot be expanded.
    let mut out = String::with_capacity(TEMPLATE.len() + UPLOT_JS.len() + json.len() + 8192);
    let mut rest = TEMPLATE;
    for (marker, text) in [
        ("@TITLE@", html_escape(&title)),
        ("@UPLOT_CSS@", UPLOT_CSS.to_string()),
        ("@STYLE@", STYLE.to_string()),
        ("@UPLOT_LICENSE@", html_escape(UPLOT_LICENSE)),
        ("@DATA@", json),
        ("@UPLOT_JS@", UPLOT_JS.to_string()),
        ("@SCRIPT@", SCRIPT.to_string()),
    ] {
        let (before, after) = rest
            .split_once(marker)
            .expect("the template has every marker, in order");
        out.push_str(before);
        out.push_str(&text);
        rest = after;
    }
    out.push_str(rest);
    out
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes `text` beside `path` and renames it over, so that a browser
/// opening the report mid-run never sees half a page.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path.file_name().map_or_else(
        || std::ffi::OsString::from("report.html"),
        ToOwned::to_owned,
    );
    let mut partial = std::ffi::OsString::from(".");
    partial.push(&name);
    partial.push(".partial");
    let partial = path.with_file_name(partial);
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(text.as_bytes())?;
    file.sync_data().ok();
    drop(file);
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiloop_supervisor::history::History;

    #[test]
    fn data_cannot_close_the_script() {
        let view = History::new(true, false).view();
        let meta = super::super::RunMeta {
            command: vec!["supervisor".into(), "</script><b>".into()],
            host: "h".into(),
            cpus: 1,
            os: "linux".into(),
            version: "0".into(),
            kind: "sim".into(),
            workers: 1,
            started_unix_ms: 0,
        };
        let page = render(&PageData {
            meta: Some(&meta),
            end: None,
            finished: false,
            history: &view,
            generated_unix_ms: 0,
            chart_library: CHART_LIBRARY,
        });
        assert!(!page.contains("</script><b>"));
        assert!(page.contains("\\u003c/script>\\u003cb>"));
        assert!(page.contains("Leon Sorokin"), "the licence is inlined");
        assert!(!page.contains("@DATA@") && !page.contains("@SCRIPT@"));
    }

    /// The page of a huge run: ten million records, a day of samples, 64
    /// workers that died thousands of times with long messages, all error
    /// kinds, a thousand hosts. Its size is bounded by the history's
    /// bounds, not by the run.
    #[test]
    fn a_huge_run_stays_under_five_megabytes() {
        use multiloop_supervisor::history::{EndCause, Ending, LifeChange, Sampled};
        use multiloop_supervisor::{Progress, WorkerRow, WorkerState};
        let workers = 64;
        let mut history = History::new(true, true);
        let row = |index: usize| WorkerRow {
            index,
            pid: Some(1000 + index as u32),
            state: WorkerState::Running,
            in_flight: 100,
            done: 0,
            failed: 0,
            restarts: 0,
            cpu_percent: 97.3,
            cpu_us: 0,
            rss_bytes: 123_456_789,
            peak_rss_bytes: 0,
            lag_us: 12_345,
            max_lag_us: 0,
            held: String::new(),
            blocked_share: 0.123,
            uptime: None,
        };
        let rows: Vec<WorkerRow> = (0..workers).map(row).collect();
        for second in 1..=86_400u64 {
            history.sample(&Sampled {
                t: second as f64,
                progress: Progress {
                    done: second * 115,
                    failed: second,
                    read: second * 116,
                    restarts: second / 10,
                    alive: workers as u64,
                    queued: 1000,
                },
                workers: rows.clone(),
            });
        }
        let detail = "x".repeat(400);
        for generation in 1..=20_000u64 {
            let slot = (generation % workers as u64) as usize;
            let t = generation as f64;
            history.life(t, &LifeChange::Started { slot, generation });
            history.life(
                t + 0.5,
                &LifeChange::Ended {
                    slot,
                    generation,
                    pid: Some(123_456),
                    cause: EndCause::Crashed,
                    detail: detail.clone(),
                    probe: generation % 3 == 0,
                },
            );
        }
        let message = "m".repeat(1000);
        for seq in 1..=10_000_000u64 {
            let ending = match seq % 1000 {
                0 => Ending::Err {
                    kind: ["timeout", "failed", "panicked", "crashed", "bad_input"]
                        [(seq / 1000 % 5) as usize],
                    message: &message,
                },
                _ if seq % 10_000 == 1 => Ending::Ok(br#"{"status":200,"url":"https://h"#),
                _ => Ending::Ok(b"{}"),
            };
            history.record(seq, seq % 9_999_991, ending);
        }
        for host in 0..2_000 {
            let page = format!(
                r#"{{"status":404,"url":"https://host-{host}.example/x","timings":{{"total_ms":3.5}}}}"#
            );
            history.record(1, 1, Ending::Ok(page.as_bytes()));
        }
        let view = history.view();
        let page = render(&PageData {
            meta: None,
            end: None,
            finished: false,
            history: &view,
            generated_unix_ms: 0,
            chart_library: CHART_LIBRARY,
        });
        eprintln!("a huge run's page: {} bytes", page.len());
        assert!(page.len() < 5_000_000, "{} bytes", page.len());
    }

    #[test]
    fn written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.html");
        write_atomically(&path, "one").unwrap();
        write_atomically(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
