//! Many machines on one Redis Streams queue: real `redis-server`s on
//! 127.0.0.1, real supervisors pulling from them, nodes killed, drained
//! and joining late, Redis restarted under them; `merge --queue` turns
//! the nodes' outputs into every line exactly once.
//!
//! Without `redis-server` these tests skip with a loud message, unless
//! `CI` is set: there they fail (`.ci/run` installs it).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::crawl::{assert_each_node_once, tree_forest};
use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

/// A `redis-server` of our own, in a temporary directory, with an
/// append-only file so that a restart keeps the queue.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// `--requirepass`, when this one has a password.
    password: Option<String>,
}

impl Redis {
    /// Starts one, or `None` (after a loud message) when the machine has no
    /// `redis-server` and this is not CI.
    fn start() -> Option<Self> {
        Self::start_with_password(None)
    }

    /// Like [`Redis::start`], requiring `password` from its clients.
    fn start_with_password(password: Option<&str>) -> Option<Self> {
        let found = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join("redis-server").is_file())
        });
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed, and CI must run the queue tests (apt-get install redis-server)"
            );
            eprintln!(
                "\n!!!!!!!! SKIPPED: redis-server is not installed; the queue tests did not run !!!!!!!!\n\
                 !!!!!!!! install it (apt-get install redis-server) to run them             !!!!!!!!\n"
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            password: password.map(str::to_string),
        };
        redis.launch();
        Some(redis)
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(
                self.password
                    .iter()
                    .flat_map(|p| ["--requirepass", p.as_str()]),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        wait_until(LONG, "redis-server to answer PING", || self.ping());
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut answer = [0u8; 7];
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
        if let Some(password) = &self.password {
            let mut ok = [0u8; 5];
            if stream
                .write_all(format!("AUTH {password}\r\n").as_bytes())
                .is_err()
                || stream.read_exact(&mut ok).is_err()
            {
                return false;
            }
        }
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    /// Stops it the way a maintenance restart does (SIGTERM) and waits.
    fn stop(&mut self) {
        self.end(libc::SIGTERM);
    }

    /// Kills it (SIGKILL: no goodbye to its clients) and waits.
    fn crash(&mut self) {
        self.end(libc::SIGKILL);
    }

    fn end(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            kill(child.id(), signal);
            wait_until(LONG, "redis-server to exit", || {
                child.try_wait().unwrap().is_some()
            });
        }
    }

    fn url(&self, queue: &str) -> String {
        format!("redis://127.0.0.1:{}/{queue}", self.port)
    }

    /// Runs a raw command through redis-cli.
    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output_within(RUN_LIMIT)
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `supervisor queue ARGS...`, to the end.
fn queue(args: &[&str]) -> Output {
    supervisor()
        .arg("queue")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output_within(RUN_LIMIT)
        .expect("supervisor queue runs")
}

fn push(redis: &Redis, name: &str, input: &Path) -> Output {
    let url = redis.url(name);
    let output = queue(&["push", "--queue", &url, "--input", input.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A consuming supervisor writing to its own directory.
fn node(url: &str, args: &[&str]) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.txt")).unwrap();
    let child = supervisor()
        .args(["--queue", url])
        .args(args)
        .arg("--output")
        .arg(dir.path().join("out.jsonl"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("supervisor starts");
    Running {
        child,
        dir,
        input: None,
    }
}

/// `supervisor merge --queue FILES --input INPUT`: the merged records,
/// after checking that nothing is missing or in conflict.
fn merged(files: &[PathBuf], input: &Path) -> (Vec<Value>, String) {
    let output = Command::new(SUPERVISOR)
        .arg("merge")
        .arg("--queue")
        .args(files)
        .arg("--input")
        .arg(input)
        .stdin(Stdio::null())
        .output_within(RUN_LIMIT)
        .expect("merge runs");
    let stderr = text(&output.stderr);
    assert!(
        !stderr.contains("missing") && !stderr.contains("duplicated"),
        "{stderr}"
    );
    (records(&output.stdout), stderr)
}

/// Mixed tasks: sleeps of 0-9 ms and sums of various lengths.
fn mixed(n: u64) -> (String, impl Fn(u64) -> u64) {
    let iters = |i: u64| (i * 7919) % 20_000;
    (sim_lines(n, |i| i % 10, iters), iters)
}

fn write_input(dir: &Path, lines: &str) -> PathBuf {
    let path = dir.join("in.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

#[test]
fn nodes_killed_and_joining_late_still_record_every_line_once() {
    let Some(redis) = Redis::start() else { return };
    let n = 20_000;
    let (mut lines, iters) = mixed(n);
    // One poison task among them: it aborts every worker that runs it.
    let poison = 12_345;
    lines = lines
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if i as u64 + 1 == poison {
                r#"{"sleep_ms":1,"iters":3,"fault":"abort"}"#.to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &lines);
    push(&redis, "mixed", &input);

    let url = redis.url("mixed");
    let args = [
        "--task",
        "chaos",
        "--workers",
        "2",
        "--concurrency",
        "16",
        "--claim-after",
        "1s",
    ];
    let mut victim = node(&url, &args);
    let mut steady = node(&url, &args);
    wait_until(LONG, "the victim to record some tasks", || {
        victim.output_lines() >= 1_500
    });
    kill(victim.pid(), libc::SIGKILL);
    victim.wait(LONG);
    assert!(
        victim.output_lines() < 15_000,
        "killed mid-run, not at the end"
    );
    let mut late = node(&url, &args);

    let steady_code = steady.wait(LONG);
    let late_code = late.wait(LONG);
    // The node that met the poison task exits 1 (a task failed).
    for (code, who) in [(steady_code, &steady), (late_code, &late)] {
        assert!(code == 0 || code == 1, "exit {code}: {}", who.stderr());
    }
    assert!(
        steady_code == 1 || late_code == 1,
        "someone recorded the poison task"
    );

    let files = [
        victim.output_path(),
        steady.output_path(),
        late.output_path(),
    ];
    let (records, _) = merged(&files, &input);
    assert_eq!(records.len() as u64, n, "every line exactly once");
    for record in &records {
        let seq = record["seq"].as_u64().unwrap();
        if seq == poison {
            assert_eq!(record["error"]["kind"], "crashed", "{record}");
            continue;
        }
        assert_eq!(
            record["ok"]["sum"].as_u64(),
            Some(expected_sum(iters(seq - 1))),
            "line {seq}: {record}"
        );
    }
    let crashed: usize = [&steady, &late]
        .iter()
        .flat_map(|node| node.output_records())
        .filter(|r| r["error"]["kind"] == "crashed")
        .count();
    assert_eq!(crashed, 1, "the poison task is recorded crashed once");

    let status = queue(&["status", "--queue", &url, "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["done"], n, "{status}");
    assert_eq!(status["in_flight"], 0, "{status}");
    assert_eq!(status["dead"], 1, "{status}");
}

#[test]
fn a_redis_restart_mid_run_does_not_stop_the_run() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let n = 4_000;
    let (lines, iters) = mixed(n);
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &lines);
    push(&redis, "restart", &input);

    let url = redis.url("restart");
    let args = [
        "--workers",
        "1",
        "--concurrency",
        "8",
        "--claim-after",
        "30s",
    ];
    let mut consumer = node(&url, &args);
    wait_until(LONG, "some records", || consumer.output_lines() >= 300);
    redis.stop();
    let during = consumer.output_lines();
    redis.launch();
    assert_eq!(consumer.wait(LONG), 0, "{}", consumer.stderr());
    assert!(during < n as usize, "Redis went away mid-run");
    let stderr = consumer.stderr();
    assert!(stderr.contains("cannot reach"), "{stderr}");
    assert!(stderr.contains("Redis is back"), "{stderr}");

    let (records, _) = merged(&[consumer.output_path()], &input);
    assert_all_sums(&records, n, iters);
}

#[test]
fn a_drained_node_hands_its_unfinished_lines_back_at_once() {
    let Some(redis) = Redis::start() else { return };
    let n = 3_000;
    let (lines, iters) = mixed(n);
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &lines);
    push(&redis, "drain", &input);

    // Nobody claims anything for an hour: what the drained node held can
    // only come back because it handed it back.
    let url = redis.url("drain");
    let args = [
        "--workers",
        "1",
        "--concurrency",
        "4",
        "--claim-after",
        "1h",
    ];
    let mut drained = node(&url, &args);
    wait_until(LONG, "some records", || drained.output_lines() >= 100);
    kill(drained.pid(), libc::SIGINT);
    assert_eq!(drained.wait(LONG), 130, "{}", drained.stderr());
    let stderr = drained.stderr();
    assert!(stderr.contains("unfinished line(s) back"), "{stderr}");

    let mut other = node(&url, &["--workers", "2", "--claim-after", "1h"]);
    assert_eq!(other.wait(LONG), 0, "{}", other.stderr());
    let (records, _) = merged(&[drained.output_path(), other.output_path()], &input);
    assert_all_sums(&records, n, iters);
    assert!(other.stderr().contains("took over"), "{}", other.stderr());
}

#[test]
fn bad_queues_get_one_line_errors() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &sim_lines(10, |_| 0, |i| i));

    let wrong = queue(&["status", "--queue", "http://127.0.0.1/x"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        text(&wrong.stderr).contains("redis://"),
        "{}",
        text(&wrong.stderr)
    );

    let missing = node(&redis.url("nothing"), &["--workers", "1"]).wait_output();
    assert_eq!(missing.0, 2, "{}", missing.1);
    assert!(missing.1.contains("does not exist"), "{}", missing.1);

    redis.cli(&["SET", "multiloop:{foreign}:tasks", "hello"]);
    let foreign = node(&redis.url("foreign"), &["--workers", "1"]).wait_output();
    assert_eq!(foreign.0, 2, "{}", foreign.1);
    assert!(foreign.1.contains("not a multiloop queue"), "{}", foreign.1);

    push(&redis, "twice", &input);
    let again = push(&redis, "twice", &input);
    assert!(text(&again.stderr).contains("10 were already there"));
    let other_dir = tempfile::tempdir().unwrap();
    let other_input = write_input(other_dir.path(), "{\"iters\":1}\n");
    let refused = queue(&[
        "push",
        "--queue",
        &redis.url("twice"),
        "--input",
        other_input.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("holds another input"), "{stderr}");

    // Nothing listens on a port just freed: retried, then a clear error.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/q");
    let unreachable = node(&url, &["--workers", "1", "--claim-after", "100ms"]).wait_output();
    assert_eq!(unreachable.0, 2, "{}", unreachable.1);
    assert!(unreachable.1.contains("cannot reach"), "{}", unreachable.1);
    assert!(unreachable.1.contains("retrying"), "{}", unreachable.1);
}

#[test]
fn merge_resolves_repeats_only_in_queue_mode() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    std::fs::write(
        &a,
        "{\"seq\":1,\"ok\":1}\n{\"seq\":2,\"ok\":\"a\"}\n{\"seq\":3,\"error\":{\"kind\":\"timeout\"}}\n",
    )
    .unwrap();
    std::fs::write(
        &b,
        "{\"seq\":2,\"ok\":\"b\"}\n{\"seq\":3,\"ok\":3}\n{\"seq\":4,\"ok\":4}\n",
    )
    .unwrap();
    let run = |queue: bool| {
        let mut command = Command::new(SUPERVISOR);
        command.arg("merge").arg(&a).arg(&b);
        if queue {
            command.arg("--queue");
        }
        command.output_within(RUN_LIMIT).unwrap()
    };
    let shards = run(false);
    assert_eq!(shards.status.code(), Some(1));
    assert!(text(&shards.stderr).contains("duplicated: line 2"));

    let nodes = run(true);
    let stderr = text(&nodes.stderr);
    assert_eq!(nodes.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("2 tasks recorded by more than one node"),
        "{stderr}"
    );
    let kept: BTreeMap<u64, Value> = records(&nodes.stdout)
        .into_iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r))
        .collect();
    assert_eq!(kept[&2]["ok"], "b", "the later one");
    assert_eq!(kept[&3]["ok"], 3, "the ok one");
    assert_eq!(kept.len(), 4);
}

trait WaitOutput {
    fn wait_output(self) -> (i32, String);
}

impl WaitOutput for Running {
    fn wait_output(mut self) -> (i32, String) {
        let code = self.wait(LONG);
        (code, self.stderr())
    }
}

#[test]
fn a_queue_line_over_the_frame_limit_is_bad_input_not_a_panic() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let big = format!(r#"{{"iters":3,"pad":"{}"}}"#, "x".repeat(10_000));
    let lines = format!("{{\"iters\":1}}\n{big}\n{{\"iters\":2}}\n");
    let input = write_input(dir.path(), &lines);
    let url = redis.url("oversize");

    // The pusher is told the consumers' frame limit and names the line.
    let pushed = queue(&[
        "push",
        "--queue",
        &url,
        "--input",
        input.to_str().unwrap(),
        "--max-frame",
        "4KiB",
    ]);
    let stderr = text(&pushed.stderr);
    assert_eq!(pushed.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("line 2: 10020 bytes is over the frame limit"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 of them over the frame limit"),
        "{stderr}"
    );

    let mut consumer = node(&url, &["--workers", "1", "--max-frame", "4KiB"]);
    let code = consumer.wait(LONG);
    let stderr = consumer.stderr();
    assert_eq!(code, 1, "one bad_input line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(" 0 worker restarts"),
        "no worker died: {stderr}"
    );
    let records = consumer.output_records();
    assert_eq!(records.len(), 3, "{records:?}");
    for record in &records {
        if record["seq"] == 2 {
            assert_eq!(record["error"]["kind"], "bad_input", "{record}");
            assert_eq!(record["attempts"], 0, "never sent to a worker: {record}");
            let message = record["error"]["message"].as_str().unwrap();
            assert!(message.contains("line 2: 10020 bytes"), "{record}");
        } else {
            assert!(record["ok"].is_object(), "{record}");
        }
    }
}

#[test]
fn after_redis_comes_back_a_node_runs_lines_a_lost_reply_left_under_its_name() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let n = 6_000;
    let (lines, iters) = mixed(n);
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &lines);
    push(&redis, "lost", &input);

    // Nobody claims anything for an hour: lines pending under the node's
    // own name can only be run by the node looking for them itself.
    let url = redis.url("lost");
    let args = [
        "--workers",
        "1",
        "--concurrency",
        "8",
        "--claim-after",
        "1h",
    ];
    let mut consumer = node(&url, &args);
    wait_until(LONG, "some records", || consumer.output_lines() >= 300);
    // What a read in flight when Redis died leaves behind: Redis carried it
    // out (and wrote it to its append-only file), its reply never came.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let name = format!("{}:{}", host.trim(), consumer.output_path().display());
    let taken = redis.cli(&[
        "XREADGROUP",
        "GROUP",
        "multiloop",
        &name,
        "COUNT",
        "12",
        "STREAMS",
        "multiloop:{lost}:tasks",
        ">",
    ]);
    assert!(taken.lines().count() >= 12, "the read took lines: {taken}");
    redis.crash();
    redis.launch();

    let started = std::time::Instant::now();
    let code = consumer.wait(LONG);
    let stderr = consumer.stderr();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("Redis is back"), "{stderr}");
    assert!(stderr.contains("did not hold"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "ended long before --claim-after"
    );
    let (records, _) = merged(&[consumer.output_path()], &input);
    assert_all_sums(&records, n, iters);
    let status = queue(&["status", "--queue", &url, "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["in_flight"], 0, "{status}");
}

#[test]
fn a_line_delivered_past_the_limit_is_recorded_crashed_unrun() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &sim_lines(5, |_| 0, |i| i));
    push(&redis, "dead", &input);
    // A node that died holding lines 1-3, line 3 after being handed out
    // a hundred times (every node that took it died with it).
    let stream = "multiloop:{dead}:tasks";
    let taken = redis.cli(&[
        "XREADGROUP",
        "GROUP",
        "multiloop",
        "ghost",
        "COUNT",
        "3",
        "STREAMS",
        stream,
        ">",
    ]);
    assert!(taken.contains("3-0"), "{taken}");
    redis.cli(&[
        "XCLAIM",
        stream,
        "multiloop",
        "ghost",
        "0",
        "3-0",
        "RETRYCOUNT",
        "100",
    ]);

    let mut consumer = node(
        &redis.url("dead"),
        &["--workers", "1", "--claim-after", "100ms"],
    );
    let code = consumer.wait(LONG);
    let stderr = consumer.stderr();
    assert_eq!(code, 1, "{stderr}");
    let records = by_seq(&consumer.output_records());
    assert_eq!(records.len(), 5, "{records:?}");
    let dead = &records[&3];
    assert_eq!(dead["error"]["kind"], "crashed", "{dead}");
    assert_eq!(dead["worker"], Value::Null, "never run: {dead}");
    let message = dead["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("delivered 100 times"), "{dead}");
    for seq in [1, 2, 4, 5] {
        assert!(records[&seq]["ok"].is_object(), "{}", records[&seq]);
    }
}

#[test]
fn a_node_whose_redis_stays_away_stops_with_exit_2() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let n = 4_000;
    let (lines, _) = mixed(n);
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &lines);
    push(&redis, "gone", &input);
    let args = [
        "--workers",
        "1",
        "--concurrency",
        "8",
        "--claim-after",
        "1s",
    ];
    let mut consumer = node(&redis.url("gone"), &args);
    wait_until(LONG, "some records", || consumer.output_lines() >= 100);
    redis.crash();
    let started = std::time::Instant::now();
    let code = consumer.wait(LONG);
    let stderr = consumer.stderr();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("error: cannot reach"), "{stderr}");
    // It gives up after max(--claim-after, 5s) without Redis, not at once
    // and not never.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(4), "{waited:?}: {stderr}");
    // What it recorded before is well formed, each line once.
    let records = consumer.output_records();
    let seqs: std::collections::HashSet<u64> =
        records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), records.len());
}

#[test]
fn redis_password_comes_from_the_environment() {
    let password = "s3cret-for-tests";
    let Some(redis) = Redis::start_with_password(Some(password)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &sim_lines(50, |_| 0, |i| i));
    let url = redis.url("auth");

    // Without the password: refused, in one line, exit 2.
    let refused = queue(&["push", "--queue", &url, "--input", input.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    let stderr = text(&refused.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!stderr.contains(password), "{stderr}");

    // With REDIS_PASSWORD (kept out of `ps`): pushed, then consumed.
    let pushed = supervisor()
        .args(["queue", "push", "--queue", &url, "--input"])
        .arg(&input)
        .env("REDIS_PASSWORD", password)
        .output_within(RUN_LIMIT)
        .unwrap();
    assert_eq!(pushed.status.code(), Some(0), "{}", text(&pushed.stderr));
    let out = dir.path().join("out.jsonl");
    let consumed = supervisor()
        .args(["--queue", &url, "--workers", "1", "--output"])
        .arg(&out)
        .env("REDIS_PASSWORD", password)
        .output_within(RUN_LIMIT)
        .unwrap();
    assert_eq!(
        consumed.status.code(),
        Some(0),
        "{}",
        text(&consumed.stderr)
    );
    let records = records(&std::fs::read(&out).unwrap());
    assert_all_sums(&records, 50, |i| i);
}

// ----- crawling across nodes -------------------------------------------------

/// The `tree` kind's seed for every forest here.
const SEED: u64 = 5;

fn push_keyed(redis: &Redis, name: &str, input: &Path) {
    let url = redis.url(name);
    let output = queue(&[
        "push",
        "--queue",
        &url,
        "--input",
        input.to_str().unwrap(),
        "--key",
        "node",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

fn status(url: &str) -> Value {
    let status = queue(&["status", "--queue", url, "--json"]);
    serde_json::from_slice(&status.stdout).unwrap()
}

#[test]
fn two_nodes_crawl_a_forest_every_node_once_keys_deduped_across_nodes() {
    let Some(redis) = Redis::start() else { return };
    let (lines, expected) = tree_forest(4, 4, 4, SEED, "");
    assert!(expected.len() > 60, "{} nodes", expected.len());
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &lines);
    push_keyed(&redis, "forest", &input);
    let url = redis.url("forest");
    let args = ["--task", "tree", "--key", "node", "--workers", "2"];
    let mut a = node(&url, &args);
    let mut b = node(&url, &args);
    assert_eq!(a.wait(LONG), 0, "{}", a.stderr());
    assert_eq!(b.wait(LONG), 0, "{}", b.stderr());
    // Both took part, so keys met on one node kept tasks out on the other.
    assert!(a.output_lines() > 0 && b.output_lines() > 0);

    let (records, _) = merged(&[a.output_path(), b.output_path()], &input);
    assert_each_node_once(&records, &expected);
    // Each node adds itself again: the seen-set (seeded by the push)
    // keeps every one of those out, whichever node meets it.
    let status = status(&url);
    let n = expected.len() as u64;
    assert_eq!(status["added"], n - 4, "{status}");
    assert_eq!(status["kept_seen"], n, "{status}");
    assert_eq!(status["seen_keys"], n, "{status}");
    assert_eq!(status["in_flight"], 0, "{status}");
    assert_eq!(status["waiting"], 0, "{status}");
    assert_eq!(status["done"], n, "{status}");
}

#[test]
fn merge_queue_names_a_key_recorded_twice_and_a_lost_child() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), "{\"node\":\"a\"}\n");
    let out = dir.path().join("out.jsonl");
    let merge = || {
        let output = Command::new(SUPERVISOR)
            .args(["merge", "--queue"])
            .arg(&out)
            .arg("--input")
            .arg(&input)
            .stdin(Stdio::null())
            .output_within(RUN_LIMIT)
            .expect("merge runs");
        (output.status.code(), text(&output.stderr))
    };
    let parent = r#"{"seq":1,"key":"a","ok":1,"added":[{"task":1,"key":"b"},{"task":2,"key":"a"},{"task":3}]}"#;
    // The output: the parent's record, then those of the children named.
    let journal = |children: &[&str]| {
        let mut text = format!("{parent}\n");
        for seq in children {
            text += &format!("{{\"seq\":\"{seq}\",\"parent\":1,\"depth\":1,\"ok\":1}}\n");
        }
        std::fs::write(&out, text).unwrap();
    };
    // The child keyed "a" is held by line 1: not missing.
    journal(&["1.1", "1.3"]);
    let (code, stderr) = merge();
    assert_eq!(code, Some(0), "{stderr}");
    // A child without a key is never kept out: its loss is named.
    journal(&["1.1"]);
    let (code, stderr) = merge();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("missing: 1 tasks") && stderr.contains("1.3"),
        "{stderr}"
    );
    // The same key let in twice is named.
    journal(&["1.1", "1.2", "1.3"]);
    let (code, stderr) = merge();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("duplicated key: \"a\" recorded by tasks 1 and 1.2"),
        "{stderr}"
    );
}

/// The arguments of the nodes of the kill tests: slow enough that a kill
/// lands mid-crawl, and a short `--claim-after` for the survivor.
const CRAWL_NODE_ARGS: [&str; 10] = [
    "--task",
    "tree",
    "--key",
    "node",
    "--workers",
    "2",
    "--concurrency",
    "4",
    "--claim-after",
    "1s",
];

/// Two nodes crawl the queue at `url`; the first (the victim) is
/// SIGKILLed once it has recorded some tasks, well before the end of a
/// crawl of `nodes` tasks. Returns (victim, survivor).
fn two_nodes_one_killed(url: &str, nodes: usize) -> (Running, Running) {
    let mut victim = node(url, &CRAWL_NODE_ARGS);
    let steady = node(url, &CRAWL_NODE_ARGS);
    wait_until(LONG, "the victim to record some tasks", || {
        victim.output_lines() >= 20
    });
    kill(victim.pid(), libc::SIGKILL);
    victim.wait(LONG);
    assert!(
        victim.output_lines() < nodes / 2,
        "killed mid-crawl, not at the end"
    );
    (victim, steady)
}

#[test]
fn a_node_killed_mid_crawl_and_resumed_loses_and_repeats_no_task() {
    let Some(redis) = Redis::start() else { return };
    // Slow nodes and parents that crash their worker once, after adding
    // their children: the crawl takes a few seconds and the kill lands
    // with tasks in flight and records flushed but not acknowledged.
    let crash_dir = tempfile::tempdir().unwrap();
    let extra = format!(
        ",\"sleep_ms\":15,\"crash_once\":{}",
        serde_json::to_string(crash_dir.path().to_str().unwrap()).unwrap()
    );
    let (lines, expected) = tree_forest(3, 5, 4, SEED, &extra);
    assert!(expected.len() > 150, "{} nodes", expected.len());
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &lines);
    push_keyed(&redis, "killed", &input);
    let url = redis.url("killed");
    let (mut victim, mut steady) = two_nodes_one_killed(&url, expected.len());
    // The same node comes back on its output (`--resume`): it finds what
    // it held under its name.
    let victim_dir = std::mem::replace(&mut victim.dir, tempfile::tempdir().unwrap());
    let stderr = std::fs::OpenOptions::new()
        .append(true)
        .open(victim_dir.path().join("stderr.txt"))
        .unwrap();
    let child = supervisor()
        .args(["--queue", &url])
        .args(CRAWL_NODE_ARGS)
        .arg("--output")
        .arg(victim_dir.path().join("out.jsonl"))
        .arg("--resume")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("supervisor starts");
    let mut back = Running {
        child,
        dir: victim_dir,
        input: None,
    };
    for node in [&mut steady, &mut back] {
        let code = node.wait(LONG);
        assert_eq!(code, 0, "{}", node.stderr());
    }
    let (records, stderr) = merged(&[back.output_path(), steady.output_path()], &input);
    assert_each_node_once(&records, &expected);
    let status = status(&url);
    assert_eq!(status["added"], expected.len() as u64 - 3, "{status}");
    assert_eq!(status["in_flight"], 0, "{status}");
    assert_eq!(status["waiting"], 0, "{status}");
    // Some parent did crash its worker.
    assert!(
        std::fs::read_dir(crash_dir.path())
            .unwrap()
            .next()
            .is_some(),
        "{stderr}"
    );
}

#[test]
fn max_tasks_holds_across_nodes() {
    let Some(redis) = Redis::start() else { return };
    let (lines, expected) = tree_forest(4, 4, 4, SEED, "");
    let max = 40;
    assert!(expected.len() > max + 20, "{} nodes", expected.len());
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &lines);
    push_keyed(&redis, "capped", &input);
    let url = redis.url("capped");
    let args = [
        "--task",
        "tree",
        "--key",
        "node",
        "--workers",
        "2",
        "--max-tasks",
        "40",
    ];
    let mut a = node(&url, &args);
    let mut b = node(&url, &args);
    assert_eq!(a.wait(LONG), 0, "{}", a.stderr());
    assert_eq!(b.wait(LONG), 0, "{}", b.stderr());
    let output = Command::new(SUPERVISOR)
        .args(["merge", "--queue", "--max-tasks", "40"])
        .arg(a.output_path())
        .arg(b.output_path())
        .arg("--input")
        .arg(&input)
        .stdin(Stdio::null())
        .output_within(RUN_LIMIT)
        .expect("merge runs");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("the crawl reached --max-tasks"), "{stderr}");
    let records = records(&output.stdout);
    assert_eq!(records.len(), max, "input plus added tasks, across nodes");
    let status = status(&url);
    assert_eq!(status["added"], max as u64 - 4, "{status}");
    assert!(status["kept_max_tasks"].as_u64().unwrap() > 0, "{status}");
}

#[test]
fn additions_wait_for_the_push_to_complete() {
    let Some(redis) = Redis::start() else { return };
    let (lines, expected) = tree_forest(2, 3, 3, SEED, "");
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &lines);
    push_keyed(&redis, "pushing", &input);
    // As if the push were still running: no added task may take a stream
    // id before the last line has its own.
    let meta = "multiloop:{pushing}:meta";
    assert_eq!(redis.cli(&["HDEL", meta, "complete"]).trim(), "1");
    let url = redis.url("pushing");
    let mut a = node(
        &url,
        &["--task", "tree", "--key", "node", "--claim-after", "1s"],
    );
    wait_until(LONG, "the seeds to be recorded", || a.output_lines() >= 2);
    wait_until(LONG, "the node to say its additions wait", || {
        a.stderr().contains("wait for it")
    });
    assert_eq!(status(&url)["added"], 0);
    assert!(
        a.child.try_wait().unwrap().is_none(),
        "the crawl is not over"
    );
    redis.cli(&["HSET", meta, "complete", "1"]);
    assert_eq!(a.wait(LONG), 0, "{}", a.stderr());
    let (records, _) = merged(&[a.output_path()], &input);
    assert_each_node_once(&records, &expected);
}

#[test]
fn a_node_killed_mid_crawl_is_finished_by_another() {
    let Some(redis) = Redis::start() else { return };
    let (lines, expected) = tree_forest(3, 5, 4, SEED, ",\"sleep_ms\":10");
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &lines);
    push_keyed(&redis, "taken", &input);
    let url = redis.url("taken");
    let (victim, mut steady) = two_nodes_one_killed(&url, expected.len());
    // What the victim held, and the children of what it recorded but did
    // not acknowledge, are the steady node's after --claim-after.
    assert_eq!(steady.wait(LONG), 0, "{}", steady.stderr());
    let (records, _) = merged(&[victim.output_path(), steady.output_path()], &input);
    assert_each_node_once(&records, &expected);
    let status = status(&url);
    assert_eq!(status["added"], expected.len() as u64 - 3, "{status}");
    assert_eq!(status["in_flight"], 0, "{status}");
}
