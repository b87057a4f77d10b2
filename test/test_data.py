"""Cityscapes reader, class mapping, boxes, augmentation and the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS

from mtl_perception.data.cityscapes import CityscapesDataset
from mtl_perception.data.labels import ClassMap
from mtl_perception.data.loader import collate, make_loader
from mtl_perception.data.sample import Sample
from mtl_perception.data.synthetic import generate_scene, write_dataset
from mtl_perception.data.transforms import TrainAugmentation, ValidationResize
from mtl_perception.detection.boxes import tight_boxes

REPO = Path(__file__).resolve().parent.parent
CLASS_MAP = ClassMap.from_yaml(REPO / "config" / "classes_cityscapes.yaml")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    write_dataset(root, {"train": 4, "val": 2}, seed=5, width=512, height=256, progress=False)
    return root


def test_every_cityscapes_label_maps_where_the_yaml_says():
    spec = yaml.safe_load((REPO / "config" / "classes_cityscapes.yaml").read_text())
    seg_of = {n: c["id"] for c in spec["segmentation"]["classes"] for n in c["labels"]}
    det_of = {n: c["id"] for c in spec["detection"]["classes"] for n in c["labels"]}
    real = [label for label in CITYSCAPES_LABELS if label.id >= 0]
    label_image = np.array([[label.id for label in real]], np.uint8)  # every id, crafted image
    mapped = CLASS_MAP.segmentation(label_image)[0]
    instances = np.array([label.id * 1000 + 3 for label in real])
    det = CLASS_MAP.instance_classes(instances)
    for label, seg_class, det_class in zip(real, mapped, det, strict=True):
        assert seg_class == seg_of.get(label.name, 0), label.name
        assert det_class == det_of.get(label.name, -1), label.name
    assert CLASS_MAP.num_seg_classes == 12 and CLASS_MAP.num_det_classes == 3


def test_unknown_label_name_in_mapping_is_refused(tmp_path):
    spec = yaml.safe_load((REPO / "config" / "classes_cityscapes.yaml").read_text())
    spec["detection"]["classes"][0]["labels"] = ["car", "spaceship"]
    path = tmp_path / "classes.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="spaceship") as error:
        ClassMap.from_yaml(path)
    assert str(path) in str(error.value)


def test_boxes_from_crafted_instance_image_are_exact_and_crowds_give_none():
    instances = np.zeros((50, 80), np.int32)
    instances[:] = 7  # road (stuff)
    instances[10:20, 5:15] = 26_000  # car 0: rows 10..19, cols 5..14
    instances[30:45, 60:62] = 24_001  # person 1
    instances[40, 70] = 33_000  # a one-pixel bicycle
    instances[0:5, 40:79] = 24  # a crowd of persons: label id only
    instances[25:28, 20:30] = 11_000  # a "building instance": not a detection class
    values, boxes = tight_boxes(instances)
    classes = CLASS_MAP.instance_classes(values)
    found = {int(v): (tuple(b), int(c)) for v, b, c in zip(values, boxes, classes, strict=True)}
    assert found[26000] == ((5, 10, 15, 20), 0)
    assert found[24001] == ((60, 30, 62, 45), 1)
    assert found[33000] == ((70, 40, 71, 41), 2)
    assert found[11000][1] == -1  # no detection class: dropped by the reader
    assert 24 not in found  # crowd regions never give a box


def _convex_scene(rng: np.random.Generator, height: int = 256, width: int = 512) -> Sample:
    """Non-overlapping rectangles and ellipses: each visible region is convex."""
    instances = np.full((height, width), 7, np.int32)
    cells = [(r, c) for r in range(2) for c in range(4)]
    for k, (r, c) in enumerate(cells):
        if rng.random() < 0.2:
            continue
        cw, ch = width // 4, height // 2
        w, h = rng.integers(4, cw - 4), rng.integers(4, ch - 4)
        x0, y0 = c * cw + rng.integers(0, cw - w), r * ch + rng.integers(0, ch - h)
        value = [26, 24, 33][k % 3] * 1000 + k
        if k % 2:
            instances[y0 : y0 + h, x0 : x0 + w] = value
        else:
            mask = np.zeros_like(instances, np.uint8)
            cv2.ellipse(
                mask,
                (int(x0 + w // 2), int(y0 + h // 2)),
                (int(w // 2), int(h // 2)),
                0,
                0,
                360,
                1,
                -1,
            )
            instances[mask.astype(bool)] = value
    values, boxes = tight_boxes(instances)
    classes = CLASS_MAP.instance_classes(values)
    image = rng.integers(0, 255, (height, width, 3), np.uint8)
    label_ids = np.where(instances >= 1000, instances // 1000, instances).astype(np.uint8)
    return Sample(image, CLASS_MAP.segmentation(label_ids), instances, boxes, classes, values)


@pytest.mark.parametrize("seed", range(40))
def test_augmentation_keeps_boxes_tight_on_transformed_instances(seed):
    rng = np.random.default_rng(seed)
    sample = _convex_scene(rng)
    augment = TrainAugmentation(height=96, width=192)
    out = augment(sample, np.random.default_rng(1000 + seed))
    assert out.image.shape == (96, 192, 3) and out.segmentation.shape == (96, 192)
    values, tight = tight_boxes(out.instances)
    tight_of = dict(zip(values.tolist(), tight, strict=True))
    for value, box in zip(out.instance_values.tolist(), out.boxes, strict=True):
        assert value in tight_of, "a kept box has no pixels in the crop"
        assert np.abs(tight_of[value] - box).max() <= 1.0, (value, box, tight_of[value])

    # Replay the same geometry to check what was dropped: no dropped box had its centre inside.
    replay = np.random.default_rng(1000 + seed)
    scale = replay.uniform(1.0, 1.5)
    sw, sh = max(192, round(192 * scale)), max(96, round(96 * scale))
    x0, y0 = int(replay.integers(0, sw - 192 + 1)), int(replay.integers(0, sh - 96 + 1))
    factors = np.array([sw / 512, sh / 256] * 2)
    kept = set(out.instance_values.tolist())
    for value, box in zip(sample.instance_values.tolist(), sample.boxes, strict=True):
        if value in kept:
            continue
        moved = box * factors - [x0, y0, x0, y0]
        cx, cy = (moved[0] + moved[2]) / 2, (moved[1] + moved[3]) / 2
        assert not (0 <= cx < 192 and 0 <= cy < 96), (value, moved)


def test_validation_resize_scales_boxes_and_labels():
    sample = _convex_scene(np.random.default_rng(0))
    out = ValidationResize(height=128, width=256)(sample)
    assert out.image.shape == (128, 256, 3)
    assert np.allclose(out.boxes, sample.boxes / 2)
    assert set(np.unique(out.segmentation)) <= set(np.unique(sample.segmentation))


def test_synthetic_dataset_reads_as_cityscapes(synthetic_root):
    files = sorted(p.relative_to(synthetic_root).as_posix() for p in synthetic_root.rglob("*.png"))
    assert "leftImg8bit/train/synthburg/synthburg_000000_000019_leftImg8bit.png" in files
    assert "gtFine/val/synthstadt/synthstadt_000001_000019_gtFine_instanceIds.png" in files
    train = CityscapesDataset(synthetic_root, "train", CLASS_MAP)
    val = CityscapesDataset(synthetic_root, "val", CLASS_MAP)
    assert len(train) == 4 and len(val) == 2
    classes_seen, seg_seen = set(), set()
    for i in range(len(train)):
        sample = train.load(i)
        assert sample.image.shape == (256, 512, 3) and sample.image.dtype == np.uint8
        classes_seen |= set(sample.classes.tolist())
        seg_seen |= set(np.unique(sample.segmentation).tolist())
        assert (sample.boxes[:, 2:] > sample.boxes[:, :2]).all()
    assert {0, 1} <= classes_seen  # vehicles and people in every small synthetic split
    assert {1, 2, 3, 4, 8, 10} <= seg_seen  # sky, building, road, sidewalk, vehicles, people


def test_synthetic_generator_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(a, {"train": 2}, seed=9, width=256, height=128, progress=False)
    write_dataset(b, {"train": 2}, seed=9, width=256, height=128, progress=False)
    for path in a.rglob("*.png"):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()


def test_synthetic_objects_span_a_wide_range_of_scales(synthetic_root):
    train = CityscapesDataset(synthetic_root, "train", CLASS_MAP)
    heights = np.concatenate(
        [train.load(i).boxes[:, 3] - train.load(i).boxes[:, 1] for i in range(4)]
    )
    assert heights.max() / max(heights.min(), 1) >= 8


def test_missing_partner_and_empty_split_are_named(tmp_path, synthetic_root):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    victim = next((copy / "gtFine" / "val").rglob("*_gtFine_instanceIds.png"))
    victim.unlink()
    with pytest.raises(ValueError, match="label files missing") as error:
        CityscapesDataset(copy, "val", CLASS_MAP)
    assert victim.name in str(error.value)
    with pytest.raises(ValueError, match=r"looked for .*leftImg8bit/test"):
        CityscapesDataset(copy, "test", CLASS_MAP)
    with pytest.raises(ValueError, match="does not exist"):
        CityscapesDataset(tmp_path / "nowhere", "train", CLASS_MAP)


def test_unreadable_png_and_size_mismatch_are_named(tmp_path, synthetic_root):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    dataset = CityscapesDataset(copy, "train", CLASS_MAP)
    broken = dataset.images[0]
    broken.write_bytes(b"\x89PNG truncated")
    with pytest.raises(ValueError, match="unreadable image") as error:
        dataset.load(0)
    assert str(broken) in str(error.value)
    label = next((copy / "gtFine" / "train").rglob(f"{dataset.names()[1]}_gtFine_labelIds.png"))
    cv2.imwrite(str(label), np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="sizes must match") as error:
        dataset.load(1)
    assert str(label) in str(error.value)


def test_label_ids_above_255_are_refused_and_odd_instance_values_are_read(tmp_path, synthetic_root):
    """A 16-bit labelIds PNG is read when its ids are 0..255 and refused, naming the file and
    the value, when one is not (it used to be an IndexError, in mtl-eval and mtl-bag
    record-dataset alike). instanceIds are 16-bit: any value gives no crash."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    dataset = CityscapesDataset(copy, "val", CLASS_MAP)
    label = next((copy / "gtFine" / "val").rglob(f"{dataset.names()[0]}_gtFine_labelIds.png"))
    wide = cv2.imread(str(label), cv2.IMREAD_UNCHANGED).astype(np.uint16)
    cv2.imwrite(str(label), wide)
    assert np.array_equal(dataset.load(0).segmentation, CLASS_MAP.segmentation(wide))
    wide[3, 4] = 300
    cv2.imwrite(str(label), wide)
    with pytest.raises(ValueError, match="label id 300 at row 3, column 4") as error:
        dataset.load(0)
    assert str(label) in str(error.value)
    instance = next((copy / "gtFine" / "val").rglob(f"{dataset.names()[1]}_gtFine_instanceIds.png"))
    values = cv2.imread(str(instance), cv2.IMREAD_UNCHANGED)
    values[0:3, 0:3] = 65_535  # label 65: no such Cityscapes label
    values[3:6, 0:3] = 999  # below 1000: a crowd region of a label that does not exist
    values[6:9, 0:3] = 26_999  # a car
    cv2.imwrite(str(instance), values)
    sample = dataset.load(1)
    assert 65_535 not in sample.instance_values and 999 not in sample.instance_values
    assert 26_999 in sample.instance_values


def test_loader_pads_boxes_and_is_deterministic(synthetic_root):
    dataset = CityscapesDataset(synthetic_root, "train", CLASS_MAP, TrainAugmentation(64, 128))

    def first_batches(seed: int):
        loader = make_loader(dataset, 2, shuffle=True, workers=2, seed=seed)
        return [(b.images.clone(), b.boxes.clone(), b.names) for b in loader]

    one, two, other = first_batches(3), first_batches(3), first_batches(4)
    for (ia, ba, na), (ib, bb, nb) in zip(one, two, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ba, bb) and na == nb
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(one, other, strict=True))
    batch = collate([dataset[0], dataset[1]])
    assert batch.images.shape == (2, 3, 64, 128) and batch.images.dtype == torch.uint8
    counts = (batch.classes >= 0).sum(dim=1)
    assert batch.boxes.shape[1] == counts.max()
    assert (batch.boxes[batch.classes < 0] == 0).all()


def test_objects_partly_or_wholly_outside_the_frame_stay_in_their_place():
    """Every instance's box is no larger than the biggest object the generator draws."""
    for seed in range(30):
        _, _, instances = generate_scene(384, 192, seed)
        _, boxes = tight_boxes(instances)
        widths = boxes[:, 2] - boxes[:, 0]
        assert (widths <= 0.75 * 192 * 1.4 * 1.15 + 2).all(), (seed, boxes[widths.argmax()])
