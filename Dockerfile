# syntax=docker/dockerfile:1
# The multiloop image: `supervisor` and `worker` side by side, with Python
# and the `multiloop` package, so both Rust task kinds and
# `supervisor --python mod:fn` run in it. deploy/kubernetes/*.yaml run it.
#
#   docker build -t multiloop .
#   docker run --rm multiloop --demo -o demo.jsonl
#
# The manifests pass supervisor arguments as `args`: the entrypoint is
# `supervisor` (behind tini).

# Build stage: the toolchain rust-toolchain.toml pins (scripts/check_shipping.sh
# checks that RUST_VERSION names the same release) on Debian bookworm, the
# release the runtime stage runs, so the binaries need no newer glibc.
ARG RUST_VERSION=1.95.0
FROM rust:${RUST_VERSION}-slim-bookworm AS build
# The toolchain file also asks for rustfmt and clippy, which a release build
# does not need: name the image's toolchain instead of downloading them.
ARG RUST_VERSION
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION}
# maturin builds the wheel that carries the package and both binaries, the
# same kind of wheel `pip install multiloop` gets, within the range
# pyproject.toml's build-system names. Debian packages are not pinned to
# versions (hadolint DL3008): a point release replaces them and a pinned
# version stops resolving; the base image's tag pins the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/maturin \
    && /opt/maturin/bin/pip install --no-cache-dir "maturin>=1.5,<2"
WORKDIR /src
COPY . .
# --locked: the image runs exactly what CI tested. The wheel is tagged plain
# `linux` (no manylinux audit): it only has to install in the stage below.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    /opt/maturin/bin/maturin build --release --locked --compatibility linux --out /wheels

# Runtime: slim Debian, Python in a virtualenv that holds the package and
# the binaries (`supervisor` finds `worker` and the venv's `python` beside
# itself), ca-certificates for the fetch kind's TLS, tini as PID 1 to reap
# orphans of what the workers start (the supervisor reaps its own workers).
FROM debian:bookworm-slim
# (Unpinned Debian packages: see the build stage.)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/multiloop \
    && useradd --create-home --uid 10001 --user-group multiloop
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    /opt/multiloop/bin/pip install --no-cache-dir /wheels/multiloop-*.whl
ENV PATH=/opt/multiloop/bin:$PATH \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001
WORKDIR /home/multiloop
ENTRYPOINT ["tini", "--", "supervisor"]
CMD ["--help"]
