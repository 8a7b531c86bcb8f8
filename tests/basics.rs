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
        .output_within(RUN_LIMIT)
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a pipe") && stderr.contains("supervisor"),
        "{stderr}"
    );
}

/// How a [`quick_start`] run gets its stdin.
enum Stdin<'a> {
    Null,
    File(&'a std::path::Path),
    /// A pipe that gets these bytes, then is closed.
    Pipe(&'a str),
}

/// Runs `supervisor ARGS -o DIR/out.jsonl` with `stdin` as a pasted
/// command gets it (never a terminal); the run has a minute. Returns the
/// exit code and stderr.
fn quick_start(dir: &std::path::Path, args: &[&str], stdin: Stdin) -> (i32, String) {
    use std::io::Write;
    use std::process::Stdio;
    let stderr_path = dir.join("stderr.txt");
    let mut command = supervisor();
    command
        .args(args)
        .arg("--output")
        .arg(dir.join("out.jsonl"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    match stdin {
        Stdin::Null => command.stdin(Stdio::null()),
        Stdin::File(path) => command.stdin(std::fs::File::open(path).unwrap()),
        Stdin::Pipe(_) => command.stdin(Stdio::piped()),
    };
    let mut child = command.spawn().expect("supervisor starts");
    if let Stdin::Pipe(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // Fails only if the supervisor is already gone, which the exit
        // code below then shows.
        let _ = pipe.write_all(bytes.as_bytes());
    }
    let limit = Duration::from_secs(60);
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "supervisor {args:?} still running after {limit:?}: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&stderr_path).unwrap(),
    )
}

#[test]
fn an_empty_stdin_that_is_not_a_terminal_says_how_to_run_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    for (what, stdin) in [
        ("/dev/null", Stdin::Null),
        ("an empty file", Stdin::File(&empty)),
        ("a pipe closed unwritten", Stdin::Pipe("")),
    ] {
        let (code, stderr) = quick_start(dir.path(), &["--workers", "1"], stdin);
        assert_eq!(code, 2, "{what}: {stderr}");
        assert!(
            stderr.contains("stdin is empty") && stderr.contains("--demo"),
            "{what}: {stderr}"
        );
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{what}: one line: {stderr}"
        );
        assert!(
            !dir.path().join("out.jsonl").exists(),
            "{what}: refused before the output is opened"
        );
    }
    // A usage error is still the one named.
    let (code, stderr) = quick_start(
        dir.path(),
        &["--shard", "1/3", "--shard-count", "3"],
        Stdin::Null,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--shard-count goes with --shard auto") && !stderr.contains("stdin"),
        "{stderr}"
    );
}

#[test]
fn an_empty_stdin_named_by_input_dash_is_zero_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = quick_start(dir.path(), &["-w", "1", "--input", "-"], Stdin::Null);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("0 tasks: 0 ok, 0 failed"), "{stderr}");
}

#[test]
fn tasks_piped_in_without_input_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = sim_lines(20, |_| 0, |i| i);
    let (code, stderr) = quick_start(dir.path(), &["-w", "1"], Stdin::Pipe(&input));
    assert_eq!(code, 0, "{stderr}");
    let output = std::fs::read(dir.path().join("out.jsonl")).unwrap();
    assert_all_sums(&records(&output), 20, |i| i);
}

#[test]
fn the_demo_flag_runs_the_demo_whatever_stdin_is() {
    let dir = tempfile::tempdir().unwrap();
    // One task in a thousand of the demo's 10,000 keeps the test short.
    let (code, stderr) = quick_start(
        dir.path(),
        &["--demo", "-w", "1", "--shard", "0/1000"],
        Stdin::Null,
    );
    assert_eq!(code, 0, "{stderr}");
    let output = std::fs::read(dir.path().join("out.jsonl")).unwrap();
    let records = records(&output);
    assert_eq!(records.len(), 10, "{stderr}");
    for record in &records {
        assert!(record["ok"]["sum"].is_u64(), "{record}");
        assert_eq!((record["seq"].as_u64().unwrap() - 1) % 1000, 0, "{record}");
    }
}

/// The supervisor reads a stdin pipe and writes a stdout pipe without
/// blocking (a warm pool's calls and records go through them), on open
/// file descriptions of its own: the pipes it was handed keep their flags,
/// during the run and after it, whatever they were (here stdin comes
/// non-blocking, as asyncio or Node leave their pipe ends, and stdout
/// blocking, as it is shared with stderr after `2>&1`).
#[test]
fn the_pipes_handed_over_keep_their_flags_during_and_after_the_run() {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::io::{BufRead, Write};
    use std::os::fd::{AsFd, BorrowedFd};

    fn non_blocking(fd: BorrowedFd<'_>) -> bool {
        let flags = fcntl(fd, FcntlArg::F_GETFL).unwrap();
        OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK)
    }

    let (input_read, mut input_write) = std::io::pipe().unwrap();
    let (output_read, output_write) = std::io::pipe().unwrap();
    let flags = OFlag::from_bits_truncate(fcntl(input_read.as_fd(), FcntlArg::F_GETFL).unwrap());
    fcntl(
        input_read.as_fd(),
        FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
    )
    .unwrap();
    // Our own handles on the same open file descriptions: the flags are theirs.
    let input_shared = input_read.try_clone().unwrap();
    let output_shared = output_write.try_clone().unwrap();
    let mut child = supervisor()
        .args(["--workers", "1", "--input", "-", "-q"])
        .stdin(input_read)
        .stderr(output_write.try_clone().unwrap())
        .stdout(output_write)
        .spawn()
        .expect("supervisor starts");
    let check = |when: &str| {
        assert!(
            non_blocking(input_shared.as_fd()),
            "{when}: stdin's own O_NONBLOCK was cleared"
        );
        assert!(
            !non_blocking(output_shared.as_fd()),
            "{when}: stdout (and stderr) left non-blocking"
        );
    };
    // Mid-run: the first records are out and the supervisor waits for more.
    input_write
        .write_all(sim_lines(10, |_| 0, |_| 10).as_bytes())
        .unwrap();
    let mut output = std::io::BufReader::new(output_read);
    let mut lines = Vec::new();
    for _ in 0..10 {
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        lines.push(line);
    }
    check("during the run");
    drop(input_write);
    let status = wait_child(&mut child, RUN_LIMIT, "the supervisor on pipes");
    assert_eq!(status.code(), Some(0));
    check("after the run");
    drop(output_shared);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut output, &mut rest).unwrap();
    let records: Vec<serde_json::Value> = records((lines.concat() + &rest).as_bytes());
    assert_all_sums(&records, 10, |_| 10);
}
