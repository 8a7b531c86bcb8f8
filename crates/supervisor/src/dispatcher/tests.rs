//! The dispatcher as a state machine: events in, commands out, no
//! processes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use multiloop_protocol::{Hello, Outcome, TaskResult};

use super::*;
use crate::record::{InputItem, Record, TaskEntry};

fn config(workers: usize, window: usize) -> DispatchConfig {
    DispatchConfig {
        workers,
        kind: "sim".into(),
        window,
        keep_order: false,
        reorder_limit: 1000,
        worker_timeout: Duration::from_secs(10),
        task_timeout: None,
        heartbeat: Duration::from_millis(500),
        grace: Duration::from_secs(5),
        max_restarts: 3,
        restart_window: Duration::from_secs(60),
        backoff: Backoff {
            min: Duration::from_millis(10),
            max: Duration::from_secs(1),
        },
        max_crashes: 2,
        retries: 0,
        retry_backoff: Duration::from_millis(10),
        max_tasks_per_worker: None,
        max_worker_rss: None,
    }
}

fn tasks(ids: std::ops::Range<u64>) -> Vec<InputItem> {
    ids.map(|id| {
        InputItem::Task(TaskEntry {
            id,
            seq: id + 1,
            payload: Bytes::from_static(b"{}"),
            key: None,
            attempts: 0,
            blame: Default::default(),
        })
    })
    .collect()
}

/// A dispatcher whose workers have all started and said hello.
struct Harness {
    dispatcher: Dispatcher,
    now: Instant,
    ids: Vec<WorkerId>,
    emitted: Vec<Record>,
}

impl Harness {
    fn new(config: DispatchConfig) -> Self {
        let now = Instant::now();
        let mut dispatcher = Dispatcher::new(config, now);
        let ids = dispatcher
            .start(now)
            .into_iter()
            .map(|command| match command {
                Command::Spawn { worker } => worker,
                other => panic!("expected spawns, got {other:?}"),
            })
            .collect();
        let mut harness = Self {
            dispatcher,
            now,
            ids,
            emitted: Vec::new(),
        };
        for worker in harness.ids.clone() {
            harness.up(worker);
        }
        harness
    }

    fn up(&mut self, worker: WorkerId) -> Vec<Command> {
        self.handle(Event::Spawned {
            worker,
            pid: 100 + worker.index as u32,
        });
        self.handle(Event::Hello {
            worker,
            hello: Hello::new(100, vec!["sim".into()], "rust"),
        })
    }

    fn handle(&mut self, event: Event) -> Vec<Command> {
        let commands = self.dispatcher.handle(event, self.now);
        for command in &commands {
            if let Command::Emit(records) = command {
                self.emitted.extend(records.iter().cloned());
            }
        }
        commands
    }

    fn answer(&mut self, worker: WorkerId, ids: &[u64]) -> Vec<Command> {
        let results = ids
            .iter()
            .map(|&id| TaskResult {
                id,
                micros: 1,
                outcome: Outcome::Ok(Bytes::from_static(b"1")),
                retry: false,
            })
            .collect();
        self.handle(Event::Results { worker, results })
    }
}

/// Task ids sent to each worker by these commands.
fn sent(commands: &[Command]) -> Vec<(WorkerId, Vec<u64>)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Send { worker, tasks } => {
                Some((*worker, tasks.iter().map(|t| t.id).collect()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn each_worker_gets_at_most_its_window_and_input_pauses() {
    let mut h = Harness::new(config(2, 4));
    assert!(h.dispatcher.wants_input());
    let commands = h.handle(Event::Input(tasks(0..20)));
    let sent = sent(&commands);
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|(_, ids)| ids.len() == 4), "{sent:?}");
    // 12 queued; room for 8 (one window per worker) is exceeded.
    assert!(!h.dispatcher.wants_input());
}

#[test]
fn results_earn_credit_and_every_task_is_emitted_once() {
    let mut h = Harness::new(config(2, 4));
    let mut outstanding: Vec<(WorkerId, Vec<u64>)> = sent(&h.handle(Event::Input(tasks(0..30))));
    h.handle(Event::InputEnded { lines: 30 });
    while let Some((worker, ids)) = outstanding.pop() {
        outstanding.extend(sent(&h.answer(worker, &ids)));
    }
    let mut ids: Vec<u64> = h.emitted.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..30).collect::<Vec<_>>());
    // Done: every worker is told to finish.
    let closes = h.handle(Event::Wake);
    assert!(
        closes.is_empty(),
        "close commands were sent with the last results"
    );
}

#[test]
fn a_crash_requeues_in_flight_tasks_and_schedules_a_restart() {
    let mut h = Harness::new(config(1, 8));
    let first = sent(&h.handle(Event::Input(tasks(0..3))));
    let worker = first[0].0;
    h.answer(worker, &[0]);
    let commands = h.handle(Event::Exited {
        worker,
        status: ExitStatus::Signal(libc::SIGKILL),
    });
    assert!(sent(&commands).is_empty(), "nobody to send to yet");
    assert!(h.dispatcher.next_deadline().is_some(), "a restart is due");
    h.now += Duration::from_secs(1);
    let spawn = h.handle(Event::Wake);
    let replacement = match spawn.as_slice() {
        [Command::Spawn { worker }] => *worker,
        other => panic!("expected one spawn, got {other:?}"),
    };
    assert_eq!(replacement.index, 0);
    assert_eq!(replacement.generation, worker.generation + 1);
    let rerun = sent(&h.up(replacement));
    assert_eq!(
        rerun,
        vec![(replacement, vec![1, 2])],
        "weak evidence: plain re-run"
    );
    // A stale result from the dead incarnation is ignored.
    h.answer(worker, &[1]);
    h.answer(replacement, &[1, 2]);
    let mut ids: Vec<u64> = h.emitted.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1, 2]);
    assert!(h
        .emitted
        .iter()
        .filter(|r| r.id != 0)
        .all(|r| r.attempts == 2));
}

#[test]
fn keep_order_holds_records_until_the_gap_fills() {
    let mut h = Harness::new(DispatchConfig {
        keep_order: true,
        ..config(1, 8)
    });
    let worker = sent(&h.handle(Event::Input(tasks(0..3))))[0].0;
    h.answer(worker, &[2, 1]);
    assert!(h.emitted.is_empty());
    h.answer(worker, &[0]);
    assert_eq!(
        h.emitted.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
}

#[test]
fn drain_stops_input_lets_in_flight_finish_and_reports_the_signal() {
    let mut h = Harness::new(config(1, 2));
    let worker = sent(&h.handle(Event::Input(tasks(0..10))))[0].0;
    let commands = h.handle(Event::Request(Request::Drain {
        signal: libc::SIGTERM,
    }));
    assert!(commands.iter().any(|c| matches!(c, Command::StopInput)));
    assert!(!h.dispatcher.wants_input());
    let commands = h.answer(worker, &[0, 1]);
    assert!(sent(&commands).is_empty(), "no new tasks while draining");
    assert!(commands
        .iter()
        .any(|c| matches!(c, Command::CloseInput { .. })));
    h.handle(Event::Exited {
        worker,
        status: ExitStatus::Code(0),
    });
    assert!(h.dispatcher.is_finished());
    assert_eq!(
        h.dispatcher.report(h.now).outcome,
        RunOutcome::Interrupted(libc::SIGTERM)
    );
}

#[test]
fn deaths_without_progress_give_up() {
    let mut h = Harness::new(config(1, 2));
    h.handle(Event::Input(tasks(0..4)));
    let mut worker = h.ids[0];
    for _ in 0..4 {
        h.handle(Event::Exited {
            worker,
            status: ExitStatus::Code(101),
        });
        h.now += Duration::from_secs(10);
        match h.handle(Event::Wake).as_slice() {
            [Command::Spawn { worker: next }] => {
                worker = *next;
                h.up(worker);
            }
            _ => break,
        }
    }
    match h.dispatcher.report(h.now).outcome {
        RunOutcome::GaveUp(message) => assert!(message.contains("exit code 101"), "{message}"),
        other => panic!("expected to give up, got {other:?}"),
    }
}

#[test]
fn a_worker_without_the_kind_is_a_fatal_error() {
    let now = Instant::now();
    let mut dispatcher = Dispatcher::new(config(1, 2), now);
    let worker = match dispatcher.start(now).as_slice() {
        [Command::Spawn { worker }] => *worker,
        other => panic!("{other:?}"),
    };
    dispatcher.handle(
        Event::Hello {
            worker,
            hello: Hello::new(1, vec!["other".into()], "rust"),
        },
        now,
    );
    match dispatcher.report(now).outcome {
        RunOutcome::Fatal(message) => assert!(message.contains("does not serve task kind \"sim\"")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_retired_worker_still_busy_after_grace_is_killed_and_its_tasks_run_again() {
    let mut h = Harness::new(config(2, 4));
    let sent_first = sent(&h.handle(Event::Input(tasks(0..4))));
    let (busy, busy_ids) = sent_first
        .iter()
        .find(|(w, _)| w.index == 1)
        .cloned()
        .expect("worker 1 got tasks");
    h.handle(Event::Request(Request::Scale(1)));
    h.now += Duration::from_secs(6);
    let kills = h.handle(Event::Wake);
    assert!(
        kills.iter().any(|c| matches!(c, Command::Signal { worker, signal } if *worker == busy && *signal == libc::SIGKILL)),
        "{kills:?}"
    );
    let rerun = sent(&h.handle(Event::Exited {
        worker: busy,
        status: ExitStatus::Signal(libc::SIGKILL),
    }));
    let rerun_ids: Vec<u64> = rerun.iter().flat_map(|(_, ids)| ids.clone()).collect();
    assert_eq!(rerun_ids, busy_ids, "nothing is lost to the grace kill");
}

#[test]
fn a_paused_engine_does_not_make_workers_hung() {
    let mut h = Harness::new(config(1, 4));
    h.handle(Event::Input(tasks(0..2)));
    h.now += Duration::from_secs(20);
    let commands = h.handle(Event::Paused(Duration::from_secs(20)));
    assert!(
        !commands.iter().any(|c| matches!(c, Command::Signal { .. })),
        "{commands:?}"
    );
    h.now += Duration::from_secs(11);
    let commands = h.handle(Event::Wake);
    assert!(
        commands.iter().any(|c| matches!(c, Command::Signal { .. })),
        "silent for real now"
    );
}

#[test]
fn keep_order_writes_held_records_when_a_drain_ends_the_run() {
    let mut h = Harness::new(DispatchConfig {
        keep_order: true,
        ..config(1, 8)
    });
    let worker = sent(&h.handle(Event::Input(tasks(0..3))))[0].0;
    h.answer(worker, &[1, 2]);
    assert!(h.emitted.is_empty(), "held behind task 0");
    h.handle(Event::Request(Request::Drain {
        signal: libc::SIGINT,
    }));
    h.handle(Event::Request(Request::StopNow {
        signal: libc::SIGINT,
    }));
    h.handle(Event::Exited {
        worker,
        status: ExitStatus::Signal(libc::SIGKILL),
    });
    assert!(h.dispatcher.is_finished());
    assert_eq!(
        h.emitted.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![1, 2]
    );
}
