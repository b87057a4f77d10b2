"""Synthetic street scenes written in the exact Cityscapes layout and file naming.

    python -m mtl_perception.data.synthetic --out NEW_DIR --train N --val M --seed S [--width 2048]

Each scene has a horizon, sky, buildings, vegetation, a road in perspective with sidewalks,
fences, poles and traffic signs as stuff, and cars/trucks/buses, persons, riders and
bicycles/motorcycles as instances whose size follows their distance (large near the camera,
small far away). Objects are painted from far to near, so nearer ones occlude farther ones and
the instance masks hold only the visible pixels. Now and then a group of people is labelled as a
crowd region (instance value = label id, below 1000), as in Cityscapes.

Files per image (Cityscapes names; ``_polygons.json`` is not written):
``leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png`` (RGB),
``gtFine/.../*_gtFine_labelIds.png`` (uint8), ``*_gtFine_instanceIds.png`` (uint16),
``*_gtFine_color.png`` (the official palette). Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS
from tqdm import tqdm

from ..cli import ToolParser, non_negative_int, positive_int, tool_main
from ..outputs import atomic_directory, write_image

LABEL = {label.name: label.id for label in CITYSCAPES_LABELS if label.id >= 0}
PALETTE = np.zeros((256, 3), np.uint8)
for _label in CITYSCAPES_LABELS:
    if _label.id >= 0:
        PALETTE[_label.id] = _label.color

CITIES = {"train": ("synthburg", "synthhausen"), "val": ("synthstadt",), "test": ("synthdorf",)}

# Base appearance (RGB) of stuff classes; instances get their own colours.
STUFF_COLOURS = {
    "sky": (120, 170, 225),
    "building": (120, 110, 100),
    "road": (75, 75, 80),
    "sidewalk": (170, 160, 150),
    "vegetation": (60, 120, 40),
    "fence": (150, 130, 95),
    "pole": (90, 90, 95),
    "traffic sign": (230, 200, 30),
}


class _Canvas:
    """Label, instance and image layers painted together."""

    def __init__(self, width: int, height: int) -> None:
        self.labels = np.zeros((height, width), np.uint8)
        self.instances = np.zeros((height, width), np.uint16)
        self.image = np.zeros((height, width, 3), np.uint8)

    def paint(self, mask: np.ndarray, label: str, colour, instance: int | None = None) -> None:
        self.labels[mask] = LABEL[label]
        self.instances[mask] = LABEL[label] if instance is None else instance
        self.image[mask] = colour


def _poly_mask(shape, points) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(points)).astype(np.int32)], 1)
    return mask.astype(bool)


def _rect_mask(shape, x0, y0, x1, y1) -> np.ndarray:
    mask = np.zeros(shape, bool)
    h, w = shape
    # Clip both ends: a negative end would count from the far side in a slice.
    rows = slice(int(np.clip(y0, 0, h)), int(np.clip(np.ceil(y1), 0, h)))
    cols = slice(int(np.clip(x0, 0, w)), int(np.clip(np.ceil(x1), 0, w)))
    mask[rows, cols] = True
    return mask


def _ellipse_mask(shape, cx, cy, rx, ry) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(
        mask, (round(cx), round(cy)), (max(1, round(rx)), max(1, round(ry))), 0, 0, 360, 1, -1
    )
    return mask.astype(bool)


def _jitter(rng: np.random.Generator, colour, amount: int = 25) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _paint_stuff(canvas: _Canvas, rng: np.random.Generator, horizon: float) -> dict:
    h, w = canvas.labels.shape
    shape = (h, w)
    sky = np.zeros(shape, bool)
    sky[: int(horizon)] = True
    canvas.paint(sky, "sky", _jitter(rng, STUFF_COLOURS["sky"], 15))
    ground = ~sky
    canvas.paint(ground, "sidewalk", _jitter(rng, STUFF_COLOURS["sidewalk"], 15))

    vanish_x = w * rng.uniform(0.4, 0.6)
    road_left, road_right = w * rng.uniform(-0.2, 0.15), w * rng.uniform(0.85, 1.2)
    road = [
        (road_left, h),
        (road_right, h),
        (vanish_x + 0.02 * w, horizon),
        (vanish_x - 0.02 * w, horizon),
    ]
    canvas.paint(_poly_mask(shape, road), "road", _jitter(rng, STUFF_COLOURS["road"], 10))

    # Buildings: a skyline of blocks standing on the horizon.
    x = -rng.uniform(0, 0.1) * w
    while x < w:
        bw = w * rng.uniform(0.06, 0.2)
        top = horizon - h * rng.uniform(0.08, 0.35)
        block = _rect_mask(shape, x, top, x + bw, horizon + h * 0.01)
        canvas.paint(block, "building", _jitter(rng, STUFF_COLOURS["building"], 30))
        x += bw
    # Trees: trunk-less crowns on the skyline, some bushes near the sidewalks.
    for _ in range(rng.integers(2, 6)):
        cx, cy = rng.uniform(0, w), horizon - h * rng.uniform(0.0, 0.15)
        r = h * rng.uniform(0.04, 0.12)
        crown = _ellipse_mask(shape, cx, cy, r * 1.2, r)
        canvas.paint(crown, "vegetation", _jitter(rng, STUFF_COLOURS["vegetation"], 20))
    # Fences along the sidewalks.
    for side in (0, 1):
        if rng.random() < 0.7:
            y0 = horizon + h * rng.uniform(0.02, 0.1)
            fh = h * rng.uniform(0.03, 0.06)
            xa = w * (rng.uniform(0, 0.1) if side == 0 else rng.uniform(0.8, 0.9))
            fence = _rect_mask(shape, xa, y0, xa + w * rng.uniform(0.08, 0.2), y0 + fh)
            canvas.paint(fence, "fence", _jitter(rng, STUFF_COLOURS["fence"], 20))
    # Poles with traffic signs, scaled by distance.
    for _ in range(rng.integers(1, 5)):
        foot = horizon + (h - horizon) * rng.uniform(0.05, 0.6)
        depth = (foot - horizon) / (h - horizon)
        px = w * (rng.uniform(0.0, 0.2) if rng.random() < 0.5 else rng.uniform(0.8, 1.0))
        ph, pw = h * 0.5 * depth + 4, max(2.0, w * 0.006 * depth)
        canvas.paint(_rect_mask(shape, px, foot - ph, px + pw, foot), "pole", STUFF_COLOURS["pole"])
        if rng.random() < 0.7:
            s = max(3.0, h * 0.06 * depth)
            sign = _rect_mask(
                shape, px - s / 2, foot - ph - s * 0.6, px + pw + s / 2, foot - ph + s * 0.6
            )
            canvas.paint(sign, "traffic sign", _jitter(rng, STUFF_COLOURS["traffic sign"], 20))
    return {"road": road, "vanish_x": vanish_x}


def _vehicle(canvas, rng, cx, foot, depth, kind, instance) -> None:
    h, w = canvas.labels.shape
    shape = (h, w)
    unit = h * 0.45 * depth + 2  # car width in pixels at this distance
    width = unit * {"car": 1.0, "truck": 1.25, "bus": 1.4}[kind] * rng.uniform(0.85, 1.15)
    height = unit * {"car": 0.75, "truck": 1.2, "bus": 1.1}[kind] * rng.uniform(0.9, 1.1)
    colour = tuple(int(c) for c in rng.integers(20, 235, 3))
    body = _rect_mask(shape, cx - width / 2, foot - height * 0.6, cx + width / 2, foot)
    if kind == "car":
        roof = _poly_mask(
            shape,
            [
                (cx - width * 0.42, foot - height * 0.6),
                (cx + width * 0.42, foot - height * 0.6),
                (cx + width * 0.3, foot - height),
                (cx - width * 0.3, foot - height),
            ],
        )
    else:
        roof = _rect_mask(
            shape, cx - width / 2, foot - height, cx + width / 2, foot - height * 0.55
        )
    canvas.paint(body | roof, kind, colour, instance)
    # Windows and wheels: darker pixels of the same object (appearance, not labels).
    window = _rect_mask(
        shape, cx - width * 0.28, foot - height * 0.92, cx + width * 0.28, foot - height * 0.66
    )
    canvas.image[window & (canvas.instances == instance)] = (40, 50, 60)


def _person(canvas, rng, cx, foot, depth, label, instance) -> None:
    h, w = canvas.labels.shape
    shape = (h, w)
    tall = h * 0.55 * depth * rng.uniform(0.85, 1.15) + 3
    body_w = tall * 0.3
    clothes = tuple(int(c) for c in rng.integers(20, 235, 3))
    torso = _rect_mask(shape, cx - body_w / 2, foot - tall * 0.82, cx + body_w / 2, foot)
    head = _ellipse_mask(shape, cx, foot - tall * 0.9, tall * 0.08, tall * 0.09)
    canvas.paint(torso | head, label, clothes, instance)
    canvas.image[head & (canvas.instances == instance)] = (225, 185, 150)


def _cycle(canvas, rng, cx, foot, depth, kind, instance) -> float:
    """A bicycle or motorcycle; returns the height where its rider sits."""
    h, w = canvas.labels.shape
    shape = (h, w)
    length = h * 0.35 * depth * rng.uniform(0.9, 1.1) + 3
    r = length * 0.22
    wheels = _ellipse_mask(shape, cx - length * 0.35, foot - r, r, r) | _ellipse_mask(
        shape, cx + length * 0.35, foot - r, r, r
    )
    frame = _rect_mask(shape, cx - length * 0.35, foot - r * 2.2, cx + length * 0.35, foot - r)
    colour = (
        (30, 30, 30) if kind == "motorcycle" else tuple(int(c) for c in rng.integers(40, 220, 3))
    )
    canvas.paint(wheels | frame, kind, colour, instance)
    return foot - r * 1.8


def generate_scene(width: int, height: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: (H, W, 3) uint8 RGB image, (H, W) uint8 label ids, (H, W) uint16 instance ids."""
    rng = np.random.default_rng(seed)
    canvas = _Canvas(width, height)
    horizon = height * rng.uniform(0.38, 0.5)
    layout = _paint_stuff(canvas, rng, horizon)

    objects = []  # (foot y, kind, x)
    for _ in range(rng.integers(3, 10)):
        depth = rng.uniform(0.05, 1.0) ** 1.5  # more far (small) objects than near ones
        foot = horizon + (height - horizon) * depth
        span = 0.5 * depth + 0.04
        x = layout["vanish_x"] + width * rng.uniform(-span, span)
        objects.append((foot, rng.choice(["car", "car", "car", "truck", "bus"]), x))
    for _ in range(rng.integers(2, 9)):
        depth = rng.uniform(0.05, 1.0) ** 1.5
        foot = horizon + (height - horizon) * depth
        side = -1 if rng.random() < 0.5 else 1
        x = layout["vanish_x"] + side * width * (0.55 * depth + 0.05) * rng.uniform(0.9, 1.4)
        objects.append((foot, "person", x))
    for _ in range(rng.integers(0, 4)):
        depth = rng.uniform(0.1, 1.0) ** 1.5
        foot = horizon + (height - horizon) * depth
        x = layout["vanish_x"] + width * rng.uniform(-0.45, 0.45) * depth
        objects.append((foot, rng.choice(["bicycle", "motorcycle"]), x))
    if rng.random() < 0.3:
        objects.append(
            (horizon + (height - horizon) * 0.15, "crowd", width * rng.uniform(0.05, 0.95))
        )

    counters: dict[int, int] = {}

    def next_instance(label: str) -> int:
        label_id = LABEL[label]
        counters[label_id] = counters.get(label_id, -1) + 1
        return label_id * 1000 + counters[label_id]

    for foot, kind, x in sorted(objects, key=lambda o: o[0]):  # far first: near ones occlude
        depth = (foot - horizon) / (height - horizon)
        if kind in ("car", "truck", "bus"):
            _vehicle(canvas, rng, x, foot, depth, kind, next_instance(kind))
        elif kind == "person":
            _person(canvas, rng, x, foot, depth, "person", next_instance("person"))
        elif kind == "crowd":
            for k in range(4):
                _person(canvas, rng, x + k * height * 0.02, foot, depth, "person", None)
        else:
            seat = _cycle(canvas, rng, x, foot, depth, kind, next_instance(kind))
            _person(
                canvas,
                rng,
                x,
                seat + height * 0.15 * depth,
                depth * 0.7,
                "rider",
                next_instance("rider"),
            )

    # Appearance: vertical shading and sensor noise on top of the flat colours.
    shade = np.linspace(0.85, 1.1, height, dtype=np.float32)[:, None, None]
    noise = rng.normal(0, 6, canvas.image.shape).astype(np.float32)
    image = np.clip(canvas.image.astype(np.float32) * shade + noise, 0, 255).astype(np.uint8)
    image = cv2.GaussianBlur(image, (3, 3), 0)
    return image, canvas.labels, canvas.instances


def write_dataset(
    out: str | Path,
    splits: dict[str, int],
    seed: int,
    width: int = 2048,
    height: int = 1024,
    progress: bool = True,
) -> list[Path]:
    """Writes ``splits[name]`` scenes per split; returns the image paths."""
    out = Path(out)
    written = []
    jobs = [(split, i) for split, count in splits.items() for i in range(count)]
    for split, index in tqdm(jobs, desc="synthetic scenes", disable=not progress, unit="img"):
        cities = CITIES.get(split, (f"synth{split}",))
        city = cities[index % len(cities)]
        stem = f"{city}_{index // len(cities):06d}_{19:06d}"
        split_offset = sum(ord(c) for c in split) * 1_000_003
        image, label_ids, instances = generate_scene(
            width, height, seed * 7_919 + split_offset + index
        )
        image_dir = out / "leftImg8bit" / split / city
        label_dir = out / "gtFine" / split / city
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        image_path = image_dir / f"{stem}_leftImg8bit.png"
        write_image(image_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        write_image(label_dir / f"{stem}_gtFine_labelIds.png", label_ids)
        write_image(label_dir / f"{stem}_gtFine_instanceIds.png", instances)
        colour = cv2.cvtColor(PALETTE[label_ids], cv2.COLOR_RGB2BGR)
        write_image(label_dir / f"{stem}_gtFine_color.png", colour)
        written.append(image_path)
    return written


def _at_least(minimum: int):
    """argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def build_parser() -> ToolParser:
    parser = ToolParser(
        prog="python -m mtl_perception.data.synthetic",
        description="Write synthetic scenes in the Cityscapes layout.",
    )
    parser.add_argument("--out", type=Path, required=True, help="new dataset root to write")
    parser.add_argument("--train", type=non_negative_int, default=20, help="training images")
    parser.add_argument("--val", type=non_negative_int, default=5, help="validation images")
    parser.add_argument("--test", type=non_negative_int, default=0, help="test images")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--width", type=_at_least(64), default=2048, help="image width, pixels")
    parser.add_argument("--height", type=_at_least(32), default=1024, help="image height, pixels")
    return parser


@tool_main(build_parser)
def main(args: argparse.Namespace) -> int:
    """Checks ``--out`` first; the dataset appears under ``--out`` only when complete."""
    splits = {k: v for k, v in (("train", args.train), ("val", args.val), ("test", args.test)) if v}
    if not splits:
        raise ValueError("--train, --val and --test are all 0: nothing to write")
    with atomic_directory(args.out, "--out") as folder:
        paths = write_dataset(folder, splits, args.seed, args.width, args.height)
    print(f"wrote {len(paths)} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
