"""Which Fast DDS profile a process uses: the shipped large-image profile
(``config/fastdds_large_images.xml``) unless the user chose one.

Fast DDS 3 (ROS 2 Kilted and later) reads ``FASTDDS_DEFAULT_PROFILES_FILE`` (and warns that
``FASTRTPS_DEFAULT_PROFILES_FILE`` is deprecated when that one is set); Fast DDS 2.x (Humble, Iron,
Jazzy) reads only ``FASTRTPS_DEFAULT_PROFILES_FILE``. So the first is always set and the second for
the Fast DDS 2 distributions, to the user's file where they set either. Used by the launch file,
the tests and the venv's start-up line (scripts/setup_env.sh). No ROS import.
"""

from __future__ import annotations

from collections.abc import Mapping

PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")
LARGE_IMAGES_PROFILE = "fastdds_large_images.xml"  # in config/


def _variables(distro: str) -> tuple[str, ...]:
    return PROFILE_VARIABLES if distro in FAST_DDS_2_DISTROS else PROFILE_VARIABLES[:1]


def profile_environment(
    environ: Mapping[str, str], default: str, distro: str | None = None
) -> dict[str, str]:
    """The profile variables ``distro`` (default: ``environ["ROS_DISTRO"]``) reads, set to the
    file the user named in either variable, else to ``default``."""
    distro = environ.get("ROS_DISTRO", "") if distro is None else distro
    chosen = next((environ[name] for name in PROFILE_VARIABLES if environ.get(name)), default)
    return {name: chosen for name in _variables(distro)}


def startup_line(default: str, distro: str) -> str:
    """One line of Python for a venv's ``.pth`` file doing :func:`profile_environment` for
    ``distro`` on ``os.environ`` when the interpreter starts (a .pth line runs only if it starts
    with import)."""
    chosen = " or ".join(f"os.environ.get({name!r})" for name in PROFILE_VARIABLES)
    sets = "; ".join(f"os.environ.__setitem__({name!r}, p)" for name in _variables(distro))
    return f"import os; p = {chosen} or {default!r}; {sets}"
