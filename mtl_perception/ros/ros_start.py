"""Starting rclpy for one of our nodes' ``main()``: the command line's parameter files checked
first, and rcl's refusals turned into one line."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any

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
    except _rclpy.UnknownROSArgsError as error:  # e.g. --help after --ros-args
        return f"unknown ROS argument(s) {error} (node options go before --ros-args)"
    except _rclpy.RCLError as error:
        return rcl_reason(error)
    return None


def node_command_line(arguments: Sequence[str] | None, node_options: dict[str, Any]) -> list[str]:
    """The command line a node was given, as rcl reads it: ``arguments`` (default
    ``sys.argv``, nothing when ``use_global_arguments`` is false) then its ``cli_args``; the
    ``--params-file`` sections in it tell the keys meant for every node from the node's own."""
    command_line = list(sys.argv if arguments is None else arguments)
    if not node_options.get("use_global_arguments", True):
        command_line = []
    return command_line + list(node_options.get("cli_args") or [])


def help_requested(arguments: Sequence[str]) -> bool:
    """Whether ``-h`` or ``--help`` is among the node's own arguments (before ``--ros-args``)."""
    own = list(arguments[1:])
    if "--ros-args" in own:
        own = own[: own.index("--ros-args")]
    return "-h" in own or "--help" in own


def usage(executable: str, summary: str, config: type, descriptions: dict[str, str]) -> str:
    """The ``--help`` text of a node: how to run it, ``summary``, and every parameter of the
    dataclass ``config`` with its default and description."""
    lines = [
        f"usage: {executable} [--ros-args [-p NAME:=VALUE]... [--params-file FILE] "
        "[-r FROM:=TO]...]",
        "",
        summary,
        "",
        "parameters (-p NAME:=VALUE, or a --params-file section):",
    ]
    for spec in fields(config):
        default = spec.default if spec.default is not MISSING else ""
        shown = list(default) if isinstance(default, tuple) else default
        lines.append(f"  {spec.name} (default {shown!r}): {descriptions[spec.name]}")
    return "\n".join(lines)
