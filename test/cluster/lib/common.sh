# Shared names, paths and helpers of the test/cluster scripts. Sourced, not executed.
cluster_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo_dir="$(cd "$cluster_dir/../.." && pwd)"
cache_dir="${KILN_CACHE:-$HOME/.cache/kiln}"
# Go's own installer puts it in /usr/local/go, which non-login shells (CI) may not have on PATH.
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
# What tests read (env file, admin kubeconfig). Git-ignored.
work_dir="$cluster_dir/.work"
# Runtime state (etcd data, containerd root, kubelet root, registry store, pids, logs) lives outside the
# checkout: container root filesystems must not be walked by tsc, biome or the test glob. A short path also
# keeps unix socket paths under their 108-byte limit.
state_dir="${KILN_CLUSTER_STATE:-/var/lib/kiln-test-cluster}"

# The cluster's network: a bridge this script creates, private ranges unused on the machine.
bridge=kiln0
gateway=10.123.0.1
pod_cidr=10.123.0.0/16
service_cidr=10.124.0.0/24
api_service_ip=10.124.0.1
registry="$gateway:5000"
node_name=kiln-node
# kubelet's cgroup root in every hierarchy: pods' cgroups live below it, down removes it.
cgroup_root=kiln-test-cluster
# Marks the iptables rules up adds itself, so down removes exactly those.
rule_comment=kiln-test-cluster

log() { printf '[cluster %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# The version a wrapper module pins (its go.mod is the single source of truth).
pinned_version() { # module-dir module-path
  sed -n "s#^require $2 \(v[^ ]*\)\$#\1#p" "$cluster_dir/go/$1/go.mod"
}

module_path() { # module-dir
  case "$1" in
  kubernetes) echo k8s.io/kubernetes ;;
  etcd) echo go.etcd.io/etcd/server/v3 ;;
  esac
}

# Binaries are keyed by what changes their bytes, so a fresh clone reuses them and a new pin rebuilds.
binaries_dir() { # module-dir
  local key
  key="$({ cat "$cluster_dir/go/$1/go.mod" "$cluster_dir/go/$1/go.sum" "$cluster_dir/build"; go env GOVERSION GOARCH; } |
    sha256sum | cut -c1-16)"
  echo "$cache_dir/cluster-bin/$1-$(pinned_version "$1" "$(module_path "$1")")-$key"
}

pid_file() { echo "$state_dir/pids/$1.pid"; }

running() { # component
  local pid
  pid="$(cat "$(pid_file "$1")" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# Waits up to $1 seconds for the command to succeed; on timeout names the log to read.
wait_for() { # seconds what log-name command...
  local deadline=$((SECONDS + $1)) what="$2" log_name="$3"
  shift 3
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      [ -f "$state_dir/logs/$log_name.log" ] && tail -n 30 "$state_dir/logs/$log_name.log" >&2
      die "timed out waiting for $what (log: $state_dir/logs/$log_name.log)"
    fi
    sleep 0.5
  done
}

# What down compares against the record up takes before it changes anything.
snapshot_links() { ip -o link show | sed 's/^[0-9]*: //; s/ state .*//' | sort; }
snapshot_iptables() { { iptables-save; ip6tables-save; } | { grep -E '^(\*|-A)' || true; } | sort; }
snapshot_nft_tables() { { nft list tables 2>/dev/null || true; } | sort; }
snapshot_mounts() { awk '{print $5}' /proc/self/mountinfo | sort; }
