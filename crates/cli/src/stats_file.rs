//! The `--stats` file: the run's time series as JSON lines, appended as the
//! run goes, and read back by `supervisor report`. One line per fact: a
//! `start` (command line, machine), a `sample` each second (run counters,
//! per-worker rows), a `life` per worker start or end, an `end`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use multiloop_supervisor::history::{LifeChange, Sampled};
use serde::{Deserialize, Serialize};

use crate::page::{RunEnd, RunMeta};

/// One line of the stats file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StatsLine {
    Start { meta: RunMeta },
    Sample(Sampled),
    Life { t: f64, life: LifeChange },
    End { end: RunEnd },
}

/// Appends lines to the stats file; a failed write is logged once and
/// stops the file, never the run.
#[derive(Debug)]
pub struct StatsWriter {
    path: PathBuf,
    file: Option<File>,
}

impl StatsWriter {
    pub fn open(path: &Path, meta: &RunMeta) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open --stats {}", path.display()))?;
        let mut writer = Self {
            path: path.to_path_buf(),
            file: Some(file),
        };
        writer.write(&StatsLine::Start { meta: meta.clone() });
        Ok(writer)
    }

    pub fn write(&mut self, line: &StatsLine) {
        let Some(file) = &mut self.file else { return };
        let mut text = serde_json::to_vec(line).expect("stats lines are plain data");
        text.push(b'\n');
        // One write per line: with O_APPEND, a reader sees whole lines.
        if let Err(error) = file.write_all(&text) {
            tracing::warn!(
                "cannot write --stats {}: {error}; no more stats",
                self.path.display()
            );
            self.file = None;
        }
    }
}

/// The last run in a stats file (a file can hold several: it is appended).
#[derive(Debug, Default)]
pub struct StatsRun {
    pub meta: Option<RunMeta>,
    pub end: Option<RunEnd>,
    /// Samples and life changes, in order.
    pub lines: Vec<StatsLine>,
}

/// Reads the last run of a stats file. A torn last line (the run was
/// killed while writing it) is left out; any other bad line is an error
/// naming its number.
pub fn read(path: &Path) -> anyhow::Result<StatsRun> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut run = StatsRun::default();
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: StatsLine = match serde_json::from_str(&line) {
            Ok(parsed) => parsed,
            Err(_) if !line.ends_with('\n') => break,
            Err(error) => bail!(
                "{} line {number}: not a stats line: {error}",
                path.display()
            ),
        };
        match parsed {
            StatsLine::Start { meta } => {
                run = StatsRun {
                    meta: Some(meta),
                    ..StatsRun::default()
                };
            }
            StatsLine::End { end } => run.end = Some(end),
            other => run.lines.push(other),
        }
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: &str) -> RunMeta {
        RunMeta {
            command: vec!["supervisor".into()],
            host: "h".into(),
            cpus: 2,
            os: "linux".into(),
            version: "0".into(),
            kind: kind.into(),
            workers: 2,
            started_unix_ms: 1,
        }
    }

    #[test]
    fn the_last_run_is_read_and_a_torn_line_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.jsonl");
        for kind in ["sim", "fetch"] {
            let mut writer = StatsWriter::open(&path, &meta(kind)).unwrap();
            writer.write(&StatsLine::Life {
                t: 0.5,
                life: LifeChange::Started {
                    slot: 0,
                    generation: 1,
                },
            });
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"type\":\"sam").unwrap();
        let run = read(&path).unwrap();
        assert_eq!(run.meta.unwrap().kind, "fetch");
        assert_eq!(run.lines.len(), 1);
        assert!(run.end.is_none());
        file.write_all(b"\n").unwrap();
        let error = read(&path).unwrap_err().to_string();
        assert!(error.contains("line 5"), "{error}");
    }
}
