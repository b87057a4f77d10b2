"""The run's settings: the node's parameters as a bag run sets them, checked before it starts.

What the evaluation sets unless ``--node-params`` says otherwise (:data:`EVALUATION_DEFAULTS`,
the model's input size), the file itself, and what a run always sets (:func:`forced`: the
checkpoint, the transport the bag's camera needs, reliable QoS of depth 1, autostart).
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from ...config_loading import read_yaml
from ..parameter_files import (
    PARAMS_FILE,
    ROS_ARGS,
    OverrideSources,
    flat_parameters,
    override_sources,
    parameter_sections,
    pattern_matches,
)
from ..parameters import NodeParameters
from .read import COMPRESSED_TYPE

NODE_NAME = "perception_node"
SHARED_SECTION = ("**",)  # ``/**``: one rcl entry with the run's ``-p`` values
EVALUATION_DEFAULTS = {"score_threshold": 0.001, "max_detections": 100, "diagnostics_period": 0.2}
# Parameters every rclpy node accepts besides its own.
STANDARD_PARAMETERS = {"use_sim_time": bool, "start_type_description_service": bool}
NODE_PARAMETERS = frozenset(spec.name for spec in fields(NodeParameters))
NODE_PARAMETER_TYPES: dict[str, type] = {
    **{spec.name: type(spec.default) for spec in fields(NodeParameters)},
    "autostart": bool,
    **STANDARD_PARAMETERS,
}


FORCED_BY = {
    "checkpoint": "--checkpoint",
    "input_transport": "the bag's camera topic type",
    "qos_reliability": "every bag run",
    "qos_depth": "every bag run",
    "autostart": "every bag run",
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


def _sections(content: dict, where: str) -> list[tuple[tuple[str, ...], dict]]:
    """The sections of a parameter file that apply to ``/perception_node``, in the order rclpy
    applies them: ``/**`` first (one entry with the run's own ``-p`` values, which come first),
    then the others as the file orders them (a later one wins).

    Raises:
        ValueError: a top-level entry holds no ``ros__parameters`` mapping.
    """
    for key, entry in content.items():
        if not any(True for _ in parameter_sections({key: entry})):
            raise ValueError(
                f"entry '{key}' has no 'ros__parameters' mapping; a ROS 2 parameter file reads "
                f"'{NODE_NAME}: {{ros__parameters: {{name: value}}}}' ({where})"
            )
    applying = [
        (pattern, section)
        for pattern, section in parameter_sections(content)
        if pattern_matches(pattern, (NODE_NAME,))
    ]
    return sorted(applying, key=lambda item: item[0] != SHARED_SECTION)


def _sources(path: Path) -> OverrideSources:
    """Which of the file's keys reach ``/perception_node`` by name and which only through
    wildcard sections: the node's own rule (:func:`..parameter_files.override_sources`)."""
    return override_sources([ROS_ARGS, PARAMS_FILE, str(path)], f"/{NODE_NAME}")


def read_node_params(path: Path | None) -> dict[str, Any]:
    """The parameters a ROS 2 parameter file gives ``perception_node``, checked as the node
    would check them (names, types; ROS refuses an integer for a float parameter). Keys the
    node does not have are refused in sections that name it and skipped in wildcard sections
    (``/**``: a file shared with other nodes; :func:`foreign_keys` names them).

    Raises:
        ValueError: the file is missing, a folder, not YAML, not in the ROS 2 layout
            (``node: {ros__parameters: {...}}``), or names an unknown parameter or a wrong type.
    """
    if path is None:
        return {}
    where = f"--node-params {path}"
    content = read_yaml(path, "--node-params")
    sections = _sections(content, where)
    shared = _sources(path).shared
    parameters: dict[str, Any] = {}
    for _, section in sections:
        for name, value in flat_parameters(section):
            if name in NODE_PARAMETER_TYPES or name not in shared:
                parameters[name] = _check_parameter(name, value, where)
    return parameters


def foreign_keys(path: Path | None) -> list[str]:
    """The keys of a parameter file (read by :func:`read_node_params` first) that reach
    ``perception_node`` only through wildcard sections and that it does not have: other
    nodes' parameters, which the node only warns about. Sorted."""
    if path is None:
        return []
    return sorted(name for name in _sources(path).shared if name not in NODE_PARAMETER_TYPES)


def forced_in_file(path: Path | None) -> dict[str, tuple[Any, str]]:
    """The run's forced parameters (:func:`forced`) that ``path`` sets in a section other
    than ``/**``: rclpy applies such a section after the run's own ``-p`` values, so the
    file's value would win. Name -> (value, section)."""
    if path is None:
        return {}
    found: dict[str, tuple[Any, str]] = {}
    for pattern, section in _sections(read_yaml(path, "--node-params"), f"--node-params {path}"):
        if pattern == SHARED_SECTION:
            continue
        for name, value in flat_parameters(section):
            if name in FORCED_BY:
                found[name] = (value, "/".join(pattern))
    return found


def check_forced(path: Path | None, checkpoint: Path, camera_topic: str, camera_type: str) -> None:
    """Refuses a parameter file that sets what the run decides, to another value, where the
    file would win (:func:`forced_in_file`): the bag's message type decides the transport,
    ``--checkpoint`` the checkpoint, the run its QoS and autostart.

    Raises:
        ValueError: naming the parameter, the file and what decides it.
    """
    always = forced(checkpoint, camera_type == COMPRESSED_TYPE)
    for name, (value, section) in forced_in_file(path).items():
        if value == always[name]:
            continue
        if name == "input_transport":
            kind = "compressed" if camera_type == COMPRESSED_TYPE else "raw"
            raise ValueError(
                f"the bag holds {kind} {camera_type} on {camera_topic}, but --node-params "
                f"{path} says input_transport {value} (section '{section}'): the bag's message "
                "type decides the transport; leave input_transport out"
            )
        raise ValueError(
            f"--node-params {path} sets {name} {value!r} (section '{section}'), but "
            f"{FORCED_BY[name]} sets it to {always[name]!r}; leave {name} out"
        )
