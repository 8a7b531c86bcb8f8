//! Finding the task that crashes its worker without failing the innocent
//! tasks that shared the worker with it.
//!
//! A worker's in-flight set at a crash becomes suspect. Suspects are not
//! mixed back into the normal flow: they are split in halves, and one
//! worker at a time (the probe) runs one half alone. A half that completes
//! is innocent; a half that crashes is split again. Only crashes of a task
//! running alone count against it, and it is failed after `max_crashes` of
//! them. One culprit among `n` in flight costs about `log2(n) + max_crashes`
//! crashes, and the rest of the fleet keeps running fresh tasks meanwhile.
//!
//! Evidence has three strengths. A worker that dies by its own doing
//! (abort, a crash signal, a non-zero exit, a protocol violation, a hang)
//! is strong evidence. A SIGKILL or SIGTERM that the supervisor did not
//! send (a person with `kill`, the OOM killer) is weak: those tasks are
//! simply run again, and become suspects only after repeated coincidence,
//! so that a leak can still be narrowed down; but weak evidence never
//! fails a task, however often it comes. A kill the supervisor was asked
//! to do (`ctl kill`, `top`'s `k`) or decided itself to end a drain is no
//! evidence at all. So a person killing workers never fails a task.
//!
//! The OOM killer's SIGKILL cannot be told from a person's, so it is weak
//! evidence too: a task that is killed alone for its memory again and
//! again runs again each time (it is never failed on that alone), and if
//! nothing else makes progress meanwhile the restart-intensity limit ends
//! the run, for `--resume`. `--max-worker-rss` is the tool for leaks: it
//! recycles a worker before the kernel has to kill it.

use std::collections::VecDeque;

use crate::record::TaskEntry;

/// Strikes for a strong crash while alone; a weak one counts 1.
const STRONG: u32 = 2;

/// Outside kills a task may share before it is treated as a suspect.
const COINCIDENCES_FOR_SUSPICION: u32 = 3;

/// How much a worker's death says about the tasks it had in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    Strong,
    Weak,
    /// The supervisor was asked to kill the worker: nothing against its tasks.
    None,
}

/// What to do with a dead worker's tasks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Innocent as far as we know: back to the normal queue.
    pub rerun: Vec<TaskEntry>,
    /// Crashed their worker `max_crashes` times alone: report as failed.
    pub culprits: Vec<TaskEntry>,
}

/// The suspect groups waiting for a probe.
#[derive(Debug)]
pub struct Blame {
    groups: VecDeque<Vec<TaskEntry>>,
    max_strikes: u32,
}

impl Blame {
    pub fn new(max_crashes: u32) -> Self {
        Self {
            groups: VecDeque::new(),
            max_strikes: max_crashes.max(1) * STRONG,
        }
    }

    /// Suspect tasks waiting to be probed.
    pub fn suspects(&self) -> usize {
        self.groups.iter().map(Vec::len).sum()
    }

    /// Every suspect waiting, for the task book's checks.
    #[cfg(debug_assertions)]
    pub fn iter(&self) -> impl Iterator<Item = &TaskEntry> {
        self.groups.iter().flatten()
    }

    /// The next group to run alone on a probe worker.
    pub fn next_group(&mut self) -> Option<Vec<TaskEntry>> {
        self.groups.pop_front()
    }

    /// A worker died with `tasks` in flight. `probe` says whether those
    /// tasks were a suspect group running alone.
    pub fn on_death(
        &mut self,
        mut tasks: Vec<TaskEntry>,
        evidence: Evidence,
        probe: bool,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        match evidence {
            // A probe's group goes back as it was, to be probed again; any
            // other task simply runs again.
            Evidence::None if probe => self.groups.push_front(tasks),
            Evidence::None => verdict.rerun = tasks,
            Evidence::Strong if tasks.len() == 1 => {
                let mut task = tasks.pop().expect("one task");
                task.blame.strikes += STRONG;
                if task.blame.strikes >= self.max_strikes {
                    verdict.culprits.push(task);
                } else {
                    self.groups.push_front(vec![task]);
                }
            }
            Evidence::Strong => self.split_to_front(tasks),
            // A suspect killed alone from outside is probed again, never
            // failed for it.
            Evidence::Weak if probe && tasks.len() == 1 => self.groups.push_front(tasks),
            // A suspect group killed from outside (the OOM killer, say) is
            // split like a crash, so a leaking task is still narrowed down.
            Evidence::Weak if probe => self.split_to_front(tasks),
            Evidence::Weak => {
                let mut suspects = Vec::new();
                for mut task in tasks {
                    task.blame.coincidences += 1;
                    if task.blame.coincidences >= COINCIDENCES_FOR_SUSPICION {
                        suspects.push(task);
                    } else {
                        verdict.rerun.push(task);
                    }
                }
                if !suspects.is_empty() {
                    self.groups.push_back(suspects);
                }
            }
        }
        verdict
    }

    /// A group that crashed is split; its first half is probed next.
    fn split_to_front(&mut self, mut tasks: Vec<TaskEntry>) {
        if tasks.is_empty() {
            return;
        }
        let second = tasks.split_off(tasks.len() / 2);
        if !second.is_empty() {
            self.groups.push_front(second);
        }
        if !tasks.is_empty() {
            self.groups.push_front(tasks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn task(id: u64) -> TaskEntry {
        TaskEntry {
            id,
            seq: id + 1,
            payload: Bytes::new(),
            key: None,
            attempts: 1,
            blame: Default::default(),
            path: None,
        }
    }

    /// Plays the policy against a fleet where `culprit` crashes any worker
    /// it runs on; returns (crashes, failed ids, completed ids).
    fn bisect(in_flight: u64, culprit: u64, max_crashes: u32) -> (usize, Vec<u64>, Vec<u64>) {
        let mut blame = Blame::new(max_crashes);
        let mut crashes = 1;
        let mut failed = Vec::new();
        let mut completed = Vec::new();
        let verdict = blame.on_death((0..in_flight).map(task).collect(), Evidence::Strong, false);
        assert!(
            verdict.rerun.is_empty(),
            "a strong crash re-runs nobody unprobed"
        );
        failed.extend(verdict.culprits.iter().map(|t| t.id));
        while let Some(group) = blame.next_group() {
            if group.iter().any(|t| t.id == culprit) {
                crashes += 1;
                let verdict = blame.on_death(group, Evidence::Strong, true);
                failed.extend(verdict.culprits.iter().map(|t| t.id));
                completed.extend(verdict.rerun.iter().map(|t| t.id));
            } else {
                completed.extend(group.iter().map(|t| t.id));
            }
        }
        (crashes, failed, completed)
    }

    #[test]
    fn culprit_among_a_thousand_costs_a_logarithm() {
        let (crashes, failed, completed) = bisect(1000, 637, 2);
        assert_eq!(failed, vec![637]);
        assert_eq!(completed.len(), 999);
        // 1 crash to find the group, about log2(1000) = 10 to narrow it,
        // and max_crashes alone.
        assert!(crashes <= 13, "{crashes} crashes");
    }

    proptest! {
        #[test]
        fn innocents_never_fail(n in 1u64..600, pick in any::<prop::sample::Index>(), max_crashes in 1u32..4) {
            let culprit = pick.index(n as usize) as u64;
            let (crashes, failed, mut completed) = bisect(n, culprit, max_crashes);
            prop_assert_eq!(failed, vec![culprit]);
            completed.sort_unstable();
            let innocents: Vec<u64> = (0..n).filter(|&id| id != culprit).collect();
            prop_assert_eq!(completed, innocents);
            let log2 = 64 - n.leading_zeros() as usize;
            prop_assert!(crashes <= log2 + max_crashes as usize + 1);
        }
    }

    #[test]
    fn outside_kills_rerun_and_never_fail_a_task_in_company() {
        let mut blame = Blame::new(2);
        let mut tasks: Vec<TaskEntry> = (0..4).map(task).collect();
        for _ in 0..2 {
            let verdict = blame.on_death(tasks, Evidence::Weak, false);
            assert!(verdict.culprits.is_empty());
            assert_eq!(verdict.rerun.len(), 4);
            tasks = verdict.rerun;
        }
        // The third coincidence makes them suspects, to be probed, not failed.
        let verdict = blame.on_death(tasks, Evidence::Weak, false);
        assert!(verdict.rerun.is_empty() && verdict.culprits.is_empty());
        assert_eq!(blame.suspects(), 4);
    }

    #[test]
    fn a_task_alone_is_failed_after_max_crashes() {
        let mut blame = Blame::new(2);
        assert!(blame
            .on_death(vec![task(9)], Evidence::Strong, false)
            .culprits
            .is_empty());
        let group = blame.next_group().unwrap();
        let verdict = blame.on_death(group, Evidence::Strong, true);
        assert_eq!(verdict.culprits.len(), 1);
        assert_eq!(verdict.culprits[0].blame.strikes, 4);
    }

    #[test]
    fn weak_kills_alone_never_fail_a_task() {
        let mut blame = Blame::new(2);
        let mut group = vec![task(1)];
        for _ in 0..50 {
            let verdict = blame.on_death(group, Evidence::Weak, true);
            assert!(verdict.culprits.is_empty() && verdict.rerun.is_empty());
            group = blame.next_group().unwrap();
        }
        assert_eq!(group[0].blame.strikes, 0);
        // Nor outside kills of a task alone that is not a suspect yet.
        let mut tasks = vec![task(2)];
        for _ in 0..50 {
            let verdict = blame.on_death(tasks, Evidence::Weak, false);
            assert!(verdict.culprits.is_empty());
            tasks = match blame.next_group() {
                Some(group) => group,
                None => verdict.rerun,
            };
        }
    }

    #[test]
    fn requested_kills_are_no_evidence() {
        let mut blame = Blame::new(1);
        let mut tasks: Vec<TaskEntry> = vec![task(1)];
        for _ in 0..50 {
            let verdict = blame.on_death(tasks, Evidence::None, false);
            assert!(verdict.culprits.is_empty());
            assert_eq!(blame.suspects(), 0);
            tasks = verdict.rerun;
        }
        assert_eq!(tasks[0].blame, Default::default());
        // A probe killed on request keeps its group, unchanged.
        let verdict = blame.on_death(vec![task(1), task(2)], Evidence::None, true);
        assert_eq!(verdict, Verdict::default());
        assert_eq!(blame.suspects(), 2);
    }
}
