//! Seeing and steering a running supervisor: `ctl`, SIGUSR1, `--stats`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

fn status(running: &Running) -> Value {
    let (code, stdout, stderr) = running.ctl(&["status", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// Pids of the running workers, by index, from `ctl status`.
fn worker_pids(running: &Running) -> Vec<Option<u64>> {
    status(running)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            if w["state"] == "running" {
                w["pid"].as_u64()
            } else {
                None
            }
        })
        .collect()
}

fn wait_for_socket(running: &Running) {
    wait_until(LONG, "the control socket", || {
        running.ctl(&["status"]).0 == 0
    });
}

/// Tasks that sleep far longer than any test: with them in flight, the run
/// is still going whenever the test looks; it ends by drain or signal.
fn stalling(n: u64) -> String {
    sim_lines(n, |_| 600_000, |_| 1)
}

#[test]
fn status_lists_every_worker_with_pid_cpu_and_rss() {
    let mut running = start(
        &["--workers", "2", "--concurrency", "20", "--grace", "200ms"],
        &stalling(100),
    );
    wait_for_socket(&running);
    let mut answer = Value::Null;
    wait_until(LONG, "sampled workers", || {
        answer = status(&running);
        answer["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["rss_bytes"].as_u64() > Some(0))
    });
    let workers = answer["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let live = workers_of(running.pid());
    for worker in workers {
        let pid = worker["pid"].as_u64().unwrap() as u32;
        assert!(live.contains(&pid), "{pid} is a live worker: {live:?}");
        assert!(worker["cpu_percent"].as_f64().is_some());
        assert!(worker["cpu_us"].as_u64().is_some());
    }
    let (_, text, _) = running.ctl(&["status"]);
    assert!(
        text.contains("worker") && text.contains("cpu %") && text.contains("running"),
        "{text}"
    );
    assert_eq!(running.ctl(&["drain"]).0, 0);
    assert_eq!(running.wait(LONG), 143);
}

#[test]
fn restart_gives_a_worker_a_new_pid_and_loses_nothing() {
    let n = 200;
    // The input stays open until the restart is seen: the run cannot end
    // before it.
    let mut running = start_piped(&["--workers", "2", "--concurrency", "10"]);
    running.feed(&sim_lines(n, |_| 5, |i| i));
    wait_for_socket(&running);
    let mut before = Vec::new();
    wait_until(LONG, "two running workers", || {
        before = worker_pids(&running);
        before.iter().all(Option::is_some)
    });
    let (code, _, stderr) = running.ctl(&["restart", "1"]);
    assert_eq!(code, 0, "{stderr}");
    wait_until(LONG, "worker 1 to have a new pid", || {
        let now = worker_pids(&running);
        now[1].is_some() && now[1] != before[1]
    });
    let pid_0 = status(&running)["workers"][0]["pid"].as_u64();
    assert_eq!(pid_0, before[0], "worker 0 untouched");
    running.close_input();
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    assert_all_sums(&running.output_records(), n, |i| i);
}

#[test]
fn kill_of_a_live_worker_replaces_it_and_loses_nothing() {
    let n = 200;
    let mut running = start_piped(&["--workers", "2", "--concurrency", "10"]);
    running.feed(&sim_lines(n, |_| 5, |i| i));
    // Tasks that are surely in flight when the kill lands.
    running.feed(&sim_lines(10, |_| 1_500, |_| 7));
    wait_for_socket(&running);
    let mut before = Vec::new();
    wait_until(LONG, "two running workers", || {
        before = worker_pids(&running);
        before.iter().all(Option::is_some)
    });
    let old = before[0].unwrap() as u32;
    let (code, stdout, stderr) = running.ctl(&["kill", "0"]);
    assert_eq!((code, stdout.trim()), (0, "ok"), "{stderr}");
    wait_until(LONG, "the killed worker to be gone", || is_gone(old));
    wait_until(LONG, "worker 0 to have a new pid", || {
        let now = worker_pids(&running);
        now[0].is_some() && now[0] != before[0]
    });
    running.close_input();
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    let records = running.output_records();
    let map = by_seq(&records);
    assert_eq!(map.len() as u64, n + 10, "every line once");
    assert!(
        map.values().all(|r| r["ok"].is_object()),
        "a kill on request fails no task"
    );
}

#[test]
fn scale_up_and_back_down() {
    let mut running = start(
        &["--workers", "2", "--concurrency", "10", "--grace", "200ms"],
        &stalling(100),
    );
    wait_for_socket(&running);
    assert_eq!(running.ctl(&["scale", "3"]).0, 0);
    wait_until(LONG, "3 workers", || workers_of(running.pid()).len() == 3);
    assert_eq!(running.ctl(&["scale", "2"]).0, 0);
    wait_until(LONG, "2 workers", || workers_of(running.pid()).len() == 2);
    let (code, _, stderr) = running.ctl(&["scale", "0"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("at least 1"), "{stderr}");
    assert_eq!(running.ctl(&["drain"]).0, 0);
    assert_eq!(running.wait(LONG), 143, "{}", running.stderr());
}

#[test]
fn bad_requests_get_clear_errors() {
    let mut running = start(
        &["--workers", "1", "--concurrency", "10", "--grace", "200ms"],
        &stalling(20),
    );
    wait_for_socket(&running);
    let (code, _, stderr) = running.ctl(&["kill", "9"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no worker 9"), "{stderr}");
    let (code, _, stderr) = ctl_in(running.runtime_dir(), &["--pid", "999999999", "status"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("no supervisor with pid 999999999"),
        "{stderr}"
    );
    // A raw client sending garbage gets an error line, and the run goes on.
    let mut stream = std::os::unix::net::UnixStream::connect(running.socket_path()).unwrap();
    stream.set_read_timeout(Some(LONG)).unwrap();
    use std::io::{BufRead, Write};
    stream.write_all(b"{\"cmd\":\"explode\"}\n").unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(&stream)
        .read_line(&mut answer)
        .expect("an answer to a bad request within LONG");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["ok"], false);
    assert!(answer["error"].as_str().unwrap().contains("bad request"));
    assert_eq!(running.ctl(&["drain"]).0, 0);
    assert_eq!(running.wait(LONG), 143);
}

#[test]
fn list_names_every_running_supervisor_of_the_directory() {
    let runtime = tempfile::tempdir().unwrap();
    let start_one = || {
        supervisor()
            .args(["--workers", "1", "--grace", "200ms", "--input", "-", "-q"])
            .env("XDG_RUNTIME_DIR", runtime.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = start_one();
    let mut second = start_one();
    let pids = [first.id(), second.id()];
    let mut listed = String::new();
    wait_until(LONG, "both supervisors listed", || {
        listed = ctl_in(runtime.path(), &["list"]).1;
        pids.iter().all(|pid| listed.contains(&format!("{pid}\t")))
    });
    assert_eq!(listed.lines().count(), 2, "{listed}");
    // With two running, a command without --pid asks which.
    let (code, _, stderr) = ctl_in(runtime.path(), &["status"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("pick one with --pid"), "{stderr}");
    for child in [&mut first, &mut second] {
        drop(child.stdin.take());
        let status = wait_child(child, LONG, "a supervisor whose input closed");
        assert_eq!(status.code(), Some(0));
    }
    let (code, listed, _) = ctl_in(runtime.path(), &["list"]);
    assert_eq!((code, listed.as_str()), (0, ""), "sockets removed at exit");
}

#[test]
fn sockets_of_dead_supervisors_are_cleaned_up() {
    let mut running = start(&["--workers", "1", "--grace", "200ms"], &stalling(5));
    wait_for_socket(&running);
    let socket = running.socket_path();
    // SIGKILL: the supervisor cannot remove its own socket.
    kill(running.pid(), libc::SIGKILL);
    running.wait(LONG);
    assert!(socket.exists(), "a SIGKILLed supervisor leaves its socket");
    let (code, listed, stderr) = ctl_in(running.runtime_dir(), &["list"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(listed, "", "a dead supervisor is not listed");
    assert!(!socket.exists(), "its socket is removed");
}

/// Connects to `socket` as uid 65534 from a thread of this process: the
/// raw `setresuid` system call changes only the calling thread's ids (the
/// libc wrapper would change every thread's), and the server sees the
/// thread's uid through SO_PEERCRED. Returns the server's first line.
fn answer_as_nobody(socket: &std::path::Path) -> String {
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: a plain system call on this thread's own credentials.
        let changed = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(changed, 0, "setresuid");
        let stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        // A server that neither answers nor closes fails the test, not CI.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        use std::io::{BufRead, Write};
        let _ = (&stream).write_all(b"{\"cmd\":\"status\"}\n");
        let mut answer = String::new();
        let _ = std::io::BufReader::new(&stream).read_line(&mut answer);
        answer
    })
    .join()
    .unwrap()
}

#[test]
fn a_client_of_another_uid_is_refused_by_the_server() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("not root: cannot run a client as another uid; the check is unit-tested");
        return;
    }
    let mut running = start(
        &["--workers", "1", "--concurrency", "10", "--grace", "200ms"],
        &stalling(20),
    );
    wait_for_socket(&running);
    // Let uid 65534 reach the socket (the supervisor would never allow it):
    // what is tested is the server's own refusal, not file permissions.
    use std::os::unix::fs::PermissionsExt;
    let socket = running.socket_path();
    let open = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(running.runtime_dir(), 0o711);
    open(socket.parent().unwrap(), 0o711);
    open(&socket, 0o666);
    let answer = answer_as_nobody(&socket);
    let answer: Value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("the server answers ({e}): {answer:?}"));
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(
        answer["error"],
        format!(
            "refused: peer uid 65534 is not this supervisor's uid {}",
            nix::unistd::getuid()
        )
    );
    assert!(
        answer.get("workers").is_none(),
        "no status for another user"
    );
    // The opened directory is no longer trusted by our own client either.
    let (code, _, stderr) = running.ctl(&["status"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("has mode 711"), "{stderr}");
    open(socket.parent().unwrap(), 0o700);
    assert_eq!(running.ctl(&["drain"]).0, 0);
    assert_eq!(running.wait(LONG), 143);
}

#[test]
fn sigusr1_prints_the_status_table() {
    let mut running = start(
        &["--workers", "2", "--concurrency", "10", "--grace", "200ms"],
        &stalling(100),
    );
    wait_for_socket(&running);
    kill(running.pid(), libc::SIGUSR1);
    wait_until(LONG, "the status table", || {
        running.stderr().contains("inflight")
    });
    let stderr = running.stderr();
    let table: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.contains("inflight"))
        .take(3)
        .collect();
    assert!(
        table[1].trim_start().starts_with('0') && table[2].trim_start().starts_with('1'),
        "{stderr}"
    );
    kill(running.pid(), libc::SIGTERM);
    running.wait(LONG);
}

#[test]
fn stats_file_parses_and_adds_up() {
    let n = 2_000;
    let input = sim_lines(n, |_| 1, |i| i);
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.jsonl");
    // A file that is there already is appended to, not replaced.
    std::fs::write(&stats, "{\"type\":\"earlier\"}\n").unwrap();
    let mut running = start(
        &["--workers", "2", "--stats", stats.to_str().unwrap()],
        &input,
    );
    assert_eq!(running.wait(LONG), 0);
    let text = std::fs::read_to_string(&stats).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "earlier");
    assert_eq!(lines[1]["type"], "start");
    assert_eq!(lines[1]["meta"]["workers"], 2);
    let starts = lines
        .iter()
        .filter(|l| l["type"] == "life" && l["life"]["change"] == "started");
    assert_eq!(starts.count(), 2, "one life per worker");
    assert!(
        lines.iter().any(|l| l["type"] == "sample"),
        "samples each second and at the end"
    );
    let end = &lines.last().unwrap()["end"];
    assert_eq!(end["outcome"], "all_ok");
    assert_eq!(end["ok"], n);
    let workers = end["workers"].as_array().unwrap();
    let sum: u64 = workers.iter().map(|w| w["done"].as_u64().unwrap()).sum();
    assert_eq!(sum, n, "per-worker done adds up to the total");
    assert!(workers
        .iter()
        .all(|w| w["cpu_us"].as_u64().is_some() && w["peak_rss_bytes"].as_u64() > Some(0)));
}

#[test]
fn requested_kills_do_not_count_against_max_restarts() {
    // Nothing completes (every task stalls), so each death would count
    // towards giving up; killed on request more often than the limit, the
    // run must go on.
    let mut running = start(
        &[
            "--workers",
            "1",
            "--concurrency",
            "5",
            "--max-restarts",
            "2",
            "--grace",
            "200ms",
        ],
        &stalling(20),
    );
    wait_for_socket(&running);
    for round in 0..5 {
        let mut before = None;
        wait_until(LONG, "a running worker", || {
            before = worker_pids(&running)[0];
            before.is_some()
        });
        let old = before.unwrap() as u32;
        let (code, stdout, stderr) = running.ctl(&["kill", "0"]);
        assert_eq!((code, stdout.trim()), (0, "ok"), "round {round}: {stderr}");
        wait_until(LONG, "the killed worker to be gone", || is_gone(old));
        wait_until(LONG, "worker 0 to have a new pid", || {
            let now = worker_pids(&running)[0];
            now.is_some() && now != before
        });
    }
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "gave up after requested kills: {}",
        running.stderr()
    );
    assert!(
        !running.stderr().contains("giving up"),
        "{}",
        running.stderr()
    );
    assert_eq!(running.ctl(&["drain"]).0, 0);
    assert_eq!(running.wait(LONG), 143, "{}", running.stderr());
}
