"""A perception node started on its own, as ``ros2 launch`` would on a robot, for the tests of
``mtl-bag run --attach``: the small test model's input size and the bag tools' settings."""

from __future__ import annotations

from pathlib import Path

from mtl_perception.ros.bags.node_process import NodeProcess, start_node
from mtl_perception.ros.bags.settings import EVALUATION_DEFAULTS, forced

NAMESPACE = "/robot"


def start_robot_node(checkpoint: Path, log: Path, namespace: str = NAMESPACE) -> NodeProcess:
    """The node in ``namespace`` on /camera/image_raw with what ``mtl-bag evaluate`` gives its
    own (so an attached run's figures can be compared with evaluate's)."""
    settings = {**EVALUATION_DEFAULTS, "input_height": 128, "input_width": 256}
    return start_node(
        "/camera/image_raw",
        False,
        None,
        log,
        settings,
        forced(checkpoint, compressed=False),
        namespace=namespace,
    )
