"""Starting rclpy for one of our nodes' ``main()``: the command line's parameter files checked
first, and rcl's refusals turned into one line."""

from __future__ import annotations

import re
from collections.abc import Sequence

import rclpy
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

from .parameter_files import params_file_problem


def rcl_reason(error: Exception) -> str:
    """An ``RCLError``'s message on one line, without rcl's source locations (", at x.c:12")."""
    return re.sub(r", at \S+:\d+", "", " ".join(str(error).split()))


def init_ros(arguments: Sequence[str]) -> str | None:
    """``rclpy.init`` with ``arguments`` (the node's command line), once its ``--params-file``
    files pass :func:`params_file_problem`. Returns None when rclpy is initialised, else the
    problem in one line (a parameter file rcl cannot parse, a bad ``--ros-args``) for the caller
    to print as ``error: ...`` and exit 2."""
    problem = params_file_problem(list(arguments))
    if problem is not None:
        return problem
    try:
        rclpy.init(args=list(arguments))
    except _rclpy.RCLError as error:
        return rcl_reason(error)
    return None
