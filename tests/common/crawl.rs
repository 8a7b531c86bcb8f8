//! Forests of `tree` tasks and the check that a crawl of them recorded
//! every node exactly once, shared by the local crawl tests and the
//! queue's crawl across nodes.

use std::collections::HashMap;

use serde_json::Value;

/// The `tree` kind's rule, written again here so that the tests check the
/// workers instead of trusting them.
fn fnv(seed: u64, node: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &byte in node.as_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Every node of the tree under `root`, the root included.
fn tree_nodes(root: &str, levels: u32, fanout: u32, seed: u64) -> Vec<String> {
    let mut all = vec![root.to_string()];
    let mut next = vec![(root.to_string(), levels)];
    while let Some((node, levels)) = next.pop() {
        if levels == 0 {
            continue;
        }
        for i in 0..fnv(seed, &node) % (u64::from(fanout) + 1) {
            let child = format!("{node}/{i}");
            all.push(child.clone());
            next.push((child, levels - 1));
        }
    }
    all
}

/// Input lines of roots `r0`.. (`extra` is appended to each line's
/// object, e.g. `,"sleep_ms":2`) and every node their trees hold.
pub fn tree_forest(
    roots: u32,
    levels: u32,
    fanout: u32,
    seed: u64,
    extra: &str,
) -> (String, Vec<String>) {
    let mut input = String::new();
    let mut all = Vec::new();
    for r in 0..roots {
        let root = format!("r{r}");
        input.push_str(&format!(
            "{{\"node\":\"{root}\",\"levels\":{levels},\"fanout\":{fanout},\"seed\":{seed}{extra}}}\n"
        ));
        all.extend(tree_nodes(&root, levels, fanout, seed));
    }
    (input, all)
}

/// Every expected node has exactly one ok record, nothing else is
/// recorded, and each added task's record names its parent and depth
/// as its parent's record declared it.
pub fn assert_each_node_once(records: &[Value], expected: &[String]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut by_seq: HashMap<String, &Value> = HashMap::new();
    for record in records {
        let node = record["ok"]["node"]
            .as_str()
            .unwrap_or_else(|| panic!("not an ok tree record: {record}"));
        *seen.entry(node).or_default() += 1;
        by_seq.insert(
            record["seq"].to_string().trim_matches('"').to_string(),
            record,
        );
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "recorded more than once: {twice:?}");
    let missing: Vec<_> = expected
        .iter()
        .filter(|n| !seen.contains_key(n.as_str()))
        .collect();
    assert!(missing.is_empty(), "never recorded: {missing:?}");
    assert_eq!(
        seen.len(),
        expected.len(),
        "records of nodes that are not in the trees"
    );
    for record in records {
        let Some(seq) = record["seq"].as_str() else {
            assert!(record.get("parent").is_none(), "{record}");
            continue;
        };
        let (parent, n) = seq.rsplit_once('.').unwrap();
        let parent_record = by_seq[parent];
        let n: usize = n.parse().unwrap();
        let added = &parent_record["added"][n - 1];
        assert_eq!(added["task"]["node"], record["ok"]["node"], "{record}");
        assert_eq!(record["depth"], seq.matches('.').count(), "{record}");
        assert_eq!(record["parent"].to_string().trim_matches('"'), parent);
    }
}
