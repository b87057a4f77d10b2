"""Starting and stopping the perception node as a process of its own, for a bag run.

Separate from the replay (:mod:`.replay`), which only needs the node's topics: a run that attaches
to a node started elsewhere simply does not start one. How a node process is started and stopped
is :mod:`mtl_perception.ros.node_process`'s; what a bag run gives it is here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..node_process import NodeProcess, parameter_text
from ..node_process import start_node as start_process
from .settings import NODE_NAME

__all__ = ["NodeProcess", "keep_node_log", "parameter_text", "start_node"]


def start_node(
    camera_topic: str,
    compressed: bool,
    params_file: Path | None,
    log: Path,
    defaults: dict[str, Any],
    forced: dict[str, Any],
    namespace: str | None = None,
) -> NodeProcess:
    """The perception node named :data:`NODE_NAME` (in ``namespace``, default the root), its
    input remapped to ``camera_topic``: ``defaults`` (overridable by ``params_file``), then the
    file, then ``forced``; its output goes to ``log``."""
    return start_process(
        NODE_NAME,
        namespace=namespace,
        remaps={"image/compressed" if compressed else "image": camera_topic},
        parameters=defaults,
        params_file=params_file,
        overrides=forced,
        log=log,
    )


def keep_node_log(log: Path, out: Path) -> Path | None:
    """Moves a failed run's node log beside ``out`` (never over an existing file)."""
    if not log.is_file():
        return None
    target = out.parent / f"{out.name}.failed-node.log"
    number = 1
    while target.exists() or target.is_symlink():
        target = out.parent / f"{out.name}.failed-node.{number}.log"
        number += 1
    log.rename(target)
    return target
