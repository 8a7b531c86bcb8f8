//! What a hostile run found (issue 12), through the real binaries: bad
//! flags and inputs are refused with exit 2 and one line, never a panic;
//! the control socket directory is not trusted blindly; SIGINT, a closed
//! pipe and faults end runs the way the README says.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

/// Runs `supervisor ARGS` on an empty input; returns (code, stderr).
fn refused(args: &[&str]) -> (i32, String) {
    let output = run(args, b"");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn huge_durations_are_refused_naming_the_flag() {
    for flag in [
        "--grace",
        "--worker-timeout",
        "--retry-backoff",
        "--task-timeout",
        "--restart-window",
    ] {
        let (code, stderr) = refused(&[flag, "9999999999999999999s"]);
        assert_eq!(code, 2, "{flag}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("too long"),
            "{flag}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // The longest accepted is accepted, and the run is not disturbed by it.
    let output = run(
        &[
            "-w",
            "1",
            "--grace",
            "365d",
            "--retry-backoff",
            "365d",
            "--worker-timeout",
            "365d",
        ],
        sim_lines(20, |_| 0, |i| i).as_bytes(),
    );
    assert_eq!(output.status.code(), Some(0));
    assert_all_sums(&records(&output.stdout), 20, |i| i);
}

#[test]
fn huge_sizes_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--max-frame", "99999999999G"),
        ("--max-worker-rss", "99999999999999999999"),
        ("--max-frame", "5G"),
    ] {
        let (code, stderr) = refused(&[flag, value]);
        assert_eq!(code, 2, "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}

#[test]
fn a_fleet_the_machine_cannot_hold_is_refused_in_one_line() {
    let started = Instant::now();
    let (code, stderr) = refused(&["--workers", "100000"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--workers") && stderr.contains("at most"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused up front"
    );
}

#[test]
fn a_directory_as_input_is_refused_before_any_worker_starts() {
    let dir = tempfile::tempdir().unwrap();
    let output = supervisor()
        .args(["--workers", "1", "--input"])
        .arg(dir.path())
        .output_within(RUN_LIMIT)
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a directory"), "{stderr}");
    assert!(!stderr.contains("tasks:"), "no summary: {stderr}");
}

#[test]
fn a_json_array_is_not_a_sim_line() {
    let output = run(&["-w", "1"], b"[1,2]\n{\"iters\":3}\n");
    assert_eq!(output.status.code(), Some(1));
    let map = by_seq(&records(&output.stdout));
    assert_eq!(map[&1]["error"]["kind"], "bad_input", "{}", map[&1]);
    assert_eq!(map[&2]["ok"]["sum"], 3);
}

#[test]
fn merge_refuses_a_record_past_the_end_of_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let shard = dir.path().join("out.jsonl");
    std::fs::write(&input, "{}\n{}\n").unwrap();
    std::fs::write(
        &shard,
        "{\"seq\":1,\"ok\":1}\n{\"seq\":2,\"ok\":2}\n{\"seq\":9,\"ok\":9}\n",
    )
    .unwrap();
    let output = Command::new(SUPERVISOR)
        .arg("merge")
        .arg(&shard)
        .arg("--input")
        .arg(&input)
        .output_within(RUN_LIMIT)
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unexpected: 1 records") && stderr.contains("lines 9"),
        "{stderr}"
    );
}

#[test]
fn resume_with_another_input_is_refused_and_a_grown_one_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, out) = (
        dir.path().join("a.jsonl"),
        dir.path().join("b.jsonl"),
        dir.path().join("out.jsonl"),
    );
    std::fs::write(&a, sim_lines(5, |_| 0, |i| i)).unwrap();
    std::fs::write(&b, sim_lines(5, |_| 0, |i| i + 1)).unwrap();
    let run_on = |input: &Path, resume: bool| {
        let mut command = supervisor();
        command.args(["-w", "1", "-q", "--input"]).arg(input);
        command.arg("--output").arg(&out);
        if resume {
            command.arg("--resume");
        }
        command.output_within(RUN_LIMIT).unwrap()
    };
    assert_eq!(run_on(&a, false).status.code(), Some(0));
    let other = run_on(&b, true);
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--resume") && stderr.contains("b.jsonl") && stderr.contains("a.jsonl"),
        "{stderr}"
    );
    // Lines appended to the same input: the usual way to grow a batch.
    std::fs::write(&a, sim_lines(8, |_| 0, |i| i)).unwrap();
    let grown = run_on(&a, true);
    assert_eq!(
        grown.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&grown.stderr)
    );
    let records = records(&std::fs::read(&out).unwrap());
    assert_all_sums(&records, 8, |i| i);
}

#[test]
fn garbage_as_a_first_frame_is_a_setup_error() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        // A length prefix of 4 GiB: what random bytes almost always are.
        ("huge", r"\377\377\377\377garbage"),
        // A frame of the right size whose payload is no hello.
        ("short", r"\000\000\000\010garbage!"),
    ] {
        let worker = script(
            dir.path(),
            name,
            &format!(
                "#!/bin/sh\nif [ \"$1\" = --list-kinds ]; then echo sim; exit 0; fi\n\
                 printf '{bytes}' >&4\nexec sleep 30\n"
            ),
        );
        let started = Instant::now();
        let output = run(&["-w", "1", "--worker", worker.to_str().unwrap()], b"{}\n");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains("handshake failed"), "{name}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name}: not after the restart limit"
        );
    }
}

/// A socket directory planted by someone else (here: a symlink to a
/// directory of ours, with a socket in it) is neither adopted by the
/// supervisor nor trusted by the client.
#[test]
fn a_planted_socket_directory_is_refused_not_adopted() {
    use std::os::unix::fs::PermissionsExt;
    let runtime = tempfile::tempdir().unwrap();
    let target = runtime.path().join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bystander = target.join("1.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&bystander).unwrap();
    std::os::unix::fs::symlink(&target, runtime.path().join("multiloop")).unwrap();

    let output = supervisor()
        .args(["-w", "1", "--input", "-"])
        .env("XDG_RUNTIME_DIR", runtime.path())
        .stdin(Stdio::piped())
        .output_within(RUN_LIMIT)
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "the run itself goes on: {stderr}"
    );
    assert!(
        stderr.contains("no control socket") && stderr.contains("is a symlink"),
        "{stderr}"
    );
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "not chmod-ed");
    assert!(bystander.exists(), "nothing deleted in it");

    let (code, _, stderr) = ctl_in(runtime.path(), &["list"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("is a symlink"), "{stderr}");
}

/// Starts `n` tasks that each sleep `ms`, at most 10 in flight, and waits
/// until 10 are.
fn start_in_flight(n: u64, ms: u64, extra: &[&str]) -> Running {
    let mut args = vec!["--workers", "1", "--concurrency", "10", "--window", "10"];
    args.extend_from_slice(extra);
    let running = start(&args, &sim_lines(n, |_| ms, |i| i));
    wait_until(LONG, "10 tasks in flight", || {
        let (code, stdout, _) = running.ctl(&["status", "--json"]);
        code == 0
            && serde_json::from_str::<Value>(&stdout)
                .is_ok_and(|v| v["workers"][0]["in_flight"] == 10)
    });
    running
}

fn sigint_once_then_resume(keep_order: bool) {
    let n = 20;
    let extra: &[&str] = if keep_order { &["--keep-order"] } else { &[] };
    let mut running = start_in_flight(n, 2_000, extra);
    kill(running.pid(), libc::SIGINT);
    assert_eq!(running.wait(LONG), 130, "{}", running.stderr());
    let drained = running.output_records();
    assert!(
        (10..n as usize).contains(&drained.len()),
        "the 10 in flight finished, input stopped: {}",
        drained.len()
    );
    if keep_order {
        let seqs: Vec<u64> = drained.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "a prefix, in order"
        );
    }
    let mut args = vec!["--workers", "1", "--concurrency", "10"];
    args.extend_from_slice(extra);
    let dir = std::mem::replace(&mut running.dir, tempfile::tempdir().unwrap());
    let mut resumed = start_in(dir, &args, "", true);
    assert_eq!(resumed.wait(LONG), 0, "{}", resumed.stderr());
    assert_all_sums(&resumed.output_records(), n, |i| i);
}

#[test]
fn sigint_once_finishes_in_flight_exits_130_and_resume_completes() {
    sigint_once_then_resume(false);
}

#[test]
fn sigint_once_with_keep_order_then_resume() {
    sigint_once_then_resume(true);
}

#[test]
fn sigint_twice_stops_now_and_resume_completes() {
    let n = 20;
    // Tasks far longer than the test: only the second signal can end it
    // within the deadline.
    let input = sim_lines(n, |i| if i < 10 { 600_000 } else { 0 }, |i| i);
    let running = start(
        &["--workers", "1", "--concurrency", "10", "--window", "10"],
        &input,
    );
    wait_until(LONG, "10 tasks in flight", || {
        let (code, stdout, _) = running.ctl(&["status", "--json"]);
        code == 0
            && serde_json::from_str::<Value>(&stdout)
                .is_ok_and(|v| v["workers"][0]["in_flight"] == 10)
    });
    let mut running = running;
    let workers = workers_of(running.pid());
    kill(running.pid(), libc::SIGINT);
    wait_until(LONG, "draining", || running.stderr().contains("draining"));
    let second = Instant::now();
    kill(running.pid(), libc::SIGINT);
    assert_eq!(running.wait(LONG), 130, "{}", running.stderr());
    // The hard deadline: a second signal stops at once, not after --grace
    // (30 s by default).
    assert!(
        second.elapsed() < Duration::from_secs(10),
        "{:?}",
        second.elapsed()
    );
    for pid in workers {
        wait_until(LONG, "no worker left", || is_gone(pid));
    }
    assert!(running.output_records().is_empty(), "nothing finished");
    // The stalling lines become quick ones for the resume: another input,
    // so its recorded fingerprint is dropped, as the refusal tells a user.
    let input_path = running.dir.path().join("in.jsonl");
    std::fs::write(&input_path, sim_lines(n, |_| 0, |i| i)).unwrap();
    std::fs::remove_file(running.dir.path().join("out.jsonl.input")).unwrap();
    let dir = std::mem::replace(&mut running.dir, tempfile::tempdir().unwrap());
    let mut resumed = start_in(dir, &["--workers", "1"], "", true);
    assert_eq!(resumed.wait(LONG), 0, "{}", resumed.stderr());
    assert_all_sums(&resumed.output_records(), n, |i| i);
}

#[test]
fn a_closed_stdout_exits_141_and_leaves_no_worker() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, sim_lines(200_000, |_| 1, |_| 10)).unwrap();
    let mut child = supervisor()
        .args(["--workers", "2", "-q", "--input"])
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    use std::io::BufRead;
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"seq\""), "{first}");
    let mut workers = Vec::new();
    wait_until(LONG, "two workers", || {
        workers = workers_of(child.id());
        workers.len() == 2
    });
    // What `| head -1` does: read one line, close the pipe.
    drop(stdout);
    let status = wait_child(&mut child, LONG, "a supervisor whose stdout closed");
    assert_eq!(status.code(), Some(141), "{status:?}");
    for pid in workers {
        wait_until(LONG, "no worker left", || is_gone(pid));
    }
}

/// `n` chaos lines, one of which (`poison`) carries `fault`.
fn chaos_lines(n: u64, poison: u64, fault: &str) -> String {
    (1..=n)
        .map(|seq| {
            if seq == poison {
                format!("{{\"sleep_ms\":20,\"iters\":5,\"fault\":\"{fault}\"}}\n")
            } else {
                format!("{{\"sleep_ms\":20,\"iters\":{seq}}}\n")
            }
        })
        .collect()
}

fn blamed_exactly(fault: &str, extra: &[&str]) {
    let (n, poison) = (200, 77);
    let mut args = vec!["--task", "chaos", "--workers", "2", "--concurrency", "20"];
    args.extend_from_slice(extra);
    let output = run(&args, chaos_lines(n, poison, fault).as_bytes());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{fault}: {stderr}");
    let map = by_seq(&records(&output.stdout));
    assert_eq!(map.len() as u64, n, "{fault}: every line once");
    for (seq, record) in &map {
        if *seq == poison {
            assert_eq!(record["error"]["kind"], "crashed", "{fault}: {record}");
        } else {
            assert_eq!(record["ok"]["sum"], expected_sum(*seq), "{fault}: {record}");
        }
    }
}

#[test]
fn an_exit_fault_is_blamed_on_exactly_its_task() {
    blamed_exactly("exit:3", &[]);
}

#[test]
fn a_block_fault_is_blamed_on_exactly_its_task() {
    // A blocked loop sends no heartbeat; the worker is found hung after
    // --worker-timeout, so keep that short.
    blamed_exactly("block", &["--worker-timeout", "2s"]);
}

#[test]
fn without_user_or_xdg_runtime_dir_the_uid_directory_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let env = |command: &mut Command| {
        command
            .env_remove("USER")
            .env_remove("XDG_RUNTIME_DIR")
            .env("TMPDIR", tmp.path());
    };
    let mut command = supervisor();
    env(&mut command);
    let mut child = command
        .args(["-w", "1", "-q", "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let dir = tmp
        .path()
        .join(format!("multiloop-{}", nix::unistd::getuid()));
    let socket = dir.join(format!("{}.sock", child.id()));
    wait_until(LONG, "the socket in multiloop-UID", || socket.exists());
    let mut ctl = Command::new(SUPERVISOR);
    env(&mut ctl);
    let listed = ctl.args(["ctl", "list"]).output_within(RUN_LIMIT).unwrap();
    assert_eq!(listed.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&format!("{}\t", child.id())),
        "{listed:?}"
    );
    drop(child.stdin.take());
    let status = wait_child(&mut child, LONG, "a supervisor whose input closed");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_foreign_worker_result_that_is_not_one_json_line_is_a_failure_naming_it() {
    // A worker of another language speaking the protocol, whose results
    // may be any bytes at all (tests/workers/foreign.py).
    let foreign = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workers/foreign.py");
    let input = b"{\"reply\":\"fine\"}\n{\"reply\":\"newline\"}\n{\"reply\":\"garbage\"}\n";
    let output = run(&["-w", "1", "--worker", foreign.to_str().unwrap()], input);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "two tasks failed: {stderr}");
    // Every line of the output is still one JSON record (`records` fails
    // on any other line).
    let records = by_seq(&records(&output.stdout));
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[&1]["ok"]["fine"], true, "{}", records[&1]);
    for (seq, why) in [(2, "a raw line break"), (3, "not JSON")] {
        let record = &records[&seq];
        assert_eq!(record["error"]["kind"], "failed", "{record}");
        let message = record["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("worker 0 (") && message.contains("foreign.py) sent a result"),
            "names the worker: {record}"
        );
        assert!(message.contains(why), "{record}");
        assert_eq!(record["attempts"], 1, "not retried: {record}");
    }
}

/// Peak RSS (VmHWM) of a live process in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn keep_order_behind_a_straggler_holds_a_bounded_number_of_bytes() {
    // Everything after line 2 waits for it in the reorder buffer. Before
    // the bound was in bytes, up to 480,000 records waited, each keeping
    // its whole result frame alive: about 200 MiB here.
    let n = 400_000;
    let mut lines = String::with_capacity(n * 26);
    for seq in 1..=n {
        lines.push_str(if seq == 2 {
            "{\"sleep_ms\":6000,\"iters\":0}\n"
        } else {
            "{\"sleep_ms\":0,\"iters\":0}\n"
        });
    }
    let mut run = start(&["--workers", "2", "--keep-order", "--task", "sim"], &lines);
    let pid = run.pid();
    let deadline = Instant::now() + LONG;
    let mut peak_kib = 0;
    while !is_gone(pid) {
        if let Some(kib) = peak_rss_kib(pid) {
            peak_kib = peak_kib.max(kib);
        }
        assert!(
            Instant::now() < deadline,
            "no exit within {LONG:?}; peak RSS {peak_kib} KiB, {} lines out; stderr:\n{}",
            run.output_lines(),
            run.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(run.wait(LONG), 0, "{}", run.stderr());
    let out = std::fs::read_to_string(run.output_path()).unwrap();
    let seqs: Vec<u64> = out
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=n as u64).collect::<Vec<_>>(),
        "every line, in order"
    );
    // The held records are bounded at 32 MiB (counted twice for the moment
    // they are released); the rest of the supervisor takes about 40 MiB.
    assert!(
        peak_kib < 120 * 1024,
        "supervisor peak RSS {} MiB behind one straggler",
        peak_kib / 1024
    );
}
