//! Samples worker CPU and memory from `/proc/<pid>/stat`: about ten times
//! cheaper than a general process library, and all we need.

use std::collections::HashMap;
use std::time::Instant;

use crate::dispatcher::{Sample, WorkerId};

/// Remembers the previous reading of each process, for CPU percentages.
#[derive(Debug, Default)]
pub struct Sampler {
    last: HashMap<u32, (u64, Instant)>,
}

impl Sampler {
    /// Reads every live worker; processes that vanished are skipped.
    pub fn sample(&mut self, workers: &[(WorkerId, u32)]) -> Vec<(WorkerId, Sample)> {
        let now = Instant::now();
        let ticks_per_second = clock_ticks();
        let page = page_size();
        let mut samples = Vec::with_capacity(workers.len());
        let mut seen = HashMap::with_capacity(workers.len());
        for &(worker, pid) in workers {
            let Some((cpu_ticks, rss_pages)) = read_stat(pid) else {
                continue;
            };
            let cpu_percent = match self.last.get(&pid) {
                Some(&(before, at)) if now > at => {
                    let seconds = now.duration_since(at).as_secs_f64();
                    cpu_ticks.saturating_sub(before) as f64 / ticks_per_second / seconds * 100.0
                }
                _ => 0.0,
            };
            seen.insert(pid, (cpu_ticks, now));
            samples.push((
                worker,
                Sample {
                    cpu_percent,
                    rss_bytes: rss_pages * page,
                },
            ));
        }
        self.last = seen;
        samples
    }
}

/// (utime + stime in clock ticks, rss in pages) of a process.
fn read_stat(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state is field 3 (index 0 here); utime 14, stime 15,
    // rss 24 in proc(5)'s numbering.
    let number = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    Some((number(14)? + number(15)?, number(24)?))
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let (ticks, rss) = read_stat(std::process::id()).expect("our own stat");
        assert!(rss > 0);
        let mut sampler = Sampler::default();
        let id = WorkerId {
            index: 0,
            generation: 1,
        };
        let first = sampler.sample(&[(id, std::process::id())]);
        assert_eq!(first.len(), 1);
        // The fields read are the CPU time: burning CPU moves them (a wrong
        // field, such as a start time or a page count, would stand still).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut spin = 0u64;
        while read_stat(std::process::id()).expect("our own stat").0 <= ticks {
            assert!(
                std::time::Instant::now() < deadline,
                "CPU ticks did not advance"
            );
            for i in 0..100_000u64 {
                spin = std::hint::black_box(spin.wrapping_add(i));
            }
        }
        assert!(
            sampler.sample(&[(id, u32::MAX)]).is_empty(),
            "a vanished pid is skipped"
        );
    }
}
