//! `--shard K/N` and `--shard auto`: which slice of the input this
//! supervisor runs, from the flag or from the scheduler's environment.

use anyhow::{bail, Context, Result};
use multiloop_supervisor::Shard;

/// Resolves `--shard`; `env` looks up environment variables (a parameter
/// so that tests need not touch the process environment).
pub fn resolve(
    spec: &str,
    shard_count: Option<u64>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Shard> {
    let shard = if spec == "auto" {
        from_environment(shard_count, &env)?
    } else {
        let (index, count) = spec
            .split_once('/')
            .with_context(|| format!("--shard {spec:?}: expected K/N (e.g. 0/4) or auto"))?;
        Shard {
            index: number(index, "--shard K")?,
            count: number(count, "--shard N")?,
        }
    };
    if shard.count == 0 {
        bail!("--shard {spec}: the shard count must be at least 1");
    }
    if shard.index >= shard.count {
        bail!(
            "--shard {spec}: shard index {} is not below the count {} (indices are 0-based)",
            shard.index,
            shard.count
        );
    }
    Ok(shard)
}

fn from_environment(
    shard_count: Option<u64>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Shard> {
    let var = |name: &str| -> Result<Option<u64>> {
        env(name).map(|value| number(&value, name)).transpose()
    };
    if let Some(index) = var("JOB_COMPLETION_INDEX")? {
        let count = shard_count.with_context(|| {
            "--shard auto under Kubernetes (JOB_COMPLETION_INDEX is set) needs the job's \
             completions as --shard-count N or MULTILOOP_SHARD_COUNT"
        })?;
        return Ok(Shard { index, count });
    }
    if let Some(id) = var("SLURM_ARRAY_TASK_ID")? {
        let required = |name: &str| -> Result<u64> {
            var(name)?.with_context(|| {
                format!("--shard auto under Slurm: SLURM_ARRAY_TASK_ID is set but {name} is not")
            })
        };
        let count = required("SLURM_ARRAY_TASK_COUNT")?;
        let min = required("SLURM_ARRAY_TASK_MIN")?;
        let step = var("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        if id < min || (id - min) % step != 0 {
            bail!("--shard auto under Slurm: SLURM_ARRAY_TASK_ID={id} is not in the array (min {min}, step {step})");
        }
        if let Some(expected) = shard_count.filter(|&n| n != count) {
            bail!("--shard-count {expected} disagrees with SLURM_ARRAY_TASK_COUNT={count}");
        }
        return Ok(Shard {
            index: (id - min) / step,
            count,
        });
    }
    bail!("--shard auto: neither JOB_COMPLETION_INDEX (Kubernetes Indexed Job) nor SLURM_ARRAY_TASK_ID (Slurm array) is set")
}

fn number(text: &str, what: &str) -> Result<u64> {
    text.trim()
        .parse()
        .with_context(|| format!("{what}={text:?} is not a non-negative number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn explicit_shards() {
        assert_eq!(
            resolve("2/5", None, env(&[])).unwrap(),
            Shard { index: 2, count: 5 }
        );
        assert!(resolve("5/5", None, env(&[]))
            .unwrap_err()
            .to_string()
            .contains("0-based"));
        assert!(resolve("1-5", None, env(&[])).is_err());
        assert!(resolve("0/0", None, env(&[])).is_err());
    }

    #[test]
    fn kubernetes_indexed_job() {
        let vars = [("JOB_COMPLETION_INDEX", "3")];
        assert_eq!(
            resolve("auto", Some(8), env(&vars)).unwrap(),
            Shard { index: 3, count: 8 }
        );
        let error = resolve("auto", None, env(&vars)).unwrap_err().to_string();
        assert!(error.contains("--shard-count"), "{error}");
    }

    #[test]
    fn slurm_array() {
        let vars = [
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ];
        assert_eq!(
            resolve("auto", None, env(&vars)).unwrap(),
            Shard { index: 3, count: 4 }
        );
        let missing = resolve("auto", None, env(&vars[..2]))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("SLURM_ARRAY_TASK_MIN"), "{missing}");
        let outside = [
            ("SLURM_ARRAY_TASK_ID", "9"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
        ];
        assert!(resolve("auto", None, env(&outside))
            .unwrap_err()
            .to_string()
            .contains("not below"));
    }

    #[test]
    fn auto_without_a_scheduler_is_an_error() {
        assert!(resolve("auto", Some(2), env(&[]))
            .unwrap_err()
            .to_string()
            .contains("neither"));
    }
}
