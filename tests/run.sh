#!/usr/bin/env bash
# The one test command: build (or reuse) the control plane, start it, run every test, stop it.
#   tests/run.sh                 # everything
#   tests/run.sh --test cluster  # extra args go to `cargo test`
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t0=$SECONDS
step() { printf '\n== [%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

step "control-plane binaries (cold build ≈ 7–10 min, then cached)"
tests/cluster/build.sh
step "python peers (Flask, gunicorn)"
tests/peers/setup.sh
step "compile the tests"
cargo test --no-run --quiet "$@"

if [[ "${ANTIBODY_KEEP_CLUSTER:-}" != 1 ]]; then
  cleanup() { step "stopping the control plane"; tests/cluster/down.sh || true; }
  trap cleanup EXIT
fi
step "local control plane"
tests/cluster/up.sh
step "cargo test"
cargo test "$@" -- --test-threads="${TEST_THREADS:-4}"
step "all tests passed in $((SECONDS - t0)) s"
