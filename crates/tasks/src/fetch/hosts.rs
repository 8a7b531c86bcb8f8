//! Per-host politeness of one worker: a slot per request in flight to a
//! `host:port` that holds for the whole run (the slots are shared by all
//! workers through [`SlotFile`]), the adaptive limit of `per_host=auto`,
//! pauses asked for by `Retry-After`, and the optional delay between
//! requests. A host's state is dropped when nothing uses or awaits it, so
//! a crawl over millions of hosts does not keep millions of entries.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use super::slots::{HostRange, SlotFile};

/// How many requests may be in flight to one host, in all workers together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerHost {
    /// `0`: no limit but the worker's connection budget.
    Unlimited,
    Fixed(usize),
    /// An adaptive limit per host (see [`Aimd`]).
    Auto,
}

/// Interval at which a worker that waits for a slot held by another worker
/// looks again. Slots this worker gives back wake its waiters at once.
const POLL: Duration = Duration::from_millis(5);
/// A slot held this long is given up when another worker waits for one of
/// the host's slots, so no worker keeps a host to itself.
const LEASE: Duration = Duration::from_millis(200);
/// After giving a slot up for another worker, this one does not take it
/// back for a few of the other's polls.
const COOLDOWN: Duration = Duration::from_millis(20);
/// Slots tried per look at the lock file, so a large limit held mostly by
/// other workers does not cost thousands of system calls per look.
const SCAN: usize = 64;

/// The per-host limits of one worker.
#[derive(Debug)]
pub(crate) struct Hosts {
    mode: PerHost,
    /// Ceiling of the adaptive limit.
    auto_max: usize,
    delay: Option<Duration>,
    file: SlotFile,
    hosts: RefCell<HashMap<String, Rc<Host>>>,
}

#[derive(Debug)]
struct Host {
    name: String,
    range: HostRange,
    /// One task at a time looks for a slot; the others queue here in order.
    gate: Semaphore,
    released: Notify,
    state: RefCell<HostState>,
}

#[derive(Debug)]
struct HostState {
    /// Tasks inside `acquire`.
    waiting: usize,
    /// Slots held by this worker: in use, or free and kept for a waiter.
    busy: usize,
    free: Vec<(usize, Instant)>,
    held: Vec<bool>,
    cooldown: Vec<(usize, Instant)>,
    cursor: usize,
    /// Requests to this host wait until then (`Retry-After`).
    not_before: Option<Instant>,
    aimd: Aimd,
    /// This worker says, in the lock file, that it waits for a slot.
    flagged: bool,
}

/// One request's slot on its host; given back on drop (also when the task
/// is cancelled by `--task-timeout`).
#[derive(Debug)]
pub(crate) struct HostPermit {
    host: Option<Rc<Host>>,
    slot: usize,
    since: Instant,
    hosts: Rc<Hosts>,
}

impl Hosts {
    pub(crate) fn new(
        mode: PerHost,
        auto_max: usize,
        delay: Option<Duration>,
        file: SlotFile,
    ) -> Self {
        Self {
            mode,
            auto_max: auto_max.max(1),
            delay,
            file,
            hosts: RefCell::default(),
        }
    }

    /// Waits for a slot on `host`: after any `Retry-After` pause, the
    /// per-host delay, and a free slot among all workers.
    pub(crate) async fn acquire(self: &Rc<Self>, host: &str) -> HostPermit {
        let entry = self.entry(host);
        entry.state.borrow_mut().waiting += 1;
        let _waiting = Waiting(entry.clone(), self);
        loop {
            let until = entry.state.borrow().not_before;
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => break,
            }
        }
        let _gate = entry.gate.acquire().await.expect("never closed");
        if let Some(delay) = self.delay {
            while !self.file.try_delay(entry.range) {
                tokio::time::sleep(POLL).await;
            }
            tokio::time::sleep(delay.mul_f64(0.5 + super::jitter())).await;
            self.file.release_delay(entry.range);
        }
        if self.mode == PerHost::Unlimited {
            return self.permit(entry.clone(), usize::MAX, Instant::now());
        }
        loop {
            if let Some((slot, since)) = self.take_slot(&entry) {
                self.flag(&entry, false);
                return self.permit(entry.clone(), slot, since);
            }
            self.flag(&entry, true);
            tokio::select! {
                _ = entry.released.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Says that `host`'s requests should wait until `until`.
    pub(crate) fn pause(&self, host: &str, until: Instant) {
        if let Some(entry) = self.hosts.borrow().get(host) {
            let mut state = entry.state.borrow_mut();
            state.not_before = Some(state.not_before.map_or(until, |t| t.max(until)));
        }
    }

    fn entry(&self, host: &str) -> Rc<Host> {
        self.hosts
            .borrow_mut()
            .entry(host.to_string())
            .or_insert_with(|| {
                Rc::new(Host {
                    name: host.to_string(),
                    range: HostRange::of(host),
                    gate: Semaphore::new(1),
                    released: Notify::new(),
                    state: RefCell::new(HostState {
                        waiting: 0,
                        busy: 0,
                        free: Vec::new(),
                        held: Vec::new(),
                        cooldown: Vec::new(),
                        cursor: 0,
                        not_before: None,
                        aimd: Aimd::new(self.auto_max, Instant::now()),
                        flagged: false,
                    }),
                })
            })
            .clone()
    }

    fn limit(&self, state: &HostState) -> usize {
        match self.mode {
            PerHost::Unlimited => usize::MAX,
            PerHost::Fixed(n) => n,
            PerHost::Auto => state.aimd.current(),
        }
    }

    /// A slot this worker keeps free, else one no worker holds.
    fn take_slot(&self, host: &Host) -> Option<(usize, Instant)> {
        let mut state = host.state.borrow_mut();
        let limit = self.limit(&state);
        let now = Instant::now();
        while let Some((slot, mut since)) = state.free.pop() {
            if slot >= limit {
                self.unlock(host, &mut state, slot);
                continue;
            }
            if now.duration_since(since) > LEASE {
                if self.file.others_wait(host.range) {
                    self.unlock(host, &mut state, slot);
                    state.cooldown.push((slot, now + COOLDOWN));
                    continue;
                }
                since = now;
            }
            state.busy += 1;
            return Some((slot, since));
        }
        state.cooldown.retain(|&(_, until)| until > now);
        let held = state.held.iter().filter(|&&h| h).count();
        if held >= limit {
            state.aimd.saw_full(now);
            return None;
        }
        let span = limit.min(super::slots::MAX_SLOTS);
        let tries = span.min(SCAN);
        for _ in 0..tries {
            let slot = state.cursor % span;
            state.cursor = state.cursor.wrapping_add(1);
            let mine = state.held.get(slot).copied().unwrap_or(false);
            let cooling = state.cooldown.iter().any(|&(s, _)| s == slot);
            if mine || cooling || !self.file.try_slot(host.range, slot) {
                continue;
            }
            if state.held.len() <= slot {
                state.held.resize(slot + 1, false);
            }
            state.held[slot] = true;
            state.busy += 1;
            return Some((slot, now));
        }
        state.aimd.saw_full(now);
        None
    }

    fn unlock(&self, host: &Host, state: &mut HostState, slot: usize) {
        self.file.release_slot(host.range, slot);
        if let Some(held) = state.held.get_mut(slot) {
            *held = false;
        }
    }

    fn flag(&self, host: &Host, waiting: bool) {
        let mut state = host.state.borrow_mut();
        if state.flagged != waiting {
            self.file.set_waiting(host.range, waiting);
            state.flagged = waiting;
        }
    }

    fn permit(self: &Rc<Self>, host: Rc<Host>, slot: usize, since: Instant) -> HostPermit {
        HostPermit {
            host: Some(host),
            slot,
            since,
            hosts: self.clone(),
        }
    }

    /// Forgets a host nothing uses or awaits any more.
    fn forget_if_idle(&self, host: &Host) {
        let idle = {
            let state = host.state.borrow();
            state.waiting == 0
                && state.busy == 0
                && state.free.is_empty()
                && state.not_before.is_none_or(|t| t <= Instant::now())
        };
        if idle {
            self.hosts.borrow_mut().remove(&host.name);
        }
    }

    #[cfg(test)]
    fn tracked_hosts(&self) -> usize {
        self.hosts.borrow().len()
    }
}

/// Counts a task inside `acquire`, also when its future is dropped.
struct Waiting<'a>(Rc<Host>, &'a Hosts);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.borrow_mut();
        state.waiting -= 1;
        // Slots kept for waiters that are gone (done, or cancelled).
        while state.free.len() > state.waiting {
            let (slot, _) = state.free.pop().expect("not empty");
            self.1.unlock(&self.0, &mut state, slot);
        }
        let unflag = state.waiting == 0 && state.flagged;
        drop(state);
        if unflag {
            self.1.flag(&self.0, false);
        }
        self.1.forget_if_idle(&self.0);
    }
}

impl HostPermit {
    /// The request ended well after `rtt`: the adaptive limit may grow.
    pub(crate) fn success(&self, rtt: Duration) {
        if let Some(host) = &self.host {
            host.state.borrow_mut().aimd.success(rtt, Instant::now());
        }
    }

    /// The host showed overload (timeout, refused or reset connection,
    /// 429, 503): the adaptive limit halves.
    pub(crate) fn congestion(&self) {
        if let Some(host) = &self.host {
            host.state.borrow_mut().aimd.congestion(Instant::now());
        }
    }
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        let Some(host) = self.host.take() else {
            return;
        };
        let hosts = &self.hosts;
        if self.slot != usize::MAX {
            let mut state = host.state.borrow_mut();
            state.busy -= 1;
            if state.free.len() < state.waiting {
                state.free.push((self.slot, self.since));
            } else {
                hosts.unlock(&host, &mut state, self.slot);
            }
        }
        host.released.notify_one();
        hosts.forget_if_idle(&host);
    }
}

/// The adaptive limit of one host in one worker: additive increase,
/// multiplicative decrease (TCP's congestion control, as a crawler's
/// "AutoThrottle"). It starts at 2 and grows by one per success while
/// responses come back, on average, no slower than twice the fastest seen
/// (slow start, a doubling per round trip), then by one per round trip; a
/// timeout, a refused or reset connection, a 429 or a 503 halves it, at
/// most once per round trip. It only grows while the limit is what holds
/// requests back: a request found no slot while the succeeding one was in
/// flight. The average is TCP's smoothed round trip (an EWMA of 1/8), so
/// one response delayed by this client's own busy loop does not end the
/// slow start; a server that queues delays them all.
#[derive(Debug, Clone)]
pub(crate) struct Aimd {
    limit: f64,
    max: f64,
    slow_start: bool,
    min_rtt: Option<Duration>,
    /// Smoothed round trip (RFC 6298's SRTT).
    srtt: Option<Duration>,
    min_since: Instant,
    last_cut: Option<Instant>,
    /// When a request last found every slot taken.
    last_full: Option<Instant>,
}

/// Start of the adaptive limit.
pub(crate) const AUTO_START: usize = 2;
/// The fastest response is forgotten this often, so a host that became
/// slower for good is judged against its new speed.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);

impl Aimd {
    pub(crate) fn new(max: usize, now: Instant) -> Self {
        Self {
            limit: AUTO_START as f64,
            max: max.max(1) as f64,
            slow_start: true,
            min_rtt: None,
            srtt: None,
            min_since: now,
            last_cut: None,
            last_full: None,
        }
    }

    pub(crate) fn current(&self) -> usize {
        (self.limit as usize).clamp(1, self.max as usize)
    }

    fn saw_full(&mut self, now: Instant) {
        self.last_full = Some(now);
    }

    /// A request that took `rtt` ended well at `now`.
    pub(crate) fn success(&mut self, rtt: Duration, now: Instant) {
        if now.saturating_duration_since(self.min_since) > MIN_RTT_WINDOW {
            self.min_rtt = None;
            self.min_since = now;
        }
        let min = *self.min_rtt.get_or_insert(rtt);
        if rtt < min {
            self.min_rtt = Some(rtt);
        }
        // RFC 6298: SRTT <- 7/8 SRTT + 1/8 R.
        let srtt = match self.srtt {
            None => rtt,
            Some(srtt) => (srtt * 7 + rtt) / 8,
        };
        self.srtt = Some(srtt);
        // Queueing at the server (or in this client) shows as latency
        // before it shows as errors: stop growing there.
        if srtt > min * 2 + Duration::from_millis(5) {
            self.slow_start = false;
            return;
        }
        // Responses come in batches: several successes of one batch all
        // count, as long as the limit held a request back while they flew
        // (a flag cleared per success would count one per batch).
        let started = now.checked_sub(rtt).unwrap_or(now);
        if self.last_full.is_none_or(|full| full < started) {
            return;
        }
        self.limit += if self.slow_start {
            1.0
        } else {
            1.0 / self.limit
        };
        self.limit = self.limit.min(self.max);
    }

    pub(crate) fn congestion(&mut self, now: Instant) {
        let round = self
            .min_rtt
            .unwrap_or(Duration::from_millis(100))
            .max(Duration::from_millis(50));
        if self
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < round)
        {
            return;
        }
        self.last_cut = Some(now);
        self.slow_start = false;
        self.limit = (self.limit / 2.0).max(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn local<F: std::future::Future>(future: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, future)
    }

    fn hosts(mode: PerHost) -> Rc<Hosts> {
        Rc::new(Hosts::new(mode, 64, None, SlotFile::private().unwrap()))
    }

    #[test]
    fn at_most_limit_in_flight_per_host_and_idle_hosts_are_forgotten() {
        local(async {
            let limits = hosts(PerHost::Fixed(3));
            let now = Rc::new(Cell::new(0usize));
            let max = Rc::new(Cell::new(0usize));
            let mut tasks = Vec::new();
            for i in 0..20 {
                let (limits, now, max) = (limits.clone(), now.clone(), max.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    let host = if i % 2 == 0 { "a:80" } else { "b:80" };
                    let _permit = limits.acquire(host).await;
                    if host == "a:80" {
                        now.set(now.get() + 1);
                        max.set(max.get().max(now.get()));
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    if host == "a:80" {
                        now.set(now.get() - 1);
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            assert_eq!(max.get(), 3);
            assert_eq!(limits.tracked_hosts(), 0);
        });
    }

    #[test]
    fn unlimited_never_waits() {
        local(async {
            let limits = hosts(PerHost::Unlimited);
            let permits: Vec<_> = futures_lite(&limits, 100).await;
            assert_eq!(permits.len(), 100);
        });
    }

    async fn futures_lite(limits: &Rc<Hosts>, n: usize) -> Vec<HostPermit> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(limits.acquire("a:80").await);
        }
        out
    }

    #[test]
    fn aimd_grows_while_fast_and_halves_on_congestion() {
        let rtt = Duration::from_millis(20);
        let mut now = Instant::now();
        let mut aimd = Aimd::new(100, now);
        assert_eq!(aimd.current(), AUTO_START);
        // A round trip in which requests waited for a slot; its ten
        // responses arrive in one batch, and every one of them counts.
        aimd.saw_full(now + Duration::from_millis(1));
        now += rtt;
        for _ in 0..10 {
            aimd.success(rtt, now);
        }
        assert_eq!(
            aimd.current(),
            AUTO_START + 10,
            "slow start: one per success"
        );
        aimd.congestion(now);
        assert_eq!(aimd.current(), 6);
        aimd.congestion(now + Duration::from_millis(10));
        assert_eq!(aimd.current(), 6, "at most one cut per round trip");
        aimd.saw_full(now + Duration::from_millis(1));
        now += rtt;
        for _ in 0..6 {
            aimd.success(rtt, now);
        }
        assert_eq!(aimd.current(), 6, "then about one per round trip");
        // Without demand (no request waited during these), no growth.
        for _ in 0..50 {
            now += rtt;
            aimd.success(rtt, now);
        }
        assert!(aimd.current() <= 7);
        // Slow answers stop growth.
        let mut slow = Aimd::new(100, now);
        slow.saw_full(now);
        now += Duration::from_millis(10);
        slow.success(Duration::from_millis(10), now);
        for _ in 0..20 {
            slow.saw_full(now);
            now += Duration::from_millis(200);
            slow.success(Duration::from_millis(200), now);
        }
        assert_eq!(slow.current(), AUTO_START + 1);

        // One late response among fast ones does not end the slow start.
        let mut bumpy = Aimd::new(100, now);
        for late in [20, 20, 20, 100, 20, 20] {
            bumpy.saw_full(now);
            now += Duration::from_millis(late);
            bumpy.success(Duration::from_millis(late), now);
        }
        assert_eq!(bumpy.current(), AUTO_START + 6, "the average stayed low");
        assert!(bumpy.slow_start);
    }
}
