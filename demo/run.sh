#!/usr/bin/env bash
# One-command demo: local control plane → VAEL app → NEXUS stand-in → Antibody → the four matrix
# alerts → a table of alert → plan → actions → result → time to PatchApplied. Stops cleanly.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source tests/cluster/env.sh
say() { printf '\n== %s\n' "$*" >&2; }
NS=vael-demo
KUBECTL="$CLUSTER_BIN/kubectl"
PY="${ANTIBODY_PYENV:-/opt/antibody-py}/bin/python"
work="$(mktemp -d /tmp/antibody-demo.XXXXXX)"
chmod 0755 "$work"
pids=()
cluster_was_up=0
[[ -f "$CLUSTER_DIR/.antibody-cluster" ]] && [[ -s "$CLUSTER_DIR/pids/kube-apiserver.pid" ]] && cluster_was_up=1

cleanup() {
  say "stopping the demo"
  # Only our own children, by the pids we recorded.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -n "${KUBECONFIG:-}" ]] && "$KUBECTL" delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  if [[ $cluster_was_up == 0 && "${ANTIBODY_DEMO_KEEP_CLUSTER:-}" != 1 ]]; then tests/cluster/down.sh || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

say "1/7 local control plane (the first run builds it from Go modules: ≈7–10 min, with progress)"
tests/cluster/up.sh
export KUBECONFIG="$KUBECONFIG_PATH"
say "2/7 python peers (Flask, gunicorn, grpcio NEXUS stand-in)"
tests/peers/setup.sh
if [[ -n "${ANTIBODY_BIN:-}" ]]; then
  # tests/demo.rs runs the demo with the binary its test build already made.
  say "3/7 antibody: $ANTIBODY_BIN"
  bin="$ANTIBODY_BIN"
else
  say "3/7 building antibody (release)"
  cargo build --release --quiet --bin antibody
  bin="$root/target/release/antibody"
fi

say "4/7 installing the CRD and the VAEL app in namespace $NS"
"$bin" crd | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
"$KUBECTL" create namespace "$NS" >/dev/null
"$KUBECTL" -n "$NS" apply -f demo/vael-app.yaml >/dev/null
"$KUBECTL" -n "$NS" rollout status deployment/vael-core deployment/sentinel deployment/vael-ui --timeout=60s >/dev/null
"$KUBECTL" -n "$NS" get deployments

# The Flask UI under gunicorn with the reload companion, as the unprivileged user kwok's exec
# runs as: the companion CLI sent through pods/exec reaches this app's workers and nothing else.
cp demo/vael_ui_app.py "$work/"
chmod 0777 "$work"
mkdir -m 0777 "$work/state"
flask_port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ANTIBODY_STATE_DIR="$work/state" setpriv --reuid="$EXEC_UID" --regid="$EXEC_GID" --clear-groups \
  "${ANTIBODY_PYENV:-/opt/antibody-py}/bin/gunicorn" --bind "127.0.0.1:$flask_port" --workers 2 \
  --chdir "$work" --pid "$work/gunicorn.pid" --error-logfile "$work/gunicorn.log" vael_ui_app:app &
pids+=($!)
gunicorn_pid=$!
for _ in $(seq 100); do [[ -s "$work/gunicorn.pid" ]] && break; sleep 0.1; done
echo "Flask under gunicorn (2 workers, reload companion): pid $gunicorn_pid on 127.0.0.1:$flask_port"

# antibody.yml for the demo namespace, reloads through that gunicorn's companion.
"$PY" demo/render_config.py antibody.yml "$NS" "$PY" "$work/state" > "$work/antibody.yml"
"$bin" check-config --config "$work/antibody.yml" --offline

stamp=$(date +%s)
cat > "$work/alerts.jsonl" <<JSON
{"id":"hb-$stamp","source":"NEXUS","category":"heartbeat","severity":"high","msg":"Pulse missed: VAEL_Core","patch_hint":"restart:VAEL_Core"}
{"id":"pol-$stamp","source":"NEXUS","category":"policy","severity":"high","msg":"Policy flood on VAEL_UI","patch_hint":"reload_flask:VAEL_UI"}
{"id":"crit-$stamp","source":"NEXUS","category":"kernel","severity":"critical","msg":"Kernel anomaly on VAEL_Core","patch_hint":"restart:VAEL_Core"}
{"id":"info-$stamp","source":"NEXUS","category":"heartbeat","severity":"info","msg":"Pulse jitter: VAEL_Core","patch_hint":"restart:VAEL_Core"}
JSON

say "5/7 NEXUS stand-in (python grpcio) and the Antibody controller"
nexus_port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
http_port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$PY" tests/peers/nexus_feed.py --port "$nexus_port" --alerts "$work/alerts.jsonl" --interval 2 --hold > "$work/nexus.log" 2>"$work/nexus.err" &
pids+=($!)
for _ in $(seq 100); do grep -q '"ready"' "$work/nexus.log" 2>/dev/null && break; sleep 0.1; done
"$bin" run --config "$work/antibody.yml" --namespace "$NS" --nexus-grpc "http://127.0.0.1:$nexus_port" \
  --http-addr "127.0.0.1:$http_port" --audit-dir "$work/audit" --log-level "info,kube=warn" > "$work/antibody.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
echo "NEXUS on 127.0.0.1:$nexus_port; Antibody HTTP on 127.0.0.1:$http_port"

say "6/7 the four matrix alerts (one every 2 s)"
status=0
"$PY" demo/table.py "$work/nexus.log" "$work/alerts.jsonl" "$NS" "$KUBECTL" "http://127.0.0.1:$http_port/metrics" 90 || status=$?
"$KUBECTL" -n "$NS" get patchplans
echo "gunicorn workers now: $("$PY" -m antibody_reload status --state-dir "$work/state")"
"$bin" audit verify "$work/audit" | tail -1
if [[ $status != 0 ]]; then
  say "the demo did not complete; the controller log:"
  tail -40 "$work/antibody.log"
fi
say "7/7 done"
exit $status
