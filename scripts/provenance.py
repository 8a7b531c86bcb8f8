"""Which code a benchmark measured: the commit, and whether the tree was clean.

Every figure quoted in the README must come from a committed script run on
a clean tree at a named commit. The benchmark scripts call `check_tree`
before they measure: a dirty tree is refused, or with --allow-dirty run and
loudly marked in the results, so such a run cannot be mistaken for one that
can be quoted. Files under scripts/results/ (the results themselves) and
scripts/data/ (generated inputs) do not count as changes.
"""

import subprocess
import sys

# Paths whose changes are benchmark output, not code.
OUTPUT_PATHS = ("scripts/results/", "scripts/data/")


def _git(root, *args):
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
    ).stdout


def git_state(root):
    """(full commit hash, list of changed paths that are code)."""
    commit = _git(root, "rev-parse", "HEAD").strip() or "unknown"
    changed = []
    for line in _git(root, "status", "--porcelain", "--untracked-files=normal").splitlines():
        # Porcelain lines are "XY PATH" (or "XY OLD -> NEW"): two status
        # columns, a space, the path.
        path = line[3:].split(" -> ")[-1].strip('"')
        if not path.startswith(OUTPUT_PATHS):
            changed.append(path)
    return commit, changed


def check_tree(root, allow_dirty):
    """The `git` label for a results header; exits if the tree is dirty
    and allow_dirty is false."""
    commit, changed = git_state(root)
    if not changed:
        return f"{commit} (clean)"
    listed = ", ".join(changed[:8]) + (", ..." if len(changed) > 8 else "")
    if not allow_dirty:
        sys.exit(
            f"refusing to benchmark a dirty tree ({len(changed)} changed: {listed}); "
            "commit first, or pass --allow-dirty (results are then marked DIRTY and not for the README)"
        )
    print(f"WARNING: dirty tree ({listed}): results are marked DIRTY", file=sys.stderr)
    return f"{commit} DIRTY, NOT FOR THE README ({len(changed)} changed: {listed})"
