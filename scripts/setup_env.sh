#!/usr/bin/env bash
# Creates or updates .venv with everything mtl_perception needs, idempotently.
#
# Two modes:
#   system  a sourced system ROS 2 (ROS_DISTRO set and rclpy importable): rclpy, the message
#           packages and vision_msgs come from it; the venv sees them through PYTHONPATH.
#   wheels  otherwise: ROS 2 from PyPI wheels (requirements/ros-$ROS_DISTRO.txt), vision_msgs
#           built from interfaces/. ROS_DISTRO picks the distribution: kilted (the default,
#           in .venv) or jazzy (in .venv-jazzy; the Makefile picks the folder, VENV overrides).
#
# Each step keeps a stamp holding the hash of its inputs, so a re-run with nothing
# changed only hashes a few files.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
distro=${ROS_DISTRO:-kilted}
if [ "$distro" = jazzy ]; then venv=${VENV:-$root/.venv-jazzy}; else venv=${VENV:-$root/.venv}; fi
stamps=$venv/.stamps
python_bin=${PYTHON:-python3}

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

inputs_hash() {  # hash of the content of files and folders given as arguments
  (cd "$root" && find -L "$@" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}
up_to_date() { [ -f "$stamps/$1" ] && [ "$(cat "$stamps/$1")" = "$2" ]; }
mark_done() { mkdir -p "$stamps"; echo "$2" >"$stamps/$1"; }

if [ -n "${ROS_DISTRO:-}" ] && "$python_bin" -c 'import rclpy' 2>/dev/null; then
  mode=system
else
  mode=wheels
  case "$distro" in
    kilted | jazzy) ;;
    *) die "ROS_DISTRO='$distro' has no ROS 2 wheels here and no sourced system ROS 2 provides rclpy; supported: kilted (default), jazzy" ;;
  esac
fi
# Wheel stamps name the distribution, so that a venv never mixes two distributions' wheels (a
# switch recreates the venv). Kilted's and system mode's keep their earlier form, so existing
# venvs stay valid.
tag=""
[ "$mode" = system ] || [ "$distro" = kilted ] || tag=" $distro"

# 0. System tools: a compiler and CMake (vision_msgs), iproute2 and util-linux (test namespaces).
missing=()
for tool in cmake:cmake g++:g++ make:make ip:iproute2 unshare:util-linux; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing system packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    die "missing system tools; install them first: sudo apt install ${missing[*]}"
  fi
fi

# 1. The virtual environment.
venv_key="$mode$tag $("$python_bin" -c 'import sys; print(sys.version.split()[0])')"
if ! up_to_date venv "$venv_key" || [ ! -x "$venv/bin/python" ]; then
  log "creating $venv ($mode mode${tag:+, ROS 2 ${distro^}})"
  rm -rf "$venv"
  if [ "$mode" = system ]; then
    "$python_bin" -m venv --system-site-packages "$venv"
  else
    "$python_bin" -m venv "$venv"
  fi
  mark_done venv "$venv_key"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

# 2. Python dependencies (pins in requirements/).
key=$(inputs_hash requirements/python.txt requirements/runtime-rosdep.txt requirements/runtime-pip.txt \
  requirements/dev.txt requirements/test.txt requirements/constraints.txt)
if ! up_to_date python-deps "$key"; then
  log "installing Python dependencies (requirements/python.txt, requirements/dev.txt)"
  "${pip[@]}" install -q -r "$root/requirements/python.txt" -r "$root/requirements/dev.txt" \
    -c "$root/requirements/constraints.txt"
  mark_done python-deps "$key"
fi

# 3. ROS 2: wheels and vision_msgs, or checks against the system install.
if [ "$mode" = wheels ]; then
  ros_req=requirements/ros-$distro.txt
  key=$(inputs_hash "$ros_req" requirements/constraints.txt)$tag
  if ! up_to_date ros-wheels "$key"; then
    log "installing ROS 2 ${distro^} wheels ($ros_req)"
    if [ "$distro" = kilted ]; then
      "${pip[@]}" install -q -r "$root/$ros_req" -c "$root/requirements/constraints.txt"
    else
      # constraints.txt pins Kilted's ros-* wheels; the other pins (empy, lark, catkin-pkg,
      # numpy...) hold for every distribution. The ros-<distro>-* wheels pin their ros-* parts.
      grep -v -i '^ros-' "$root/requirements/constraints.txt" >"$stamps/constraints-$distro.txt"
      "${pip[@]}" install -q -r "$root/$ros_req" -c "$stamps/constraints-$distro.txt"
    fi
    mark_done ros-wheels "$key"
  fi
  key=$(inputs_hash interfaces/vision_msgs scripts/build_vision_msgs.sh "$ros_req")$tag
  if ! up_to_date vision-msgs "$key"; then
    log "building vision_msgs from interfaces/vision_msgs${tag:+ for ROS 2 ${distro^}}"
    "$root/scripts/build_vision_msgs.sh" "$venv" "$distro"
    mark_done vision-msgs "$key"
  fi
else
  "$venv/bin/python" -c 'import vision_msgs.msg' 2>/dev/null \
    || die "system ROS 2 '$ROS_DISTRO' is sourced but vision_msgs is missing: sudo apt install ros-$ROS_DISTRO-vision-msgs"
fi

# 4. Default Fast DDS profile for large images, unless the user set one (see README): a .pth
#    line sets FASTDDS_DEFAULT_PROFILES_FILE (Fast DDS 3, Kilted), and FASTRTPS_... too for the
#    Fast DDS 2 distributions (Jazzy), when Python starts (mtl_perception/ros/fastdds.py).
pth=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/mtl_perception_fastdds.pth
line=$(PYTHONPATH="$root" "$venv/bin/python" -c 'import sys; from mtl_perception.ros.fastdds import startup_line; print(startup_line(*sys.argv[1:]))' \
  "$root/mtl_perception/config/fastdds_large_images.xml" "$distro")
if [ ! -f "$pth" ] || [ "$(cat "$pth")" != "$line" ]; then
  echo "$line" >"$pth"
fi

# 5. The package itself, editable, so console scripts exist and edits apply at once.
key=$(inputs_hash setup.py setup.cfg package.xml)
if ! up_to_date package "$key"; then
  log "installing mtl_perception (editable)"
  "${pip[@]}" install -q --no-deps --no-build-isolation -e "$root"
  # setup.cfg sends console scripts to lib/mtl_perception (where `ros2 run` looks, as colcon
  # needs); link them into bin/ so they are on the venv's PATH as well.
  for script in "$venv"/lib/mtl_perception/*; do
    [ -f "$script" ] && ln -sf "$script" "$venv/bin/$(basename "$script")"
  done
  mark_done package "$key"
fi

log "environment ready: $venv ($mode mode${tag:+, ROS 2 ${distro^}})"
