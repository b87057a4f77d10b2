"""perception_node whose model takes as long to load as the test wants:

    python slow_load_node.py GATE_DIR --ros-args ...

The real node, with one change: loading the checkpoint (at configure) creates GATE_DIR/loading,
then waits until GATE_DIR/loaded exists or the ROS context is shut down (SIGINT, SIGTERM), before
it loads. A test can thereby stop the node while it is loading its model, for certain.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import rclpy

from mtl_perception.inference.fallback import FallbackPredictor
from mtl_perception.ros import node

GATE = Path(sys.argv[1])
_from_checkpoint = FallbackPredictor.from_checkpoint.__func__


def _slow_from_checkpoint(cls, *args, **kwargs):
    (GATE / "loading").touch()
    while not (GATE / "loaded").exists() and rclpy.ok():
        time.sleep(0.01)
    return _from_checkpoint(cls, *args, **kwargs)


FallbackPredictor.from_checkpoint = classmethod(_slow_from_checkpoint)

if __name__ == "__main__":
    sys.exit(node.main([sys.argv[0], *sys.argv[2:]]))
