#!/usr/bin/env bash
# multiloop benchmarks: scripts/bench.sh [options] trivial|cpu|demo|rss|all
#                       scripts/bench.sh fetch [options]   (bench_fetch.py; not in `all`)
# Build first:  cargo build --release --bins
#               cargo build --release -p multiloop-tasks --example inprocess_baseline
#               cargo build --release -p multiloop-tasks --example fetch_bench_server
# Details: scripts/README.md, or scripts/bench.sh --help.
set -euo pipefail
if [ "${1:-}" = fetch ]; then
    shift
    exec python3 "$(dirname "$0")/bench_fetch.py" "$@"
fi
exec python3 "$(dirname "$0")/bench.py" "$@"
