"""Running ROS work where no DDS traffic can leave this machine (the Python twin of
scripts/netns_run.sh, for console scripts that start nodes)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

# Inside the new namespace: loopback up (iproute2, else ros/loopback.py), then the command.
ENTER = (
    '{ ip link set lo up 2>/dev/null || "$MTL_NETNS_PYTHON" "$MTL_NETNS_LOOPBACK"; } && exec "$@"'
)


def ensure_private_network() -> None:
    """Re-executes this process inside a loopback-only network namespace (``unshare -n``, or
    ``-rn`` without root), with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID of its
    own. Where no namespace may be created, only the environment variables apply (a warning says
    so). Returns at once inside the namespace."""
    if os.environ.get("MTL_NETNS"):
        return
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    for flags in ("-n", "-rn"):
        try:
            usable = subprocess.run(["unshare", flags, "true"], capture_output=True).returncode == 0
        except FileNotFoundError:
            break
        if usable:
            env["MTL_NETNS"] = "private"
            env["MTL_NETNS_PYTHON"] = sys.executable
            env["MTL_NETNS_LOOPBACK"] = str(Path(__file__).with_name("loopback.py"))
            sys.stdout.flush()
            os.execvpe(
                "unshare",
                ["unshare", flags, "--", "sh", "-c", ENTER, "isolated", *sys.orig_argv],
                env,
            )
    print(
        "warning: no private network namespace could be created; "
        "limiting discovery to localhost only",
        file=sys.stderr,
    )
    os.environ.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=env["ROS_DOMAIN_ID"],
        MTL_NETNS="none",
    )
