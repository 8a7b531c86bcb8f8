//! `supervisor report OUTPUT [--stats FILE] -o FILE.html`: the HTML report
//! of a finished run, rebuilt from its files. The records give the task
//! times, errors and (for `fetch`) hosts; the stats file gives the charts
//! over time, the worker lives and the header.

use std::borrow::Cow;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use multiloop_supervisor::history::{Ending, History};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::page::{self, PageData};
use crate::stats_file::{self, StatsLine, StatsRun};
use crate::ExitCode;

/// `supervisor report OUTPUT [--stats FILE] -o FILE.html`
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The run's output file (JSON lines of records).
    #[arg(value_name = "OUTPUT")]
    pub output: PathBuf,

    /// The run's --stats file: without it the page has no charts over
    /// time and no worker lives.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,

    /// Where to write the page.
    #[arg(short = 'o', long = "out", value_name = "FILE.html")]
    pub out: PathBuf,
}

pub fn main(args: &ReportArgs) -> i32 {
    match rebuild(args) {
        Ok(()) => ExitCode::AllOk.into(),
        Err(error) => {
            eprintln!("supervisor report: {error:#}");
            ExitCode::Usage.into()
        }
    }
}

fn rebuild(args: &ReportArgs) -> Result<()> {
    let stats = match &args.stats {
        Some(path) => stats_file::read(path)?,
        None => StatsRun::default(),
    };
    let fetch = match &stats.meta {
        Some(meta) => meta.kind == "fetch",
        None => looks_like_fetch(&args.output)?,
    };
    let mut history = History::new(true, fetch);
    for line in &stats.lines {
        match line {
            StatsLine::Sample(sample) => history.sample(sample),
            StatsLine::Life { t, life } => history.life(*t, life),
            StatsLine::Start { .. } | StatsLine::End { .. } => {}
        }
    }
    read_records(&args.output, |seq, micros, ending| {
        history.record(seq, micros, ending)
    })?;
    let view = history.view();
    let html = page::render(&PageData {
        meta: stats.meta.as_ref(),
        end: stats.end.as_ref(),
        finished: true,
        history: &view,
        generated_unix_ms: page::unix_ms(),
        chart_library: page::CHART_LIBRARY,
    });
    page::write_atomically(&args.out, &html)
        .with_context(|| format!("cannot write {}", args.out.display()))
}

/// The part of a record the report reads.
#[derive(Debug, Deserialize)]
struct RecordLine<'a> {
    seq: u64,
    #[serde(default)]
    ms: f64,
    #[serde(borrow, default)]
    ok: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<ErrorPart<'a>>,
}

#[derive(Debug, Deserialize)]
struct ErrorPart<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    message: Cow<'a, str>,
}

/// Calls `each` for every record of an output file. A torn last line (the
/// run was killed mid-write; `--resume` drops it too) is left out.
fn read_records(path: &Path, mut each: impl FnMut(u64, u64, Ending<'_>)) -> Result<()> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record: RecordLine<'_> = match serde_json::from_slice(&line) {
            Ok(record) => record,
            Err(_) if line.last() != Some(&b'\n') => return Ok(()),
            Err(error) => bail!("{} line {number}: not a record: {error}", path.display()),
        };
        let micros = (record.ms * 1000.0).round() as u64;
        let ending = match (&record.ok, &record.error) {
            (Some(ok), _) => Ending::Ok(ok.get().as_bytes()),
            (None, Some(error)) => Ending::Err {
                kind: &error.kind,
                message: &error.message,
            },
            (None, None) => bail!(
                "{} line {number}: a record has `ok` or `error`",
                path.display()
            ),
        };
        each(record.seq, micros, ending);
    }
}

/// Without a stats file to say the kind: whether the first ok record is a
/// `fetch` page (a status and a URL).
fn looks_like_fetch(path: &Path) -> Result<bool> {
    let mut found = None;
    let result = read_records(path, |_, _, ending| {
        if found.is_none() {
            if let Ending::Ok(output) = ending {
                let value: serde_json::Value = serde_json::from_slice(output).unwrap_or_default();
                found = Some(value["status"].is_u64() && value["url"].is_string());
            }
        }
    });
    result.map(|()| found.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(
            &path,
            "{\"seq\":1,\"worker\":0,\"attempts\":1,\"ms\":4.205,\"ok\":{\"sum\":6}}\n\
             {\"seq\":2,\"worker\":0,\"attempts\":1,\"ms\":0.5,\"error\":{\"kind\":\"failed\",\"message\":\"no\"}}\n\
             {\"seq\":3,\"ms\":1",
        )
        .unwrap();
        let mut seen = Vec::new();
        read_records(&path, |seq, micros, ending| {
            seen.push((seq, micros, matches!(ending, Ending::Ok(_))));
        })
        .unwrap();
        assert_eq!(seen, vec![(1, 4205, true), (2, 500, false)]);
        assert!(!looks_like_fetch(&path).unwrap());
        std::fs::write(&path, "{\"seq\":1}\n").unwrap();
        let error = read_records(&path, |_, _, _| {}).unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
    }
}
