"""Files that ship inside the package: configs, class maps, the Fast DDS profile, the rviz config
and the vision_msgs message definitions.

They are package data (``mtl_perception/config/``, ``mtl_perception/ros/msg_definitions/``), so
``importlib.resources`` finds them the same way from a source checkout, an editable install, a
wheel and a colcon install; nothing here knows where a source tree is. A colcon install also
copies ``config/`` to ``share/mtl_perception/config`` for ``ros2 launch`` and rviz (setup.py).
In a source checkout ``config/`` at the top is a link to ``mtl_perception/config``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PACKAGE = "mtl_perception"
CONFIG_FOLDER = "config"


def _package_folder(*parts: str) -> Path:
    # A regular (unzipped) package: importlib.resources hands back a real path.
    return Path(str(files(PACKAGE).joinpath(*parts)))


def config_file(name: str) -> Path:
    """The packaged config file ``name`` (e.g. ``classes_cityscapes.yaml``)."""
    return _package_folder(CONFIG_FOLDER, name)


def config_files() -> list[Path]:
    """Every packaged config file, sorted by name."""
    return sorted(p for p in _package_folder(CONFIG_FOLDER).iterdir() if p.is_file())


def vision_msgs_definitions() -> Path:
    """Folder of the packaged vision_msgs ``.msg`` files (vision_msgs 4.1.1, ros2 branch)."""
    return _package_folder("ros", "msg_definitions", "vision_msgs")


def resolve_config_path(path: str | Path) -> Path:
    """A config path as users write it, on the command line or inside a config file.

    A path that exists (absolute, or relative to the working directory) is used as it is.
    Otherwise ``config/<name>`` names the packaged file, so
    ``--config config/train_cityscapes.yaml`` works from any directory and from an installed
    package. Anything else is returned unchanged for the caller to report as missing.
    """
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    if len(path.parts) == 2 and path.parts[0] == CONFIG_FOLDER:
        packaged = config_file(path.parts[1])
        if packaged.is_file():
            return packaged
    return path
