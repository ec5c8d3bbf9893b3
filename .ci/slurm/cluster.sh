#!/usr/bin/env bash
# A one-node SLURM cluster on localhost (munge + slurmctld + slurmd), from the config in this folder; as root.
#   .ci/slurm/cluster.sh install   apt-get the Debian packages slurm-wlm and munge (skipped when present)
#   .ci/slurm/cluster.sh start     (re)start the daemons with a clean state and wait until the node is idle
#   .ci/slurm/cluster.sh stop      stop them (what `start` started; nothing else)
# The tests that need it (tests/bench/test_slurm*.py) skip where sbatch/squeue cannot reach a controller, and fail
# instead under CI=true.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CONF=/etc/slurm/slurm.conf
PIDS=(/run/mdm-slurmd.pid /run/mdm-slurmctld.pid /run/munge/mdm-munged.pid)

stop() {
  for pidfile in "${PIDS[@]}"; do
    if [ -f "$pidfile" ]; then
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$pidfile"
    fi
  done
}

install() {
  if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

start() {
  [ "$(id -u)" = 0 ] || { echo "cluster.sh: start needs root" >&2; exit 1; }
  stop
  mkdir -p /etc/slurm /etc/munge /run/munge /var/log/munge /var/lib/munge /var/log/slurm \
    /var/spool/mdm-slurm/ctld /var/spool/mdm-slurm/d
  base64 -d "$HERE/munge.key.b64" > /etc/munge/munge.key
  chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
  chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
  cp "$HERE/slurm.conf" "$CONF"
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/mdm-munged.pid
  /usr/sbin/slurmctld -c -i   # -c: a clean state (no jobs from an earlier start); pid file: SlurmctldPidFile
  /usr/sbin/slurmd -N localhost
  for _ in $(seq 150); do  # the node registers within a few seconds
    state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
    case "$state" in idle|mix|alloc) echo "slurm: node localhost $state ($(sinfo -V))"; return 0;; esac
    sleep 0.2
  done
  echo "cluster.sh: the node did not come up (state '${state:-none}'); logs: /var/log/slurm/mdm-*.log" >&2
  exit 1
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
