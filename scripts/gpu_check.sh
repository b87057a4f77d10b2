#!/usr/bin/env bash
# One command for a CUDA machine: the CUDA tests and every benchmark on CUDA, their
# docs/benchmarks.md sections written into OUTPUT_DIR (docs/benchmarks.md itself is not touched),
# and whether TensorRT, torch_tensorrt and onnxruntime's CUDA provider can be used there.
#
# The machine needs Python 3.12 with its own CUDA torch and the common scientific packages, a C++
# compiler and CMake; no network. It gets this repository plus the folder that
# `scripts/gpu_check_prepare.py` writes here (.gpu-check/: the ROS 2 wheels, ~52 MiB).
#
#   scripts/gpu_check.sh OUTPUT_DIR [STEP...]
#
# Environment: PYTHON (default python3), GPU_CHECK_ENV (`python`: use PYTHON as it is, with its
# own ROS 2 and vision_msgs, no wheels: a dry run with a checkout's .venv), GPU_CHECK_DIR
# (default .gpu-check), GPU_CHECK_BUDGET
# (seconds for all steps; a step that would start after it is reported 'not run (budget)'),
# GPU_CHECK_DEVICE (default cuda; `cpu` is the dry run for machines without CUDA),
# GPU_CHECK_LATENCY_PATHS (default all of benchmarks/latency.py's), GPU_CHECK_TIME_SCALE (multiplies
# each step's time limit; e.g. 5 for the CPU dry run), GPU_CHECK_CEILING_ARGS and
# GPU_CHECK_MULTI_CAMERA_ARGS, GPU_CHECK_OVERLOAD_ARGS, GPU_CHECK_OVERHEAD_ARGS (each replaces
# that benchmark's default arguments below), GPU_CHECK_TESTS_K (pytest -k expression of the
# tests step; default: all but max-autotune), GPU_CHECK_TESTS (its test files),
# GPU_CHECK_BASELINE (the 'before' of the four node benchmarks' --baseline: a commit, or `none`;
# default: the folder GPU_CHECK_DIR/baseline that gpu_check_prepare.py writes, else 89e0a98
# where git has it).
# STEPs (default all, in this order): accelerators tests (the CUDA tests but max-autotune)
# latency node_overhead overload single_vs_multi train_step pipeline_ceiling multi_camera
# autotune (the max-autotune test).
#
# accelerators: one line each in summary.txt for tensorrt, torch_tensorrt and onnxruntime
# (importable? usable on the GPU: a TensorRT builder, a torch_tensorrt compile of a small
# module, an onnxruntime session on CUDAExecutionProvider).
# The four node benchmarks (node_overhead overload pipeline_ceiling multi_camera) run before and
# after (--baseline) and are sized to take about 480 s together on an H100 with 16 cores:
#   node_overhead --repeats 10; overload --seconds 20 (2 rounds of 10 s per version);
#   pipeline_ceiling --sizes 2048x1024 --cameras 1 --seconds 3 (with and without overlay);
#   multi_camera --cameras 6 --seconds 8 --settle 2 (one node and six nodes).
# For issue 23, in one device call of at most 600 s (steps run in the order given; one that
# would start after GPU_CHECK_BUDGET seconds is not run, so the tests come last):
#   GPU_CHECK_BUDGET=540 scripts/gpu_check.sh OUT accelerators pipeline_ceiling node_overhead \
#     overload multi_camera tests
#
# OUTPUT_DIR receives three files: summary.txt (one line per step: ok / failed / timed out /
# not run, with seconds), sections.md (every benchmark's section, ready for docs/benchmarks.md),
# logs.tar.gz (each step's log, the sections one by one, the figures the benchmarks drew).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: scripts/gpu_check.sh OUTPUT_DIR [STEP...]  (--help: what it does)"
case ${1:-} in
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
  '') echo "$usage" >&2; exit 2 ;;
  -*) echo "gpu_check: unknown option '$1'; $usage" >&2; exit 2 ;;
esac
out=$1
shift
if [ -e "$out" ] && { [ ! -d "$out" ] || [ -n "$(ls -A "$out")" ]; }; then
  echo "gpu_check: OUTPUT_DIR $out exists and is not an empty folder; give a new one" >&2; exit 2
fi
all_steps=(accelerators tests latency node_overhead overload single_vs_multi train_step pipeline_ceiling multi_camera autotune)
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=("${all_steps[@]}")
for step in "${steps[@]}"; do
  [[ " ${all_steps[*]} " == *" $step "* ]] || { echo "gpu_check: unknown step '$step' (steps: ${all_steps[*]})" >&2; exit 2; }
done
python=${PYTHON:-python3}
gpu_dir=$(cd "${GPU_CHECK_DIR:-$root/.gpu-check}" 2>/dev/null && pwd) || gpu_dir=${GPU_CHECK_DIR:-$root/.gpu-check}
wheels=$gpu_dir/wheels
device=${GPU_CHECK_DEVICE:-cuda}
budget=${GPU_CHECK_BUDGET:-100000}
work=$(mktemp -d "${TMPDIR:-/tmp}/mtl-gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT  # the environment and logs; the logs reach OUT as logs.tar.gz
env_dir=$work/env
mkdir -p "$out" "$work/logs" "$work/sections"
start=$SECONDS
log() { printf '[gpu_check %4ds] %s\n' $((SECONDS - start)) "$*"; }
die() { printf 'gpu_check: %s\n' "$*" >&2; exit 1; }

own_env=0; [ "${GPU_CHECK_ENV:-overlay}" = python ] && own_env=1
[ $own_env = 1 ] || [ -f "$wheels/MANIFEST" ] || die "no $wheels/MANIFEST: run scripts/gpu_check_prepare.py on a machine with network and carry .gpu-check/ along"
"$python" - "$device" <<'PY' || die "$python cannot run the check (above)"
import sys, torch
if sys.argv[1].startswith("cuda") and not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device (GPU_CHECK_DEVICE=cpu for a dry run)")
print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")
PY
missing=$("$python" -c '
import importlib.util as u
need = ["numpy", "cv2", "yaml", "PIL", "matplotlib", "tqdm", "tensorboard", "onnx", "onnxscript", "onnxruntime", "safetensors", "pytest", "hypothesis", "pytest_timeout", "packaging"]
print(" ".join(n for n in need if u.find_spec(n) is None))')
[ -z "$missing" ] || die "$python lacks: $missing (carry their wheels too)"

# 1. An overlay environment: a venv whose own site-packages hold the ROS 2 wheels and which sees
#    the machine's packages (CUDA torch...) behind them. Nothing is installed into $python's own.
#    GPU_CHECK_ENV=python (a dry run with a checkout's .venv): $python as it is, its own ROS 2.
ros_ok=1
if [ $own_env = 1 ]; then
  log "environment: $python as it is (GPU_CHECK_ENV=python)"
  py=$python
else
  log "environment in $env_dir ($(grep -c '==' "$wheels/MANIFEST") wheels)"
  "$python" -m venv --without-pip "$env_dir" || die "python -m venv failed"
  base_site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  env_site=$("$env_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "import site; site.addsitedir('$base_site')" >"$env_site/zz_machine_packages.pth"
  "$python" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
    --ignore-installed --prefix "$env_dir" "$wheels"/*.whl >"$work/logs/pip.log" 2>&1 \
    || { tail -5 "$work/logs/pip.log"; ros_ok=0; log "installing the wheels failed: ROS steps will not run"; }
  py=$env_dir/bin/python
fi
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
profile=$("$py" -c 'import os
from mtl_perception.resources import config_file
from mtl_perception.ros.fastdds import profile_environment
for k, v in profile_environment(os.environ, str(config_file("fastdds_large_images.xml")), "kilted").items():
    print(f"export {k}={v}")') || die "mtl_perception does not import with $py (above)"
eval "$profile"
export MTL_BENCH_OUT=$work/sections PYTHONUNBUFFERED=1
# ROS 2: without it the steps that start nodes are reported as not run, the others still run.
if [ $ros_ok = 0 ]; then
  :
elif [ $own_env = 1 ]; then
  log "vision_msgs: $python's own"
elif log "building vision_msgs"; ! VISION_MSGS_BUILD=$work/vision_msgs "$root/scripts/build_vision_msgs.sh" "$env_dir" kilted \
  >"$work/logs/vision_msgs.log" 2>&1; then
  tail -20 "$work/logs/vision_msgs.log"; ros_ok=0; log "building vision_msgs failed: ROS steps will not run"
fi
if [ $ros_ok = 1 ] && ! "$py" -c 'import rclpy, vision_msgs.msg, mtl_perception.ros.node' >"$work/logs/ros_import.log" 2>&1; then
  tail -20 "$work/logs/ros_import.log"; ros_ok=0; log "the node does not import: ROS steps will not run"
fi
log "environment ready"

checkpoint=$work/untrained.pt
# The 'before' of the four node benchmarks' --baseline (benchmarks/baseline.py): a commit git has
# here, else the package gpu_check_prepare.py carried in GPU_CHECK_DIR/baseline.
carried=$gpu_dir/baseline
carried_ref=$(cat "$carried/REF" 2>/dev/null)
is_commit() { git -C "$root" rev-parse -q --verify "$1^{commit}" >/dev/null 2>&1; }
baseline_args=()
case ${GPU_CHECK_BASELINE:-} in
  none) baseline_note="off (GPU_CHECK_BASELINE=none)" ;;
  '') if [ -d "$carried/mtl_perception" ]; then baseline_args=(--baseline "$carried"); baseline_note="${carried_ref:0:7} (carried)"
      elif is_commit 89e0a98; then baseline_args=(--baseline 89e0a98); baseline_note=89e0a98
      else baseline_note="off (no $carried and no git history: run gpu_check_prepare.py)"; fi ;;
  *) if is_commit "$GPU_CHECK_BASELINE"; then baseline_args=(--baseline "$GPU_CHECK_BASELINE"); baseline_note=$GPU_CHECK_BASELINE
     elif [ -d "$carried/mtl_perception" ] && [[ ${#GPU_CHECK_BASELINE} -ge 4 && $carried_ref == "$GPU_CHECK_BASELINE"* ]]; then
       baseline_args=(--baseline "$carried"); baseline_note="${carried_ref:0:7} (carried)"
     else die "GPU_CHECK_BASELINE=$GPU_CHECK_BASELINE: no such commit here and $carried holds '${carried_ref:-nothing}' (gpu_check_prepare.py --baseline $GPU_CHECK_BASELINE)"; fi ;;
esac
log "before/after of the node benchmarks: $baseline_note"
echo "baseline (before) of node_overhead overload pipeline_ceiling multi_camera: $baseline_note" >>"$work/summary.txt"
publish() {  # summary and sections so far into OUT (after each step: a run cut short keeps them);
  # each file is written beside its name and renamed, so OUT never holds half a file
  touch "$work/summary.txt"
  cp "$work/summary.txt" "$out/.summary.txt.tmp" && mv -f "$out/.summary.txt.tmp" "$out/summary.txt"
  for section in "$work"/sections/*.md; do
    [ -f "$section" ] && { cat "$section"; echo; }
  done >"$out/.sections.md.tmp" && mv -f "$out/.sections.md.tmp" "$out/sections.md"
}
run_step() {  # name timeout command...
  local name=$1 limit=$2 begin=$SECONDS
  shift 2
  if [ $((SECONDS - start)) -ge "$budget" ]; then
    echo "$name: not run (budget of ${budget}s used)" >>"$work/summary.txt"; log "$name: not run (budget)"; return
  fi
  limit=$((limit * ${GPU_CHECK_TIME_SCALE:-1}))
  log "$name: $*"
  (cd "$root" && timeout -k 10 "$limit" "$@") >"$work/logs/$name.log" 2>&1
  local status=$? verdict=ok
  [ $status -eq 0 ] || verdict="failed (exit $status)"
  [ $status -eq 124 ] || [ $status -eq 137 ] && verdict="timed out after ${limit}s"
  echo "$name: $verdict, $((SECONDS - begin)) s" >>"$work/summary.txt"
  log "$name: $verdict"
  [ "$verdict" = ok ] || tail -15 "$work/logs/$name.log"
  publish
}
have() { [ -f "$root/benchmarks/$1.py" ] || { echo "$1: not run (benchmarks/$1.py is not in this checkout)" >>"$work/summary.txt"; return 1; }; }
ros() {  # the step needs ROS 2
  [ $ros_ok = 1 ] || { echo "$1: not run (ROS 2 set-up failed: logs/pip.log, logs/vision_msgs.log, logs/ros_import.log)" >>"$work/summary.txt"; return 1; }
}

before=${baseline_args[@]+"${baseline_args[@]}"}  # word-split below: a path without spaces
# Whether a TensorRT path could be built here: each of tensorrt, torch_tensorrt and onnxruntime's
# CUDAExecutionProvider imported and tried on the GPU, one 'accelerator NAME: ...' line each.
cat >"$work/accelerators.py" <<'PY'
import importlib, sys, tempfile, traceback

def line(name, text):
    print(f"accelerator {name}: {text}", flush=True)

def first_line(error):
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:200]

def tensorrt(module):
    logger = module.Logger(module.Logger.WARNING)
    builder = module.Builder(logger)
    return f"usable (a Builder made; fast fp16 {builder.platform_has_fast_fp16})"

def torch_tensorrt(module):
    import torch
    if not torch.cuda.is_available():
        return "not tried (no CUDA device)"
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).cuda().eval()
    example = torch.randn(1, 3, 32, 32, device="cuda")
    compiled = module.compile(model, ir="dynamo", inputs=[example])
    error = (compiled(example) - model(example)).abs().max().item()
    return f"usable (a small conv net compiled, max difference {error:.1e})"

def onnxruntime(module):
    providers = module.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return f"no CUDAExecutionProvider (providers: {', '.join(providers)})"
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with tempfile.NamedTemporaryFile(suffix=".onnx") as file:
        onnx.save(model, file.name)
        session = module.InferenceSession(file.name, providers=["CUDAExecutionProvider"])
        out = session.run(None, {"x": np.ones(4, np.float32)})[0]
    used = session.get_providers()
    if used[0] != "CUDAExecutionProvider":
        return f"CUDAExecutionProvider listed but the session runs on {used[0]}"
    return f"usable (a session ran on CUDAExecutionProvider, output {out.tolist()})"

for name, check in (("tensorrt", tensorrt), ("torch_tensorrt", torch_tensorrt), ("onnxruntime", onnxruntime)):
    try:
        module = importlib.import_module(name)
    except Exception as error:
        line(name, f"not importable ({first_line(error)})")
        continue
    version = getattr(module, "__version__", "?")
    try:
        line(name, f"{version}, {check(module)}")
    except Exception as error:
        traceback.print_exc()
        line(name, f"{version} importable, NOT usable ({first_line(error)})")
sys.exit(0)
PY
for step in "${steps[@]}"; do
  case $step in
    accelerators)  # one 'accelerator NAME: ...' line each into summary.txt
      run_step accelerators 150 "$py" "$work/accelerators.py"
      grep '^accelerator ' "$work/logs/accelerators.log" >>"$work/summary.txt"; publish ;;
    tests) run_step tests 300 "$py" -m pytest -q -p no:cacheprovider --timeout 150 --durations 0 \
      -k "${GPU_CHECK_TESTS_K:-not max_autotune}" ${GPU_CHECK_TESTS:-test/test_fast_paths.py test/test_fast_path_fallback.py} ;;
    autotune)  # last: max-autotune tries many kernels per convolution and takes minutes
      run_step autotune 300 "$py" -m pytest -q -p no:cacheprovider --timeout 280 --durations 0 \
        -k "max_autotune" test/test_fast_paths.py ;;
    latency)  # GPU_CHECK_LATENCY_PATHS: a subset of benchmarks/latency.py's paths (compiling is slow)
      run_step latency 300 "$py" benchmarks/latency.py --device "$device" --write ${GPU_CHECK_LATENCY_PATHS:+--paths $GPU_CHECK_LATENCY_PATHS} ;;
    node_overhead) ros node_overhead && run_step node_overhead 120 "$py" benchmarks/node_overhead.py --device "$device" --write $before ${GPU_CHECK_OVERHEAD_ARGS:---repeats 10} ;;
    overload)
      [ -f "$checkpoint" ] || "$py" "$root/benchmarks/untrained_checkpoint.py" "$checkpoint" >>"$work/logs/checkpoint.log" 2>&1
      ros overload && run_step overload 150 "$py" benchmarks/overload.py --checkpoint "$checkpoint" --device "$device" --write $before ${GPU_CHECK_OVERLOAD_ARGS:---seconds 20} ;;
    pipeline_ceiling) ros pipeline_ceiling && have pipeline_ceiling && run_step pipeline_ceiling 150 "$py" benchmarks/pipeline_ceiling.py --device "$device" --write $before ${GPU_CHECK_CEILING_ARGS:---sizes 2048x1024 --cameras 1 --seconds 3} ;;
    multi_camera)
      [ -f "$checkpoint" ] || "$py" "$root/benchmarks/untrained_checkpoint.py" "$checkpoint" >>"$work/logs/checkpoint.log" 2>&1
      ros multi_camera && have multi_camera && run_step multi_camera 240 "$py" benchmarks/multi_camera.py --checkpoint "$checkpoint" --device "$device" --write $before ${GPU_CHECK_MULTI_CAMERA_ARGS:---cameras 6 --seconds 8 --settle 2} ;;
    single_vs_multi) run_step single_vs_multi 120 "$py" benchmarks/single_vs_multi.py --device "$device" --write ;;
    train_step) run_step train_step 180 "$py" benchmarks/train_step.py --device "$device" --write ;;
  esac
done

publish
cp -r "$root/docs/images" "$work/images" 2>/dev/null
tar -czf "$out/.logs.tar.gz.tmp" -C "$work" logs sections summary.txt $( [ -d "$work/images" ] && echo images) \
  && mv -f "$out/.logs.tar.gz.tmp" "$out/logs.tar.gz"
log "done: $out/summary.txt, sections.md, logs.tar.gz"
cat "$out/summary.txt"
! grep -q -E ': (failed|timed out|not run \(ROS)' "$out/summary.txt"
