//! The intake of tasks: input lines, a resumed journal's tasks and the
//! tasks records add go into the task book, and from it to workers with
//! credit (held a moment by `coalesce` when every worker is busy); records
//! go out here too, since a record's additions are admitted as it leaves.
//! Input is taken only while the book has room, which is what bounds memory.

use std::time::Instant;

use tracing::{debug, warn};

use super::coalesce::{self, Coalesce};
use super::core::Dispatcher;
use super::events::Command;
use super::fleet::Taker;
use super::reasons::{CloseReason, RecycleReason};
use crate::record::{InputItem, Record};
use crate::resume::CrawlJournal;
use crate::spill::SpillError;

impl Dispatcher {
    /// Whether the engine should hand over more input now. False keeps the
    /// input unread, which is what bounds memory however large it is.
    /// Added tasks waiting go first: they are already read (and may be
    /// millions), input lines can wait unread for free.
    pub fn wants_input(&self) -> bool {
        self.run.input_open()
            && self.run.accepting()
            && self.frontier.pending() == 0
            && self.book.queued() < self.credit()
            && (!self.config.keep_order || self.reorder.bytes() < self.config.reorder_bytes)
    }

    /// Tasks the book may hold queued before it takes more: a window per
    /// worker.
    fn credit(&self) -> usize {
        self.config.window * self.fleet.active().max(1)
    }

    /// Before the run starts: the seen keys of a resumed journal, and the
    /// tasks it added but did not record, queued ahead of the input (one
    /// by one: they wait like new additions, mostly on disk if many).
    pub fn resume(&mut self, mut journal: CrawlJournal) {
        self.frontier.resume(&mut journal);
        loop {
            match self.frontier.resumed(&mut journal) {
                Ok(Some(item)) => self.take_input(vec![item]),
                Ok(None) => break,
                Err(error) => {
                    self.spill_failed(error);
                    break;
                }
            }
        }
    }

    /// Takes read items in: a task into the book (an added one through the
    /// frontier, which holds it until the book has room), an answered or
    /// rejected line straight to its record.
    pub(super) fn take_input(&mut self, items: Vec<InputItem>) {
        for item in items {
            self.run.read_one();
            match item {
                InputItem::Task(task) if task.path.is_some() => {
                    // Draining or stopping: it waits in the journal for
                    // `--resume`, never in the scratch file.
                    if self.run.accepting() {
                        if let Err(error) = self.frontier.queue(task) {
                            self.spill_failed(error);
                        }
                    }
                }
                InputItem::Task(task) => {
                    self.frontier.input(task.key.as_deref());
                    self.book.push(task)
                }
                InputItem::Answered(record) => self.emit(record),
                InputItem::Rejected { id, seq, message } => {
                    self.emit(Record::bad_input(id, seq, None, message))
                }
            }
        }
    }

    /// Tasks read but not started, in the book or waiting to enter it, are
    /// not run: the journal keeps them for `--resume`.
    pub(super) fn drop_waiting(&mut self) {
        self.book.drop_waiting();
        if let Err(error) = self.frontier.drop_pending() {
            // Only emptying the file failed: the run stops anyway.
            warn!("{error}");
        }
    }

    /// The first failure of the frontier's scratch file fails the run at
    /// the end of this event.
    pub(super) fn spill_failed(&mut self, error: SpillError) {
        self.spill_error.get_or_insert(error);
    }

    /// Moves the oldest added tasks waiting into the book, up to the
    /// credit window (what `wants_input` asks of input).
    pub(super) fn refill(&mut self) {
        if !self.run.accepting() {
            return;
        }
        let credit = self.credit();
        while self.book.queued() < credit {
            match self.frontier.next_task() {
                Ok(Some(task)) => self.book.push(task),
                Ok(None) => break,
                Err(error) => {
                    self.spill_failed(error);
                    break;
                }
            }
        }
    }

    /// Hands queued tasks to workers with credit, and suspects to a probe.
    pub(super) fn fill(&mut self, now: Instant) {
        if !self.run.accepting() {
            self.coalesce = Coalesce::default();
            return;
        }
        let candidate = self.fleet.probe_candidate(|id| self.book.in_flight(id));
        let suspects = self.book.suspects() > 0;
        if suspects && self.book.probe().is_none() {
            if let Some(id) = candidate.filter(|&id| self.book.in_flight(id) == 0) {
                if let Some(tasks) = self.book.send_probe(id) {
                    debug!("worker {} probes {} suspect task(s)", id.index, tasks.len());
                    self.out.push(Command::Send { worker: id, tasks });
                }
            }
        }
        if self.book.queued() == 0 {
            self.coalesce = Coalesce::default();
            return;
        }
        let probe = self.book.probe();
        // With suspects waiting and no probe yet, the emptiest worker gets
        // nothing new, so that it soon can probe.
        let reserved = (self.book.suspects() > 0 && probe.is_none())
            .then_some(candidate)
            .flatten();
        let takers = self.fleet.takers();
        // A worker gets at most its fair share of what is queued, counting
        // the ones still starting: otherwise the first worker up would take
        // a whole window of a small batch and leave the others idle.
        let (count, holding) = takers
            .iter()
            .filter(|(id, _)| Some(*id) != probe)
            .fold((0, 0), |(n, held), (id, _)| {
                (n + 1, held + self.book.in_flight(*id))
            });
        // With every worker busy, a task or two queued (a crawl's new
        // links) waits to go out with others: see `coalesce`.
        let busy = count > 0
            && self.book.suspects() == 0
            && takers.iter().all(|(id, taker)| {
                matches!(taker, Taker::Now { .. }) && self.book.in_flight(*id) >= coalesce::BUSY
            });
        if self.coalesce.hold(busy, self.book.queued(), count, now) {
            return;
        }
        let share = (self.book.queued() + holding).div_ceil(count.max(1));
        let limit = self.config.window.min(share);
        let mut due = Vec::new();
        for (id, taker) in takers {
            if self.book.queued() == 0 {
                break;
            }
            let Taker::Now { current } = taker else {
                continue;
            };
            if Some(id) == probe || (current && Some(id) == reserved) {
                continue;
            }
            let mut credit = limit.saturating_sub(self.book.in_flight(id));
            if let Some(budget) = self.fleet.budget(id) {
                credit = credit.min(usize::try_from(budget).unwrap_or(usize::MAX));
            }
            if credit == 0 {
                continue;
            }
            let tasks = self.book.send(id, credit);
            if self.fleet.sent(id, tasks.len() as u64) {
                due.push(id.index);
            }
            self.out.push(Command::Send { worker: id, tasks });
        }
        // Started as soon as the last task is out, the replacement warms up
        // while the old worker finishes.
        for index in due {
            self.replace(index, CloseReason::Recycled(RecycleReason::Tasks), now);
        }
    }

    /// Records go out in the order decided (`--keep-order` holds input
    /// lines' records back; added tasks have no input order). A record's
    /// additions are decided on as it goes out, so the tasks it adds are
    /// queued only once it is on its way to the journal that keeps them.
    pub(super) fn emit(&mut self, record: Record) {
        self.run.recorded(record.is_ok());
        let start = self.records.len();
        if self.config.keep_order && record.path.is_none() {
            self.reorder.push(record, &mut self.records);
        } else {
            self.records.push(record);
        }
        for i in start..self.records.len() {
            let items = self.frontier.admit(&mut self.records[i]);
            if !items.is_empty() {
                self.take_input(items);
                if !self.run.accepting() {
                    // Draining or stopping: like unread input, what was
                    // just added waits in the journal for `--resume`.
                    self.drop_waiting();
                }
            }
        }
    }
}
