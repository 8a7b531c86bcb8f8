#!/usr/bin/env bash
# multiloop benchmarks: scripts/bench.sh [options] trivial|cpu|demo|rss|all
# Build first:  cargo build --release --bins
#               cargo build --release -p multiloop-tasks --example inprocess_baseline
# Details: scripts/README.md, or scripts/bench.sh --help.
set -euo pipefail
exec python3 "$(dirname "$0")/bench.py" "$@"
