#!/usr/bin/env bash
# What users install, checked (#27); .ci/run runs this.
#   * the Dockerfile: hadolint, and the toolchain it builds with is the one
#     rust-toolchain.toml pins;
#   * every manifest in deploy/kubernetes: kubernetes-validate --strict
#     against the oldest and the newest Kubernetes version supported;
#   * .github/workflows: actionlint;
#   * README.md's quick start: its two commands, extracted from the README
#     and run exactly as written (the first runs the demo, the second every
#     test), so the README cannot drift from what works.
# The image is not built here: CI has no container engine and no registry
# to pull a base image from (see README.md, "From the image").
# Usage: scripts/check_shipping.sh [--lint-only]
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest Kubernetes whose Job has everything the manifests use on by
# default: podFailurePolicy (GA in 1.31), backoffLimitPerIndex and
# podReplacementPolicy (beta, on by default since 1.29). The newest is the
# newest schema the pinned kubernetes-validate carries.
K8S_OLDEST=1.31.0
K8S_NEWEST=1.37.0

lint_only=false
case "${1:-}" in
    "") ;;
    --lint-only) lint_only=true ;;
    *) echo "usage: $0 [--lint-only]" >&2; exit 2 ;;
esac

step() { printf '\n== %s\n' "$*" >&2; }

step "linters (scripts/shipping-requirements.txt)"
venv=target/shipping-venv
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
    -r scripts/shipping-requirements.txt

step "Dockerfile"
pinned=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
in_dockerfile=$(sed -n 's/^ARG RUST_VERSION=\(.*\)/\1/p' Dockerfile)
if [[ "$pinned" != "$in_dockerfile" ]]; then
    echo "rust-toolchain.toml pins $pinned but the Dockerfile builds with RUST_VERSION=$in_dockerfile" >&2
    exit 1
fi
"$venv/bin/hadolint" Dockerfile
echo "hadolint: Dockerfile clean; builds with Rust $pinned" >&2

step "Kubernetes manifests (--strict, $K8S_OLDEST and $K8S_NEWEST)"
for version in "$K8S_OLDEST" "$K8S_NEWEST"; do
    "$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" \
        deploy/kubernetes/*.yaml
    echo "kubernetes-validate --strict $version: deploy/kubernetes/*.yaml valid" >&2
done

step "GitHub workflows"
"$venv/bin/actionlint" .github/workflows/*.yml
echo "actionlint: .github/workflows clean" >&2

if $lint_only; then
    exit 0
fi

# The first ```sh block after "## Quick start", one command per line.
mapfile -t commands < <(awk '
    /^## Quick start/ { section = 1; next }
    section && /^```sh$/ { block = 1; next }
    block && /^```$/ { exit }
    block && NF { print }
' README.md)
if [[ ${#commands[@]} -ne 2 ]]; then
    echo "README.md: expected 2 commands in the quick start's sh block, found ${#commands[@]}" >&2
    exit 1
fi

step "README quick start, 1: ${commands[0]}"
rm -f demo.jsonl
bash -euo pipefail -c "${commands[0]}"
# The demo batch is 10,000 tasks: every one answered, every one ok.
records=$(wc -l < demo.jsonl)
ok=$(grep -c '"ok":' demo.jsonl || true)
if [[ "$records" -ne 10000 || "$ok" -ne 10000 ]]; then
    echo "the demo wrote $records records ($ok ok) to demo.jsonl, not 10000 ok" >&2
    exit 1
fi
rm -f demo.jsonl
echo "the demo: 10000 records, all ok" >&2

step "README quick start, 2: ${commands[1]}"
bash -euo pipefail -c "${commands[1]}"
