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
            history: &view,
            generated_unix_ms: 0,
            chart_library: CHART_LIBRARY,
        });
        assert!(!page.contains("</script><b>"));
        assert!(page.contains("\\u003c/script>\\u003cb>"));
        assert!(page.contains("Leon Sorokin"), "the licence is inlined");
        assert!(!page.contains("@DATA@") && !page.contains("@SCRIPT@"));
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
