"""Scale-aware anchors: k-means on box shapes with distance 1 - IoU (paper section 4.2).

    python -m mtl_perception.detection.anchors --data DIR --out NEW.yaml [--split train]
        [--height 384 --width 768] [--seed 0] [--debug]

Nine clusters of (width, height) at training resolution, sorted by area: the three smallest
belong to the dilation-1 Trident branch, the middle three to dilation 2, the largest three to
dilation 3. The YAML written has a ``model: anchors:`` section for the model config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..cli import ToolParser, multiple_of, non_negative_int, tool_main
from ..model.config import ANCHORS_PER_BRANCH, TRIDENT_DILATIONS
from ..outputs import check_new_file, write_text
from .boxes import shape_iou

NUM_ANCHORS = ANCHORS_PER_BRANCH * len(TRIDENT_DILATIONS)  # paper: 9


def kmeans_iou(
    wh: np.ndarray, k: int = NUM_ANCHORS, seed: int = 0, iterations: int = 300
) -> np.ndarray:
    """Clusters (N, 2) box sizes with distance 1 - IoU; returns (k, 2) centres sorted by area.

    k-means++ seeding (by 1 - IoU) and median centre updates, as in YOLOv2's anchor study.
    """
    wh = np.asarray(wh, np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2 or (wh <= 0).any():
        raise ValueError("box sizes must be an (N, 2) array of positive widths and heights")
    if len(wh) < k:
        raise ValueError(f"k-means needs at least {k} boxes, got {len(wh)}")
    rng = np.random.default_rng(seed)
    boxes = torch.from_numpy(wh)
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        distance = 1 - shape_iou(boxes, torch.from_numpy(np.array(centres))).max(dim=1).values
        weights = distance.numpy() ** 2
        total = weights.sum()
        choice = rng.choice(len(wh), p=weights / total) if total > 0 else rng.integers(len(wh))
        centres.append(wh[choice])
    centres_arr = np.array(centres)
    assignment = None
    for _ in range(iterations):
        new_assignment = shape_iou(boxes, torch.from_numpy(centres_arr)).argmax(dim=1).numpy()
        if assignment is not None and (new_assignment == assignment).all():
            break
        assignment = new_assignment
        for j in range(k):
            members = wh[assignment == j]
            if len(members):
                centres_arr[j] = np.median(members, axis=0)
    return centres_arr[np.argsort(centres_arr.prod(axis=1), kind="stable")]


def split_by_branch(sorted_anchors: np.ndarray) -> list[list[list[float]]]:
    """(9, 2) anchors sorted by area -> 3 branches x 3 anchors, smallest to dilation 1."""
    return [
        [[round(float(w), 2), round(float(h), 2)] for w, h in chunk]
        for chunk in np.split(np.asarray(sorted_anchors), len(TRIDENT_DILATIONS))
    ]


def dataset_box_sizes(
    data: Path, split: str, height: int, width: int, classes: str | Path | None = None
) -> np.ndarray:
    """(N, 2) sizes of every box of a Cityscapes-layout split, at the training resolution
    (``classes``: class map YAML deciding which objects are boxes; default the packaged one)."""
    from ..data.cityscapes import CityscapesDataset
    from ..data.labels import ClassMap
    from ..data.transforms import ValidationResize

    class_map = ClassMap.from_yaml(classes) if classes else ClassMap.from_yaml()
    dataset = CityscapesDataset(
        data, split, class_map, ValidationResize(height, width, class_map.min_box_size)
    )
    # closed on an error too, so the bar's line ends before the error line is printed
    with tqdm(range(len(dataset)), desc="reading boxes", unit="img") as bar:
        sizes = [boxes[:, 2:] - boxes[:, :2] for boxes in (dataset[i].boxes for i in bar)]
    return np.concatenate(sizes) if sizes else np.zeros((0, 2), np.float32)


def build_parser() -> ToolParser:
    parser = ToolParser(
        prog="python -m mtl_perception.detection.anchors",
        description=__doc__.strip().splitlines()[0],
    )
    parser.add_argument("--data", type=Path, required=True, help="Cityscapes-layout root")
    parser.add_argument("--out", type=Path, required=True, help="new YAML file to write")
    parser.add_argument("--split", default="train")
    size = multiple_of(16)
    parser.add_argument("--height", type=size, default=384, help="training height, pixels")
    parser.add_argument("--width", type=size, default=768, help="training width, pixels")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--classes", type=Path, help="class mapping YAML (default: the packaged Cityscapes one)"
    )
    return parser


@tool_main(build_parser)
def main(args: argparse.Namespace) -> int:
    """Checks ``--out`` first, reads the boxes, clusters them, writes the YAML atomically."""
    check_new_file(args.out, "--out")
    sizes = dataset_box_sizes(args.data, args.split, args.height, args.width, args.classes)
    if len(sizes) < NUM_ANCHORS:
        raise ValueError(
            f"{args.data} (split '{args.split}') has {len(sizes)} boxes at "
            f"{args.width}x{args.height}; k-means needs at least {NUM_ANCHORS} (--data, --split)"
        )
    anchors = kmeans_iou(sizes, seed=args.seed)
    mean_iou = float(
        shape_iou(torch.from_numpy(sizes).double(), torch.from_numpy(anchors))
        .max(dim=1)
        .values.mean()
    )
    write_text(
        args.out,
        f"# k-means (1 - IoU) anchors from {len(sizes)} boxes of {args.data} ({args.split}) at "
        f"{args.width}x{args.height}; mean best IoU {mean_iou:.3f}.\n"
        "# (width, height) in pixels; branches: dilation 1 (small), 2, 3 (large).\n"
        + yaml.safe_dump({"model": {"anchors": split_by_branch(anchors)}}, default_flow_style=None),
    )
    print(f"wrote {args.out}: mean best IoU {mean_iou:.3f} over {len(sizes)} boxes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
