//! Helpers shared by the integration tests: run the real binaries, read
//! their records, watch their processes. Waits poll for an event with a
//! deadline; nothing sleeps for a fixed time and hopes.

#![allow(dead_code)]

pub mod crawl;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SUPERVISOR: &str = env!("CARGO_BIN_EXE_supervisor");
pub const WORKER: &str = env!("CARGO_BIN_EXE_worker");

/// A `supervisor` command with quiet defaults for tests. Its control
/// socket goes to a runtime directory of this test binary, never to the
/// user's own (`start` gives each run one of its own).
pub fn supervisor() -> Command {
    let mut command = Command::new(SUPERVISOR);
    // A panic's backtrace is symbolized on the worker's event loop, which
    // can hold it past a short --task-timeout on a loaded machine.
    command
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .env("XDG_RUNTIME_DIR", shared_runtime_dir())
        .stdin(Stdio::null());
    command
}

/// A private (0700) runtime directory shared by the one-shot runs of this
/// test binary, removed with the temp dir's cleanup by the OS.
pub fn shared_runtime_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a runtime dir"))
        .path()
}

/// Longest a one-shot run of a binary may take before its test fails.
pub const RUN_LIMIT: Duration = Duration::from_secs(180);

/// Longest a `supervisor ctl` may take (it answers in milliseconds; a hung
/// one would otherwise defeat the deadline of the wait around it).
pub const CTL_LIMIT: Duration = Duration::from_secs(30);

/// `Command::output` with a deadline.
pub trait OutputWithin {
    /// Runs the command (stdin empty) and collects its output; past
    /// `limit` the child is killed and the test fails with what it wrote.
    fn output_within(&mut self, limit: Duration) -> std::io::Result<Output>;
}

impl OutputWithin for Command {
    fn output_within(&mut self, limit: Duration) -> std::io::Result<Output> {
        let child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(wait_output(child, limit, &format!("{self:?}")))
    }
}

/// A pipe read to its end by a thread, into a buffer the test can look at
/// at any time.
struct Drained {
    bytes: Arc<Mutex<Vec<u8>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Drained {
    fn start(mut pipe: impl Read + Send + 'static) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = bytes.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Drained { bytes, thread }
    }

    /// What was read; waits a moment for the end of the pipe, which a
    /// grandchild still holding it could delay forever.
    fn take(this: Option<Self>) -> Vec<u8> {
        let Some(this) = this else {
            return Vec::new();
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !this.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let bytes = std::mem::take(&mut *this.bytes.lock().unwrap());
        bytes
    }
}

/// Collects `child`'s stdout and stderr (when piped) and waits for it to
/// exit, for at most `limit`: past it the child is killed and the test
/// fails with what the child had written.
pub fn wait_output(mut child: Child, limit: Duration, what: &str) -> Output {
    let stdout = child.stdout.take().map(Drained::start);
    let stderr = child.stderr.take().map(Drained::start);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not exit within {limit:?}; its stdout:\n{}\nits stderr:\n{}",
                String::from_utf8_lossy(&Drained::take(stdout)),
                String::from_utf8_lossy(&Drained::take(stderr))
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: Drained::take(stdout),
        stderr: Drained::take(stderr),
    }
}

/// Waits for `child` to exit, for at most `limit`; past it the child is
/// killed and the test fails naming `what`.
pub fn wait_child(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `supervisor ctl ARGS...` with `runtime_dir` as XDG_RUNTIME_DIR;
/// returns (exit code, stdout, stderr).
pub fn ctl_in(runtime_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(SUPERVISOR)
        .arg("ctl")
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime_dir)
        .output_within(CTL_LIMIT)
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the supervisor on `input` (fed through stdin); returns its output.
pub fn run(args: &[&str], input: &[u8]) -> Output {
    let mut command = supervisor();
    command.args(args).args(["--input", "-"]);
    run_command(command, input)
}

/// Runs `command` with `input` fed through its stdin; returns its output.
pub fn run_command(mut command: Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("supervisor starts");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let what = format!("{command:?}");
    // The feeder ends when the input is written or the child is gone (a
    // broken pipe), so it is not waited for past the run.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    wait_output(child, RUN_LIMIT, &what)
}

/// Every output line, parsed; panics on a line that is not JSON.
pub fn records(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect()
}

/// Records by `seq`, asserting that no seq appears twice.
pub fn by_seq(records: &[Value]) -> HashMap<u64, Value> {
    let mut map = HashMap::new();
    for record in records {
        let seq = record["seq"].as_u64().expect("seq");
        assert!(
            map.insert(seq, record.clone()).is_none(),
            "seq {seq} reported twice"
        );
    }
    map
}

/// `n` sim lines; line i gets `iters(i)` iterations and `sleep(i)` ms.
pub fn sim_lines(n: u64, sleep: impl Fn(u64) -> u64, iters: impl Fn(u64) -> u64) -> String {
    (0..n)
        .map(|i| format!("{{\"sleep_ms\":{},\"iters\":{}}}\n", sleep(i), iters(i)))
        .collect()
}

pub fn expected_sum(iters: u64) -> u64 {
    (u128::from(iters) * u128::from(iters.saturating_sub(1)) / 2) as u64
}

/// Asserts that every line 1..=n has one ok record with the right sum.
pub fn assert_all_sums(records: &[Value], n: u64, iters: impl Fn(u64) -> u64) {
    let map = by_seq(records);
    assert_eq!(map.len() as u64, n, "one record per line");
    for seq in 1..=n {
        let record = map
            .get(&seq)
            .unwrap_or_else(|| panic!("line {seq} has no record"));
        assert_eq!(
            record["ok"]["sum"].as_u64(),
            Some(expected_sum(iters(seq - 1))),
            "line {seq}: {record}"
        );
    }
}

/// Polls `done` until it is true; panics naming `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Child processes of `pid`, from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Worker processes (not the `--list-kinds` probe) under `pid`.
pub fn workers_of(pid: u32) -> Vec<u32> {
    children(pid)
        .into_iter()
        .filter(|&child| cmdline(child).contains("--index"))
        .collect()
}

pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// True when the process no longer exists or is a zombie (`kill(pid, 0)`
/// would still succeed on a zombie).
pub fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
    }
}

pub fn kill(pid: u32, signal: i32) {
    // SAFETY: sending a signal has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// A started supervisor writing to a file, for tests that signal it.
pub struct Running {
    pub child: Child,
    pub dir: tempfile::TempDir,
    /// The supervisor's stdin, for runs started with [`start_piped`]: the
    /// run cannot end before the test closes it.
    pub input: Option<std::process::ChildStdin>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output_path(&self) -> PathBuf {
        self.dir.path().join("out.jsonl")
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.txt")
    }

    pub fn output_records(&self) -> Vec<Value> {
        records(&std::fs::read(self.output_path()).unwrap_or_default())
    }

    pub fn output_lines(&self) -> usize {
        std::fs::read(self.output_path())
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// This run's XDG_RUNTIME_DIR (its own: tests cannot see each other's
    /// supervisors).
    pub fn runtime_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where this run's control socket is.
    pub fn socket_path(&self) -> PathBuf {
        self.dir
            .path()
            .join("multiloop")
            .join(format!("{}.sock", self.pid()))
    }

    /// `supervisor ctl --pid PID ARGS...` against this run.
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let pid = self.pid().to_string();
        let mut all = vec!["--pid", &pid];
        all.extend_from_slice(args);
        ctl_in(self.runtime_dir(), &all)
    }

    /// Waits for the supervisor to exit; returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "supervisor did not exit within {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the supervisor on `input` (written to a file) with output and
/// stderr going to files in a fresh directory.
pub fn start(args: &[&str], input: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir, args, input, false)
}

/// Like [`start`] but in `dir`; with `resume`, appends to its output.
pub fn start_in(dir: tempfile::TempDir, args: &[&str], input: &str, resume: bool) -> Running {
    let input_path = dir.path().join("in.jsonl");
    if !input_path.exists() {
        std::fs::write(&input_path, input).unwrap();
    }
    let output_path = dir.path().join("out.jsonl");
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("stderr.txt"))
        .unwrap();
    let mut command = supervisor();
    command
        .args(args)
        .arg("--input")
        .arg(&input_path)
        .arg("--output")
        .arg(&output_path)
        .env("XDG_RUNTIME_DIR", dir.path())
        .stdout(Stdio::null())
        .stderr(stderr);
    if resume {
        command.arg("--resume");
    }
    let child = command.spawn().expect("supervisor starts");
    Running {
        child,
        dir,
        input: None,
    }
}

/// Starts the supervisor reading its input from a pipe the test holds
/// (`running.input`): the run goes on until the test closes it, drains it
/// or signals it, so nothing can end the run before the test is done.
pub fn start_piped(args: &[&str]) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.txt")).unwrap();
    let mut child = supervisor()
        .args(args)
        .args(["--input", "-", "--output"])
        .arg(dir.path().join("out.jsonl"))
        .env("XDG_RUNTIME_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("supervisor starts");
    let input = child.stdin.take();
    Running { child, dir, input }
}

impl Running {
    /// Writes lines to the input of a [`start_piped`] run.
    pub fn feed(&mut self, lines: &str) {
        self.input
            .as_mut()
            .expect("a piped run")
            .write_all(lines.as_bytes())
            .expect("the supervisor reads its input");
    }

    /// Ends the input of a [`start_piped`] run.
    pub fn close_input(&mut self) {
        self.input = None;
    }
}

/// Writes an executable script into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
