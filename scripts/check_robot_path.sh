#!/usr/bin/env bash
# The robot path, as `make test` proves it on every run (issue: "The robot path").
#
# 1. A fresh copy of this package (tracked and new files, nothing ignored) is built by colcon
#    into a temporary workspace, without --symlink-install, with the venv's Python (as the README's
#    robot recipe does with its venv).
# 2. From another directory, with only install/setup.bash sourced, the INSTALLED executables do
#    real work: mtl-train trains a tiny model, mtl-bag record-dataset writes a bag, mtl-eval
#    evaluates, mtl-export exports ONNX, and perception_node answers a camera frame over DDS
#    (inside scripts/netns_run.sh). Their outputs are printed.
# 3. `colcon test` runs the suite's fast part in the workspace copy and `colcon test-result` must
#    count more than zero tests and no failures.
#
# Usage: scripts/check_robot_path.sh [VENV]   (default .venv; make robot-path)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "${1:-${VENV:-$root/.venv}}" && pwd)
py=$venv/bin/python
ws=$(mktemp -d "${TMPDIR:-/tmp}/mtl_robot_path.XXXXXX")
trap 'rm -rf "$ws"' EXIT
export COLCON_HOME=$ws/.colcon  # no user colcon configuration
export PYTHONDONTWRITEBYTECODE=1
step() { printf '\n[robot-path] %s\n' "$*"; }
fail() { printf '[robot-path] error: %s\n' "$*" >&2; exit 1; }

step "fresh copy of the package -> $ws/src/mtl_perception"
mkdir -p "$ws/src/mtl_perception"
(cd "$root" && git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$ws/src/mtl_perception"

step "colcon build (not symlinked)"
cd "$ws"
"$py" -m colcon --log-base log build --base-paths src --event-handlers console_direct- \
  || fail "colcon build failed (log: $ws/log/latest_build)"

step "installed executables, run from $ws/elsewhere with only install/setup.bash sourced"
mkdir "$ws/elsewhere" && cd "$ws/elsewhere"
set +u
# shellcheck disable=SC1091
source "$ws/install/setup.bash"
set -u
bin=$ws/install/mtl_perception/lib/mtl_perception
for tool in perception_node overlay_node mtl-train mtl-eval mtl-export mtl-bag; do
  [ -x "$bin/$tool" ] || fail "$tool is not installed in $bin"
done
for node in perception_node overlay_node; do  # their entry points import and run
  usage=$("$bin/$node" --help) && [[ $usage == "usage: $node "* ]] \
    || fail "$bin/$node --help printed no usage"
done
"$py" - "$ws/install" <<'PY'
import sys, mtl_perception
from mtl_perception.resources import config_file
assert mtl_perception.__file__.startswith(sys.argv[1]), f"imported {mtl_perception.__file__}"
print(f"mtl_perception imported from {mtl_perception.__file__}")
print(f"class map from {config_file('classes_cityscapes.yaml')}")
PY

step "synthetic data (4 train, 2 val scenes, 256x128)"
"$py" -m mtl_perception.data.synthetic --out data --train 4 --val 2 --width 256 --height 128 --seed 3

step "mtl-train: a tiny 4-stage schedule, 1 iteration each"
cat >tiny.yaml <<'YAML'
model: {width_multiplier: 0.125, input_height: 64, input_width: 128}
stages:
  - {name: joint, iterations: 1, lr: 1.0e-3, seg_weight: 40, det_weight: 1, frozen: []}
  - {name: segmentation, iterations: 1, lr: 1.0e-3, seg_weight: 40, det_weight: 0, frozen: [detector]}
  - {name: detection, iterations: 1, lr: 1.0e-4, seg_weight: 0, det_weight: 1, frozen: [encoder, easpp, decoder]}
  - {name: finetune, iterations: 1, lr: 1.0e-4, seg_weight: 40, det_weight: 1, frozen: []}
data: {classes: config/classes_cityscapes.yaml, workers: 0}
batch_size: 2
validate_every: 0
val_images: 1
overlays: 0
YAML
"$bin/mtl-train" --config tiny.yaml --data data --out run --no-progress
checkpoint=$ws/elsewhere/run/checkpoints/final.pt
[ -f "$checkpoint" ] || fail "mtl-train wrote no $checkpoint"

step "mtl-bag record-dataset"
"$bin/mtl-bag" record-dataset --data data --split val --out val_bag
ls -l val_bag

step "mtl-eval"
"$bin/mtl-eval" --checkpoint "$checkpoint" --data data --split val --out eval
[ -s eval/metrics.json ] || fail "mtl-eval wrote no eval/metrics.json"

step "mtl-export"
"$bin/mtl-export" --checkpoint "$checkpoint" --out model.onnx
ls -l model.onnx

step "perception_node answers a frame (private network namespace)"
image=$(find data/leftImg8bit/val -name '*.png' | sort | head -1)
"$ws/src/mtl_perception/scripts/netns_run.sh" "$py" \
  "$ws/src/mtl_perception/scripts/robot_path_one_frame.py" \
  --node "$bin/perception_node" --checkpoint "$checkpoint" --image "$image"

step "colcon test: the fast tests of the workspace copy"
cd "$ws"
# test_fast_selection.py: in the robot's layout too, a fast test that reaches a training run
# fails at once (test/helpers/fast_selection.py); a robot runs all of -m "not slow" (README).
"$py" -m colcon --log-base log test --packages-select mtl_perception \
  --pytest-args -q -m "not slow" test/test_package_layout.py test/test_launch_and_params.py \
  test/test_conversions.py test/test_metrics.py test/test_fast_selection.py \
  || fail "colcon test failed (log: $ws/log/latest_test)"
result=$("$py" -m colcon test-result --test-result-base build/mtl_perception) \
  || { echo "$result"; fail "colcon test-result reports failures"; }
echo "$result"
count=$(printf '%s\n' "$result" | sed -n 's/^Summary: \([0-9]*\) tests.*/\1/p')
[ "${count:-0}" -gt 0 ] || fail "colcon test-result counted no tests"
step "passed: colcon build, installed executables, colcon test ($count tests)"
