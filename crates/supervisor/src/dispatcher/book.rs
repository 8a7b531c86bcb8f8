//! The task book: where every task read and not yet answered is. A task is
//! in exactly one place — the queue, the retry wait, in flight on one
//! worker, or a suspect group waiting for a probe (a probe's group is in
//! flight on the probe worker). Debug builds check that after every event.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use multiloop_protocol::{Task, TaskResult};

use super::blame::{Blame, Evidence, Verdict};
use super::events::WorkerId;
use crate::record::TaskEntry;

/// Tasks by id. Ids are dense, unique counters, so they are their own hash:
/// SipHash was a visible share of the dispatcher's time per task.
type TaskMap = HashMap<u64, TaskEntry, BuildHasherDefault<IdHasher>>;

/// A hasher for `u64` ids that are already well spread.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // hashbrown takes its control bits from the top 7 bits: spread the
        // low bits of a counter there too.
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // One write (a task id) hashes to itself; a worker id (index, then
        // generation) mixes both.
        self.0 = self.0.rotate_left(29) ^ n;
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Every unanswered task, in exactly one place.
#[derive(Debug)]
pub(super) struct TaskBook {
    /// Ready to run, re-runs first.
    queue: VecDeque<TaskEntry>,
    /// Retries waiting for their backoff, by due time.
    retry_wait: BTreeMap<(Instant, u64), TaskEntry>,
    /// Sent and not answered, per worker.
    in_flight: HashMap<WorkerId, TaskMap, BuildHasherDefault<IdHasher>>,
    /// Suspect groups waiting for a probe.
    blame: Blame,
    /// The worker running a suspect group alone.
    probe: Option<WorkerId>,
    /// Tasks that entered the book, and that left it (answered, failed as
    /// culprits, or dropped when the run stopped): the difference is what
    /// it holds.
    entered: u64,
    left: u64,
}

impl TaskBook {
    pub fn new(max_crashes: u32) -> Self {
        Self {
            queue: VecDeque::new(),
            retry_wait: BTreeMap::new(),
            in_flight: HashMap::default(),
            blame: Blame::new(max_crashes),
            probe: None,
            entered: 0,
            left: 0,
        }
    }

    pub fn push(&mut self, task: TaskEntry) {
        self.entered += 1;
        self.queue.push_back(task);
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn suspects(&self) -> usize {
        self.blame.suspects()
    }

    pub fn probe(&self) -> Option<WorkerId> {
        self.probe
    }

    pub fn in_flight(&self, worker: WorkerId) -> usize {
        self.in_flight.get(&worker).map_or(0, HashMap::len)
    }

    /// The input line of `task`, if `worker` holds it.
    pub fn seq(&self, worker: WorkerId, task: u64) -> Option<u64> {
        Some(self.in_flight.get(&worker)?.get(&task)?.seq)
    }

    /// Nothing is left to answer.
    pub fn is_empty(&self) -> bool {
        self.entered == self.left
    }

    /// Sends up to `count` queued tasks to `worker`.
    pub fn send(&mut self, worker: WorkerId, count: usize) -> Vec<Task> {
        let count = count.min(self.queue.len());
        let map = self.in_flight.entry(worker).or_default();
        let mut sent = Vec::with_capacity(count);
        for mut task in self.queue.drain(..count) {
            task.attempts += 1;
            sent.push(Task {
                id: task.id,
                payload: task.payload.clone(),
            });
            map.insert(task.id, task);
        }
        sent
    }

    /// Sends the next suspect group to `worker`, which then runs it alone.
    pub fn send_probe(&mut self, worker: WorkerId) -> Option<Vec<Task>> {
        debug_assert!(self.probe.is_none() && self.in_flight(worker) == 0);
        let group = self.blame.next_group()?;
        self.probe = Some(worker);
        let map = self.in_flight.entry(worker).or_default();
        let mut sent = Vec::with_capacity(group.len());
        for mut task in group {
            task.attempts += 1;
            sent.push(Task {
                id: task.id,
                payload: task.payload.clone(),
            });
            map.insert(task.id, task);
        }
        Some(sent)
    }

    /// Takes the tasks answered by `worker` out of the book, each with its
    /// result; stale duplicates are left out.
    pub fn answered(
        &mut self,
        worker: WorkerId,
        results: Vec<TaskResult>,
    ) -> Vec<(TaskEntry, TaskResult)> {
        let Some(map) = self.in_flight.get_mut(&worker) else {
            return Vec::new();
        };
        let mut answered = Vec::with_capacity(results.len());
        for result in results {
            if let Some(task) = map.remove(&result.id) {
                answered.push((task, result));
            }
        }
        if map.is_empty() && self.probe == Some(worker) {
            // The whole group completed: innocent.
            self.probe = None;
        }
        self.left += answered.len() as u64;
        answered
    }

    /// An answered task runs again after `due` (`--retries`).
    pub fn retry_at(&mut self, due: Instant, task: TaskEntry) {
        self.entered += 1;
        self.retry_wait.insert((due, task.id), task);
    }

    /// Retries whose backoff ran out go to the front of the queue.
    pub fn release_retries(&mut self, now: Instant) {
        while let Some(entry) = self.retry_wait.first_entry() {
            if entry.key().0 > now {
                break;
            }
            self.queue.push_front(entry.remove());
        }
    }

    pub fn next_retry(&self) -> Option<Instant> {
        self.retry_wait.first_key_value().map(|(&(at, _), _)| at)
    }

    /// `worker` died; its tasks (in input order) and whether it was probing.
    fn take_worker(&mut self, worker: WorkerId) -> (Vec<TaskEntry>, bool) {
        let probe = self.probe == Some(worker);
        if probe {
            self.probe = None;
        }
        let mut tasks: Vec<TaskEntry> = self
            .in_flight
            .remove(&worker)
            .map(|map| map.into_values().collect())
            .unwrap_or_default();
        // In input order, so that re-runs keep the reorder buffer small.
        tasks.sort_unstable_by_key(|task| task.id);
        (tasks, probe)
    }

    /// `worker` died with `evidence` against its tasks. Innocents go back
    /// to the front of the queue, suspects to the blame groups; culprits
    /// leave the book and are returned, with whether `worker` was probing.
    pub fn worker_died(&mut self, worker: WorkerId, evidence: Evidence) -> (Vec<TaskEntry>, bool) {
        let (tasks, probe) = self.take_worker(worker);
        if tasks.is_empty() {
            return (Vec::new(), probe);
        }
        let Verdict { rerun, culprits } = self.blame.on_death(tasks, evidence, probe);
        for task in rerun.into_iter().rev() {
            self.queue.push_front(task);
        }
        self.left += culprits.len() as u64;
        (culprits, probe)
    }

    /// `worker` was killed because its watchdog named `task` (held the
    /// loop past a limit). If `worker` held it, that task leaves the book
    /// and is returned, with whether `worker` was probing; the other tasks
    /// shared the worker by chance and go to the front of the queue as
    /// innocent, not as suspects. None (and nothing moved) if `worker` does
    /// not hold `task`: then the usual blame applies.
    pub fn worker_died_named(&mut self, worker: WorkerId, task: u64) -> Option<(TaskEntry, bool)> {
        self.in_flight.get(&worker)?.get(&task)?;
        let (tasks, probe) = self.take_worker(worker);
        let mut named = None;
        for entry in tasks.into_iter().rev() {
            if entry.id == task {
                named = Some(entry);
            } else {
                self.queue.push_front(entry);
            }
        }
        self.left += 1;
        named.map(|named| (named, probe))
    }

    /// The task a watchdog named as stuck is blamed alone, so that it keeps
    /// its own crash count: it runs again (probed alone) or, out of
    /// chances, is returned as a culprit.
    pub fn blame_alone(&mut self, task: TaskEntry, probe: bool) -> Vec<TaskEntry> {
        self.entered += 1;
        let Verdict { rerun, culprits } = self.blame.on_death(vec![task], Evidence::Strong, probe);
        for task in rerun.into_iter().rev() {
            self.queue.push_front(task);
        }
        self.left += culprits.len() as u64;
        culprits
    }

    /// `worker` is gone while the run stops: its tasks are left for
    /// `--resume`. Returns how many.
    pub fn drop_worker(&mut self, worker: WorkerId) -> usize {
        let (tasks, _) = self.take_worker(worker);
        self.left += tasks.len() as u64;
        tasks.len()
    }

    /// The run stops taking work: tasks read but not started are simply
    /// not in the output (a `--resume` runs them).
    pub fn drop_waiting(&mut self) {
        let mut dropped = self.queue.len() + self.retry_wait.len();
        self.queue.clear();
        self.retry_wait.clear();
        while let Some(group) = self.blame.next_group() {
            dropped += group.len();
        }
        self.left += dropped as u64;
    }

    /// Debug builds: every task is in exactly one place, and the places
    /// hold exactly what entered and did not leave.
    #[cfg(debug_assertions)]
    pub fn check(&self) {
        let in_flight: usize = self.in_flight.values().map(HashMap::len).sum();
        let held = self.queue.len() + self.retry_wait.len() + in_flight + self.blame.suspects();
        assert_eq!(
            held as u64,
            self.entered - self.left,
            "task book: {held} held, {} entered, {} left",
            self.entered,
            self.left
        );
        if let Some(probe) = self.probe {
            assert!(self.in_flight(probe) > 0, "a probe with nothing in flight");
        }
        // Ids are unique across places (checked while cheap).
        if held <= 4096 {
            let mut ids = std::collections::HashSet::with_capacity(held);
            let all = self
                .queue
                .iter()
                .chain(self.retry_wait.values())
                .chain(self.in_flight.values().flat_map(|m| m.values()))
                .chain(self.blame.iter());
            for task in all {
                assert!(ids.insert(task.id), "task {} is in two places", task.id);
            }
        }
    }
}
