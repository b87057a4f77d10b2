"""Where a node's parameter overrides came from: the ``--ros-args`` of its command line.

ROS 2 merges every ``--params-file`` section that applies to a node (``/**``, ``/ns/*``,
``/ns/node``) and every ``-p`` into one set of overrides, and forgets which was which. The node
refuses keys it does not have in sections addressed to it by name, but one file per robot is
common: its ``/**`` section holds keys for other nodes too (``frame_id``, ``publish_rate``), which
this node only reports. So this module reads the same files again and tells the keys that reached
the node only through wildcard sections from the others. No ROS import.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROS_ARGS, END_OF_ROS_ARGS = "--ros-args", "--"
PARAMS_FILE = "--params-file"
PARAMETER_FLAGS = ("-p", "--param")
WILDCARDS = ("*", "**")


@dataclass
class OverrideSources:
    """The parameter names given to one node, by where they came from."""

    named: set[str] = field(default_factory=set)  # -p, or a section naming the node
    shared: set[str] = field(default_factory=set)  # a wildcard section (/**, /ns/*) only


def ros_argument_values(arguments: Sequence[str], flags: Sequence[str]) -> list[str]:
    """The values following any of ``flags`` inside the ``--ros-args`` parts of ``arguments``
    (a command line; rcl ignores these flags elsewhere), in order."""
    values, inside = [], False
    tokens = iter(arguments)
    for token in tokens:
        if token == ROS_ARGS:
            inside = True
        elif token == END_OF_ROS_ARGS:
            inside = False
        elif inside and token in flags:
            value = next(tokens, None)
            if value is not None:
                values.append(value)
    return values


def params_file_problem(arguments: Sequence[str]) -> str | None:
    """None if every ``--params-file`` of ``arguments`` is a readable file; else one line naming
    the first that is not (rclpy would raise RCLError with a traceback)."""
    for name in ros_argument_values(arguments, (PARAMS_FILE,)):
        path = Path(name)
        if not path.exists():
            return f"parameter file not found: {name} (--params-file)"
        if not path.is_file():
            return f"parameter file is not a file: {name} (--params-file)"
        try:
            path.open("rb").close()
        except OSError as error:
            return f"parameter file cannot be read: {name}: {error.strerror} (--params-file)"
    return None


def parameter_sections(
    tree: Any, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], dict]]:
    """(node-name tokens, ros__parameters) of every section of a parameter file's YAML, nested
    namespaces joined as rcl joins them (``ns: {node: {ros__parameters: ...}}`` is ns/node)."""
    if not isinstance(tree, dict):
        return
    for key, value in tree.items():
        if key == "ros__parameters":
            if isinstance(value, dict):
                yield prefix, value
            continue
        tokens = tuple(token for token in str(key).split("/") if token)
        yield from parameter_sections(value, prefix + tokens)


def flat_parameters(parameters: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, value) of a ``ros__parameters`` map, nested maps joined with '.' as rcl does."""
    for key, value in parameters.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flat_parameters(value, f"{name}.")
        else:
            yield name, value


def _flat_names(parameters: dict) -> Iterator[str]:
    """Parameter names of a ``ros__parameters`` map (:func:`flat_parameters`)."""
    return (name for name, _ in flat_parameters(parameters))


def pattern_matches(pattern: Sequence[str], name: Sequence[str]) -> bool:
    """Whether a section's node-name tokens (``*``: one token, ``**``: any number) match the
    tokens of a fully qualified node name."""
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(pattern_matches(rest, name[i:]) for i in range(len(name) + 1))
    if not name:
        return False
    return (head == "*" or head == name[0]) and pattern_matches(rest, name[1:])


def override_sources(arguments: Sequence[str], node_name: str) -> OverrideSources:
    """Which parameter names ``arguments`` (a command line) give the node whose fully qualified
    name is ``node_name`` (``/ns/node``) by name, and which only through wildcard sections.

    A section names the node when its last token is the node's name, not a wildcard. A file this
    cannot read (rcl read it, so that is unexpected) counts as naming the node: strict.
    """
    target = tuple(token for token in node_name.split("/") if token)
    sources = OverrideSources()
    for value in ros_argument_values(arguments, PARAMETER_FLAGS):
        sources.named.add(value.split(":=", 1)[0].rpartition(":")[2])
    for name in ros_argument_values(arguments, (PARAMS_FILE,)):
        try:
            tree = yaml.safe_load(Path(name).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            sources.named.add("*")  # unreadable here: treat every key as addressed by name
            continue
        for pattern, parameters in parameter_sections(tree):
            if not pattern_matches(pattern, target):
                continue
            by_wildcard = pattern[-1] in WILDCARDS
            (sources.shared if by_wildcard else sources.named).update(_flat_names(parameters))
    sources.shared -= sources.named
    if "*" in sources.named:
        sources.shared.clear()
    return sources
