"""What perception.launch.py decides, as plain functions (no launch import), so tests can check
the decisions without launch_ros, which has no wheels."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

NODE_NAME = "perception_node"
# The rviz config shipped in config/ names the node's topics for the empty namespace.
_RVIZ_TOPIC = re.compile(rf"^(\s*Value:\s*)/{NODE_NAME}/", re.MULTILINE)


def node_parameters(params_file: str, checkpoint: str) -> list[str | dict[str, str]]:
    """The node's parameter sources, in order: the params file, then ``checkpoint`` only when the
    launch argument was given. A later source wins in ROS 2, so an always-present empty
    ``checkpoint`` would wipe the one in the user's params file."""
    sources: list[str | dict[str, str]] = [params_file]
    if checkpoint:
        sources.append({"checkpoint": checkpoint})
    return sources


def node_namespace_prefix(namespace: str) -> str:
    """``robot1`` or ``/robot1/`` -> ``/robot1``; the empty namespace -> ``""``."""
    parts = namespace.strip("/")
    return f"/{parts}" if parts else ""


def rviz_config_for_namespace(text: str, namespace: str) -> str:
    """The shipped rviz config, every ``/perception_node/...`` topic moved under ``namespace``."""
    prefix = node_namespace_prefix(namespace)
    return _RVIZ_TOPIC.sub(lambda m: f"{m.group(1)}{prefix}/{NODE_NAME}/", text)


def write_rviz_config(template: str | Path, namespace: str) -> Path:
    """Writes the namespaced rviz config to a new temporary file (kept for rviz to read)."""
    text = rviz_config_for_namespace(Path(template).read_text(), namespace)
    with tempfile.NamedTemporaryFile(
        "w", prefix="mtl_perception_", suffix=".rviz", delete=False
    ) as file:
        file.write(text)
    return Path(file.name)
