"""perception_node on a machine where ``torch.compile`` fails (as an untried CUDA fast path can):

    python broken_compile_node.py --ros-args ...

The real node, with ``torch.compile`` replaced by one that raises, so that a node configured with
``compile`` other than none meets a fast path that fails at set-up.
"""

from __future__ import annotations

import sys

import torch

from mtl_perception.ros import node


def _broken_compile(*args, **kwargs):
    raise RuntimeError("injected: the compiler is broken on this machine")


torch.compile = _broken_compile

if __name__ == "__main__":
    sys.exit(node.main(sys.argv))
