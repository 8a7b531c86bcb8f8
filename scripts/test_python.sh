#!/usr/bin/env bash
# The Python tests, run the way a user gets multiloop: build the wheel with
# maturin, install it into a fresh virtualenv (no Rust toolchain needed
# there), and run pytest in it against the installed `supervisor`, `worker`
# and package. Extra arguments go to pytest (e.g. -k conformance).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/build"
"$work/build/bin/pip" install --quiet --upgrade pip maturin
"$work/build/bin/maturin" build --release --out "$work/wheels"

"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$work"/wheels/multiloop-*.whl pytest uvloop nbclient nbformat ipykernel
# The tests must see the installed package and binaries, not the checkout.
cd "$work"
"$work/venv/bin/python" - <<'PY'
import multiloop, pathlib, sys
assert "site-packages" in multiloop.__file__, multiloop.__file__
for name in ("supervisor", "worker"):
    assert (pathlib.Path(sys.executable).parent / name).is_file(), f"{name} is not installed"
PY
status=0
"$work/venv/bin/python" -m pytest -p no:cacheprovider "$repo/python/tests" "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test_python.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
