#!/usr/bin/env bash
# make demo: synthetic Cityscapes-format data -> train the small config -> record a held-out
# sequence to an MCAP bag -> run the real node on it through mtl-bag evaluate -> report.
# Each step is cached (data, run, bag), so a re-run only repeats the evaluation.
# With a GPU and a real dataset: make demo DEMO_DATA=/data/cityscapes DEMO_CONFIG=config/train_cityscapes.yaml
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${VENV:-$root/.venv}
data=${DEMO_DATA:-data/demo}
config=${DEMO_CONFIG:-config/train_synthetic_small.yaml}
run=${DEMO_RUN:-runs/demo}
bag=${DEMO_BAG:-data/demo_val_bag}

if [ -n "${DEMO_DATA:-}" ]; then
  echo "[demo] using the dataset in $data"
elif [ ! -f "$data/.complete" ]; then
  rm -rf "$data"
  "$venv/bin/python" -m mtl_perception.data.synthetic --out "$data" --train 200 --val 30 --seed 1 \
    --width 768 --height 384
  touch "$data/.complete"
fi

# A run trained from another version of the config is not reused.
same_config() {
  "$venv/bin/python" -c 'import sys
from mtl_perception.training.config import TrainConfig as T
sys.exit(T.from_yaml(sys.argv[1]) != T.from_yaml(sys.argv[2]))' "$config" "$run/config.yaml" 2>/dev/null
}
if [ -d "$run" ] && ! same_config; then
  echo "[demo] $config differs from the one $run was trained with: training again"
  rm -rf "$run"
fi

if [ ! -f "$run/checkpoints/final.pt" ]; then
  if [ -f "$run/checkpoints/last.pt" ]; then
    "$venv/bin/mtl-train" --resume "$run"
  else
    rm -rf "$run"
    "$venv/bin/mtl-train" --config "$config" --data "$data" --out "$run"
  fi
else
  echo "[demo] using the trained model in $run (rm -rf $run to retrain)"
fi

if [ ! -f "$bag/metadata.yaml" ]; then
  rm -rf "$bag"
  "$venv/bin/mtl-bag" record-dataset --data "$data" --split val --out "$bag" --storage mcap --rate 10
fi

rm -rf "$run/bag_eval"
"$venv/bin/mtl-bag" evaluate --bag "$bag" --checkpoint "$run/checkpoints/final.pt" --out "$run/bag_eval" \
  --rate-factor 1.0
echo
echo "[demo] report: $run/bag_eval/report.md  pictures: $run/bag_eval/*.png  TensorBoard: $run/tensorboard"
