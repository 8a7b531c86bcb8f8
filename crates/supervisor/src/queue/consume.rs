//! A consuming node: pulls task lines from the queue as the dispatcher
//! asks for input, keeps what it holds from being claimed by others,
//! acknowledges a line only once its record is flushed (pushing the tasks
//! it added in the same step), claims lines that dead nodes left behind,
//! and hands back what it did not finish.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use multiloop_protocol::{ErrorKind, Outcome};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::ack_push::{AckReport, Acked, Child, NOT_COMPLETE};
use super::store::{Entry, QueueError, Store};
use super::url::QueueUrl;
use crate::ack::{AckReceiver, Flushed, Settled};
use crate::added::{self, AddedEntry};
use crate::input::{line_item, InputFilter, InputMessage};
use crate::lines::Line;
use crate::record::{InputItem, Record, TaskEntry};
use crate::seen;

/// How a node takes part in a queue (`--queue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub url: QueueUrl,
    /// This node's name in the consumer group; stable across restarts of
    /// the same node so that `--resume` finds what it held.
    pub consumer: String,
    /// Lines held this long by a silent node are taken over.
    pub claim_after: Duration,
    /// Deliveries after which a line is recorded `crashed` unrun.
    pub max_deliveries: u64,
    /// Most lines pulled at once.
    pub batch: usize,
    /// `--max-tasks`: input lines plus added tasks, across all nodes.
    pub max_tasks: Option<u64>,
}

/// Idle time given to a line handed back, so that any node's next claim
/// takes it at once (about a year).
const RELEASED_IDLE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Longest pause between polls of a queue with nothing to hand out.
const MAX_POLL: Duration = Duration::from_millis(500);

/// Longest pause between attempts while Redis is unreachable.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// Redis ids per command when holding or releasing many lines.
const CHUNK: usize = 1000;

/// A line this node pulled and has not acknowledged.
#[derive(Debug, Clone)]
struct Held {
    seq: u64,
    deliveries: u64,
    /// An added task's path; `None` for an input line.
    path: Option<Box<str>>,
}

/// Runs a node's side of the queue until the output is done.
pub async fn consume(
    spec: QueueSpec,
    filter: InputFilter,
    tx: mpsc::Sender<InputMessage>,
    mut acks: AckReceiver,
) {
    let give_up = spec.claim_after.max(Duration::from_secs(5));
    let mut store = match connect(&spec.url, give_up).await {
        Ok(store) => store,
        Err(error) => {
            let _ = tx.send(InputMessage::Failed(error.to_string())).await;
            return;
        }
    };
    if let Err(error) = store.existing_meta().await {
        let _ = tx.send(InputMessage::Failed(error.to_string())).await;
        return;
    }
    info!("queue {}: consuming as {:?}", spec.url, spec.consumer);
    let mut node = Node {
        now: Instant::now(),
        store,
        filter,
        held: HashMap::new(),
        next_id: 0,
        sent: 0,
        own_after: Some(0),
        rereading: false,
        claim_cursor: "0-0".into(),
        next_claim: Instant::now(),
        next_hold: Instant::now() + spec.claim_after / 3,
        poll: Duration::from_millis(10),
        to_ack: Vec::new(),
        counts: [0; 3],
        pushed: AckReport::default(),
        waiting_push: false,
        outage: None,
        give_up,
        spec,
    };
    let mut feeding = Some(tx);
    let mut wait_until: Option<Instant> = None;
    loop {
        node.now = Instant::now();
        if let Err(error) = node.housekeeping().await {
            if let Some(tx) = feeding.take() {
                let _ = tx.send(InputMessage::Failed(error.to_string())).await;
            }
        }
        let waiting = wait_until.is_some_and(|at| at > Instant::now());
        let pause = wait_until
            .filter(|_| waiting)
            .unwrap_or_else(|| Instant::now() + node.spec.claim_after / 3)
            .min(node.next_hold)
            // Acknowledgements that failed are retried soon, not at the
            // next keep-alive.
            .min(if node.to_ack.is_empty() {
                node.next_hold
            } else {
                Instant::now() + node.retry_in()
            })
            .max(Instant::now() + Duration::from_millis(1));
        let slot = reserve(feeding.clone());
        tokio::select! {
            biased;
            batch = acks.recv() => match batch {
                Some(batch) => node.flushed(batch),
                // The output writer is done: nothing more will be flushed.
                None => break,
            },
            permit = slot, if feeding.is_some() && !waiting => match permit {
                None => {
                    // The dispatcher stopped reading (drain, or the end).
                    feeding = None;
                }
                Some(permit) => match node.pull().await {
                    Ok(Pull::Items(items)) => {
                        wait_until = None;
                        permit.send(InputMessage::Batch(items));
                    }
                    Ok(Pull::Nothing) => {
                        wait_until = Some(Instant::now() + node.poll);
                        node.poll = (node.poll * 2).min(MAX_POLL);
                    }
                    Ok(Pull::Settled) => {
                        debug!("queue {}: nothing pending anywhere", node.spec.url);
                        permit.send(InputMessage::End { lines: node.sent });
                        feeding = None;
                    }
                    Err(error) if error.is_transient() => {
                        wait_until = Some(Instant::now() + node.retry_in());
                        if node.gave_up() {
                            permit.send(InputMessage::Failed(format!(
                                "{error} (for {:?}; giving up)", node.give_up
                            )));
                            feeding = None;
                        }
                    }
                    Err(error) => {
                        permit.send(InputMessage::Failed(error.to_string()));
                        feeding = None;
                    }
                },
            },
            _ = tokio::time::sleep_until(pause.into()) => {}
        }
    }
    node.now = Instant::now();
    node.finish().await;
}

/// Redis refused an acknowledgement because the input's push is not
/// complete (see the store's ack script).
fn is_not_complete(error: &QueueError) -> bool {
    matches!(error, QueueError::Refused { message, .. } if message.contains(NOT_COMPLETE))
}

/// A slot in the dispatcher's input channel, or `None` once it is closed.
async fn reserve(
    tx: Option<mpsc::Sender<InputMessage>>,
) -> Option<mpsc::OwnedPermit<InputMessage>> {
    match tx {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// Connects, retrying with backoff for up to `give_up`.
pub async fn connect(url: &QueueUrl, give_up: Duration) -> Result<Store, QueueError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match Store::connect(url).await {
            Ok(store) => return Ok(store),
            Err(error) if error.is_transient() && started.elapsed() + delay < give_up => {
                warn!("{error}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
            }
            Err(error) => return Err(error),
        }
    }
}

enum Pull {
    Items(Vec<InputItem>),
    /// Nothing to hand out now, but lines are still pending somewhere.
    Nothing,
    /// Nothing pending anywhere: the queue is done.
    Settled,
}

struct Node {
    spec: QueueSpec,
    store: Store,
    filter: InputFilter,
    now: Instant,
    held: HashMap<u64, Held>,
    next_id: u64,
    /// Lines handed to the dispatcher.
    sent: u64,
    /// Reading this node's own pending lines after this line; `None` once
    /// read. At the start they are what an earlier run under the same name
    /// left; after Redis comes back, they include any line a read had
    /// taken for this node when its reply was lost with the connection.
    own_after: Option<u64>,
    /// The own lines being read are those of a reconnect, not of a start.
    rereading: bool,
    claim_cursor: String,
    next_claim: Instant,
    next_hold: Instant,
    poll: Duration,
    /// Flushed lines not yet acknowledged (with the tasks they added), and
    /// their outcome counts.
    to_ack: Vec<Acked>,
    counts: [u64; 3],
    /// What acknowledgements did with added tasks, over the run.
    pushed: AckReport,
    /// Added tasks wait for the input's push to complete.
    waiting_push: bool,
    /// Since when Redis has been failing.
    outage: Option<Instant>,
    give_up: Duration,
}

impl Node {
    /// Notes flushed records; they are acknowledged in the next round.
    fn flushed(&mut self, batch: Vec<Flushed>) {
        for flushed in batch {
            if let Some(held) = self.held.remove(&flushed.id) {
                let children = flushed.adds.map_or_else(Vec::new, |adds| {
                    adds.entries
                        .into_iter()
                        .enumerate()
                        .map(|(i, entry)| {
                            let path = added::child_path(held.seq, held.path.as_deref(), i + 1);
                            match entry {
                                AddedEntry::Task { payload, key } => Child {
                                    path,
                                    line: payload,
                                    key: key.as_deref().map(seen::shared_fingerprint),
                                    bad: None,
                                },
                                AddedEntry::Bad(message) => Child {
                                    path,
                                    line: bytes::Bytes::new(),
                                    key: None,
                                    bad: Some(message),
                                },
                            }
                        })
                        .collect()
                });
                self.to_ack.push(Acked {
                    seq: held.seq,
                    children,
                });
                self.counts[match flushed.settled {
                    Settled::Ok => 0,
                    Settled::Failed => 1,
                    Settled::Crashed => 2,
                }] += 1;
            }
        }
    }

    /// Acknowledges what was flushed, and keeps held lines from being
    /// claimed. Errors only when Redis stayed away too long.
    async fn housekeeping(&mut self) -> Result<(), QueueError> {
        if !self.to_ack.is_empty() && !self.retrying() {
            let result = self
                .store
                .ack(&self.to_ack, self.counts, self.spec.max_tasks)
                .await;
            match result {
                Err(error) if is_not_complete(&error) => {
                    // Parents stay pending (and held) until their children
                    // can go in; nothing is lost meanwhile.
                    if !self.waiting_push {
                        info!(
                            "queue {}: tasks added before the input's push is complete wait for it",
                            self.spec.url
                        );
                        self.waiting_push = true;
                    }
                }
                result => match self.outcome(result)? {
                    Some(report) => {
                        self.waiting_push = false;
                        self.note(report);
                        self.to_ack.clear();
                        self.counts = [0; 3];
                    }
                    None => return Ok(()),
                },
            }
        }
        if self.now >= self.next_hold && !self.retrying() {
            // Recorded lines whose acknowledgement waits (for Redis, or for
            // the push to complete) are still held: nobody runs them again.
            let seqs: Vec<u64> = self.held_seqs().collect();
            let mut result = Ok(());
            for chunk in seqs.chunks(CHUNK) {
                result = self
                    .store
                    .hold(&self.spec.consumer, chunk, None, None)
                    .await;
                if result.is_err() {
                    break;
                }
            }
            if self.outcome(result)?.is_some() {
                self.next_hold = self.now + self.spec.claim_after / 3;
            }
        }
        Ok(())
    }

    /// Adds what an acknowledgement did with added tasks to the run's
    /// counts.
    fn note(&mut self, report: AckReport) {
        self.pushed.pushed += report.pushed;
        self.pushed.seen += report.seen;
        self.pushed.max_tasks += report.max_tasks;
        self.pushed.stale += report.stale;
        if report.stale > 0 {
            info!(
                "queue: {} recorded task(s) had been acknowledged by another node that ran them too; their additions went in then",
                report.stale
            );
        }
    }

    /// Whether a recent failure says to wait before the next command.
    fn retrying(&self) -> bool {
        self.outage
            .is_some_and(|since| self.now < since + self.retry_in() / 2)
    }

    /// Success ends an outage; a transient failure starts or continues
    /// one (`None`); other failures, or an outage past the limit, are
    /// errors.
    fn outcome<T>(&mut self, result: Result<T, QueueError>) -> Result<Option<T>, QueueError> {
        match result {
            Ok(value) => {
                if let Some(since) = self.outage.take() {
                    info!(
                        "queue {}: Redis is back after {:.1}s",
                        self.spec.url,
                        since.elapsed().as_secs_f64()
                    );
                    // A read that Redis carried out while its reply was
                    // lost left lines pending under this node's name that
                    // no one else will take before --claim-after: look at
                    // them all again.
                    self.own_after = Some(0);
                    self.rereading = true;
                }
                Ok(Some(value))
            }
            Err(error) if error.is_transient() => {
                if self.outage.is_none() {
                    warn!("{error}; retrying with backoff");
                    self.outage = Some(self.now);
                }
                if self.gave_up() {
                    return Err(error);
                }
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    fn gave_up(&self) -> bool {
        self.outage
            .is_some_and(|since| self.now.saturating_duration_since(since) >= self.give_up)
    }

    fn retry_in(&self) -> Duration {
        let out_for = self.outage.map_or(Duration::ZERO, |since| {
            self.now.saturating_duration_since(since)
        });
        (Duration::from_millis(100) + out_for / 2).min(MAX_RETRY)
    }

    /// One batch of lines: this node's own leftovers first, then lines
    /// abandoned by others, then new ones.
    async fn pull(&mut self) -> Result<Pull, QueueError> {
        let result = self.try_pull().await;
        match result {
            Ok(pull) => {
                self.outcome::<()>(Ok(()))?;
                Ok(pull)
            }
            Err(error) => {
                if error.is_transient() && self.outage.is_none() {
                    warn!("{error}; retrying with backoff");
                    self.outage = Some(self.now);
                }
                Err(error)
            }
        }
    }

    /// The lines this node holds or has recorded and not yet acknowledged:
    /// pending under its name, and nobody else's to run.
    fn held_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.held
            .values()
            .map(|held| held.seq)
            .chain(self.to_ack.iter().map(|acked| acked.seq))
    }

    async fn try_pull(&mut self) -> Result<Pull, QueueError> {
        let consumer = self.spec.consumer.clone();
        let batch = self.spec.batch;
        if let Some(mut after) = self.own_after {
            // What this node holds or has recorded is pending under its
            // name too; only the other lines are new to it.
            let known: HashSet<u64> = self.held_seqs().collect();
            loop {
                let entries = self.store.read_own(&consumer, batch, after).await?;
                let Some(last) = entries.last() else {
                    self.own_after = None;
                    self.rereading = false;
                    break;
                };
                after = last.seq;
                self.own_after = Some(after);
                let unknown: Vec<Entry> = entries
                    .into_iter()
                    .filter(|entry| !known.contains(&entry.seq))
                    .collect();
                if !unknown.is_empty() {
                    if self.rereading {
                        info!(
                            "queue: {} line(s) pending under this node's name that it did not hold (a reply lost with the connection); running them",
                            unknown.len()
                        );
                    }
                    return Ok(self.items(unknown));
                }
            }
        }
        if self.now >= self.next_claim {
            let (cursor, entries) = self
                .store
                .claim(&consumer, self.spec.claim_after, &self.claim_cursor, batch)
                .await?;
            // A full batch may mean more are waiting: look again at once.
            let full = entries.len() >= batch;
            self.claim_cursor = cursor;
            if !full {
                self.next_claim =
                    self.now + (self.spec.claim_after / 4).min(Duration::from_secs(1));
            }
            if !entries.is_empty() {
                info!(
                    "queue: took over {} line(s) left by other nodes",
                    entries.len()
                );
                return Ok(self.items(entries));
            }
        }
        let entries = self.store.read_new(&consumer, batch).await?;
        if !entries.is_empty() {
            self.poll = Duration::from_millis(10);
            return Ok(self.items(entries));
        }
        if self.store.settled().await? {
            return Ok(Pull::Settled);
        }
        // Lines are pending elsewhere; the next round looks for abandoned
        // ones first.
        self.next_claim = self.now;
        Ok(Pull::Nothing)
    }

    /// Entries as dispatcher items; lines this node's output already has
    /// (`--resume`) are acknowledged without running.
    fn items(&mut self, entries: Vec<Entry>) -> Pull {
        let mut items = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.deliveries > 1 && self.held.values().any(|held| held.seq == entry.seq) {
                // Already here (claimed back after a slow round): one copy.
                continue;
            }
            let id = self.next_id;
            let item = if entry.deliveries > self.spec.max_deliveries {
                Some(InputItem::Answered(Record {
                    id,
                    seq: entry.seq,
                    key: None,
                    worker: None,
                    attempts: (entry.deliveries - 1) as u32,
                    micros: 0,
                    outcome: Outcome::Err {
                        kind: ErrorKind::Crashed,
                        message: format!(
                            "delivered {} times: the nodes that held it died or lost it",
                            entry.deliveries - 1
                        ),
                    },
                    path: entry.path.clone(),
                    adds: None,
                }))
            } else if let Some(path) = &entry.path {
                Some(self.added_item(id, path, &entry))
            } else {
                let rerun;
                // A line recorded here whose record added tasks runs again:
                // its acknowledgement, which pushes its children, was lost.
                let filter = match &self.filter.journal {
                    Some(journal) if journal.added_by(entry.seq) => {
                        rerun = InputFilter {
                            journal: None,
                            ..self.filter.clone()
                        };
                        &rerun
                    }
                    _ => &self.filter,
                };
                line_item(entry.seq, id, Line::Complete(&entry.line), filter).map(|item| match item
                {
                    InputItem::Task(mut task) => {
                        task.attempts = (entry.deliveries - 1) as u32;
                        InputItem::Task(task)
                    }
                    other => other,
                })
            };
            match item {
                Some(item) => {
                    self.next_id += 1;
                    self.held.insert(
                        id,
                        Held {
                            seq: entry.seq,
                            deliveries: entry.deliveries,
                            path: entry.path,
                        },
                    );
                    items.push(item);
                }
                None => self.to_ack.push(Acked {
                    seq: entry.seq,
                    children: Vec::new(),
                }),
            }
        }
        self.sent += items.len() as u64;
        if items.is_empty() {
            Pull::Nothing
        } else {
            Pull::Items(items)
        }
    }

    /// A task another task added: it runs as it is (no `--key` field, no
    /// `--lines` quoting: it was checked as JSON where it was added), and
    /// is known by its path. It is not looked up in a resumed journal: one
    /// recorded here and handed back runs again (merge keeps one record).
    fn added_item(&self, id: u64, path: &str, entry: &Entry) -> InputItem {
        let bad = match &entry.bad {
            Some(message) => Some(message.clone()),
            None if entry.line.len() > self.filter.max_line => Some(format!(
                "{} bytes is over the frame limit of {} bytes (see --max-frame)",
                entry.line.len(),
                self.filter.max_line
            )),
            None => None,
        };
        match bad {
            Some(message) => InputItem::Answered(Record::bad_added(id, path, &message)),
            None => InputItem::Task(TaskEntry {
                id,
                seq: 0,
                payload: bytes::Bytes::copy_from_slice(&entry.line),
                key: None,
                attempts: (entry.deliveries - 1) as u32,
                blame: Default::default(),
                path: Some(path.into()),
            }),
        }
    }

    /// At the end: the last acknowledgements, and every line held but not
    /// recorded goes back to the queue at once (not after --claim-after).
    async fn finish(&mut self) {
        let deadline = Instant::now() + self.give_up;
        while !self.to_ack.is_empty() {
            match self
                .store
                .ack(&self.to_ack, self.counts, self.spec.max_tasks)
                .await
            {
                Ok(report) => {
                    self.note(report);
                    self.to_ack.clear();
                }
                Err(error)
                    if (error.is_transient() || is_not_complete(&error))
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => {
                    warn!(
                        "{error}: {} recorded lines are not acknowledged; other nodes will run them again after --claim-after (merge drops the duplicates)",
                        self.to_ack.len()
                    );
                    return;
                }
            }
        }
        let pushed = self.pushed;
        if pushed.pushed + pushed.seen + pushed.max_tasks > 0 {
            info!(
                "queue {}: pushed {} added task(s); kept out {} whose key was seen, {} past --max-tasks",
                self.spec.url, pushed.pushed, pushed.seen, pushed.max_tasks
            );
        }
        if self.held.is_empty() {
            return;
        }
        let mut by_count: HashMap<u64, Vec<u64>> = HashMap::new();
        for held in self.held.values() {
            by_count.entry(held.deliveries).or_default().push(held.seq);
        }
        let count = self.held.len();
        for (deliveries, seqs) in by_count {
            for chunk in seqs.chunks(CHUNK) {
                let back = deliveries.saturating_sub(1);
                let mut result = self
                    .store
                    .hold(&self.spec.consumer, chunk, Some(RELEASED_IDLE), Some(back))
                    .await;
                while matches!(&result, Err(e) if e.is_transient()) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    result = self
                        .store
                        .hold(&self.spec.consumer, chunk, Some(RELEASED_IDLE), Some(back))
                        .await;
                }
                if let Err(error) = result {
                    warn!("{error}: unfinished lines return to the queue after --claim-after");
                    return;
                }
            }
        }
        info!(
            "queue {}: handed {count} unfinished line(s) back",
            self.spec.url
        );
    }
}
