//! Scale-out: shards run as separate supervisors, the way a Kubernetes
//! Indexed Job or a Slurm array runs them, and `supervisor merge` puts
//! their outputs back together: every line once, or a report of what is
//! missing and what was recorded twice.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

/// What `--shard auto` reads; cleared so that a test run inside a real
/// Slurm job or pod sees only what the test sets.
const SCHEDULER_VARS: [&str; 6] = [
    "JOB_COMPLETION_INDEX",
    "MULTILOOP_SHARD_COUNT",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
];

/// Runs the supervisor to the end with exactly these scheduler variables.
fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = supervisor();
    for var in SCHEDULER_VARS {
        command.env_remove(var);
    }
    command
        .envs(env.iter().copied())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output_within(RUN_LIMIT)
        .expect("supervisor runs")
}

/// `supervisor merge FILES... ARGS...`
fn merge(files: &[PathBuf], args: &[&str]) -> Output {
    Command::new(SUPERVISOR)
        .arg("merge")
        .args(files)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output_within(RUN_LIMIT)
        .expect("supervisor merge runs")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn seqs(records: &[Value]) -> BTreeSet<u64> {
    by_seq(records).into_keys().collect()
}

fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// A deterministic Fisher-Yates shuffle (xorshift64), no dependency.
fn shuffle<T>(items: &mut [T], mut state: u64) {
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

#[test]
fn three_shards_at_once_merge_to_every_line_once() {
    let n = 3_000;
    let iters = |i: u64| (i * 7_919) % 20_000;
    let input = sim_lines(n, |i| i % 4, iters);
    let mut shards: Vec<Running> = (0..3)
        .map(|k| {
            let shard = format!("{k}/3");
            start(&["--workers", "1", "--shard", &shard], &input)
        })
        .collect();
    // All three were started before any is waited for: they run at once.
    for (k, shard) in shards.iter_mut().enumerate() {
        assert_eq!(shard.wait(LONG), 0, "shard {k}: {}", shard.stderr());
        let records = shard.output_records();
        assert_eq!(records.len(), 1_000, "shard {k} runs a third");
        for record in &records {
            let seq = record["seq"].as_u64().unwrap();
            assert_eq!((seq - 1) % 3, k as u64, "shard {k} ran line {seq}");
        }
    }

    let merged_path = shards[0].dir.path().join("merged.jsonl");
    let files: Vec<PathBuf> = shards.iter().map(Running::output_path).collect();
    let input_path = shards[0].dir.path().join("in.jsonl");
    let output = merge(
        &files,
        &[
            "--input",
            input_path.to_str().unwrap(),
            "--output",
            merged_path.to_str().unwrap(),
        ],
    );
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("merged 3000 tasks from 3 files"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("missing") && !stderr.contains("duplicated"),
        "{stderr}"
    );
    let merged = records(&std::fs::read(&merged_path).unwrap());
    let order: Vec<u64> = merged.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(order, (1..=n).collect::<Vec<_>>(), "merged in input order");
    assert_all_sums(&merged, n, iters);
}

#[test]
fn key_shards_do_not_move_when_the_input_is_shuffled() {
    let n = 600u64;
    let iters = |i: u64| i * 31;
    let lines: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{\"id\":\"task-{i}\",\"sleep_ms\":0,\"iters\":{}}}\n",
                iters(i)
            )
        })
        .collect();
    let mut shuffled_order: Vec<u64> = (0..n).collect();
    shuffle(&mut shuffled_order, 0x9e37_79b9_7f4a_7c15);
    let shuffled: String = shuffled_order
        .iter()
        .map(|&i| lines[i as usize].as_str())
        .collect();
    let original: String = lines.concat();
    assert_ne!(original, shuffled);

    // Key -> (record, line number in that input).
    let run_shard = |input: &str, extra: &[&str]| -> HashMap<String, Value> {
        let args = [&["--workers", "1", "--shard", "1/3"], extra].concat();
        let output = run(&args, input.as_bytes());
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
        let records = records(&output.stdout);
        by_seq(&records); // no line twice
        records
            .into_iter()
            .map(|r| {
                let id = match r["key"].as_str() {
                    Some(key) => key.to_string(),
                    // By line, records carry no key: look the line up.
                    None => {
                        let seq = r["seq"].as_u64().unwrap() as usize;
                        let line: Value =
                            serde_json::from_str(input.lines().nth(seq - 1).unwrap()).unwrap();
                        line["id"].as_str().unwrap().to_string()
                    }
                };
                (id, r)
            })
            .collect()
    };
    let by_key = run_shard(&original, &["--key", "id"]);
    let by_key_shuffled = run_shard(&shuffled, &["--key", "id"]);

    let keys: BTreeSet<&String> = by_key.keys().collect();
    assert_eq!(keys, by_key_shuffled.keys().collect::<BTreeSet<_>>());
    assert!(
        (n / 6..n / 2).contains(&(keys.len() as u64)),
        "about a third of the keys: {}",
        keys.len()
    );
    // Same tasks, at their new line numbers, with the same results.
    let position: HashMap<u64, u64> = shuffled_order
        .iter()
        .enumerate()
        .map(|(line, &i)| (i, line as u64 + 1))
        .collect();
    for key in keys {
        let i: u64 = key.strip_prefix("task-").unwrap().parse().unwrap();
        let (before, after) = (&by_key[key], &by_key_shuffled[key]);
        assert_eq!(before["seq"].as_u64(), Some(i + 1), "{before}");
        assert_eq!(after["seq"].as_u64(), Some(position[&i]), "{after}");
        assert_eq!(before["ok"]["sum"].as_u64(), Some(expected_sum(iters(i))));
        assert_eq!(before["ok"], after["ok"]);
    }

    // By line number the same shard is a different set of tasks once the
    // lines move: that is what --key is for.
    let by_line = run_shard(&original, &[]);
    let by_line_shuffled = run_shard(&shuffled, &[]);
    assert_eq!(by_line.len(), by_line_shuffled.len());
    assert_ne!(
        by_line.keys().collect::<BTreeSet<_>>(),
        by_line_shuffled.keys().collect::<BTreeSet<_>>()
    );
}

#[test]
fn shard_auto_reads_kubernetes_and_slurm_variables() {
    let n = 30;
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("in.jsonl");
    std::fs::write(&input_path, sim_lines(n, |_| 0, |i| i)).unwrap();
    let input = input_path.to_str().unwrap();
    let slice = |shard: &[&str], env: &[(&str, &str)]| -> BTreeSet<u64> {
        let args = [&["--workers", "1", "--input", input][..], shard].concat();
        let output = run_with_env(&args, env);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{shard:?} {env:?}: {}",
            stderr_of(&output)
        );
        seqs(&records(&output.stdout))
    };

    let explicit = slice(&["--shard", "1/3"], &[]);
    assert_eq!(explicit, (1..=n).filter(|s| (s - 1) % 3 == 1).collect());
    let kubernetes = [("JOB_COMPLETION_INDEX", "1")];
    assert_eq!(
        slice(&["--shard", "auto", "--shard-count", "3"], &kubernetes),
        explicit
    );
    assert_eq!(
        slice(
            &["--shard", "auto"],
            &[
                ("JOB_COMPLETION_INDEX", "1"),
                ("MULTILOOP_SHARD_COUNT", "3")
            ]
        ),
        explicit
    );
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "1"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
        ("SLURM_ARRAY_TASK_MIN", "0"),
    ];
    assert_eq!(slice(&["--shard", "auto"], &slurm), explicit);
    // `--array=3-7:2` is tasks 3, 5, 7: task 5 is the second shard.
    let stepped = [
        ("SLURM_ARRAY_TASK_ID", "5"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
        ("SLURM_ARRAY_TASK_MIN", "3"),
        ("SLURM_ARRAY_TASK_STEP", "2"),
    ];
    assert_eq!(slice(&["--shard", "auto"], &stepped), explicit);

    // A missing variable is one line that names it, and exit 2.
    let refused = |shard: &[&str], env: &[(&str, &str)], names: &[&str]| {
        let args = [&["--workers", "1", "--input", input][..], shard].concat();
        let output = run_with_env(&args, env);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{env:?}: no records");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        for name in names {
            assert!(stderr.contains(name), "{env:?}: names {name}: {stderr}");
        }
    };
    refused(
        &["--shard", "auto"],
        &kubernetes,
        &["--shard-count", "MULTILOOP_SHARD_COUNT"],
    );
    refused(&["--shard", "auto"], &slurm[..2], &["SLURM_ARRAY_TASK_MIN"]);
    refused(
        &["--shard", "auto"],
        &[slurm[0], slurm[2]],
        &["SLURM_ARRAY_TASK_COUNT"],
    );
    refused(
        &["--shard", "auto", "--shard-count", "3"],
        &[],
        &["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"],
    );
}

#[test]
fn shard_killed_mid_run_and_resumed_still_merges_cleanly() {
    let n = 3_000;
    let iters = |i: u64| (i * 13) % 50_000;
    let input = sim_lines(n, |i| 4 + i % 8, iters);
    let args = ["--workers", "1", "--concurrency", "8", "--shard", "0/2"];
    let mut victim = start(&args, &input);
    let mut other = start(&["--workers", "1", "--shard", "1/2"], &input);

    wait_until(LONG, "the shard to record some tasks", || {
        victim.output_lines() >= 150
    });
    let workers = workers_of(victim.pid());
    kill(victim.pid(), libc::SIGKILL);
    victim.wait(LONG);
    wait_until(LONG, "workers to die with their supervisor", || {
        workers.iter().all(|&pid| is_gone(pid))
    });
    let done = victim.output_lines();
    assert!(done < 1_500, "killed mid-run, not after the end ({done})");
    // A kill can cut a record in half; make sure the last one is torn.
    let mut torn = std::fs::read(victim.output_path()).unwrap();
    torn.extend_from_slice(b"{\"seq\":2999,\"worker\":0,\"att");
    std::fs::write(victim.output_path(), torn).unwrap();
    assert_eq!(other.wait(LONG), 0, "{}", other.stderr());

    let files = [victim.output_path(), other.output_path()];
    let input_path = victim.dir.path().join("in.jsonl");
    let input_arg = ["--input", input_path.to_str().unwrap()];
    let incomplete = merge(&files, &input_arg);
    let stderr = stderr_of(&incomplete);
    assert_eq!(incomplete.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("torn last record ignored"), "{stderr}");
    assert!(
        stderr.contains(&format!("missing: {} tasks", 1_500 - done)),
        "{stderr}"
    );

    let dir = std::mem::replace(&mut victim.dir, tempfile::tempdir().unwrap());
    let mut resumed = start_in(dir, &args, &input, true);
    assert_eq!(resumed.wait(LONG), 0, "{}", resumed.stderr());
    assert_eq!(
        line_count(&resumed.output_path()),
        1_500,
        "the shard's tasks, once each"
    );

    let files = [resumed.output_path(), other.output_path()];
    let complete = merge(&files, &input_arg);
    let stderr = stderr_of(&complete);
    assert_eq!(complete.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("missing") && !stderr.contains("duplicated"),
        "{stderr}"
    );
    assert_all_sums(&records(&complete.stdout), n, iters);
}

#[test]
fn merge_names_missing_and_duplicated_lines() {
    let n = 10;
    let input = sim_lines(n, |_| 0, |i| i + 2);
    let output = run(&["--workers", "1", "--keep-order"], input.as_bytes());
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    let record: HashMap<u64, &str> = text
        .lines()
        .map(|line| {
            let seq = serde_json::from_str::<Value>(line).unwrap()["seq"]
                .as_u64()
                .unwrap();
            (seq, line)
        })
        .collect();
    let file_of =
        |seqs: &[u64]| -> String { seqs.iter().map(|s| format!("{}\n", record[s])).collect() };

    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("in.jsonl");
    std::fs::write(&input_path, &input).unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    // Line 5 is in neither file; line 7 is in both (a:3 and b:6).
    std::fs::write(&a, file_of(&[1, 3, 7, 9])).unwrap();
    std::fs::write(&b, file_of(&[2, 4, 6, 8, 10, 7])).unwrap();
    let files = [a.clone(), b.clone()];
    let duplicated = format!(
        "duplicated: line 7 recorded in {}:3 and {}:6",
        a.display(),
        b.display()
    );

    let checked = merge(&files, &["--input", input_path.to_str().unwrap()]);
    let stderr = stderr_of(&checked);
    assert_eq!(checked.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing: 1 tasks: lines 5\n"), "{stderr}");
    assert!(stderr.contains(&duplicated), "{stderr}");
    // Everything that is there is merged, once, in input order.
    let merged: Vec<u64> = records(&checked.stdout)
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(merged, [1, 2, 3, 4, 6, 7, 8, 9, 10]);

    // Without --input, a gap in the line numbers is reported all the same.
    let unchecked = merge(&files, &[]);
    let stderr = stderr_of(&unchecked);
    assert_eq!(unchecked.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing: 1 tasks"), "{stderr}");
    assert!(stderr.contains("lines 5\n"), "{stderr}");
    assert!(stderr.contains(&duplicated), "{stderr}");

    // A failure followed by a success in the same file (--resume-failed)
    // is not a conflict: the last record wins.
    let failed = "{\"seq\":5,\"worker\":0,\"attempts\":1,\"ms\":0.1,\"error\":{\"kind\":\"failed\",\"message\":\"boom\"}}\n";
    std::fs::write(
        &a,
        format!("{}{failed}{}", file_of(&[1, 3, 9]), file_of(&[5])),
    )
    .unwrap();
    let fixed = merge(&files, &["--input", input_path.to_str().unwrap()]);
    let stderr = stderr_of(&fixed);
    assert_eq!(fixed.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("superseded"), "{stderr}");
    let merged = records(&fixed.stdout);
    assert_all_sums(&merged, n, |i| i + 2);
}
