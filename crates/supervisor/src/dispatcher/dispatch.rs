//! Handing tasks to workers: credit windows, fair shares, and the probe
//! worker that runs suspects alone.

use multiloop_protocol::Task;
use tracing::debug;

use super::core::{Dispatcher, Place};
use super::events::Command;
use super::fleet::{Incarnation, Life};
use crate::record::TaskEntry;

impl Dispatcher {
    /// Hands queued tasks to workers with credit, and suspects to a probe.
    pub(super) fn fill(&mut self) {
        if !self.accepting() {
            return;
        }
        self.assign_probe();
        // A worker gets at most its fair share of what is queued, counting
        // the ones still starting: otherwise the first worker up would take
        // a whole window of a small batch and leave the others idle.
        let (takers, holding) = self
            .incarnations()
            .filter(|inc| inc.life == Life::Starting || (inc.accepts_tasks() && !inc.probe))
            .fold((0, 0), |(n, held), inc| (n + 1, held + inc.in_flight.len()));
        let share = (self.queue.len() + holding).div_ceil(takers.max(1));
        let limit = self.config.window;
        let count = self.slots.len();
        for step in 0..count {
            if self.queue.is_empty() {
                break;
            }
            let index = (self.next_fill + step) % count;
            self.fill_one(Place::Current(index), limit, share);
        }
        for position in 0..self.retiring.len() {
            if self.queue.is_empty() {
                break;
            }
            self.fill_one(Place::Retiring(position), limit, share);
        }
        self.next_fill = (self.next_fill + 1) % count.max(1);
    }

    pub(super) fn fill_one(&mut self, place: Place, window: usize, share: usize) {
        let reserved = self.blame.suspects() > 0 && !self.incarnations().any(|inc| inc.probe);
        let Some(inc) = self.get(place) else { return };
        if !inc.accepts_tasks() || inc.probe {
            return;
        }
        // With suspects waiting and no probe yet, the emptiest worker gets
        // nothing new, so that it soon can probe.
        if reserved
            && matches!(place, Place::Current(_))
            && self.probe_candidate() == Some(inc.id.index)
        {
            return;
        }
        let credit = window
            .min(share)
            .saturating_sub(inc.in_flight.len())
            .min(self.queue.len());
        if credit == 0 {
            return;
        }
        let batch: Vec<TaskEntry> = self.queue.drain(..credit).collect();
        let inc = self.at(place);
        let id = inc.id;
        let tasks = send(inc, batch);
        self.out.push(Command::Send { worker: id, tasks });
    }

    /// The running worker with the fewest tasks: the next probe.
    pub(super) fn probe_candidate(&self) -> Option<usize> {
        self.slots
            .iter()
            .filter_map(|s| s.current.as_ref())
            .filter(|inc| inc.life == Life::Running && inc.killed.is_none())
            .min_by_key(|inc| inc.in_flight.len())
            .map(|inc| inc.id.index)
    }

    pub(super) fn assign_probe(&mut self) {
        if self.blame.suspects() == 0 || self.incarnations().any(|inc| inc.probe) {
            return;
        }
        let Some(index) = self.probe_candidate() else {
            return;
        };
        let inc = self.slots[index]
            .current
            .as_mut()
            .expect("candidate is current");
        if !inc.in_flight.is_empty() {
            return;
        }
        let group = self.blame.next_group().expect("suspects exist");
        debug!("worker {index} probes {} suspect task(s)", group.len());
        inc.probe = true;
        let id = inc.id;
        let tasks = send(inc, group);
        self.out.push(Command::Send { worker: id, tasks });
    }
}

/// Moves `tasks` into `inc`'s in-flight set and returns them as sent.
fn send(inc: &mut Incarnation, tasks: Vec<TaskEntry>) -> Vec<Task> {
    let mut sent = Vec::with_capacity(tasks.len());
    for mut task in tasks {
        task.attempts += 1;
        sent.push(Task {
            id: task.id,
            payload: task.payload.clone(),
        });
        inc.in_flight.insert(task.id, task);
    }
    sent
}
