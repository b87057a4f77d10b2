"""``mtl-train`` / ``python -m mtl_perception.training``.

python -m mtl_perception.training --config config/train_cityscapes.yaml --data DIR --out RUN_DIR
python -m mtl_perception.training --resume RUN_DIR [--data DIR]
torchrun --nproc_per_node=N -m mtl_perception.training --config ... --data DIR --out RUN_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..model.checkpoint import read_checkpoint
from .config import TrainConfig
from .distributed import init_distributed, shutdown_distributed
from .trainer import Trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the multi-task network (4-stage schedule).")
    parser.add_argument("--config", type=Path, help="training config YAML")
    parser.add_argument("--data", type=Path, help="Cityscapes-layout dataset root")
    parser.add_argument("--out", type=Path, help="run directory to create")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run exactly")
    parser.add_argument(
        "--pretrained", type=Path, help="ImageNet encoder weights (timm resnetv2_50 layout)"
    )
    parser.add_argument(
        "--device", help="cpu, cuda, cuda:N (default: cuda:LOCAL_RANK if available)"
    )
    parser.add_argument(
        "--stop-after", type=int, metavar="N", help="stop after N iterations, with a checkpoint"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        if args.resume:
            run_dir = args.resume
            config = TrainConfig.from_yaml(run_dir / "config.yaml")
            data = args.data or Path(
                read_checkpoint(run_dir / "checkpoints" / "last.pt")["data_root"]
            )
        else:
            if not (args.config and args.data and args.out):
                parser.error("--config, --data and --out are required (or --resume RUN_DIR)")
            config = TrainConfig.from_yaml(args.config)
            if args.pretrained:
                config = TrainConfig.from_dict(
                    {**config.to_dict(), "pretrained": str(args.pretrained)}
                )
            run_dir, data = args.out, args.data
            if (run_dir / "checkpoints" / "last.pt").exists():
                raise ValueError(
                    f"{run_dir} already holds a run; use --resume {run_dir} or another --out"
                )
        context = init_distributed(args.device)
        try:
            trainer = Trainer(
                config,
                data,
                run_dir,
                context,
                resume=bool(args.resume),
                stop_after=args.stop_after,
                progress=not args.no_progress,
            )
            trainer.run()
        finally:
            shutdown_distributed()
    except (FileNotFoundError, ValueError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
