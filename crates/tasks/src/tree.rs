//! `tree`: a task that adds tasks by a seeded rule, so that a test knows
//! the whole set a crawl from one root must run. Each node adds its
//! children (keyed by their names) and itself again (a cycle the seen-set
//! must stop, with `--key node` on the input).

use std::time::Duration;

use multiloop_worker::TaskError;
use serde::{Deserialize, Serialize};

/// One node of a generated tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeInput {
    /// The node's name; its children are `<node>/0`, `<node>/1`, ...
    pub node: String,
    /// Levels below this node: 0 is a leaf.
    pub levels: u32,
    /// Most children of a node; each has `children(seed, node, fanout)`.
    pub fanout: u32,
    #[serde(default)]
    pub seed: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sleep_ms: u64,
    /// With a directory, every node for which `crashes(seed, node)` holds
    /// aborts its worker the first time it runs (a marker file in the
    /// directory remembers it), after adding its children: the run must
    /// still add them exactly once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_once: Option<String>,
}

/// What a node reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeOutput {
    pub node: String,
    pub children: u32,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn fnv(seed: u64, node: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &byte in node.as_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// How many children `node` has (before counting its levels).
pub fn tree_children(seed: u64, node: &str, fanout: u32) -> u32 {
    (fnv(seed, node) % (u64::from(fanout) + 1)) as u32
}

/// Whether `node` crashes its worker once under `crash_once`.
pub fn tree_crashes(seed: u64, node: &str) -> bool {
    fnv(seed ^ 0x5eed, node).is_multiple_of(7)
}

/// The names of every node of the tree under `root`, root included.
pub fn tree_nodes(root: &TreeInput) -> Vec<String> {
    let mut nodes = vec![root.node.clone()];
    let mut next = vec![(root.node.clone(), root.levels)];
    while let Some((node, levels)) = next.pop() {
        if levels == 0 {
            continue;
        }
        for i in 0..tree_children(root.seed, &node, root.fanout) {
            let child = format!("{node}/{i}");
            nodes.push(child.clone());
            next.push((child, levels - 1));
        }
    }
    nodes
}

/// Adds the node's children and itself again, then answers.
pub async fn tree(input: TreeInput) -> Result<TreeOutput, TaskError> {
    if input.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(input.sleep_ms)).await;
    }
    let count = if input.levels == 0 {
        0
    } else {
        tree_children(input.seed, &input.node, input.fanout)
    };
    for i in 0..count {
        let child = TreeInput {
            node: format!("{}/{i}", input.node),
            levels: input.levels - 1,
            ..input.clone()
        };
        multiloop_worker::add(&child, Some(&child.node))?;
    }
    multiloop_worker::add(&input, Some(&input.node))?;
    if let Some(dir) = &input.crash_once {
        if tree_crashes(input.seed, &input.node) {
            let marker = std::path::Path::new(dir).join(input.node.replace('/', "_"));
            if std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
                .is_ok()
            {
                std::process::abort();
            }
        }
    }
    Ok(TreeOutput {
        node: input.node,
        children: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_the_same_for_a_seed() {
        let root = TreeInput {
            node: "r".into(),
            levels: 4,
            fanout: 3,
            seed: 7,
            ..Default::default()
        };
        let nodes = tree_nodes(&root);
        assert_eq!(nodes, tree_nodes(&root));
        assert!(nodes.len() > 4, "{nodes:?}");
        let mut unique = nodes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), nodes.len());
    }
}
