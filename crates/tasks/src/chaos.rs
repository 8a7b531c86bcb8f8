//! `chaos`: `sim` plus a fault, for tests and drills.

use std::time::Duration;

use multiloop_protocol::RESULT_FD;
use multiloop_worker::TaskError;
use serde::{Deserialize, Serialize};

use crate::sim::{sim, SimInput, SimOutput};

/// A `sim` line with an optional `"fault"`; without one it is plain `sim`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChaosInput {
    #[serde(flatten)]
    pub sim: SimInput,
    #[serde(default)]
    pub fault: Option<String>,
}

/// What a chaos task does after its sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `"abort"`: the process aborts (SIGABRT).
    Abort,
    /// `"exit:N"`: the process exits with status N.
    Exit(i32),
    /// `"block"`: the event-loop thread blocks, so heartbeats stop.
    Block,
    /// `"stall"`: the task never finishes; the loop stays healthy.
    Stall,
    /// `"panic"`: the handler panics.
    Panic,
    /// `"stdout"`: prints to stdout, then behaves like `sim`.
    Stdout,
    /// `"garbage"`: writes bytes that are not a frame to the result pipe.
    Garbage,
    /// `"leak:MIB"`: allocates and touches MIB mebibytes, never freed.
    Leak(usize),
    /// `"spin:MS"`: computes on the event-loop thread until it has used MS
    /// milliseconds of CPU (measured, so it is the same on a busy machine).
    Spin(u64),
}

impl Fault {
    /// Every fault as it is written in a task, in this order in messages;
    /// `golden/faults.json` carries the list to the Python twin.
    pub const SYNTAX: [&'static str; 9] = [
        "abort", "exit:N", "block", "stall", "panic", "stdout", "garbage", "leak:MIB", "spin:MS",
    ];
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.split_once(':') {
            Some(("exit", code)) => Fault::Exit(code.parse().map_err(|_| not_a_number(s))?),
            Some(("leak", mib)) => Fault::Leak(mib.parse().map_err(|_| not_a_number(s))?),
            Some(("spin", ms)) => Fault::Spin(ms.parse().map_err(|_| not_a_number(s))?),
            None if s == "abort" => Fault::Abort,
            None if s == "block" => Fault::Block,
            None if s == "stall" => Fault::Stall,
            None if s == "panic" => Fault::Panic,
            None if s == "stdout" => Fault::Stdout,
            None if s == "garbage" => Fault::Garbage,
            _ => {
                let (last, rest) = Fault::SYNTAX.split_last().expect("faults exist");
                return Err(format!(
                    "unknown fault {s:?} (expected {} or {last})",
                    rest.join(", ")
                ));
            }
        })
    }
}

fn not_a_number(fault: &str) -> String {
    format!("fault {fault:?}: the part after ':' is not a number")
}

/// Runs one `chaos` task.
pub async fn chaos(input: ChaosInput) -> Result<SimOutput, TaskError> {
    let fault = input
        .fault
        .as_deref()
        .map(str::parse::<Fault>)
        .transpose()
        .map_err(TaskError::bad_input)?;
    let Some(fault) = fault else {
        return Ok(sim(input.sim).await.unwrap_or_else(|never| match never {}));
    };
    if input.sim.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(input.sim.sleep_ms)).await;
    }
    let after = SimInput {
        sleep_ms: 0,
        ..input.sim
    };
    match fault {
        Fault::Abort => std::process::abort(),
        Fault::Exit(code) => std::process::exit(code),
        Fault::Block => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        Fault::Stall => std::future::pending().await,
        Fault::Panic => panic!("chaos: panic requested"),
        Fault::Stdout => println!("chaos: this line goes to stdout, not to the result pipe"),
        Fault::Garbage => write_garbage(),
        Fault::Leak(mib) => {
            // Touch every page so the memory is resident, then forget it.
            std::mem::forget(vec![1u8; mib << 20]);
        }
        Fault::Spin(ms) => spin(Duration::from_millis(ms)),
    }
    Ok(sim(after).await.unwrap_or_else(|never| match never {}))
}

/// Computes until this thread has used `cpu` of CPU time.
fn spin(cpu: Duration) {
    let start = thread_cpu();
    let mut x = 0u64;
    while thread_cpu().saturating_sub(start) < cpu {
        for i in 0..100_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec that we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.max(0) as u32)
}

/// A frame header announcing 5 bytes, then 5 bytes that decode to nothing.
fn write_garbage() {
    let garbage = [0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff];
    // SAFETY: writing a byte buffer to a descriptor we do not own is sound;
    // corrupting that stream is exactly what this fault is for.
    unsafe {
        libc::write(RESULT_FD, garbage.as_ptr().cast(), garbage.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        assert_eq!("abort".parse(), Ok(Fault::Abort));
        assert_eq!("exit:3".parse(), Ok(Fault::Exit(3)));
        assert_eq!("leak:64".parse(), Ok(Fault::Leak(64)));
        assert_eq!("spin:1500".parse(), Ok(Fault::Spin(1500)));
        assert!("exit:x".parse::<Fault>().is_err());
        assert!("nope"
            .parse::<Fault>()
            .unwrap_err()
            .contains("unknown fault"));
    }

    #[test]
    fn without_fault_it_is_sim() {
        let input: ChaosInput = serde_json::from_str(r#"{"iters": 10}"#).unwrap();
        assert_eq!(input.fault, None);
        assert_eq!(input.sim.iters, 10);
    }
}
