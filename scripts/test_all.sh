#!/usr/bin/env bash
# `make test`: the whole suite on the default ROS 2 (Kilted wheels), the robot path
# (scripts/check_robot_path.sh), and the node, bag and package tests on ROS 2 Jazzy in a venv of
# its own. The Jazzy set-up runs in the background while the first suite runs (it is mostly
# unpacking wheels). Every part runs even when an earlier one failed; the exit code is non-zero
# if any failed, and the last lines sum up each distribution.
#
# Usage: scripts/test_all.sh VENV    (set-up of VENV already done by make)
#   MTL_TEST_JAZZY=0  skips the Jazzy part (it is skipped anyway with ROS_DISTRO=jazzy as the
#                     main distribution or a sourced system ROS 2).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "${1:?usage: test_all.sh VENV}" && pwd)
results=$root/build/test-results
jazzy_venv=${JAZZY_VENV:-$root/.venv-jazzy}
# The Jazzy part: everything that talks to rclpy, DDS or the ROS package layout.
jazzy_tests=(test/test_node.py test/test_bags.py test/test_dds_exchange.py
  test/test_vision_msgs_types.py test/test_package_layout.py)
cd "$root"
rm -rf "$results" && mkdir -p "$results"

main_distro=${ROS_DISTRO:-kilted}
with_jazzy=${MTL_TEST_JAZZY:-1}
if [ "$main_distro" != kilted ] || python3 -c 'import rclpy' 2>/dev/null; then
  with_jazzy=0  # the main run is already Jazzy, or a system ROS 2 is sourced
fi
if [ "$with_jazzy" = 1 ]; then
  (ROS_DISTRO=jazzy VENV=$jazzy_venv scripts/setup_env.sh >"$results/setup-jazzy.log" 2>&1) &
  jazzy_setup=$!
fi

# Two pytest workers (pytest-xdist), whole files per worker: much of the suite waits on node
# start-ups and DDS, so two files at a time use the 2 cores better. One torch thread per process
# (two workers x two threads on two cores slowed torch). Each worker has ROS domains of its own
# (test/conftest.py). MTL_TEST_WORKERS=1 runs serially.
workers=${MTL_TEST_WORKERS:-2}
parallel=()
if [ "$workers" -gt 1 ]; then
  parallel=(-n "$workers" --dist loadfile)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi

failed=()
echo "== ROS 2 $main_distro: the whole suite${parallel[*]:+ (${workers} workers)} =="
"$venv/bin/python" -m pytest "${parallel[@]}" --junitxml="$results/$main_distro.xml" \
  || failed+=("pytest ($main_distro)")
echo "== the robot path: colcon build, installed executables, colcon test =="
scripts/check_robot_path.sh "$venv" || failed+=("robot path")
if [ "$with_jazzy" = 1 ]; then
  echo "== ROS 2 jazzy: node, bag and package tests (${jazzy_tests[*]}) =="
  if wait "$jazzy_setup"; then
    ROS_DISTRO=jazzy "$jazzy_venv/bin/python" -m pytest "${parallel[@]}" \
      --junitxml="$results/jazzy.xml" "${jazzy_tests[@]}" || failed+=("pytest (jazzy)")
  else
    tail -30 "$results/setup-jazzy.log"
    echo "error: the Jazzy set-up failed (log: $results/setup-jazzy.log)"
    failed+=("jazzy set-up")
  fi
fi

"$venv/bin/python" - "$results" <<'PY'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

total = {"passed": 0, "failed": 0, "skipped": 0}
for path in sorted(Path(sys.argv[1]).glob("*.xml")):
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests, skipped = int(suite.get("tests")), int(suite.get("skipped"))
    failed = int(suite.get("failures")) + int(suite.get("errors"))
    counts = {"passed": tests - failed - skipped, "failed": failed, "skipped": skipped}
    for key, value in counts.items():
        total[key] += value
    print(f"ROS 2 {path.stem}: {counts['passed']} passed, {failed} failed, {skipped} skipped")
print(f"all: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
PY
if [ ${#failed[@]} -gt 0 ]; then
  echo "make test failed: ${failed[*]}"
  exit 1
fi
