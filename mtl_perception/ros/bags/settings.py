"""The run's settings: the node's parameters as a bag run sets them, checked before it starts.

What the evaluation sets unless ``--node-params`` says otherwise (:data:`EVALUATION_DEFAULTS`,
the model's input size), the file itself, and what a run always sets (:func:`forced`: the
checkpoint, the transport the bag's camera needs, reliable QoS of depth 1, autostart).
"""

from __future__ import annotations

import math
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from ...config_loading import read_yaml
from ..parameters import NodeParameters

NODE_NAME = "perception_node"
EVALUATION_DEFAULTS = {"score_threshold": 0.001, "max_detections": 100, "diagnostics_period": 0.2}
# Parameters every rclpy node accepts besides its own.
STANDARD_PARAMETERS = {"use_sim_time": bool, "start_type_description_service": bool}
NODE_PARAMETERS = frozenset(spec.name for spec in fields(NodeParameters))
NODE_PARAMETER_TYPES: dict[str, type] = {
    **{spec.name: type(spec.default) for spec in fields(NodeParameters)},
    "autostart": bool,
    **STANDARD_PARAMETERS,
}


def forced(checkpoint: Path, compressed: bool) -> dict[str, Any]:
    """What every run sets whatever ``--node-params`` says."""
    return {
        "checkpoint": str(checkpoint),
        "input_transport": "compressed" if compressed else "raw",
        "qos_reliability": "reliable",
        "qos_depth": 1,
        "autostart": True,
    }


def node_settings(
    model_input: tuple[int, int], overrides: dict[str, Any], checkpoint: Path, compressed: bool
) -> tuple[dict[str, Any], dict[str, Any], NodeParameters]:
    """(defaults, forced, checked effective parameters) of a run.

    Args:
        model_input: the checkpoint's (input_height, input_width), pixels.
        overrides: what the parameter file gives the node (:func:`read_node_params`).

    Raises:
        ValueError: the combination is invalid (the node would refuse it).
    """
    defaults = {
        **EVALUATION_DEFAULTS,
        "input_height": model_input[0],
        "input_width": model_input[1],
    }
    always = forced(checkpoint, compressed)
    effective = {**defaults, **overrides, **always}
    params = NodeParameters(**{k: v for k, v in effective.items() if k in NODE_PARAMETERS})
    params.validate()
    return defaults, always, params


def _applies_to_node(key: str) -> bool:
    """Whether a parameter file's top-level key (``/**``, ``perception_node``, ...) names the
    node the evaluation starts (``/perception_node``)."""
    pattern = re.escape(str(key).strip("/")).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.fullmatch(pattern, NODE_NAME) is not None


def _check_parameter(name: str, value: Any, where: str) -> Any:
    expected = NODE_PARAMETER_TYPES.get(name)
    if expected is None:
        known = ", ".join(sorted(NODE_PARAMETER_TYPES))
        raise ValueError(f"unknown parameter '{name}' for {NODE_NAME} ({where}); known: {known}")
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, float)
    elif expected is tuple:  # a string array (cameras)
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = {
            bool: "true or false",
            int: "an integer",
            float: "a float (e.g. 1.0)",
            tuple: "a list of strings",
        }
        raise ValueError(
            f"parameter '{name}' must be {kind.get(expected, 'a string')}, got "
            f"{type(value).__name__} {value!r} ({where})"
        )
    if expected is float and not math.isfinite(value):
        raise ValueError(f"parameter '{name}' must be finite, got {value!r} ({where})")
    if name == "cameras" and value != [""]:
        raise ValueError(
            f"parameter 'cameras' is {value!r} ({where}): the bag decides the cameras (a rig "
            "bag from record-dataset --cameras starts the node with its own); leave it out or ['']"
        )
    return value


def read_node_params(path: Path | None) -> dict[str, Any]:
    """The parameters a ROS 2 parameter file gives ``perception_node``, checked as the node
    would check them (names, types; ROS refuses an integer for a float parameter).

    Raises:
        ValueError: the file is missing, a folder, not YAML, not in the ROS 2 layout
            (``node: {ros__parameters: {...}}``), or names an unknown parameter or a wrong type.
    """
    if path is None:
        return {}
    where = f"--node-params {path}"
    content = read_yaml(path, "--node-params")
    parameters: dict[str, Any] = {}
    for key, entry in content.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("ros__parameters"), dict):
            raise ValueError(
                f"entry '{key}' has no 'ros__parameters' mapping; a ROS 2 parameter file reads "
                f"'{NODE_NAME}: {{ros__parameters: {{name: value}}}}' ({where})"
            )
        if _applies_to_node(key):
            for name, value in entry["ros__parameters"].items():
                parameters[str(name)] = _check_parameter(str(name), value, where)
    return parameters
