#!/usr/bin/env bash
# Start a local Kubernetes control plane for the integration tests and the demo:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (one fake node whose
# pods become Running at once, and whose pods/exec runs commands ON THIS HOST as an
# unprivileged user). Everything listens on 127.0.0.1 only.
#
#   tests/cluster/up.sh            # idempotent: a healthy running cluster is left alone
#   export KUBECONFIG=$CLUSTER_DIR/kubeconfig
#   tests/cluster/down.sh          # stops exactly what this script started
#
# Settings (ports, paths, versions) come from env.sh and can be overridden from the environment.
# CLUSTER_UP_TIMEOUT (seconds, default 120) bounds the wait for the cluster to become usable.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

# Milliseconds since the epoch, for progress output.
now_ms() { local t=${EPOCHREALTIME/./}; echo $((10#$t / 1000)); }
secs_since() { local d=$(($(now_ms) - $1)); printf '%d.%02d s' $((d / 1000)) $((d % 1000 / 10)); }
t_start=$(now_ms)
UP_TIMEOUT="${CLUSTER_UP_TIMEOUT:-120}"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
PKI="$CLUSTER_DIR/pki"
LOGS="$CLUSTER_DIR/logs"
PIDS="$CLUSTER_DIR/pids"
KUBECTL="$CLUSTER_BIN/kubectl"

die() { log "ERROR: $*"; exit 1; }

# The pid recorded for NAME, if that process is alive and really is our binary.
live_pid() {
  local name=$1 pidfile="$PIDS/$1.pid" pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ && $pid -gt 1 ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$CLUSTER_BIN/$name" || return 1
  echo "$pid"
}

readyz_ok() {
  curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1
}

show_log() {
  local name=$1
  if [[ -f $LOGS/$name.log ]]; then
    printf '\n----- last 40 lines of %s -----\n' "$LOGS/$name.log" >&2
    tail -n 40 "$LOGS/$name.log" >&2
    printf -- '----- end of %s -----\n\n' "$name" >&2
  fi
}

# Fail while waiting: show the log of any component that died, else of the ones named.
fail_wait() {
  local what=$1; shift
  local dead=() c
  for c in "${COMPONENTS[@]}"; do
    [[ -f $PIDS/$c.pid ]] && ! live_pid "$c" >/dev/null && dead+=("$c")
  done
  if [[ ${#dead[@]} -gt 0 ]]; then
    log "ERROR: ${dead[*]} exited while waiting for $what"
    for c in "${dead[@]}"; do show_log "$c"; done
  else
    log "ERROR: timed out after ${UP_TIMEOUT}s waiting for $what"
    for c in "$@"; do show_log "$c"; done
  fi
  log "the processes are left running for inspection; stop them with $here/down.sh"
  exit 1
}

deadline=0
# wait_for WHAT "LOGS TO SHOW" CMD...: poll CMD every 0.2 s until it succeeds or the deadline.
wait_for() {
  local what=$1 logs; read -ra logs <<<"$2"; shift 2
  local t0; t0=$(now_ms)
  log "waiting for $what…"
  until "$@" >/dev/null 2>&1; do
    local c
    for c in "${COMPONENTS[@]}"; do
      if [[ -f $PIDS/$c.pid ]] && ! live_pid "$c" >/dev/null; then fail_wait "$what" "${logs[@]}"; fi
    done
    ((SECONDS < deadline)) || fail_wait "$what" "${logs[@]}"
    sleep 0.2
  done
  log "$what: ok ($(secs_since "$t0"))"
}

# ---------------------------------------------------------------- already up?
if [[ -d $CLUSTER_DIR ]]; then
  healthy=1
  for c in "${COMPONENTS[@]}"; do live_pid "$c" >/dev/null || { healthy=0; break; }; done
  if ((healthy)) && readyz_ok; then
    log "cluster already running and healthy in $CLUSTER_DIR"
    echo "export KUBECONFIG=$KUBECONFIG_PATH"
    exit 0
  fi
  [[ -f $CLUSTER_DIR/.antibody-cluster ]] ||
    die "$CLUSTER_DIR exists but was not made by up.sh; remove it or set CLUSTER_DIR"
  log "found a stale or unhealthy cluster in $CLUSTER_DIR; stopping it first"
  "$here/down.sh"
fi

# ---------------------------------------------------------------- binaries
"$here/build.sh"
for c in "${COMPONENTS[@]}" kubectl; do
  [[ -x $CLUSTER_BIN/$c ]] || die "missing $CLUSTER_BIN/$c after build.sh"
done

# ---------------------------------------------------------------- ports must be free
for p in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KCM_PORT" "$SCHED_PORT" "$KWOK_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "port 127.0.0.1:$p is already in use (another cluster or program); free it or override the port in the environment (see env.sh)"
  fi
done

mkdir -p "$CLUSTER_DIR"
touch "$CLUSTER_DIR/.antibody-cluster" # down.sh removes only a directory with this marker
mkdir -p "$PKI" "$LOGS" "$PIDS" "$CLUSTER_DIR/etcd" "$CLUSTER_DIR/exec"
chmod 0700 "$PKI" "$CLUSTER_DIR/etcd"
# Commands run through pods/exec (kwok ClusterExec) run as EXEC_UID in this directory.
chown "$EXEC_UID:$EXEC_GID" "$CLUSTER_DIR/exec" 2>/dev/null || chmod 0777 "$CLUSTER_DIR/exec"

# ---------------------------------------------------------------- certificates
log "generating certificates in $PKI"
(
  cd "$PKI"
  umask 077
  exec 2>openssl.log
  openssl req -x509 -new -nodes -newkey rsa:2048 -keyout ca.key -out ca.crt -days 3650 \
    -subj "/CN=antibody-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
  # leaf NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
  leaf() {
    local name=$1 subj=$2 eku=$3 san=${4:-}
    openssl req -new -nodes -newkey rsa:2048 -keyout "$name.key" -out "$name.csr" -subj "$subj"
    {
      echo "basicConstraints=critical,CA:FALSE"
      echo "keyUsage=critical,digitalSignature,keyEncipherment"
      echo "extendedKeyUsage=$eku"
      [[ -z $san ]] || echo "subjectAltName=$san"
    } >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
      -days 3650 -extfile "$name.ext" -out "$name.crt"
    rm -f "$name.csr" "$name.ext"
  }
  leaf apiserver "/CN=kube-apiserver" serverAuth \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
  leaf admin "/O=system:masters/CN=admin" clientAuth
  leaf kwok "/CN=$NODE_NAME" serverAuth "DNS:localhost,DNS:$NODE_NAME,IP:127.0.0.1"
  openssl genrsa -out sa.key 2048
  openssl rsa -in sa.key -pubout -out sa.pub
) || { cat "$PKI/openssl.log" >&2; die "certificate generation failed"; }

b64() { base64 -w0 <"$1"; }
umask_old=$(umask); umask 077
cat >"$KUBECONFIG_PATH" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: antibody
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: antibody
  context:
    cluster: antibody
    user: admin
    namespace: default
current-context: antibody
EOF
umask "$umask_old"

# kwok: which pods/exec targets to serve and how. The default stages (no Stage in the config)
# make pods Running at once. Exec runs on this host, so it runs unprivileged.
cat >"$CLUSTER_DIR/kwok.yaml" <<EOF
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterExec
metadata:
  name: local-unprivileged
spec:
  execs:
  - local:
      workDir: $CLUSTER_DIR/exec
      securityContext:
        runAsUser: $EXEC_UID
        runAsGroup: $EXEC_GID
EOF

# ---------------------------------------------------------------- processes
# start NAME ARGS...: run $CLUSTER_BIN/NAME in its own session (so a Ctrl-C in this terminal
# does not reach it), log to logs/NAME.log, record its pid in pids/NAME.pid.
start() {
  local name=$1; shift
  log "starting $name"
  setsid "$CLUSTER_BIN/$name" "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$PIDS/$name.pid"
  sleep 0.05
  live_pid "$name" >/dev/null || { show_log "$name"; die "$name exited at once"; }
}

deadline=$((SECONDS + UP_TIMEOUT))

start etcd \
  --name=antibody \
  --data-dir="$CLUSTER_DIR/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="antibody=http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster-state=new \
  --unsafe-no-fsync=true \
  --log-level=warn

wait_for "etcd health" etcd \
  curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

start kube-apiserver \
  --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$APISERVER_PORT" \
  --tls-cert-file="$PKI/apiserver.crt" \
  --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --authorization-mode=Node,RBAC \
  --service-cluster-ip-range=10.96.0.0/16 \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --kubelet-client-certificate="$PKI/admin.crt" \
  --kubelet-client-key="$PKI/admin.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" \
  --kubelet-preferred-address-types=InternalIP \
  --endpoint-reconciler-type=none \
  --profiling=false

wait_for "kube-apiserver /readyz" kube-apiserver readyz_ok

start kube-controller-manager \
  --kubeconfig="$KUBECONFIG_PATH" \
  --authentication-kubeconfig="$KUBECONFIG_PATH" \
  --authorization-kubeconfig="$KUBECONFIG_PATH" \
  --bind-address=127.0.0.1 \
  --secure-port="$KCM_PORT" \
  --leader-elect=false \
  --controllers='*' \
  --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" \
  --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --kube-api-qps=200 \
  --kube-api-burst=400 \
  --concurrent-deployment-syncs=10 \
  --concurrent-replicaset-syncs=10 \
  --node-monitor-grace-period=1h \
  --profiling=false

start kube-scheduler \
  --kubeconfig="$KUBECONFIG_PATH" \
  --authentication-kubeconfig="$KUBECONFIG_PATH" \
  --authorization-kubeconfig="$KUBECONFIG_PATH" \
  --bind-address=127.0.0.1 \
  --secure-port="$SCHED_PORT" \
  --leader-elect=false \
  --kube-api-qps=200 \
  --kube-api-burst=400 \
  --profiling=false

start kwok \
  --kubeconfig="$KUBECONFIG_PATH" \
  --config="$CLUSTER_DIR/kwok.yaml" \
  --manage-all-nodes=true \
  --node-lease-duration-seconds=40 \
  --node-ip=127.0.0.1 \
  --node-port="$KWOK_PORT" \
  --server-address="127.0.0.1:$KWOK_PORT" \
  --tls-cert-file="$PKI/kwok.crt" \
  --tls-private-key-file="$PKI/kwok.key"

# ---------------------------------------------------------------- the node
log "creating node $NODE_NAME"
"$KUBECTL" --kubeconfig="$KUBECONFIG_PATH" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $NODE_NAME
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: $NODE_NAME
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
spec: {}
status:
  addresses:
  - type: InternalIP
    address: 127.0.0.1
  - type: Hostname
    address: $NODE_NAME
  daemonEndpoints:
    kubeletEndpoint:
      Port: $KWOK_PORT
  allocatable: {cpu: "256", memory: 1Ti, pods: "1000"}
  capacity: {cpu: "256", memory: 1Ti, pods: "1000"}
EOF

k() { "$KUBECTL" --kubeconfig="$KUBECONFIG_PATH" --request-timeout=5s "$@"; }
node_ready() {
  [[ $(k get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
node_untainted() {
  [[ -z $(k get node "$NODE_NAME" -o 'jsonpath={.spec.taints}') ]]
}
wait_for "node $NODE_NAME Ready" kwok node_ready
wait_for "node $NODE_NAME schedulable (no taints)" "kube-controller-manager kwok" node_untainted
wait_for "ServiceAccount default/default" kube-controller-manager k get serviceaccount default -n default

log "cluster up in $(secs_since "$t_start") (state and logs in $CLUSTER_DIR)"
echo "export KUBECONFIG=$KUBECONFIG_PATH"
