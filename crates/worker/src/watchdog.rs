//! The writer thread that owns the result pipe and watches the event loop:
//! it writes the frames the loop hands it, and every heartbeat interval it
//! writes a heartbeat of its own, so heartbeats keep coming while a task
//! holds the loop and say which task that is.
//!
//! The loop pays two relaxed atomic stores around each poll and no clock
//! read: [`LoopGauge::enter`] publishes the task id and bumps a generation
//! counter. The watchdog samples the pair every [`SAMPLE`]; a generation
//! that has not moved between two samples while the loop was not parked
//! is one poll that held the loop for at least that long.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use multiloop_protocol::{FrameCodec, FromWorker, Heartbeat, Held, ProtocolError};
use tokio_util::codec::Encoder;

use crate::os;

/// How often the watchdog looks at the loop. A poll longer than this is
/// reported as holding the loop; shorter ones are normal turns.
pub(crate) const SAMPLE: Duration = Duration::from_millis(10);

/// `current` while the loop is parked, waiting for I/O or a timer.
const IDLE: u64 = 0;
/// `current` while the loop runs its own code, outside any task's poll.
const OUTSIDE: u64 = 1;
/// `current` is a task id plus this while that task is being polled.
const TASK_BASE: u64 = 2;

/// What the event loop publishes for its watchdog. Written only by the
/// loop thread, so a load and a store stand in for an atomic increment
/// (no locked instruction on the hot path).
#[derive(Debug)]
pub(crate) struct LoopGauge {
    generation: AtomicU64,
    current: AtomicU64,
    /// Tasks received from the supervisor, for the heartbeat's in-flight count.
    pub received: AtomicU64,
    /// The loop's own timer lag, measured by the loop at each of its ticks.
    pub lag_us: AtomicU64,
    pub max_lag_us: AtomicU64,
}

impl Default for LoopGauge {
    fn default() -> Self {
        Self::new()
    }
}

/// The gauge of this process's one event loop (a worker runs one loop);
/// static so that the runtime's park hooks can reach it.
pub(crate) static GAUGE: LoopGauge = LoopGauge::new();

impl LoopGauge {
    pub const fn new() -> Self {
        Self {
            generation: AtomicU64::new(0),
            current: AtomicU64::new(OUTSIDE),
            received: AtomicU64::new(0),
            lag_us: AtomicU64::new(0),
            max_lag_us: AtomicU64::new(0),
        }
    }

    fn set(&self, value: u64) -> u64 {
        let previous = self.current.load(Ordering::Relaxed);
        self.current.store(value, Ordering::Relaxed);
        // Release: a watchdog that sees the new generation sees the value.
        self.generation.store(
            self.generation.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Release,
        );
        previous
    }

    /// The loop is about to poll task `id`; returns what to restore after.
    #[inline]
    pub fn enter(&self, id: u64) -> u64 {
        self.set(id.saturating_add(TASK_BASE))
    }

    /// The poll that [`Self::enter`] announced is over.
    #[inline]
    pub fn leave(&self, previous: u64) {
        self.set(previous);
    }

    /// The loop parks (nothing to run): time spent now is not blocked time.
    pub fn park(&self) {
        self.set(IDLE);
    }

    /// The loop woke up and runs its own code until a task is polled.
    pub fn unpark(&self) {
        self.set(OUTSIDE);
    }

    fn sample(&self) -> (u64, u64) {
        let generation = self.generation.load(Ordering::Acquire);
        (generation, self.current.load(Ordering::Relaxed))
    }
}

/// One batch of encoded frames for the pipe, with how many task results it
/// carries (counted as done once written, so a heartbeat never claims a
/// result the supervisor cannot have read yet).
pub(crate) struct Outgoing {
    pub bytes: Bytes,
    pub results: u64,
}

/// Why the writer thread stopped early.
pub(crate) type WriteError = ProtocolError;

/// The loop's end of the writer thread.
pub(crate) struct Watchdog {
    frames: Option<Sender<Outgoing>>,
    thread: Option<JoinHandle<Result<(), WriteError>>>,
}

impl Watchdog {
    /// Starts the thread that owns `pipe` (fd 4); it writes `hello` (the
    /// encoded handshake) before anything else, so that no heartbeat can
    /// come first however late the thread is scheduled.
    pub fn start(
        pipe: OwnedFd,
        gauge: &'static LoopGauge,
        heartbeat: Duration,
        max_frame: usize,
        hello: Bytes,
    ) -> std::io::Result<Self> {
        let (frames, queue) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                Writer {
                    pipe: std::fs::File::from(pipe),
                    gauge,
                    heartbeat,
                    codec: FrameCodec::new(max_frame),
                    buf: BytesMut::with_capacity(256),
                    done: 0,
                    blocked_us: 0,
                }
                .run(&hello, queue)
            })?;
        Ok(Self {
            frames: Some(frames),
            thread: Some(thread),
        })
    }

    /// Hands frames to the writer. The queue needs no bound of its own:
    /// results are bounded by the tasks in flight, which the supervisor's
    /// credit window bounds.
    pub fn send(&mut self, outgoing: Outgoing) -> Result<(), WriteError> {
        let sent = self
            .frames
            .as_ref()
            .map(|frames| frames.send(outgoing).is_ok());
        match sent {
            Some(true) => Ok(()),
            // The writer stopped: its error says why.
            _ => Err(self.join().err().unwrap_or_else(gone)),
        }
    }

    /// Waits until everything handed over is written, then stops the thread.
    pub fn finish(mut self) -> Result<(), WriteError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), WriteError> {
        self.frames = None;
        match self.thread.take() {
            Some(thread) => match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            None => Err(gone()),
        }
    }
}

fn gone() -> WriteError {
    ProtocolError::from(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the result writer has stopped",
    ))
}

/// The thread's state: the pipe, and what it has seen of the loop.
struct Writer {
    pipe: std::fs::File,
    gauge: &'static LoopGauge,
    heartbeat: Duration,
    codec: FrameCodec,
    buf: BytesMut,
    done: u64,
    /// Time of polls that held the loop and have ended.
    blocked_us: u64,
}

/// The stretch of loop time the watchdog is looking at.
struct Stretch {
    generation: u64,
    current: u64,
    /// When the watchdog first saw it: the poll began at most one sample
    /// earlier, so the hold is never overstated.
    seen: Instant,
}

impl Writer {
    fn run(mut self, hello: &[u8], queue: Receiver<Outgoing>) -> Result<(), WriteError> {
        self.pipe.write_all(hello)?;
        let start = Instant::now();
        let (generation, current) = self.gauge.sample();
        let mut stretch = Stretch {
            generation,
            current,
            seen: start,
        };
        let mut next_sample = start + SAMPLE;
        let mut next_beat = start + self.heartbeat;
        loop {
            let now = Instant::now();
            if now >= next_sample {
                self.sample(&mut stretch, now);
                next_sample = now + SAMPLE;
                if now >= next_beat {
                    let held = self.held(&stretch, now);
                    self.beat(held)?;
                    next_beat += self.heartbeat;
                    if next_beat < now {
                        next_beat = now + self.heartbeat;
                    }
                }
            }
            match queue.recv_timeout(next_sample.saturating_duration_since(Instant::now())) {
                Ok(outgoing) => {
                    self.pipe.write_all(&outgoing.bytes)?;
                    self.done += outgoing.results;
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The loop is done and has handed over its last frame.
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    }

    /// Moves to a new stretch when the loop has moved on, adding the one
    /// that ended to the blocked total if it held the loop.
    fn sample(&mut self, stretch: &mut Stretch, now: Instant) {
        let (generation, current) = self.gauge.sample();
        if generation != stretch.generation {
            if let Some(held) = self.held(stretch, now) {
                self.blocked_us += held.for_us;
            }
            *stretch = Stretch {
                generation,
                current,
                seen: now,
            };
        }
    }

    /// The poll holding the loop now, once it has lasted a sample period.
    fn held(&self, stretch: &Stretch, now: Instant) -> Option<Held> {
        let for_us = now.saturating_duration_since(stretch.seen).as_micros() as u64;
        if stretch.current == IDLE || for_us < SAMPLE.as_micros() as u64 {
            return None;
        }
        Some(Held {
            task: stretch.current.checked_sub(TASK_BASE),
            for_us,
        })
    }

    fn beat(&mut self, held: Option<Held>) -> Result<(), WriteError> {
        let usage = os::usage();
        let received = self.gauge.received.load(Ordering::Relaxed);
        let heartbeat = Heartbeat {
            lag_us: self.gauge.lag_us.load(Ordering::Relaxed),
            max_lag_us: self.gauge.max_lag_us.load(Ordering::Relaxed),
            in_flight: received.saturating_sub(self.done) as u32,
            done: self.done,
            cpu_us: usage.user_us + usage.system_us,
            rss_bytes: os::current_rss(),
            held,
            blocked_us: self.blocked_us + held.map_or(0, |h| h.for_us),
        };
        self.codec
            .encode(&FromWorker::Heartbeat(heartbeat), &mut self.buf)?;
        let written = self.pipe.write_all(&self.buf);
        self.buf.clear();
        Ok(written?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_is_held_only_after_a_sample_period() {
        let gauge = LoopGauge::default();
        gauge.unpark();
        let before = gauge.enter(41);
        let (generation, current) = gauge.sample();
        assert_eq!(current, 41 + TASK_BASE);
        let t0 = Instant::now();
        let writer_stretch = Stretch {
            generation,
            current,
            seen: t0,
        };
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(r);
        let writer = Writer {
            pipe: std::fs::File::from(OwnedFd::from(w)),
            gauge: Box::leak(Box::default()),
            heartbeat: Duration::from_millis(500),
            codec: FrameCodec::new(1 << 20),
            buf: BytesMut::new(),
            done: 0,
            blocked_us: 0,
        };
        assert_eq!(writer.held(&writer_stretch, t0 + SAMPLE / 2), None);
        assert_eq!(
            writer.held(&writer_stretch, t0 + SAMPLE * 3),
            Some(Held {
                task: Some(41),
                for_us: (SAMPLE * 3).as_micros() as u64
            })
        );
        gauge.leave(before);
        assert_eq!(gauge.sample().1, OUTSIDE);
        gauge.park();
        let idle = Stretch {
            generation: 0,
            current: gauge.sample().1,
            seen: t0,
        };
        assert_eq!(
            writer.held(&idle, t0 + SAMPLE * 3),
            None,
            "parked is not held"
        );
    }
}
