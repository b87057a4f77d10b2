"""Running ROS work where no DDS traffic can leave this machine.

The one home of the private-network-namespace logic, for both of its callers:

* console scripts and benchmarks that start nodes call :func:`ensure_private_network`, which
  re-executes the calling process isolated;
* a command is run isolated by this file run as a script, by path (standard library only: it
  needs neither the venv nor the installed package, so it works on a fresh machine)::

      python3 mtl_perception/ros/isolation.py COMMAND [ARGS...]

  scripts/netns_run.sh only runs this; the tests (test/conftest.py) and the robot-path check
  start through it. The command's exit code is passed through.

Isolation, in order of attempts: a private network namespace that has only loopback
(``unshare -n`` as root, ``unshare -rn`` in an unprivileged user namespace; loopback brought up by
``ip``, else by loopback.py beside this file), then, where no namespace may be created, the
environment alone with a warning. Always ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a
ROS_DOMAIN_ID of its own (1..100; one already set is kept). MTL_NETNS says which applies
(``private`` or ``none``).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

FLAGS = ("-n", "-rn")  # unshare: as root, then in an unprivileged user namespace
LOOPBACK = Path(__file__).resolve().with_name("loopback.py")
ENTRY = "MTL_NETNS_ENTRY"  # the name the usage line gives (scripts/netns_run.sh sets it)
# Inside the new namespace: loopback up (iproute2, else loopback.py), then the command.
ENTER = (
    '{ ip link set lo up 2>/dev/null || "$MTL_NETNS_PYTHON" "$MTL_NETNS_LOOPBACK"; } && exec "$@"'
)
WARNING = (
    "warning: no private network namespace could be created (unshare -n and -rn refused); "
    "running with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and ROS_DOMAIN_ID={domain} only"
)


def discovery_environment(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` with discovery limited to this machine and a ROS_DOMAIN_ID (kept if set)."""
    env = dict(environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    return env


def namespace_flags() -> str | None:
    """The first of :data:`FLAGS` with which ``unshare`` can create a network namespace here;
    None where neither can (or there is no ``unshare``)."""
    for flags in FLAGS:
        try:
            result = subprocess.run(["unshare", flags, "true"], capture_output=True)
        except FileNotFoundError:
            return None
        if result.returncode == 0:
            return flags
    return None


def exec_in_namespace(flags: str, command: Sequence[str], env: dict[str, str]) -> NoReturn:
    """Replaces this process by ``command`` in a new network namespace (MTL_NETNS=private)."""
    env = {
        **env,
        "MTL_NETNS": "private",
        "MTL_NETNS_PYTHON": sys.executable,
        "MTL_NETNS_LOOPBACK": str(LOOPBACK),
    }
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe("unshare", ["unshare", flags, "--", "sh", "-c", ENTER, "netns_run", *command], env)


def ensure_private_network() -> None:
    """Re-executes this process (``sys.orig_argv``) isolated; returns at once where it already
    is (MTL_NETNS set). Where no namespace may be created, only the environment variables
    apply, to this process, with a warning."""
    if os.environ.get("MTL_NETNS"):
        return
    env = discovery_environment(dict(os.environ))
    flags = namespace_flags()
    if flags:
        exec_in_namespace(flags, sys.orig_argv, env)
    print(WARNING.format(domain=env["ROS_DOMAIN_ID"]), file=sys.stderr)
    os.environ.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=env["ROS_DOMAIN_ID"],
        MTL_NETNS="none",
    )


def run_isolated(command: Sequence[str]) -> NoReturn:
    """Replaces this process by ``command``, isolated. Inside a private namespace already
    (MTL_NETNS=private) only the environment variables are set."""
    env = discovery_environment(dict(os.environ))
    if env.get("MTL_NETNS") != "private":
        flags = namespace_flags()
        if flags:
            exec_in_namespace(flags, command, env)
        print(WARNING.format(domain=env["ROS_DOMAIN_ID"]), file=sys.stderr)
        env["MTL_NETNS"] = "none"
    sys.stdout.flush()
    try:
        os.execvpe(command[0], list(command), env)
    except OSError as error:
        print(f"netns_run: cannot run {command[0]}: {error.strerror}", file=sys.stderr)
        sys.exit(127 if isinstance(error, FileNotFoundError) else 126)


def main(argv: Sequence[str]) -> NoReturn:
    """``isolation.py COMMAND [ARGS...]``: runs the command isolated; exit 2 without one."""
    entry = os.environ.pop(ENTRY, None) or sys.argv[0]
    if not argv:
        print(f"usage: {entry} COMMAND [ARGS...]", file=sys.stderr)
        sys.exit(2)
    run_isolated(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
