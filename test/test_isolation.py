"""Tests run where DDS traffic cannot leave the machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def test_discovery_is_limited_to_localhost():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 0 <= int(os.environ["ROS_DOMAIN_ID"]) <= 101


@pytest.mark.skipif(
    os.environ.get("MTL_NETNS") != "private",
    reason="this machine refuses network namespaces; the environment fallback is in force",
)
def test_private_namespace_has_only_loopback():
    # if_nameindex asks the kernel about this process's namespace (unlike /sys/class/net,
    # which shows the namespace that mounted sysfs).
    assert [name for _, name in socket.if_nameindex()] == ["lo"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("127.0.0.1", 9))  # loopback is up: a route to it exists


REPO = Path(__file__).resolve().parents[1]
ISOLATION = REPO / "mtl_perception" / "ros" / "isolation.py"
LOOPBACK_PROBE = (
    "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
    "socket.create_connection(s.getsockname(), timeout=2); print('loopback up')"
)
ENVIRONMENT_PROBE = (
    "import os, sys; print(*(os.environ.get(k) for k in "
    "('MTL_NETNS', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID'))); sys.exit(7)"
)
# The script entry (scripts/netns_run.sh only runs isolation.py), isolation.py by path with the
# standard library alone (-S: no site-packages, so no installed mtl_perception), and the
# function console scripts call.
SCRIPTS = ["netns_run.sh", "isolation.py"]
ENTRIES = [*SCRIPTS, "ensure_private_network"]


def isolated(entry: str, code: str) -> list[str]:
    """The command that runs Python ``code`` isolated through ``entry``."""
    if entry == "ensure_private_network":
        setup = "from mtl_perception.ros.isolation import ensure_private_network; "
        return [sys.executable, "-c", f"{setup}ensure_private_network(); {code}"]
    return [*script(entry), sys.executable, "-c", code]


def script(entry: str) -> list[str]:
    if entry == "netns_run.sh":
        return [str(REPO / "scripts" / "netns_run.sh")]
    return [sys.executable, "-S", str(ISOLATION)]


def outside(**extra: str) -> dict[str, str]:
    """This environment as it is outside any isolation, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTL_NETNS")}
    env.pop("ROS_DOMAIN_ID", None)
    return {**env, **extra}


def refusing_unshare(folder: Path) -> str:
    """A PATH on which `unshare` refuses every namespace (a machine that allows none)."""
    fake = folder / "unshare"
    fake.write_text(
        "#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


@pytest.mark.skipif(
    os.environ.get("MTL_NETNS") != "private",
    reason="this machine refuses network namespaces; the environment fallback is in force",
)
@pytest.mark.parametrize("entry", ENTRIES)
def test_loopback_comes_up_where_there_is_no_ip_command(tmp_path, entry):
    """Some machines (the CUDA image the GPU check runs on) have no iproute2: the namespace's
    loopback must come up all the same (mtl_perception/ros/loopback.py)."""
    failing_ip = tmp_path / "ip"
    failing_ip.write_text("#!/bin/sh\necho 'ip: not found' >&2\nexit 127\n")
    failing_ip.chmod(0o755)
    env = outside(PATH=f"{tmp_path}:{os.environ['PATH']}")
    command = isolated(entry, LOOPBACK_PROBE)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loopback up"


@pytest.mark.parametrize("entry", ENTRIES)
def test_isolated_environment_a_given_domain_kept_and_the_exit_code_passed_through(entry):
    # os.environ's MTL_NETNS: this pytest run was isolated the same way (test/conftest.py)
    result = subprocess.run(
        isolated(entry, ENVIRONMENT_PROBE),
        env=outside(ROS_DOMAIN_ID="42"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 7, result.stderr
    assert result.stdout.split() == [os.environ["MTL_NETNS"], "LOCALHOST", "42"]


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_domain_of_its_own_where_none_is_given(entry):
    result = subprocess.run(
        isolated(entry, ENVIRONMENT_PROBE), env=outside(), capture_output=True, text=True
    )
    assert result.returncode == 7, result.stderr
    assert 1 <= int(result.stdout.split()[2]) <= 100


@pytest.mark.parametrize("entry", ENTRIES)
def test_without_namespaces_only_the_environment_applies_with_a_warning(tmp_path, entry):
    env = outside(ROS_DOMAIN_ID="42", PATH=refusing_unshare(tmp_path))
    result = subprocess.run(
        isolated(entry, ENVIRONMENT_PROBE), env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 7, result.stderr
    assert result.stdout.split() == ["none", "LOCALHOST", "42"]
    assert result.stderr.splitlines() == [
        "warning: no private network namespace could be created (unshare -n and -rn refused); "
        "running with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and ROS_DOMAIN_ID=42 only"
    ]


@pytest.mark.parametrize("entry", SCRIPTS)
def test_usage_without_a_command_exits_2(entry):
    result = subprocess.run(script(entry), env=outside(), capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"usage: {script(entry)[-1]} COMMAND [ARGS...]"]


@pytest.mark.parametrize("entry", SCRIPTS)
@pytest.mark.parametrize("namespaces", [True, False])
def test_a_missing_command_exits_127_in_one_line(tmp_path, entry, namespaces):
    env = outside() if namespaces else outside(PATH=refusing_unshare(tmp_path))
    command = [*script(entry), "no-such-command-here"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 127
    assert result.stderr.splitlines()[-1].startswith("netns_run: ")
    assert "no-such-command-here" in result.stderr.splitlines()[-1]


def test_netns_run_sh_only_runs_isolation_py():
    """One home for the logic: the shell entry's only command runs isolation.py."""
    lines = (REPO / "scripts" / "netns_run.sh").read_text().splitlines()
    code = [line for line in lines[1:] if line.strip() and not line.startswith("#")]
    assert " ".join(code).split()[:3] == [
        "MTL_NETNS_ENTRY=$0",
        "exec",
        '"${MTL_NETNS_PYTHON:-python3}"',
    ]
    assert "isolation.py" in code[-1] and "unshare" not in "".join(code)
