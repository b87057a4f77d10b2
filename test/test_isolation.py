"""Tests run where DDS traffic cannot leave the machine."""

from __future__ import annotations

import os
import socket

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
