"""Which Fast DDS profile a process uses: the shipped large-image profile
(``config/fastdds_large_images.xml``) unless the user chose one.

Fast DDS 3 (ROS 2 Kilted) reads only ``FASTDDS_DEFAULT_PROFILES_FILE``; Fast DDS 2.x (Humble,
Jazzy) reads only ``FASTRTPS_DEFAULT_PROFILES_FILE``. Both are set, to the user's file where they
set either. Used by the launch file, the tests and the venv's start-up line (scripts/setup_env.sh).
No ROS import: the launch file and set-up use it too.
"""

from __future__ import annotations

from collections.abc import Mapping

PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
LARGE_IMAGES_PROFILE = "fastdds_large_images.xml"  # in config/


def profile_environment(environ: Mapping[str, str], default: str) -> dict[str, str]:
    """Both profile variables, set to the file the user named in either, else to ``default``."""
    chosen = next((environ[name] for name in PROFILE_VARIABLES if environ.get(name)), default)
    return {name: chosen for name in PROFILE_VARIABLES}


def startup_line(default: str) -> str:
    """One line of Python for a venv's ``.pth`` file doing :func:`profile_environment` on
    ``os.environ`` when the interpreter starts (a .pth line runs only if it starts with import)."""
    chosen = " or ".join(f"os.environ.get({name!r})" for name in PROFILE_VARIABLES)
    sets = "; ".join(f"os.environ.__setitem__({name!r}, p)" for name in PROFILE_VARIABLES)
    return f"import os; p = {chosen} or {default!r}; {sets}"
