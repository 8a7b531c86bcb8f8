//! The dispatcher as a state machine: events in, commands out, no
//! processes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use multiloop_protocol::{Hello, Outcome, TaskResult};

use super::*;
use crate::control::{ControlAnswer, ControlRequest};
use crate::history::{EndCause, LifeChange};
use crate::record::{InputItem, Record, TaskEntry};

fn config(workers: usize, window: usize) -> DispatchConfig {
    DispatchConfig {
        workers,
        kind: "sim".into(),
        window,
        keep_order: false,
        reorder_bytes: 1 << 20,
        fleet: FleetConfig {
            life: LifeLimits {
                worker_timeout: Duration::from_secs(10),
                task_timeout: None,
                heartbeat: Duration::from_millis(500),
                grace: Duration::from_secs(5),
            },
            backoff: Backoff {
                min: Duration::from_millis(10),
                max: Duration::from_secs(1),
            },
            max_tasks_per_worker: None,
            max_worker_rss: None,
        },
        max_restarts: 3,
        restart_window: Duration::from_secs(60),
        max_crashes: 2,
        retries: 0,
        retry_backoff: Duration::from_millis(10),
        crawl: Default::default(),
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
            path: None,
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
    /// Life changes told for the history, in order.
    lives: Vec<LifeChange>,
}

impl Harness {
    fn new(config: DispatchConfig) -> Self {
        let now = Instant::now();
        let mut dispatcher = Dispatcher::new(config, now);
        let ids = dispatcher
            .handle(Event::Start, now)
            .into_iter()
            .filter_map(|command| match command {
                Command::Spawn { worker, .. } => Some(worker),
                Command::Life(LifeChange::Started { .. }) => None,
                other => panic!("expected spawns, got {other:?}"),
            })
            .collect();
        let mut harness = Self {
            dispatcher,
            now,
            ids,
            emitted: Vec::new(),
            lives: Vec::new(),
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

    /// Handles an event; the history's life changes are kept apart, so
    /// that tests match the commands that act.
    fn handle(&mut self, event: Event) -> Vec<Command> {
        let mut commands = self.dispatcher.handle(event, self.now);
        for command in &commands {
            match command {
                Command::Emit(records) => self.emitted.extend(records.iter().cloned()),
                Command::Life(change) => self.lives.push(change.clone()),
                _ => {}
            }
        }
        commands.retain(|c| !matches!(c, Command::Life(_)));
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
                added: Vec::new(),
            })
            .collect();
        self.handle(Event::Results { worker, results })
    }
}

/// `ctl scale N`.
fn scale(workers: usize) -> Event {
    Event::Control {
        call: 0,
        request: ControlRequest::Scale { workers },
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
    let mut last = Vec::new();
    while let Some((worker, ids)) = outstanding.pop() {
        last = h.answer(worker, &ids);
        outstanding.extend(sent(&last));
    }
    let mut ids: Vec<u64> = h.emitted.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..30).collect::<Vec<_>>());
    // Done: every worker is told to finish, with the last results.
    let mut closed: Vec<WorkerId> = last
        .iter()
        .filter_map(|c| match c {
            Command::CloseInput { worker } => Some(*worker),
            _ => None,
        })
        .collect();
    closed.sort_by_key(|w| w.index);
    assert_eq!(closed, h.ids, "close commands come with the last results");
    let closes = h.handle(Event::Wake);
    assert!(closes.is_empty(), "and only once: {closes:?}");
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
        [Command::Spawn { worker, .. }] => *worker,
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
    let commands = h.handle(Event::Signal(OperatorSignal::Terminate));
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
    // Replacements that die at start, before they can take a task (a
    // worker binary broken mid-run): no task completes, no verdict is
    // reached, so the fleet cannot make progress. (Workers that die with
    // tasks in flight make progress instead: their tasks are bisected and
    // the culprits failed; see `poison_tasks_alone_are_failed_without_giving_up`.)
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
            [Command::Spawn { worker: next, .. }] => {
                worker = *next;
                h.handle(Event::Spawned { worker, pid: 1 });
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
    let worker = match dispatcher.handle(Event::Start, now).as_slice() {
        [Command::Life(_), Command::Spawn { worker, .. }] => *worker,
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
    h.handle(scale(1));
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
    let commands = h.handle(Event::OutputPaused(Duration::from_secs(20)));
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
    h.handle(Event::Signal(OperatorSignal::Interrupt));
    h.handle(Event::Signal(OperatorSignal::Interrupt));
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

/// The worker ids of the spawns among `commands`, with the fleet size each
/// was labelled with.
fn spawns(commands: &[Command]) -> Vec<(WorkerId, usize)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Spawn { worker, workers } => Some((*worker, *workers)),
            _ => None,
        })
        .collect()
}

fn crash(h: &mut Harness, worker: WorkerId, status: ExitStatus) -> Vec<Command> {
    h.handle(Event::Exited { worker, status })
}

/// Moves time past the restart backoff and brings the replacement up.
fn restart(h: &mut Harness, index: usize) -> (WorkerId, Vec<Command>) {
    h.now += Duration::from_secs(2);
    let spawned = spawns(&h.handle(Event::Wake));
    let worker = spawned
        .iter()
        .find(|(w, _)| w.index == index)
        .map(|(w, _)| *w)
        .unwrap_or_else(|| panic!("no restart of worker {index}: {spawned:?}"));
    let commands = h.up(worker);
    (worker, commands)
}

#[test]
fn workers_added_by_scale_are_labelled_with_the_new_size() {
    let mut h = Harness::new(config(2, 4));
    let commands = h.handle(scale(4));
    let labels: Vec<usize> = spawns(&commands).iter().map(|(_, n)| *n).collect();
    assert_eq!(labels, vec![4, 4], "{commands:?}");
    let replies: Vec<&ControlAnswer> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Reply { answer, .. } => Some(answer),
            _ => None,
        })
        .collect();
    assert_eq!(replies, vec![&ControlAnswer::Ok]);
}

#[test]
fn a_scale_beyond_the_machine_is_refused_with_one_line() {
    let mut h = Harness::new(config(1, 4));
    let too_many = crate::limits::max_fleet_size() + 1;
    let commands = h.handle(scale(too_many));
    assert!(spawns(&commands).is_empty(), "{commands:?}");
    match commands.as_slice() {
        [Command::Reply {
            answer: ControlAnswer::Refused(message),
            ..
        }] => {
            assert!(
                message.contains("more than this machine can hold"),
                "{message}"
            );
            assert!(!message.contains('\n'));
        }
        other => panic!("{other:?}"),
    }
    // SIGTTIN at the limit is ignored the same way.
    let mut h = Harness::new(config(crate::limits::max_fleet_size(), 1));
    assert!(spawns(&h.handle(Event::Signal(OperatorSignal::AddWorker))).is_empty());
}

#[test]
fn kills_on_request_never_fail_a_task_however_often() {
    // One task, one worker, killed on request twenty times: no evidence,
    // no give-up (max_restarts is 3), and the task completes in the end.
    let mut h = Harness::new(config(1, 4));
    let mut worker = sent(&h.handle(Event::Input(tasks(0..1))))[0].0;
    h.handle(Event::InputEnded { lines: 1 });
    for _ in 0..20 {
        let kill = h.handle(Event::Control {
            call: 1,
            request: ControlRequest::Kill { worker: 0 },
        });
        assert!(
            kill.iter().any(|c| matches!(c, Command::Signal { .. })),
            "{kill:?}"
        );
        crash(&mut h, worker, ExitStatus::Signal(libc::SIGKILL));
        let (next, commands) = restart(&mut h, 0);
        assert_eq!(sent(&commands), vec![(next, vec![0])], "re-run at once");
        worker = next;
    }
    assert!(h.emitted.is_empty());
    h.answer(worker, &[0]);
    assert_eq!(h.emitted.len(), 1);
    assert!(h.emitted[0].is_ok());
    assert_eq!(h.dispatcher.report(h.now).outcome, RunOutcome::AllOk);
    // The history heard each life: 20 ends on request, 21 starts in all.
    let ends = h
        .lives
        .iter()
        .filter(|c| {
            matches!(
                c,
                LifeChange::Ended {
                    cause: EndCause::KilledOnRequest,
                    slot: 0,
                    ..
                }
            )
        })
        .count();
    let starts = h
        .lives
        .iter()
        .filter(|c| matches!(c, LifeChange::Started { .. }))
        .count();
    assert_eq!((ends, starts), (20, 20), "{:?}", h.lives);
}

#[test]
fn outside_kills_alone_never_fail_a_task() {
    // SIGKILL from outside (a person, the OOM killer), again and again, on
    // a worker running one task alone: weak evidence never fails it.
    let mut h = Harness::new(DispatchConfig {
        max_restarts: 1000,
        ..config(1, 4)
    });
    let mut worker = sent(&h.handle(Event::Input(tasks(0..1))))[0].0;
    h.handle(Event::InputEnded { lines: 1 });
    for _ in 0..30 {
        crash(&mut h, worker, ExitStatus::Signal(libc::SIGKILL));
        let (next, commands) = restart(&mut h, 0);
        assert_eq!(sent(&commands), vec![(next, vec![0])]);
        worker = next;
    }
    assert!(h.emitted.is_empty(), "{:?}", h.emitted);
    h.answer(worker, &[0]);
    assert!(h.emitted[0].is_ok());
}

#[test]
fn poison_tasks_alone_are_failed_without_giving_up() {
    // Eight tasks that each crash their worker, on one worker, with the
    // default restart limit: every verdict is progress, so the run ends
    // with eight `crashed` records, not a give-up.
    let mut h = Harness::new(DispatchConfig {
        max_restarts: 20,
        ..config(1, 8)
    });
    let mut worker = sent(&h.handle(Event::Input(tasks(0..8))))[0].0;
    h.handle(Event::InputEnded { lines: 8 });
    for _ in 0..100 {
        if h.dispatcher.is_finished() {
            break;
        }
        let commands = crash(&mut h, worker, ExitStatus::Signal(libc::SIGABRT));
        if let Some(report) = Some(h.dispatcher.report(h.now)) {
            assert!(
                !matches!(report.outcome, RunOutcome::GaveUp(_)),
                "{:?}",
                report.outcome
            );
        }
        if commands.iter().any(|c| matches!(c, Command::Finish)) {
            break;
        }
        h.now += Duration::from_secs(2);
        let wake = h.handle(Event::Wake);
        let Some(&(next, _)) = spawns(&wake).first() else {
            break;
        };
        worker = next;
        h.up(worker);
        if h.emitted.len() == 8 {
            h.handle(Event::Exited {
                worker,
                status: ExitStatus::Code(0),
            });
            break;
        }
    }
    assert_eq!(h.emitted.len(), 8, "{:?}", h.emitted);
    assert!(h.emitted.iter().all(|r| !r.is_ok()));
    assert_eq!(h.dispatcher.report(h.now).outcome, RunOutcome::SomeFailed);
}

#[test]
fn a_rolling_restart_onto_a_broken_binary_backs_off_and_stops_rolling() {
    let mut h = Harness::new(DispatchConfig {
        max_restarts: 1000,
        ..config(2, 4)
    });
    let first = sent(&h.handle(Event::Input(tasks(0..4))));
    let old = first[0].0;
    let replacement = match spawns(&h.handle(Event::Signal(OperatorSignal::Hangup))).as_slice() {
        [(worker, _)] => *worker,
        other => panic!("{other:?}"),
    };
    assert_eq!(replacement.index, old.index);
    // The new binary exits 1 before its handshake, again and again, while
    // the old worker keeps answering tasks: the restarts back off anyway.
    let mut dying = replacement;
    let mut delays = Vec::new();
    for next_task in 4..10 {
        h.handle(Event::Spawned {
            worker: dying,
            pid: 999,
        });
        crash(&mut h, dying, ExitStatus::Code(1));
        // The old incarnation still completes work meanwhile.
        let more = sent(&h.handle(Event::Input(tasks(next_task..next_task + 1))));
        for (worker, ids) in more {
            h.answer(worker, &ids);
        }
        let due = h.dispatcher.next_deadline().expect("a restart is due");
        delays.push(due.saturating_duration_since(h.now));
        h.now = due;
        dying = match spawns(&h.handle(Event::Wake)).as_slice() {
            [(worker, _)] => *worker,
            other => panic!("{other:?}"),
        };
    }
    assert!(
        delays.windows(2).all(|w| w[1] >= w[0]) && delays[5] >= delays[0] * 8,
        "the backoff grows: {delays:?}"
    );
    // The other slot was never touched: the rolling restart stopped.
    let rows = h.dispatcher.rows(h.now);
    assert_eq!(rows[1 - old.index].restarts, 0);
    assert_eq!(rows[1 - old.index].state, WorkerState::Running);
}

#[test]
fn pids_print_as_numbers() {
    assert_eq!(super::events::Pid(Some(19547)).to_string(), "pid 19547");
    assert_eq!(super::events::Pid(None).to_string(), "pid ?");
}

#[test]
fn a_task_busy_on_the_loop_past_task_timeout_is_a_timeout_alone() {
    use multiloop_protocol::{ErrorKind, Heartbeat, Held};
    let mut config = config(1, 8);
    config.fleet.life.task_timeout = Some(Duration::from_secs(3));
    let mut h = Harness::new(config);
    let worker = sent(&h.handle(Event::Input(tasks(0..5))))[0].0;
    // The watchdog names task 2 holding the loop while CPU time advances.
    let mut killed = false;
    for step in 0..10u64 {
        let heartbeat = Heartbeat {
            held: Some(Held {
                task: Some(2),
                for_us: 50_000 + step * 500_000,
            }),
            cpu_us: step * 500_000,
            ..Heartbeat::default()
        };
        let commands = h.handle(Event::Heartbeat { worker, heartbeat });
        if commands.iter().any(|c| {
            matches!(c, Command::Signal { worker: w, signal } if *w == worker && *signal == libc::SIGKILL)
        }) {
            assert!(step >= 5, "killed before --task-timeout, at step {step}");
            killed = true;
            break;
        }
        h.now += Duration::from_millis(500);
    }
    assert!(killed, "busy past --task-timeout must kill the worker");
    crash(&mut h, worker, ExitStatus::Signal(libc::SIGKILL));
    assert_eq!(h.emitted.len(), 1, "{:?}", h.emitted);
    match &h.emitted[0].outcome {
        Outcome::Err {
            kind: ErrorKind::Timeout,
            message,
        } => assert!(
            message.contains("seq 3 held the event loop for ")
                && message.contains("--task-timeout 3s"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    // The neighbours are innocent: they run again on the replacement in
    // one ordinary batch, no probe.
    let (worker, commands) = restart(&mut h, 0);
    assert_eq!(sent(&commands), vec![(worker, vec![0, 1, 3, 4])]);
    h.answer(worker, &[0, 1, 3, 4]);
    assert_eq!(h.emitted.len(), 5);
    assert!(h.emitted[1..]
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Ok(_))));
}

#[test]
fn tasks_added_while_draining_are_left_for_resume_and_the_run_ends() {
    let mut h = Harness::new(config(1, 2));
    let worker = sent(&h.handle(Event::Input(tasks(0..2))))[0].0;
    h.handle(Event::Signal(OperatorSignal::Terminate));
    let added = (0..3)
        .map(|i| multiloop_protocol::Added {
            payload: Bytes::from(format!("{{\"n\":{i}}}")),
            key: None,
        })
        .collect();
    let results = vec![
        TaskResult {
            id: 0,
            micros: 1,
            outcome: Outcome::Ok(Bytes::from_static(b"1")),
            retry: false,
            added,
        },
        TaskResult {
            id: 1,
            micros: 1,
            outcome: Outcome::Ok(Bytes::from_static(b"1")),
            retry: false,
            added: Vec::new(),
        },
    ];
    let commands = h.handle(Event::Results { worker, results });
    assert!(sent(&commands).is_empty(), "no new tasks while draining");
    assert!(commands
        .iter()
        .any(|c| matches!(c, Command::CloseInput { .. })));
    let parent = h.emitted.iter().find(|r| r.id == 0).unwrap();
    assert_eq!(parent.adds.as_ref().unwrap().entries.len(), 3, "journaled");
    assert_eq!(h.emitted.len(), 2, "the added tasks did not run");
}

#[test]
fn added_tasks_wait_on_disk_in_order_and_input_waits_for_them() {
    let spill = tempfile::tempdir().unwrap();
    let mut config = config(1, 2);
    config.crawl.spill = crate::spill::SpillConfig {
        memory: 0,
        dir: spill.path().to_path_buf(),
    };
    let mut h = Harness::new(config);
    let worker = sent(&h.handle(Event::Input(tasks(0..1))))[0].0;
    let added = (0..10)
        .map(|i| multiloop_protocol::Added {
            payload: Bytes::from(format!("{{\"n\":{i}}}")),
            key: None,
        })
        .collect();
    let results = vec![TaskResult {
        id: 0,
        micros: 1,
        outcome: Outcome::Ok(Bytes::from_static(b"1")),
        retry: false,
        added,
    }];
    let mut batch = sent(&h.handle(Event::Results { worker, results }));
    let mut order = Vec::new();
    while let Some((_, ids)) = batch.pop() {
        assert!(ids.len() <= 2, "at most a window: {ids:?}");
        assert!(
            !h.dispatcher.wants_input() || order.len() + ids.len() >= 8,
            "input waits while added tasks wait"
        );
        order.extend(ids.iter().copied());
        batch = sent(&h.answer(worker, &ids));
    }
    let paths: Vec<String> = order
        .iter()
        .map(|id| {
            let record = h.emitted.iter().find(|r| r.id == *id).unwrap();
            record.path.as_deref().unwrap().to_string()
        })
        .collect();
    let expected: Vec<String> = (1..=10).map(|n| format!("1.{n}")).collect();
    assert_eq!(paths, expected, "first in, first out");
    let counts = h.dispatcher.report(h.now).crawl;
    assert_eq!(counts.spilled, 10, "every one went through the file");
    assert_eq!(h.dispatcher.progress().queued, 0);
    assert!(h.dispatcher.wants_input());
}

#[test]
fn added_tasks_for_busy_workers_go_out_together_or_after_a_wait() {
    let mut h = Harness::new(config(1, 1000));
    let busy = super::coalesce::BUSY as u64;
    // An idle worker is filled at once.
    let first = sent(&h.handle(Event::Input(tasks(0..busy + 2))));
    let worker = first[0].0;
    assert_eq!(first[0].1.len() as u64, busy + 2);
    // With the worker busy, a result's one addition waits...
    let child = |id: u64| TaskResult {
        id,
        micros: 1,
        outcome: Outcome::Ok(Bytes::from_static(b"1")),
        retry: false,
        added: vec![multiloop_protocol::Added {
            payload: Bytes::from(format!("{{\"child\":{id}}}")),
            key: None,
        }],
    };
    let commands = h.handle(Event::Results {
        worker,
        results: vec![child(0)],
    });
    assert!(sent(&commands).is_empty(), "{commands:?}");
    let deadline = h.dispatcher.next_deadline().expect("a deadline to send it");
    assert!(deadline <= h.now + super::coalesce::WAIT);
    // ...and goes out with the next one when the wait is over.
    h.handle(Event::Results {
        worker,
        results: vec![child(1)],
    });
    h.now = deadline;
    let late = sent(&h.handle(Event::Wake));
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].1.len(), 2, "both additions in one frame");
    // A worker running low gets what is queued at once.
    let rest: Vec<u64> = (2..busy + 2).collect();
    let commands = h.answer(worker, &rest);
    assert!(sent(&commands).is_empty(), "nothing queued: {commands:?}");
    let now = sent(&h.handle(Event::Results {
        worker,
        results: vec![child(super::frontier::ADDED_IDS)],
    }));
    assert_eq!(now.len(), 1, "sent at once to a worker running low");
}
