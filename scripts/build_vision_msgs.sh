#!/usr/bin/env bash
# Builds interfaces/vision_msgs with the pip-installed ament_cmake/rosidl wheels and installs it
# into the virtual environment's prefix. The wheels' bootstrapper already puts <venv>/lib on
# LD_LIBRARY_PATH and the Python package lands in site-packages, so no sourcing is needed.
#
# Usage: scripts/build_vision_msgs.sh VENV [DISTRO]
# DISTRO (default kilted) names the ROS 2 wheels in VENV; each distribution builds in a folder of
# its own (build/vision_msgs for Kilted, build/vision_msgs-DISTRO otherwise), so builds for two
# venvs never share CMake caches.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "${1:?usage: build_vision_msgs.sh VENV [DISTRO]}" && pwd)
distro=${2:-kilted}
if [ "$distro" = kilted ]; then build=$root/build/vision_msgs; else build=$root/build/vision_msgs-$distro; fi
build=${VISION_MSGS_BUILD:-$build}  # scripts/gpu_check.sh builds outside the checkout
rm -rf "$build"
mkdir -p "$build"

export AMENT_PREFIX_PATH=$venv
export CMAKE_PREFIX_PATH=$venv

# The std_msgs wheel's exported CMake target names the Python include folder of the machine
# that built the wheel (/opt/python/...). CMake reports it as an error at generation time, yet
# writes the Makefiles and the build is complete and correct. Accept exactly that error.
# make where there is one, else Ninja (some CUDA images have CMake and Ninja but no make).
generator=()
if ! command -v make >/dev/null 2>&1 && command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
set +e
cmake "${generator[@]}" -S "$root/interfaces/vision_msgs" -B "$build" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$venv" \
  -DCMAKE_PREFIX_PATH="$venv" \
  -DPython3_EXECUTABLE="$venv/bin/python" \
  -DBUILD_TESTING=OFF >"$build/cmake.log" 2>&1
status=$?
set -e
if [ $status -ne 0 ]; then
  errors=$(grep -c 'CMake Error' "$build/cmake.log" || true)
  known=$(grep -A3 'CMake Error' "$build/cmake.log" | grep -c 'non-existent path' || true)
  if { [ ! -f "$build/Makefile" ] && [ ! -f "$build/build.ninja" ]; } || [ "$errors" -ne "$known" ] \
    || ! grep -q '"/opt/python/' "$build/cmake.log"; then
    cat "$build/cmake.log" >&2
    echo "build_vision_msgs: cmake failed (log: $build/cmake.log)" >&2
    exit 1
  fi
fi

jobs=$(nproc 2>/dev/null || echo 2)
if ! cmake --build "$build" -j "$jobs" >"$build/make.log" 2>&1; then
  tail -40 "$build/make.log" >&2
  echo "build_vision_msgs: make failed (log: $build/make.log)" >&2
  exit 1
fi
cmake --install "$build" >"$build/install.log" 2>&1

"$venv/bin/python" -c 'from vision_msgs.msg import Detection2DArray, LabelInfo' \
  || { echo "build_vision_msgs: built, but 'import vision_msgs.msg' fails in $venv" >&2; exit 1; }
