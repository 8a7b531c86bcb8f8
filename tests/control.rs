//! Seeing and steering a running supervisor: `ctl`, SIGUSR1, `--stats`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

/// `supervisor ctl --pid PID ARGS...`, returning (exit code, stdout, stderr).
fn ctl(pid: u32, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(SUPERVISOR)
        .arg("ctl")
        .args(["--pid", &pid.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn status(pid: u32) -> Value {
    let (code, stdout, stderr) = ctl(pid, &["status", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// Pids of the running workers, by index, from `ctl status`.
fn worker_pids(pid: u32) -> Vec<Option<u64>> {
    status(pid)["workers"]
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
        ctl(running.pid(), &["status"]).0 == 0
    });
}

#[test]
fn status_lists_every_worker_with_pid_cpu_and_rss() {
    let input = sim_lines(3_000, |_| 20, |_| 200_000);
    let mut running = start(&["--workers", "2", "--concurrency", "20"], &input);
    wait_for_socket(&running);
    let mut answer = Value::Null;
    wait_until(LONG, "sampled workers", || {
        answer = status(running.pid());
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
    let (_, text, _) = ctl(running.pid(), &["status"]);
    assert!(
        text.contains("worker") && text.contains("cpu %") && text.contains("running"),
        "{text}"
    );
    kill(running.pid(), libc::SIGTERM);
    running.wait(LONG);
}

#[test]
fn restart_gives_a_worker_a_new_pid_and_loses_nothing() {
    let n = 3_000;
    let input = sim_lines(n, |_| 20, |i| i);
    let mut running = start(&["--workers", "2", "--concurrency", "10"], &input);
    wait_for_socket(&running);
    let mut before = Vec::new();
    wait_until(LONG, "two running workers", || {
        before = worker_pids(running.pid());
        before.iter().all(Option::is_some)
    });
    let (code, _, stderr) = ctl(running.pid(), &["restart", "1"]);
    assert_eq!(code, 0, "{stderr}");
    wait_until(LONG, "worker 1 to have a new pid", || {
        let now = worker_pids(running.pid());
        now[1].is_some() && now[1] != before[1]
    });
    let pid_0 = status(running.pid())["workers"][0]["pid"].as_u64();
    assert_eq!(pid_0, before[0], "worker 0 untouched");
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    assert_all_sums(&running.output_records(), n, |i| i);
}

#[test]
fn scale_up_and_back_down() {
    let n = 3_000;
    let input = sim_lines(n, |_| 10, |i| i);
    let mut running = start(&["--workers", "2", "--concurrency", "10"], &input);
    wait_for_socket(&running);
    assert_eq!(ctl(running.pid(), &["scale", "3"]).0, 0);
    wait_until(LONG, "3 workers", || workers_of(running.pid()).len() == 3);
    assert_eq!(ctl(running.pid(), &["scale", "2"]).0, 0);
    wait_until(LONG, "2 workers", || workers_of(running.pid()).len() == 2);
    let (code, _, stderr) = ctl(running.pid(), &["scale", "0"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("at least 1"), "{stderr}");
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    assert_all_sums(&running.output_records(), n, |i| i);
}

#[test]
fn bad_requests_get_clear_errors() {
    let input = sim_lines(2_000, |_| 20, |_| 1);
    let mut running = start(&["--workers", "1", "--concurrency", "10"], &input);
    wait_for_socket(&running);
    let (code, _, stderr) = ctl(running.pid(), &["kill", "9"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no worker 9"), "{stderr}");
    let (code, _, stderr) = ctl(999_999_999, &["status"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("no supervisor with pid 999999999"),
        "{stderr}"
    );
    // A raw client sending garbage gets an error line, and the run goes on.
    let socket = std::fs::read_dir(control_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy() == format!("{}.sock", running.pid()))
        .expect("the socket file");
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    use std::io::{BufRead, Write};
    stream.write_all(b"{\"cmd\":\"explode\"}\n").unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(&stream)
        .read_line(&mut answer)
        .unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["ok"], false);
    assert!(answer["error"].as_str().unwrap().contains("bad request"));
    assert_eq!(ctl(running.pid(), &["drain"]).0, 0);
    assert_eq!(running.wait(LONG), 143);
}

fn control_dir() -> std::path::PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => std::path::PathBuf::from(dir).join("multiloop"),
        None => {
            let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
            let by_name = std::env::temp_dir().join(format!("multiloop-{user}"));
            if by_name.exists() {
                by_name
            } else {
                std::env::temp_dir().join(format!("multiloop-{}", nix::unistd::getuid()))
            }
        }
    }
}

#[test]
fn a_client_of_another_uid_is_refused() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("not root: cannot run a client as another uid; the check is unit-tested");
        return;
    }
    let input = sim_lines(2_000, |_| 20, |_| 1);
    let mut running = start(&["--workers", "1", "--concurrency", "10"], &input);
    wait_for_socket(&running);
    use std::os::unix::process::CommandExt;
    let output = Command::new(SUPERVISOR)
        .args(["ctl", "--pid", &running.pid().to_string(), "status"])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    assert!(output.stdout.is_empty(), "no status for another user");
    kill(running.pid(), libc::SIGTERM);
    running.wait(LONG);
}

#[test]
fn sigusr1_prints_the_status_table() {
    let input = sim_lines(3_000, |_| 20, |_| 1);
    let mut running = start(&["--workers", "2", "--concurrency", "10"], &input);
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
    let stats = dir.path().join("stats.json");
    let mut running = start(
        &["--workers", "2", "--stats", stats.to_str().unwrap()],
        &input,
    );
    assert_eq!(running.wait(LONG), 0);
    let value: Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(value["finished"], true);
    assert_eq!(value["progress"]["done"], n);
    let workers = value["workers"].as_array().unwrap();
    let sum: u64 = workers.iter().map(|w| w["done"].as_u64().unwrap()).sum();
    assert_eq!(sum, n, "per-worker done adds up to the total");
    assert!(workers
        .iter()
        .all(|w| w["cpu_us"].as_u64().is_some() && w["peak_rss_bytes"].as_u64() > Some(0)));
}
