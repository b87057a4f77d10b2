"""The rviz2 config perception.launch.py writes for ``use_rviz:=true``.

The shipped ``config/perception.rviz`` shows the unnamed camera's outputs of a node in the empty
namespace (``/perception_node/overlay``, ``/perception_node/semantic_color``). At launch its
displays are pointed at the node's namespace and, with named cameras, repeated once per camera:
one group display named after the camera holding that camera's displays
(``/<ns>/perception_node/<camera>/overlay``, ...), the topics the overlay node (which the launch
starts with rviz) publishes under the perception node's name.

The file goes to the temporary folder under a name of its own per node namespace
(:func:`rviz_config_path`), so launches in different namespaces never share one.
"""

from __future__ import annotations

import copy
import hashlib
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..outputs import write_text
from .cameras import OUTPUTS, output_topic
from .launch_support import (
    NODE_NAME,
    UNNAMED,
    check_camera_topics,
    check_namespace,
    node_namespace_prefix,
)

READABLE_CHARACTERS = 40  # of the namespace in the file name; a hash tells the rest apart


def rviz_config(template: str, namespace: str, cameras: tuple[str, ...] = UNNAMED) -> str:
    """The shipped rviz config text ``template`` for the node in ``namespace`` with
    ``cameras`` (its ``cameras`` parameter; ``("",)`` for the one unnamed camera).

    Raises:
        ValueError: ``namespace`` is not a namespace the node can have (naming
            ``namespace:=``), a camera makes an invalid topic (as the node refuses it), or a
            display of the template shows no output of the node.
    """
    check_namespace(namespace)
    check_camera_topics(tuple(cameras), namespace)
    config = yaml.safe_load(template)
    manager = config["Visualization Manager"]
    displays = manager["Displays"]
    if tuple(cameras) == UNNAMED:
        manager["Displays"] = camera_displays(displays, namespace, "")
    else:
        manager["Displays"] = [
            {
                "Class": "rviz_common/Group",
                "Displays": camera_displays(displays, namespace, camera),
                "Enabled": True,
                "Name": camera,
                "Value": True,
            }
            for camera in cameras
        ]
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def camera_displays(
    template: list[dict[str, Any]], namespace: str, camera: str
) -> list[dict[str, Any]]:
    """Copies of the template's displays showing ``camera``'s outputs of the node in
    ``namespace``."""
    template_prefix = f"/{NODE_NAME}/"
    displays = []
    for display in template:
        shown = display["Topic"]["Value"]
        output = shown.removeprefix(template_prefix)
        if not shown.startswith(template_prefix) or output not in OUTPUTS:
            raise ValueError(
                f"rviz display '{display.get('Name')}' shows {shown}, not one of "
                f"{template_prefix}{{{', '.join(OUTPUTS)}}}"
            )
        copied = copy.deepcopy(display)
        copied["Topic"]["Value"] = node_output_topic(namespace, camera, output)
        displays.append(copied)
    return displays


def node_output_topic(namespace: str, camera: str, output: str) -> str:
    """The absolute name of ``camera``'s ``output`` (one of OUTPUTS) of the node in
    ``namespace``: ("robot1", "front", "overlay") -> ``/robot1/perception_node/front/overlay``."""
    private = output_topic(camera, output).removeprefix("~/")
    return f"{node_namespace_prefix(namespace)}/{NODE_NAME}/{private}"


def write_rviz_config(
    template: str | Path, namespace: str, cameras: tuple[str, ...] = UNNAMED
) -> Path:
    """Writes :func:`rviz_config` for rviz to read to :func:`rviz_config_path`, replaced
    atomically at each launch (so launches leave no pile behind).

    Raises:
        ValueError: as :func:`rviz_config`; nothing is written then.
    """
    text = rviz_config(Path(template).read_text(), namespace, cameras)
    return write_text(rviz_config_path(namespace), text)


def rviz_config_path(namespace: str) -> Path:
    """``$TMPDIR/mtl_perception_<namespace>_<hash>.rviz``: one file per node namespace
    (``robot1`` and ``/robot1/`` are one). The hash of the exact namespace keeps apart those
    that read alike (``/a/b``, ``a_b``); the readable part is cut short, so the name never
    exceeds a file name's limit."""
    absolute = node_namespace_prefix(namespace) or "/"
    digest = hashlib.sha256(absolute.encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9_]", "_", absolute.strip("/"))[:READABLE_CHARACTERS]
    name = "_".join(part for part in ("mtl_perception", readable, digest) if part)
    return Path(tempfile.gettempdir()) / f"{name}.rviz"
