//! The dispatcher's judgement through the real binaries: kills that are no
//! evidence, poison tasks that do not stop a run, and a rolling restart
//! onto a broken worker binary.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

/// Worker 0's row from `ctl status`, once the socket answers.
fn worker0(running: &Running) -> Option<Value> {
    let (code, stdout, _) = running.ctl(&["status", "--json"]);
    if code != 0 {
        return None;
    }
    let status: Value = serde_json::from_str(&stdout).ok()?;
    Some(status["workers"][0].clone())
}

/// Waits until worker 0 runs the one task, as a process other than `old`;
/// returns its pid.
fn wait_for_task_on_worker0(running: &Running, old: Option<u64>) -> u64 {
    let mut pid = 0;
    wait_until(LONG, "worker 0 running the task", || {
        match worker0(running) {
            // After a few outside kills the task runs alone as a suspect.
            Some(row)
                if (row["state"] == "running" || row["state"] == "probing")
                    && row["in_flight"] == 1 =>
            {
                pid = row["pid"].as_u64().unwrap_or(0);
                Some(pid) != old
            }
            _ => false,
        }
    });
    pid
}

fn one_long_task() -> String {
    sim_lines(1, |_| 3_000, |_| 1000)
}

#[test]
fn killing_a_worker_on_request_again_and_again_never_fails_its_task() {
    let mut running = start(&["--workers", "1"], &one_long_task());
    let mut pid = None;
    for _ in 0..4 {
        pid = Some(wait_for_task_on_worker0(&running, pid));
        let (code, _, stderr) = running.ctl(&["kill", "0"]);
        assert_eq!(code, 0, "{stderr}");
    }
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    let records = running.output_records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["ok"]["sum"].as_u64(), Some(expected_sum(1000)));
    assert_eq!(records[0]["attempts"], 5);
}

#[test]
fn outside_sigkills_never_fail_a_task_however_often() {
    let mut running = start(&["--workers", "1"], &one_long_task());
    let mut pid = None;
    for _ in 0..5 {
        let worker = wait_for_task_on_worker0(&running, pid);
        kill(worker as u32, libc::SIGKILL);
        pid = Some(worker);
    }
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    let records = running.output_records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0]["ok"].is_object(), "{records:?}");
    assert_eq!(records[0]["attempts"], 6);
}

#[test]
fn poison_tasks_alone_are_failed_and_the_run_completes() {
    // Eight poison lines alone used to end in exit 3 with records missing.
    let input = "{\"iters\":1,\"fault\":\"abort\"}\n".repeat(8);
    let mut running = start(&["--workers", "2", "--task", "chaos"], &input);
    assert_eq!(running.wait(LONG), 1, "{}", running.stderr());
    let records = running.output_records();
    assert_eq!(by_seq(&records).len(), 8, "{records:?}");
    assert!(records.iter().all(|r| r["error"]["kind"] == "crashed"));
    assert!(!running.stderr().contains("giving up"));
}

#[test]
fn poison_tasks_first_do_not_keep_innocents_from_running() {
    // 25 poison lines, then 20 normal ones: every innocent runs.
    let mut input = "{\"iters\":1,\"fault\":\"abort\"}\n".repeat(25);
    for i in 0..20 {
        input.push_str(&format!("{{\"iters\":{i}}}\n"));
    }
    let mut running = start(&["--workers", "2", "--task", "chaos"], &input);
    assert_eq!(running.wait(LONG), 1, "{}", running.stderr());
    let records = running.output_records();
    let map = by_seq(&records);
    assert_eq!(map.len(), 45);
    for seq in 1..=25u64 {
        assert_eq!(map[&seq]["error"]["kind"], "crashed", "{:?}", map[&seq]);
    }
    for seq in 26..=45u64 {
        assert_eq!(
            map[&seq]["ok"]["sum"].as_u64(),
            Some(expected_sum(seq - 26)),
            "{:?}",
            map[&seq]
        );
    }
}

#[test]
fn a_rolling_restart_onto_a_broken_binary_backs_off_and_stops() {
    let n = 3_000;
    let input = sim_lines(n, |_| 30, |i| i);
    let dir = tempfile::tempdir().unwrap();
    let worker = dir.path().join("worker");
    std::fs::copy(WORKER, &worker).unwrap();
    let mut running = start(
        &[
            "--workers",
            "2",
            "--concurrency",
            "20",
            "--worker",
            worker.to_str().unwrap(),
        ],
        &input,
    );
    wait_until(LONG, "first records", || running.output_lines() >= 50);
    // The binary is replaced by one that cannot start (renamed over it,
    // as a deploy would, since the running one is busy).
    let broken = script(dir.path(), "broken", "#!/bin/sh\nexit 1\n");
    std::fs::rename(&broken, &worker).unwrap();
    kill(running.pid(), libc::SIGHUP);
    wait_until(LONG, "the rolling restart to stop", || {
        running.stderr().contains("rolling restart stopped")
    });
    // The old workers finish the batch meanwhile.
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    assert_all_sums(&running.output_records(), n, |i| i);
    let stderr = running.stderr();
    let deaths = stderr.matches("died: exit code 1").count();
    // Before: a death every ~23 ms for as long as the old workers ran
    // (126 in 3 s). With the backoff (20 ms doubling to 5 s) a few.
    assert!(
        (1..=10).contains(&deaths),
        "{deaths} deaths of the new binary:\n{stderr}"
    );
}

#[test]
fn scale_beyond_the_machine_is_refused_with_one_line() {
    // Piped: the run lasts until the input closes, so the fleet is still
    // there to be counted after the refusal.
    let mut running = start_piped(&["--workers", "1", "--concurrency", "10"]);
    running.feed(&sim_lines(200, |_| 20, |i| i));
    wait_until(LONG, "the control socket", || {
        running.ctl(&["status"]).0 == 0
    });
    let (code, _, stderr) = running.ctl(&["scale", "100000"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("100000 workers is more than this machine can hold"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(
        workers_of(running.pid()).len(),
        1,
        "the fleet did not grow: {}",
        running.stderr()
    );
    running.close_input();
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    assert_all_sums(&running.output_records(), 200, |i| i);
}
