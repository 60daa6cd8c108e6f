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
if [[ $# -eq 0 ]]; then
  # tests/static_binary.rs builds the crt-static binary (~3 min the first time); run it now so
  # the build does not compete with timed tests (in the suite below it is then a quick check).
  step "static binary (crt-static, as the Dockerfile's FROM scratch image needs)"
  cargo test --quiet --test static_binary || true   # a failure is reported again by the suite
fi

if [[ "${ANTIBODY_KEEP_CLUSTER:-}" != 1 ]]; then
  cleanup() { step "stopping the control plane"; tests/cluster/down.sh || true; }
  trap cleanup EXIT
fi
step "local control plane"
tests/cluster/up.sh
step "cargo test"
log="$(mktemp)"
status=0
cargo test --no-fail-fast "$@" -- --test-threads="${TEST_THREADS:-4}" 2>&1 | tee "$log" || status=$?
# One closing line for every suite together (cargo prints one per test binary).
sum() { grep -E '^test result:' "$log" | grep -oE "[0-9]+ $1" | awk '{n += $1} END {print n + 0}'; }
passed=$(sum passed); failed=$(sum failed); ignored=$(sum ignored)
rm -f "$log"
# The reload companion's own tests (Python, real gunicorn and Socket.IO clients), unless only
# some cargo tests were asked for.
if [[ $# -eq 0 ]]; then
  step "companion tests (pytest)"
  pylog="$(mktemp)"
  pystatus=0
  "${ANTIBODY_PYENV:-/opt/antibody-py}/bin/python" -m pytest companion/tests -q -p no:cacheprovider 2>&1 | tee "$pylog" || pystatus=$?
  pysum() { tail -n 5 "$pylog" | { grep -oE "[0-9]+ $1" || true; } | awk '{n = $1} END {print n + 0}'; }
  passed=$((passed + $(pysum passed))); failed=$((failed + $(pysum failed))); ignored=$((ignored + $(pysum skipped)))
  rm -f "$pylog"
  [[ $pystatus == 0 ]] || status=$pystatus
fi
# Stop the cluster now rather than in the EXIT trap, so the summary is the last line printed.
if [[ "${ANTIBODY_KEEP_CLUSTER:-}" != 1 ]]; then trap - EXIT; cleanup; fi
step "finished in $((SECONDS - t0)) s"
echo "tests: $passed passed, $failed failed, $ignored skipped"
exit "$status"
