# Shared settings for the local control plane scripts. Source it; do not run it.
# Everything can be overridden from the environment.
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
# Binaries live outside the repo, keyed by version, so every clone and CI run reuses them.
ANTIBODY_CACHE="${ANTIBODY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/antibody}"
CLUSTER_BIN="${CLUSTER_BIN:-$ANTIBODY_CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION}"
# Runtime state (certs, etcd data, logs, pids, kubeconfig). One cluster per machine.
CLUSTER_DIR="${CLUSTER_DIR:-${TMPDIR:-/tmp}/antibody-cluster}"
KUBECONFIG_PATH="$CLUSTER_DIR/kubeconfig"
APISERVER_PORT="${APISERVER_PORT:-16443}"
ETCD_CLIENT_PORT="${ETCD_CLIENT_PORT:-12379}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-12380}"
KWOK_PORT="${KWOK_PORT:-10250}"
KCM_PORT="${KCM_PORT:-10257}"
SCHED_PORT="${SCHED_PORT:-10259}"
# Processes reached through pods/exec run on this host as this unprivileged user.
EXEC_UID="${EXEC_UID:-65534}"
EXEC_GID="${EXEC_GID:-65534}"
NODE_NAME="${NODE_NAME:-kwok-node-0}"
CLUSTER_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf '[cluster %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
