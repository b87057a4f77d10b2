#!/usr/bin/env bash
# Runs a command where no DDS traffic can leave this machine: in a private network namespace
# that has only loopback, with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID of
# its own. Tests (test/conftest.py), the demo and the benchmarks start ROS nodes through it.
#
# Order of attempts: `unshare -n` (root), `unshare -rn` (unprivileged user namespace), then the
# environment variables alone, with a warning, where no namespace may be created.
#
# Usage: scripts/netns_run.sh COMMAND [ARGS...]
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((RANDOM % 100 + 1))}

if [ "${MTL_NETNS:-}" = private ]; then
  exec "$@"
fi
for flags in -n -rn; do
  if unshare "$flags" true 2>/dev/null; then
    export MTL_NETNS=private
    # Loopback up: iproute2, else mtl_perception/ros/loopback.py (machines without `ip`).
    export MTL_NETNS_PYTHON=${MTL_NETNS_PYTHON:-python3}
    MTL_NETNS_LOOPBACK=$(cd "$(dirname "$0")/.." && pwd)/mtl_perception/ros/loopback.py
    export MTL_NETNS_LOOPBACK
    exec unshare "$flags" -- sh -c '{ ip link set lo up 2>/dev/null || "$MTL_NETNS_PYTHON" "$MTL_NETNS_LOOPBACK"; } && exec "$@"' netns_run "$@"
  fi
done
echo "netns_run: no private network namespace could be created (unshare -n and -rn refused);" \
  "running with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and ROS_DOMAIN_ID=$ROS_DOMAIN_ID only" >&2
export MTL_NETNS=none
exec "$@"
