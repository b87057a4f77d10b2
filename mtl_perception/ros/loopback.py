"""Brings the loopback interface up inside a fresh network namespace without iproute2.

    python -m mtl_perception.ros.loopback

``unshare -n`` gives a namespace whose ``lo`` is down; ``ip link set lo up`` raises it where
iproute2 is installed. Some machines (CUDA images) have no ``ip``: this does the same with two
ioctl calls (SIOCGIFFLAGS, SIOCSIFFLAGS). Standard library only, no ROS import; scripts/netns_run.sh
and ros/isolation.py fall back to it.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import sys

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IFREQ = "16sH14x"  # struct ifreq: interface name, then the flags (short) of the union


def bring_up(interface: str = "lo") -> None:
    """Sets IFF_UP on ``interface``. Raises OSError where that is not permitted."""
    name = interface.encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack(IFREQ, fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack(IFREQ, name, 0)))[
            1
        ]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(IFREQ, name, flags | IFF_UP))


if __name__ == "__main__":
    try:
        bring_up()
    except OSError as error:
        sys.exit(f"loopback: could not bring lo up: {error}")
