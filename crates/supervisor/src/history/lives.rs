//! The life story of every worker slot: each incarnation's start and end,
//! and why it ended. The most recent [`MAX_LIVES`] incarnations are kept
//! whole; counts by cause stay exact for the whole run.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Incarnations kept for the timeline (a worker crashing every second for
/// a day would otherwise keep 86,400).
pub const MAX_LIVES: usize = 5_000;

/// Why a worker process ended, in the words of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndCause {
    /// Exited cleanly at the end of the run.
    Finished,
    /// `--max-tasks-per-worker` or `--max-worker-rss`.
    Recycled,
    /// Rolling restart (SIGHUP, `ctl restart`).
    Restarted,
    /// The fleet shrank.
    Retired,
    /// Died by its own doing: a signal such as SIGSEGV/SIGABRT, or an exit
    /// code.
    Crashed,
    /// SIGKILL or SIGTERM the supervisor did not send (OOM killer, a
    /// person at `top`).
    KilledOutside,
    /// `ctl kill`, `top`'s `k`.
    KilledOnRequest,
    /// No heartbeat, or a loop held outside any task, past
    /// `--worker-timeout`.
    Hung,
    /// A task blocked the loop without using CPU.
    Stuck,
    /// A task computed on the loop past `--task-timeout`.
    TaskTimeout,
    /// Broke the protocol.
    Violation,
    /// No handshake in time.
    NoHandshake,
    /// Still busy `--grace` after being told to finish.
    Overdue,
    /// Killed because the run was stopping.
    Shutdown,
    /// The process could not be started.
    SpawnFailed,
}

/// A worker slot got a new process, or a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum LifeChange {
    Started {
        slot: usize,
        generation: u64,
    },
    Ended {
        slot: usize,
        generation: u64,
        pid: Option<u32>,
        cause: EndCause,
        /// The supervisor's words for it: `signal SIGSEGV`, `hung: ...`.
        detail: String,
        /// It was running a suspect group alone (a blame probe).
        probe: bool,
    },
}

/// One incarnation, for the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Life {
    pub slot: usize,
    pub generation: u64,
    /// Seconds since the run started.
    pub start: f64,
    pub end: Option<f64>,
    pub pid: Option<u32>,
    pub cause: Option<EndCause>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub probe: bool,
}

/// Every slot's incarnations, bounded.
#[derive(Debug, Clone, Default)]
pub struct Lives {
    lives: VecDeque<Life>,
    /// Ended incarnations left out of `lives` to keep it bounded.
    forgotten: u64,
    ends: BTreeMap<EndCause, u64>,
    probes: u64,
}

impl Lives {
    pub fn change(&mut self, t: f64, change: &LifeChange) {
        match change {
            LifeChange::Started { slot, generation } => self.lives.push_back(Life {
                slot: *slot,
                generation: *generation,
                start: t,
                end: None,
                pid: None,
                cause: None,
                detail: String::new(),
                probe: false,
            }),
            LifeChange::Ended {
                slot,
                generation,
                pid,
                cause,
                detail,
                probe,
            } => {
                *self.ends.entry(*cause).or_default() += 1;
                self.probes += u64::from(*probe);
                let found = self
                    .lives
                    .iter_mut()
                    .rev()
                    .find(|l| l.slot == *slot && l.generation == *generation);
                let life = match found {
                    Some(life) => life,
                    // Its start was forgotten (or a stats file lost it).
                    None => {
                        self.lives.push_back(Life {
                            slot: *slot,
                            generation: *generation,
                            start: t,
                            end: None,
                            pid: None,
                            cause: None,
                            detail: String::new(),
                            probe: false,
                        });
                        self.lives.back_mut().expect("pushed")
                    }
                };
                life.end = Some(t);
                life.pid = *pid;
                life.cause = Some(*cause);
                life.detail.clone_from(detail);
                life.probe = *probe;
            }
        }
        while self.lives.len() > MAX_LIVES {
            match self.lives.iter().position(|l| l.end.is_some()) {
                Some(index) => {
                    self.lives.remove(index);
                    self.forgotten += 1;
                }
                None => break,
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Life> {
        self.lives.iter()
    }

    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Ended incarnations by cause, over the whole run.
    pub fn ends(&self) -> &BTreeMap<EndCause, u64> {
        &self.ends
    }

    /// Ended incarnations that were blame probes.
    pub fn probes(&self) -> u64 {
        self.probes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(slot: usize, generation: u64, cause: EndCause) -> LifeChange {
        LifeChange::Ended {
            slot,
            generation,
            pid: Some(7),
            cause,
            detail: "signal SIGABRT".into(),
            probe: false,
        }
    }

    #[test]
    fn a_life_runs_from_start_to_end() {
        let mut lives = Lives::default();
        lives.change(
            0.5,
            &LifeChange::Started {
                slot: 1,
                generation: 1,
            },
        );
        lives.change(3.0, &ended(1, 1, EndCause::Crashed));
        let life = lives.iter().next().unwrap();
        assert_eq!((life.start, life.end), (0.5, Some(3.0)));
        assert_eq!(life.cause, Some(EndCause::Crashed));
        assert_eq!(lives.ends()[&EndCause::Crashed], 1);
    }

    #[test]
    fn bounded_with_exact_counts() {
        let mut lives = Lives::default();
        let n = MAX_LIVES as u64 * 2;
        for g in 1..=n {
            lives.change(
                g as f64,
                &LifeChange::Started {
                    slot: 0,
                    generation: g,
                },
            );
            lives.change(g as f64 + 0.5, &ended(0, g, EndCause::Crashed));
        }
        assert_eq!(lives.iter().count(), MAX_LIVES);
        assert_eq!(lives.forgotten(), n - MAX_LIVES as u64);
        assert_eq!(lives.ends()[&EndCause::Crashed], n);
        assert_eq!(lives.iter().last().unwrap().generation, n);
    }
}
