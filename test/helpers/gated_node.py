"""perception_node with a model that runs only when the test says so.

    python gated_node.py GATE_DIR --ros-args ...

The real node (subscription, latest-frame slot, inference thread, outputs, diagnostics), with one
change to the model: while GATE_DIR/hold exists, each ``Predictor.submit`` call made by the
inference thread creates GATE_DIR/entered-N (N = 0, 1, ... counts the held calls) and then waits
until GATE_DIR/release-N (or GATE_DIR/open) exists before running. The test thereby knows that
the model is busy with a frame and decides when it finishes: "the model is slower than the
input" holds by construction, whatever the speed of the machine. Without GATE_DIR/hold the model
runs freely; GATE_DIR/open releases every held call for good (create it before stopping the node,
whose shutdown joins the inference thread); GATE_DIR/release-after-shutdown releases them once
the node's ROS context has shut down (Ctrl-C while a frame is in the model).
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from pathlib import Path

import rclpy

from mtl_perception.inference.predictor import Predictor
from mtl_perception.ros import node

GATE = Path(sys.argv[1])
_submit = Predictor.submit  # predict() is submit().result(): every forward pass goes through it
_held = itertools.count()


def _gated_submit(self, images, *args, **kwargs):
    if threading.current_thread().name == "inference" and (GATE / "hold").exists():
        index = next(_held)
        (GATE / f"entered-{index}").touch()
        release, opened = GATE / f"release-{index}", GATE / "open"
        after_shutdown = GATE / "release-after-shutdown"
        while not (
            release.exists() or opened.exists() or (after_shutdown.exists() and not rclpy.ok())
        ):
            time.sleep(0.005)
    return _submit(self, images, *args, **kwargs)


Predictor.submit = _gated_submit

if __name__ == "__main__":
    sys.exit(node.main([sys.argv[0], *sys.argv[2:]]))
