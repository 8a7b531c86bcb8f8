//! Tasks that add tasks, through the real binaries: the `tree` kind adds
//! children by a seeded rule (and itself again, a cycle for the seen-set),
//! so each test knows the whole set of nodes a crawl must run, and checks
//! that every one of them is recorded exactly once — plainly, with workers
//! SIGKILLed, with the supervisor SIGKILLed and resumed, and with parents
//! that crash their worker once; and the same with a frontier memory so
//! small that nearly every added task waits in the scratch file.

mod common;

use std::time::Duration;

use common::crawl::{assert_each_node_once, tree_forest};
use common::*;

/// The `tree` kind's seed for every forest here.
const SEED: u64 = 11;

const LONG: Duration = Duration::from_secs(120);

/// A frontier memory of a dozen tree tasks: the rest wait on disk.
const TINY_FRONTIER: [&str; 2] = ["--frontier-memory", "2KiB"];

/// How many added tasks the run's summary says waited on disk.
fn spilled(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|line| {
            line.strip_prefix("multiloop: ")?
                .strip_suffix(" added tasks waited on disk (past --frontier-memory)")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn merge_checks(running: &Running) {
    let out = supervisor()
        .arg("merge")
        .arg(running.output_path())
        .arg("--input")
        .arg(running.dir.path().join("in.jsonl"))
        .arg("--output")
        .arg(running.dir.path().join("merged.jsonl"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "merge: {stderr}");
}

#[test]
fn a_crawl_runs_every_node_once_and_merge_agrees() {
    let (input, expected) = tree_forest(3, 5, 5, SEED, "");
    assert!(expected.len() > 100, "{} nodes", expected.len());
    let mut running = start(
        &["--task", "tree", "--key", "node", "--workers", "2"],
        &input,
    );
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    assert_each_node_once(&running.output_records(), &expected);
    merge_checks(&running);
    let stderr = running.stderr();
    assert!(
        stderr.contains(&format!("{} tasks added by tasks", expected.len() - 3)),
        "{stderr}"
    );
    // Each node adds itself again: the seen-set keeps every one out.
    assert!(
        stderr.contains(&format!("kept out: {} already seen", expected.len())),
        "{stderr}"
    );
}

#[test]
fn a_crawl_past_its_frontier_memory_runs_every_node_once_in_order() {
    let (input, expected) = tree_forest(3, 6, 5, SEED, "");
    // One task at a time, so that records come in the order tasks start.
    let mut args = vec![
        "--task",
        "tree",
        "--key",
        "node",
        "--workers",
        "1",
        "--concurrency",
        "1",
    ];
    args.extend(TINY_FRONTIER);
    let mut running = start(&args, &input);
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    let records = running.output_records();
    assert_each_node_once(&records, &expected);
    merge_checks(&running);
    let stderr = running.stderr();
    let added = expected.len() as u64 - 3;
    assert!(
        spilled(&stderr) > added / 2,
        "most of {added} added tasks should wait on disk: {stderr}"
    );
    // First in, first out through memory and disk: breadth first, every
    // task of one depth before any of the next.
    let depths: Vec<u64> = records
        .iter()
        .map(|r| r["depth"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        depths.windows(2).all(|pair| pair[0] <= pair[1]),
        "not breadth first: {depths:?}"
    );
}

#[test]
fn limits_keep_tasks_out_and_say_how_many() {
    let (input, expected) = tree_forest(2, 4, 4, SEED, "");
    let depth_one: Vec<String> = expected
        .iter()
        .filter(|n| n.matches('/').count() <= 1)
        .cloned()
        .collect();
    let mut running = start(
        &[
            "--task",
            "tree",
            "--key",
            "node",
            "--workers",
            "1",
            "--max-depth",
            "1",
        ],
        &input,
    );
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    assert_each_node_once(&running.output_records(), &depth_one);
    let deeper = expected.len() - depth_one.len();
    let grandchildren_proposed = expected
        .iter()
        .filter(|n| n.matches('/').count() == 2)
        .count();
    assert!(deeper >= grandchildren_proposed);
    // Depth-1 nodes propose their children and themselves: all past the limit.
    let proposed = grandchildren_proposed + (depth_one.len() - 2);
    assert!(
        running
            .stderr()
            .contains(&format!("{proposed} past --max-depth")),
        "{}",
        running.stderr()
    );

    let mut running = start(
        &[
            "--task",
            "tree",
            "--key",
            "node",
            "--workers",
            "1",
            "--max-tasks",
            "10",
        ],
        &input,
    );
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    assert_eq!(running.output_records().len(), 10);
    assert!(
        running.stderr().contains("past --max-tasks"),
        "{}",
        running.stderr()
    );
}

#[test]
fn workers_killed_again_and_again_lose_and_repeat_no_node() {
    workers_killed_again_and_again(&[]);
}

#[test]
fn workers_killed_with_the_frontier_on_disk_lose_and_repeat_no_node() {
    let stderr = workers_killed_again_and_again(&TINY_FRONTIER);
    assert!(spilled(&stderr) > 1_000, "{stderr}");
}

/// Returns the run's stderr.
fn workers_killed_again_and_again(extra: &[&str]) -> String {
    // About 3,600 nodes of 20 ms, 20 at a time: a few seconds of kills.
    let (input, expected) = tree_forest(4, 7, 5, SEED, ",\"sleep_ms\":20");
    let mut args = vec![
        "--task",
        "tree",
        "--key",
        "node",
        "--workers",
        "2",
        "--concurrency",
        "10",
    ];
    args.extend(extra);
    let mut running = start(&args, &input);
    let mut kills = 0;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    while running.child.try_wait().unwrap().is_none() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // A person at `top`: the pause is the scenario, not a wait.
        std::thread::sleep(Duration::from_millis(80 + seed % 80));
        if let Some(&pid) = workers_of(running.pid()).get((seed % 2) as usize) {
            kill(pid, libc::SIGKILL);
            kills += 1;
        }
        assert!(kills < 2_000, "the run does not end");
    }
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    assert!(kills >= 3, "only {kills} kills");
    assert_each_node_once(&running.output_records(), &expected);
    merge_checks(&running);
    running.stderr()
}

#[test]
fn supervisor_killed_twice_and_resumed_runs_every_node_once() {
    supervisor_killed_twice_and_resumed(&[]);
}

#[test]
fn supervisor_killed_with_the_frontier_on_disk_and_resumed_runs_every_node_once() {
    let stderr = supervisor_killed_twice_and_resumed(&TINY_FRONTIER);
    // The last run took the resumed frontier through the file too.
    assert!(spilled(&stderr) > 0, "{stderr}");
}

/// Returns the stderr of the runs.
fn supervisor_killed_twice_and_resumed(extra: &[&str]) -> String {
    let (input, expected) = tree_forest(4, 6, 5, SEED, ",\"sleep_ms\":2");
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--task",
        "tree",
        "--key",
        "node",
        "--workers",
        "2",
        "--concurrency",
        "20",
    ];
    args.extend(extra);
    let mut running = start_in(dir, &args, &input, false);
    for round in 1..=2 {
        let target = round * expected.len() / 3;
        wait_until(LONG, &format!("{target} records"), || {
            running.output_lines() >= target
        });
        let workers = workers_of(running.pid());
        kill(running.pid(), libc::SIGKILL);
        running.wait(LONG);
        wait_until(LONG, "workers to die with their supervisor", || {
            workers.iter().all(|&pid| is_gone(pid))
        });
        let dir = std::mem::replace(&mut running.dir, tempfile::tempdir().unwrap());
        running = start_in(dir, &args, &input, true);
    }
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    assert!(
        running.stderr().contains("resuming a crawl"),
        "{}",
        running.stderr()
    );
    assert_each_node_once(&running.output_records(), &expected);
    merge_checks(&running);
    running.stderr()
}

#[test]
fn a_parent_that_crashes_its_worker_once_adds_its_children_once() {
    let markers = tempfile::tempdir().unwrap();
    let extra = format!(",\"crash_once\":\"{}\"", markers.path().display());
    let (input, expected) = tree_forest(2, 4, 4, SEED, &extra);
    let mut running = start(
        &[
            "--task",
            "tree",
            "--key",
            "node",
            "--workers",
            "2",
            "--max-crashes",
            "3",
        ],
        &input,
    );
    assert_eq!(running.wait(LONG), 0, "{}", running.stderr());
    let crashed = std::fs::read_dir(markers.path()).unwrap().count();
    assert!(crashed > 0, "no node crashed: pick another seed");
    let records = running.output_records();
    assert_each_node_once(&records, &expected);
    let rerun = records
        .iter()
        .filter(|r| r["attempts"].as_u64() > Some(1))
        .count();
    assert!(rerun >= crashed, "{rerun} re-run, {crashed} crashed");
}

#[test]
fn a_spill_file_that_cannot_be_made_fails_the_run_and_resume_loses_nothing() {
    let (input, expected) = tree_forest(3, 5, 5, SEED, "");
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("in.jsonl");
    std::fs::write(&input_path, &input).unwrap();
    let output = dir.path().join("out.jsonl");
    let run = |tmpdir: &std::path::Path, resume: bool| {
        let mut command = supervisor();
        command
            .args(["--task", "tree", "--key", "node", "--workers", "1"])
            .args(["--frontier-memory", "0", "--input"])
            .arg(&input_path)
            .arg("--output")
            .arg(&output)
            .env("TMPDIR", tmpdir);
        if resume {
            command.arg("--resume");
        }
        command.output_within(LONG).unwrap()
    };
    // TMPDIR names no directory: the first added task cannot be kept.
    let failed = run(&dir.path().join("missing"), false);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(2), "{stderr}");
    let line = stderr
        .lines()
        .find(|line| line.contains("cannot create the frontier's spill file in"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        line.contains("missing") && line.contains("--resume"),
        "{line}"
    );
    // What the parents added is in the journal: a resume runs it all.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let resumed = run(&tmp, true);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert_eq!(resumed.status.code(), Some(0), "{stderr}");
    assert!(spilled(&stderr) > 0, "{stderr}");
    let records = records(&std::fs::read(&output).unwrap());
    assert_each_node_once(&records, &expected);
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the scratch file has no name"
    );
}
