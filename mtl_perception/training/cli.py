"""``mtl-train`` / ``python -m mtl_perception.training``.

python -m mtl_perception.training --config config/train_cityscapes.yaml --data DIR --out RUN_DIR
python -m mtl_perception.training --resume RUN_DIR [--data DIR]
torchrun --nproc_per_node=N -m mtl_perception.training --config ... --data DIR --out RUN_DIR

A new run needs an --out that does not exist (or an empty folder), or one where a run of the
same config was killed before its first checkpoint (it is started again); a folder holding a
run with checkpoints is refused with the ``--resume`` command that continues it. ``--resume``
continues from ``RUN_DIR/checkpoints/last.pt`` with the config that checkpoint was trained with,
and refuses a ``RUN_DIR/config.yaml`` that says otherwise; its data root is the one the run was
trained on (stored resolved), unless ``--data`` gives another.

One run folder takes one training at a time: rank 0 holds it for the whole run
(:func:`.run_dir.owned_run_dir`), and a second command for the same folder is refused.
"""

from __future__ import annotations

import argparse
import os
from contextlib import nullcontext
from pathlib import Path

from ..cli import ToolParser, positive_int, tool_main
from ..model.checkpoint import read_checkpoint
from ..outputs import check_new_directory
from .config import TrainConfig
from .distributed import init_distributed, shutdown_distributed
from .run_dir import clear_unstarted, last_checkpoint, never_started, owned_run_dir
from .trainer import Trainer


def build_parser() -> ToolParser:
    parser = ToolParser(
        prog="mtl-train", description="Train the multi-task network (4-stage schedule)."
    )
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
        "--stop-after",
        type=positive_int,
        metavar="N",
        help="stop after N iterations, with a checkpoint",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def resumed_config(run_dir: Path) -> tuple[TrainConfig, dict]:
    """The config a run was trained with (from its checkpoint), checked against config.yaml."""
    if not run_dir.is_dir():
        raise ValueError(f"--resume {run_dir}: no such run directory")
    path = last_checkpoint(run_dir)
    if not path.is_file() and never_started(run_dir):
        raise ValueError(
            f"--resume {run_dir}: no checkpoint {path}: the run was stopped before its first "
            "checkpoint, so there is nothing to resume; start it again with the command that "
            f"created it (mtl-train --config {run_dir / 'config.yaml'} --data DIR --out {run_dir})"
        )
    if not path.is_file():
        raise ValueError(
            f"--resume {run_dir}: no checkpoint {path} to resume from "
            "(start a new run with --config, --data and another --out)"
        )
    content = read_checkpoint(path)
    if "train_config" not in content:
        raise ValueError(f"checkpoint {path} has no training config; it cannot be resumed")
    try:
        config = TrainConfig.from_dict(content["train_config"])
    except ValueError as error:
        raise ValueError(f"checkpoint {path} holds an invalid training config: {error}") from error
    on_disk = run_dir / "config.yaml"
    if on_disk.is_file():
        written = TrainConfig.from_yaml(on_disk)
        if written != config:
            raise ValueError(
                f"{on_disk} differs from the config {path} was trained with "
                f"(in {differing_fields(written, config)}); "
                "--resume continues a run as it was: restore config.yaml, or start a new run "
                "with --config and another --out"
            )
    return config, content


def differing_fields(ours: TrainConfig, theirs: TrainConfig) -> list[str]:
    """The top-level config fields whose values differ, sorted (for a one-line refusal)."""
    mine, other = ours.to_dict(), theirs.to_dict()
    return sorted(key for key in mine if mine[key] != other.get(key))


def resumed_data_root(run_dir: Path, content: dict) -> Path:
    """The data root a run was trained on (from its checkpoint), which must still exist."""
    saved = content.get("data_root")
    if not saved:
        raise ValueError(f"--resume {run_dir}: the checkpoint names no data root; give --data DIR")
    root = Path(saved)
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "is gone"
        where = "" if root.is_absolute() else f" (a relative path, from {Path.cwd()})"
        raise ValueError(
            f"--resume {run_dir}: the run's data root {root} {state}{where}; "
            "give --data DIR with the same dataset"
        )
    return root


def check_out(run_dir: Path, config: TrainConfig) -> bool:
    """Whether ``--out`` takes a new run of ``config``: True when it holds a run of that config
    killed before its first checkpoint (to start again), False when it is new or empty.

    Raises:
        ValueError: it holds a run with checkpoints (naming the ``--resume`` command that
            continues it), a finished run, another config's unstarted run, or other files.
    """
    if last_checkpoint(run_dir).is_file():
        final = run_dir / "checkpoints" / "final.pt"
        if final.is_file():
            raise ValueError(
                f"--out {run_dir} holds a finished run ({final}); choose another folder"
            )
        raise ValueError(
            f"--out {run_dir} holds a run with checkpoints, stopped before its end; continue "
            f"it with: mtl-train --resume {run_dir} (or choose another folder for a new run)"
        )
    if restartable(run_dir, config):
        return True
    check_new_directory(run_dir, "--out")
    return False


def restartable(run_dir: Path, config: TrainConfig) -> bool:
    """Whether --out holds a run of ``config`` killed before its first checkpoint (to start
    again); refuses one of another config. False when --out holds no such run."""
    if not (run_dir.is_dir() and never_started(run_dir)):
        return False
    on_disk = run_dir / "config.yaml"
    stopped = f"--out {run_dir} holds a run stopped before its first checkpoint"
    try:
        written = TrainConfig.from_yaml(on_disk)
    except ValueError as error:
        raise ValueError(
            f"{stopped} whose config is unreadable ({error}); choose another folder"
        ) from error
    if written != config:
        raise ValueError(
            f"{stopped} with another config (its {on_disk} differs in "
            f"{differing_fields(config, written)}); start it "
            "again with that config, or choose another folder"
        )
    return True


@tool_main(build_parser)
def main(args: argparse.Namespace) -> int:
    main_rank = int(os.environ.get("RANK", "0")) == 0  # torchrun: rank 0 holds the run folder
    if args.resume:
        if args.config or args.out or args.pretrained:
            raise ValueError(
                "--resume continues a run as it was: drop --config, --out and --pretrained"
            )
        run_dir = args.resume
        with owned_run_dir(run_dir, "--resume", create=False) if main_rank else nullcontext():
            config, content = resumed_config(run_dir)
            data = args.data or resumed_data_root(run_dir, content)
            source = f"the training config of {last_checkpoint(run_dir)}"
            return train(args, config, data, run_dir, source)
    if not (args.config and args.data and args.out):
        raise ValueError("--config, --data and --out are required (or --resume RUN_DIR)")
    config = TrainConfig.from_yaml(args.config)
    if args.pretrained:
        if not args.pretrained.is_file():
            raise ValueError(f"--pretrained {args.pretrained}: no such file")
        config = TrainConfig.from_dict({**config.to_dict(), "pretrained": str(args.pretrained)})
    with owned_run_dir(args.out, "--out", create=True) if main_rank else nullcontext():
        restart = check_out(args.out, config) if main_rank else False
        return train(args, config, args.data, args.out, str(args.config), restart=restart)


def train(
    args: argparse.Namespace,
    config: TrainConfig,
    data: Path,
    run_dir: Path,
    source: str,
    *,
    restart: bool = False,
) -> int:
    """Trains (rank 0 holding ``run_dir``); ``source`` says where ``config`` came from, and
    ``restart`` clears the files of a run of it killed before its first checkpoint."""
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
            config_source=source,
        )
        if restart and context.is_main:  # every check passed: the killed start's files go
            removed = clear_unstarted(run_dir)
            trainer.log(
                f"--out {run_dir}: starting again a run stopped before its first checkpoint "
                f"(removed its {', '.join(removed)})"
            )
        trainer.run()
    finally:
        shutdown_distributed()
    return 0
