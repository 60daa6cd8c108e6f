#!/usr/bin/env bash
# Stop or start ONLY the kube-apiserver of the cluster in $CLUSTER_DIR (chaos tests: an API
# outage on a private control plane; never point this at the shared one).
#
#   CLUSTER_DIR=/tmp/my-cluster tests/cluster/apiserver.sh stop    # SIGTERM, SIGKILL after 10 s
#   CLUSTER_DIR=/tmp/my-cluster tests/cluster/apiserver.sh start   # same command line, waits /readyz
#
# `stop` acts only on the pid in pids/kube-apiserver.pid, after checking /proc/PID/cmdline is
# our binary serving this CLUSTER_DIR's certificates; it saves that exact command line, which
# `start` runs again (same flags, same ports).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
PIDS="$CLUSTER_DIR/pids"
LOGS="$CLUSTER_DIR/logs"
PKI="$CLUSTER_DIR/pki"
SAVED="$CLUSTER_DIR/kube-apiserver.cmdline"
die() { log "ERROR: $*"; exit 1; }

# Alive and not a zombie (a stopped process may linger unreaped under init for a moment).
running() { [[ -r /proc/$1/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }

case "${1:-}" in
stop)
  [[ -f $PIDS/kube-apiserver.pid ]] || die "no $PIDS/kube-apiserver.pid"
  pid=$(<"$PIDS/kube-apiserver.pid")
  [[ $pid =~ ^[0-9]+$ && $pid -gt 1 ]] || die "bad pid ${pid@Q}"
  running "$pid" || die "kube-apiserver $pid is not running"
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  [[ $cmdline == "$CLUSTER_BIN/kube-apiserver "* ]] || die "pid $pid is not $CLUSTER_BIN/kube-apiserver"
  [[ $cmdline == *"--tls-cert-file=$PKI/apiserver.crt"* ]] || die "pid $pid does not serve $CLUSTER_DIR"
  cp "/proc/$pid/cmdline" "$SAVED"
  log "stopping kube-apiserver $pid of $CLUSTER_DIR"
  kill -TERM "$pid"
  for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
  if running "$pid"; then log "kube-apiserver $pid ignored SIGTERM; SIGKILL"; kill -KILL "$pid"; fi
  for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
  running "$pid" && die "kube-apiserver $pid is still running"
  rm -f "$PIDS/kube-apiserver.pid"
  ;;
start)
  [[ -f $SAVED ]] || die "no saved command line ($SAVED): stop it with this script first"
  mapfile -d '' -t argv <"$SAVED"
  [[ ${argv[0]} == "$CLUSTER_BIN/kube-apiserver" ]] || die "$SAVED does not start $CLUSTER_BIN/kube-apiserver"
  log "starting kube-apiserver of $CLUSTER_DIR again"
  setsid "${argv[@]}" </dev/null >>"$LOGS/kube-apiserver.log" 2>&1 &
  echo "$!" >"$PIDS/kube-apiserver.pid"
  for _ in $(seq 600); do
    if curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
      "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1; then
      log "kube-apiserver ready"
      exit 0
    fi
    running "$(<"$PIDS/kube-apiserver.pid")" || die "kube-apiserver exited; see $LOGS/kube-apiserver.log"
    sleep 0.1
  done
  die "kube-apiserver not ready after 60 s"
  ;;
*) die "usage: $0 stop|start" ;;
esac
