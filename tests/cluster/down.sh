#!/usr/bin/env bash
# Stop the local control plane started by up.sh and remove its state directory.
# Only the processes recorded in $CLUSTER_DIR/pids are signalled, and only after checking that
# each pid still runs a binary from $CLUSTER_BIN. Idempotent: with no cluster it does nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

PIDS="$CLUSTER_DIR/pids"
GRACE_SECONDS="${CLUSTER_DOWN_GRACE:-5}"

if [[ ! -d $CLUSTER_DIR ]]; then
  log "no cluster in $CLUSTER_DIR; nothing to do"
  exit 0
fi

# The pid in FILE, if that process is alive and its command line names a binary in $CLUSTER_BIN
# (pids get reused: never signal a process just because its number is in a file).
our_pid() {
  local file=$1 name pid
  name=$(basename "$file" .pid)
  pid=$(<"$file") || return 1
  [[ $pid =~ ^[0-9]+$ ]] && ((pid > 1)) || return 1
  [[ $pid -ne $$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$CLUSTER_BIN/$name" || return 1
  echo "$pid"
}

declare -A victims=()
shopt -s nullglob
for f in "$PIDS"/*.pid; do
  if pid=$(our_pid "$f"); then
    victims[$pid]=$(basename "$f" .pid)
  fi
done

if ((${#victims[@]} > 0)); then
  log "stopping ${victims[*]} (SIGTERM)"
  for pid in "${!victims[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Wait for them to go, re-checking identity each time: a vanished pid is never signalled again.
  deadline=$((SECONDS + GRACE_SECONDS))
  while :; do
    for pid in "${!victims[@]}"; do
      our_pid "$PIDS/${victims[$pid]}.pid" >/dev/null || unset "victims[$pid]"
    done
    ((${#victims[@]} == 0 || SECONDS >= deadline)) && break
    sleep 0.2
  done
  if ((${#victims[@]} > 0)); then
    log "still running after ${GRACE_SECONDS}s: ${victims[*]} (SIGKILL)"
    for pid in "${!victims[@]}"; do
      if our_pid "$PIDS/${victims[$pid]}.pid" >/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    for _ in $(seq 50); do
      for pid in "${!victims[@]}"; do
        our_pid "$PIDS/${victims[$pid]}.pid" >/dev/null || unset "victims[$pid]"
      done
      ((${#victims[@]} == 0)) && break
      sleep 0.1
    done
    ((${#victims[@]} == 0)) || log "WARNING: could not stop: ${victims[*]}"
  fi
fi

# Remove the state directory, but only if it is one up.sh made (guards against a mistyped
# CLUSTER_DIR pointing somewhere precious).
case "$CLUSTER_DIR" in
  "" | / | "$HOME" | /tmp | /var/tmp) log "refusing to remove CLUSTER_DIR=$CLUSTER_DIR"; exit 1 ;;
esac
if [[ -f $CLUSTER_DIR/.antibody-cluster ]]; then
  rm -rf -- "$CLUSTER_DIR"
  log "cluster stopped; removed $CLUSTER_DIR"
else
  log "WARNING: $CLUSTER_DIR has no .antibody-cluster marker; left in place"
fi
