//! The working system end to end: real `supervisor` and `worker` binaries,
//! real pipes, real bad input.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn hundred_thousand_tasks_each_answered_once_with_the_right_sum() {
    let n = 100_000;
    let iters = |i: u64| (i * 7919) % 3000;
    let input = sim_lines(n, |_| 0, iters);
    let output = run(&["--workers", "2"], input.as_bytes());
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records = records(&output.stdout);
    assert_all_sums(&records, n, iters);
    let mut per_worker = [0u64; 2];
    for record in &records {
        per_worker[record["worker"].as_u64().unwrap() as usize] += 1;
        assert_eq!(record["attempts"], 1);
    }
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "both workers got work: {per_worker:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("100000 tasks: 100000 ok, 0 failed"),
        "summary: {stderr}"
    );
}

#[test]
fn keep_order_emits_in_input_order() {
    let n = 3_000;
    // Later lines finish first within each group of ten.
    let sleep = |i: u64| 10 - i % 10;
    let input = sim_lines(n, sleep, |i| i);
    let output = run(
        &["--workers", "2", "--keep-order", "--concurrency", "64"],
        input.as_bytes(),
    );
    assert_eq!(output.status.code(), Some(0));
    let records = records(&output.stdout);
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    assert_all_sums(&records, n, |i| i);
}

#[test]
fn bad_json_lines_become_bad_input_records_and_the_run_goes_on() {
    let input = "{\"iters\":4}\nnot json\n\n{\"iters\":\"four\"}\n{\"iters\":5}\n";
    let output = run(&["--workers", "2"], input.as_bytes());
    assert_eq!(output.status.code(), Some(1), "some tasks failed");
    let map = by_seq(&records(&output.stdout));
    assert_eq!(map.len(), 4, "the blank line 3 is not a task");
    assert_eq!(map[&1]["ok"]["sum"], 6);
    assert_eq!(map[&5]["ok"]["sum"], 10);
    for seq in [2, 4] {
        let error = &map[&seq]["error"];
        assert_eq!(error["kind"], "bad_input", "line {seq}");
        let message = error["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("line {seq}: ")), "{message}");
    }
}

#[test]
fn a_line_over_the_frame_limit_is_bad_input() {
    let long = format!("{{\"iters\":1,\"pad\":\"{}\"}}\n", "x".repeat(20_000));
    let input = format!("{{\"iters\":3}}\n{long}{{\"iters\":4}}\n");
    let output = run(&["--workers", "1", "--max-frame", "4KiB"], input.as_bytes());
    assert_eq!(output.status.code(), Some(1));
    let map = by_seq(&records(&output.stdout));
    assert_eq!(map[&1]["ok"]["sum"], 3);
    assert_eq!(map[&3]["ok"]["sum"], 6);
    let error = &map[&2]["error"];
    assert_eq!(error["kind"], "bad_input");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("line 2") && message.contains("over the frame limit"),
        "{message}"
    );
}

#[test]
fn a_missing_worker_binary_is_a_clear_usage_error() {
    let output = run(&["--worker", "/nonexistent/worker"], b"{}\n");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("worker binary not found: /nonexistent/worker"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn a_worker_of_another_protocol_version_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // Answers the kind probe, then sends a handshake of version 99:
    // length 3, variant 0 (hello), version 99, pid 1.
    let fake = script(
        dir.path(),
        "old-worker",
        "#!/bin/sh\n[ \"$1\" = --list-kinds ] && { echo sim; exit 0; }\n\
         printf '\\000\\000\\000\\003\\000\\143\\001' >&4\ncat <&3 >/dev/null\n",
    );
    let output = run(
        &["--workers", "1", "--worker", fake.to_str().unwrap()],
        b"{}\n",
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("protocol version mismatch: worker speaks 99, supervisor speaks 3"),
        "{stderr}"
    );
}

#[test]
fn a_binary_that_is_not_a_worker_is_refused_before_any_task() {
    let output = run(&["--worker", "/bin/cat"], b"{}\n");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/bin/cat is not a multiloop worker"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn an_unknown_task_kind_fails_at_startup() {
    let output = run(&["--task", "nope"], b"{}\n");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown task kind \"nope\""), "{stderr}");
    assert!(
        stderr.contains("sim") && stderr.contains("chaos"),
        "lists the kinds: {stderr}"
    );
}

#[test]
fn a_worker_printing_to_stdout_does_not_corrupt_results() {
    let mut input = String::new();
    for i in 0..2_000u64 {
        if i % 100 == 0 {
            input.push_str(&format!("{{\"iters\":{i},\"fault\":\"stdout\"}}\n"));
        } else {
            input.push_str(&format!("{{\"iters\":{i}}}\n"));
        }
    }
    let output = run(&["--workers", "2", "--task", "chaos"], input.as_bytes());
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_all_sums(&records(&output.stdout), 2_000, |i| i);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let forwarded = stderr
        .lines()
        .filter(|l| l.contains("this line goes to stdout"))
        .count();
    assert_eq!(forwarded, 20, "forwarded to stderr:\n{stderr}");
    assert!(stderr
        .lines()
        .any(|l| l.starts_with("[w0] ") || l.starts_with("[w1] ")));
}

#[test]
fn handler_panics_and_timeouts_are_records_and_the_worker_lives_on() {
    let input =
        "{\"iters\":3,\"fault\":\"panic\"}\n{\"iters\":3,\"fault\":\"stall\"}\n{\"iters\":4}\n";
    let output = run(
        &[
            "--workers",
            "1",
            "--task",
            "chaos",
            "--task-timeout",
            "300ms",
        ],
        input.as_bytes(),
    );
    assert_eq!(output.status.code(), Some(1));
    let map = by_seq(&records(&output.stdout));
    assert_eq!(map[&1]["error"]["kind"], "panicked");
    assert!(map[&1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("chaos: panic requested"));
    assert_eq!(map[&2]["error"]["kind"], "timeout");
    assert_eq!(map[&3]["ok"]["sum"], 6);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("0 worker restarts"), "{stderr}");
}

#[test]
fn killing_the_supervisor_leaves_no_worker_alive() {
    let input = sim_lines(200, |_| 60_000, |_| 1);
    let mut running = start(&["--workers", "2"], &input);
    let supervisor = running.pid();
    let mut workers = Vec::new();
    wait_until(Duration::from_secs(20), "two workers", || {
        workers = workers_of(supervisor);
        workers.len() == 2
    });
    for &pid in &workers {
        let args = cmdline(pid);
        assert!(
            args.starts_with("multiloop worker "),
            "ps shows which worker: {args}"
        );
        assert!(
            args.contains(&format!("(supervisor {supervisor})")),
            "{args}"
        );
    }
    kill(supervisor, libc::SIGKILL);
    running.wait(Duration::from_secs(10));
    wait_until(
        Duration::from_secs(10),
        "workers to die with the supervisor",
        || workers.iter().all(|&pid| is_gone(pid)),
    );
}

#[test]
fn workers_live_in_their_own_process_group() {
    let input = sim_lines(10, |_| 60_000, |_| 1);
    let running = start(&["--workers", "1"], &input);
    let supervisor = running.pid();
    let mut workers = Vec::new();
    wait_until(Duration::from_secs(20), "a worker", || {
        workers = workers_of(supervisor);
        workers.len() == 1
    });
    let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(workers[0] as i32))).unwrap();
    assert_eq!(
        pgid.as_raw() as u32,
        workers[0],
        "the worker leads its own group"
    );
    // The worker names itself once it starts serving.
    wait_until(
        Duration::from_secs(20),
        "top to show the worker's name",
        || {
            std::fs::read_to_string(format!("/proc/{}/comm", workers[0]))
                .is_ok_and(|c| c.trim() == "multiloop-w0")
        },
    );
}

#[test]
fn worker_refuses_to_run_by_hand() {
    let output = std::process::Command::new(WORKER)
        .args(["--kind", "sim"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a pipe") && stderr.contains("supervisor"),
        "{stderr}"
    );
}
