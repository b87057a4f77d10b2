"""Anchors, scale-aware target assignment, YOLOv2 coding and the multi-task loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_perception.data.cityscapes import CityscapesDataset
from mtl_perception.data.labels import ClassMap
from mtl_perception.data.loader import collate
from mtl_perception.data.synthetic import write_dataset
from mtl_perception.data.transforms import TrainAugmentation
from mtl_perception.detection.anchors import kmeans_iou, split_by_branch
from mtl_perception.detection.boxes import box_iou, generalized_iou
from mtl_perception.detection.coding import decode_boxes
from mtl_perception.detection.targets import assign_targets
from mtl_perception.losses import LossConfig, MultiTaskLoss
from mtl_perception.model import ModelConfig, MultiTaskNet, MultiTaskOutput, normalize_images
from mtl_perception.model.config import DEFAULT_ANCHORS

ANCHORS = torch.tensor(DEFAULT_ANCHORS)  # (3, 3, 2) pixels, sorted by area
STRIDE = 16


def test_kmeans_recovers_planted_clusters_and_splits_by_area():
    rng = np.random.default_rng(0)
    planted = np.array(
        [
            [6, 12],
            [14, 10],
            [10, 28],
            [30, 20],
            [20, 50],
            [50, 34],
            [40, 100],
            [100, 70],
            [200, 150],
        ],
        float,
    )
    samples = np.concatenate([c * rng.uniform(0.95, 1.05, (200, 2)) for c in planted])
    found = kmeans_iou(samples[rng.permutation(len(samples))], seed=1)
    areas = found.prod(axis=1)
    assert (np.diff(areas) > 0).all()
    expected = planted[np.argsort(planted.prod(axis=1))]
    assert np.abs(found / expected - 1).max() < 0.05, found
    branches = split_by_branch(found)
    assert [len(b) for b in branches] == [3, 3, 3]
    assert max(w * h for w, h in branches[0]) < min(w * h for w, h in branches[1])
    assert max(w * h for w, h in branches[1]) < min(w * h for w, h in branches[2])


def test_small_medium_large_boxes_go_to_their_branches_and_cells():
    boxes = torch.tensor(
        [[[96, 40, 104, 56], [300, 150, 328, 172], [500, 200, 680, 330]]], dtype=torch.float32
    )  # 8x16 (small), 28x22 (medium), 180x130 (large)
    classes = torch.tensor([[1, 0, 2]])
    targets = assign_targets(boxes, classes, ANCHORS, grid=(24, 48), stride=STRIDE)
    expected = [  # (branch, anchor, cell row, cell col, class)
        (0, 0, 48 // STRIDE, 100 // STRIDE, 1),
        (1, 0, 161 // STRIDE, 314 // STRIDE, 0),
        (2, 2, 265 // STRIDE, 590 // STRIDE, 2),
    ]
    for branch, anchor, row, col, cls in expected:
        assert targets[branch].positive.sum() == 1
        assert targets[branch].positive[0, anchor, row, col]
        assert targets[branch].classes[0, anchor, row, col] == cls


def test_decoding_an_encoded_target_gives_the_box_back():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 700, (20, 2))
    wh = rng.uniform(4, 300, (20, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + wh], axis=1), dtype=torch.float32)[None]
    boxes[..., 2::2] = boxes[..., 2::2].clamp(max=768)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(max=384)
    keep = ((boxes[0, :, 2:] - boxes[0, :, :2]) > 2).all(dim=1)
    boxes = boxes[:, keep]
    # One box per image so that no two boxes share a cell and anchor.
    boxes = boxes.transpose(0, 1)  # (M, 1, 4)
    classes = torch.zeros(boxes.shape[:2], dtype=torch.long)
    targets = assign_targets(boxes, classes, ANCHORS, grid=(24, 48), stride=STRIDE)
    found = 0
    for branch, target in enumerate(targets):
        offsets = target.boxes[..., :2].clamp(1e-6, 1 - 1e-6)
        raw = torch.cat([torch.logit(offsets), target.boxes[..., 2:]], dim=-1)  # (B, A, h, w, 4)
        decoded = decode_boxes(raw.permute(0, 1, 4, 2, 3), ANCHORS[branch], STRIDE)
        image, *_ = torch.nonzero(target.positive, as_tuple=True)
        assert torch.allclose(decoded[target.positive], boxes[image, 0], atol=1e-3)
        found += int(target.positive.sum())
    assert found == boxes.shape[0]


def _outputs(detections, seg=None) -> MultiTaskOutput:
    seg = torch.zeros(1, 3, 32, 64) if seg is None else seg
    return MultiTaskOutput(seg, torch.zeros(1, 3, 8, 16), torch.zeros(1, 3, 4, 8), detections)


def test_predictions_overlapping_ground_truth_take_no_no_object_loss():
    criterion = MultiTaskLoss(ANCHORS, STRIDE)
    box = torch.tensor(
        [[[300.0, 150.0, 328.0, 172.0]]]
    )  # medium: branch 1, anchor 0, cell (10, 19)
    classes = torch.tensor([[0]])
    base = [torch.zeros(1, 3, 8, 24, 48) for _ in range(3)]
    for m in base:
        m[:, :, 4] = -5.0  # every cell fairly sure there is nothing

    def obj_loss(box_raw: list[float], objectness: float) -> float:
        """Objectness loss when anchor 1 of branch 1 in the box's cell predicts box_raw."""
        maps = [m.clone() for m in base]
        maps[1][0, 1, :4, 10, 19] = torch.tensor(box_raw)
        maps[1][0, 1, 4, 10, 19] = objectness
        return criterion.detection(_outputs(tuple(maps)), box, classes)["obj"].item()

    anchor_w, anchor_h = ANCHORS[1, 1].tolist()
    offsets = torch.logit(torch.tensor([314 / 16 - 19, 161 / 16 - 10])).tolist()
    exact = [*offsets, float(np.log(28 / anchor_w)), float(np.log(22 / anchor_h))]
    tiny = [0.0, 0.0, -9.0, -9.0]
    # Overlapping the ground truth (IoU 1 > 0.6): its objectness costs nothing either way.
    assert obj_loss(exact, 3.0) == pytest.approx(obj_loss(exact, -3.0), rel=1e-6)
    # The same cell predicting a box that overlaps nothing is penalised for confidence.
    assert obj_loss(tiny, 3.0) > obj_loss(tiny, -3.0) + 0.1


def test_giou_box_term_is_zero_for_the_exact_box_and_grows_with_the_error():
    criterion = MultiTaskLoss(ANCHORS, STRIDE, LossConfig(box_loss="giou"))
    box = torch.tensor([[[300.0, 150.0, 328.0, 172.0]]])  # branch 1, anchor 0, cell (10, 19)
    classes = torch.tensor([[0]])
    anchor_w, anchor_h = ANCHORS[1, 0].tolist()
    offsets = torch.logit(torch.tensor([314 / 16 - 19, 161 / 16 - 10])).tolist()
    exact = [*offsets, float(np.log(28 / anchor_w)), float(np.log(22 / anchor_h))]

    def box_loss(raw: list[float]) -> float:
        maps = [torch.zeros(1, 3, 8, 24, 48) for _ in range(3)]
        maps[1][0, 0, :4, 10, 19] = torch.tensor(raw)
        return criterion.detection(_outputs(tuple(maps)), box, classes)["box"].item()

    assert box_loss(exact) == pytest.approx(0.0, abs=1e-5)
    wider = [exact[0], exact[1], exact[2] + 0.3, exact[3]]
    much_wider = [exact[0], exact[1], exact[2] + 1.0, exact[3]]
    assert 0 < box_loss(wider) < box_loss(much_wider)
    # Far from the box GIoU still gives a gradient (IoU alone would be flat at 0).
    leaf = torch.zeros(1, 3, 8, 24, 48, requires_grad=True)
    values = torch.zeros(1, 3, 8, 24, 48)
    values[0, 0, :4, 10, 19] = torch.tensor([*exact[:2], -4.0, -4.0])
    maps = (torch.zeros(1, 3, 8, 24, 48), leaf + values, torch.zeros(1, 3, 8, 24, 48))
    criterion.detection(_outputs(maps), box, classes)["box"].backward()
    assert leaf.grad[0, 0, 2:4, 10, 19].abs().min() > 0
    with pytest.raises(ValueError, match="box_loss must be one of"):
        LossConfig(box_loss="l1")


def test_generalized_iou_matches_its_definition():
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(200, 2, 2, generator=generator) * 100
    sizes = torch.rand(200, 2, 2, generator=generator) * 50 + 1
    a = torch.cat([corners[:, 0], corners[:, 0] + sizes[:, 0]], 1)
    b = torch.cat([corners[:, 1], corners[:, 1] + sizes[:, 1]], 1)
    expected = []
    for (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) in zip(a.tolist(), b.tolist(), strict=True):
        inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
        union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
        hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
        expected.append(inter / union - (hull - union) / hull)
    assert torch.allclose(generalized_iou(a, b), torch.tensor(expected), atol=1e-5)
    assert torch.allclose(generalized_iou(a, a), torch.ones(200))
    assert torch.allclose(torch.diagonal(box_iou(a, a)), torch.ones(200))


def test_skipped_heads_leave_the_other_task_unchanged():
    model = MultiTaskNet(ModelConfig(width_multiplier=0.125, input_height=64, input_width=128))
    model.eval()
    images = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        full = model(images)
        detection_only = model(images, segmentation=False)
        segmentation_only = model(images, detection=False)
    assert detection_only.seg_logits is None and detection_only.aux1_logits is None
    assert segmentation_only.detections is None
    for ours, theirs in zip(full.detections, detection_only.detections, strict=True):
        assert torch.equal(ours, theirs)
    assert torch.equal(full.seg_logits, segmentation_only.seg_logits)


def test_segmentation_loss_ignores_void_and_weights_aux_heads():
    criterion = MultiTaskLoss(ANCHORS, STRIDE)
    target = torch.randint(1, 3, (1, 32, 64))
    target[:, :, :10] = 0  # void
    seg = torch.randn(1, 3, 32, 64)
    empty = tuple(torch.zeros(1, 3, 8, 2, 4) for _ in range(3))
    loss = criterion.segmentation(_outputs(empty, seg), target)
    seg2 = seg.clone()
    seg2[:, :, :, :10] = torch.randn(1, 3, 32, 10) * 10  # change logits on void pixels only
    assert criterion.segmentation(_outputs(empty, seg2), target) == pytest.approx(loss.item())
    main = torch.nn.functional.cross_entropy(seg, target, ignore_index=0)
    uniform = torch.log(torch.tensor(3.0))  # the zero aux logits give log(C) per pixel
    assert loss.item() == pytest.approx((main + 0.6 * uniform + 0.5 * uniform).item(), rel=1e-5)


def test_loss_is_finite_without_ground_truth_boxes():
    criterion = MultiTaskLoss(ANCHORS, STRIDE)
    maps = tuple(torch.randn(2, 3, 8, 2, 4) for _ in range(3))
    out = MultiTaskOutput(
        torch.randn(2, 3, 32, 64), torch.randn(2, 3, 8, 16), torch.randn(2, 3, 4, 8), maps
    )
    losses = criterion(
        out,
        torch.randint(0, 3, (2, 32, 64)),
        torch.zeros(2, 0, 4),
        torch.zeros(2, 0, dtype=torch.long),
    )
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_cls"] == 0 and losses["loss_box"] == 0 and losses["loss_obj"] > 0


@pytest.mark.slow
def test_small_network_overfits_one_synthetic_batch(tmp_path):
    write_dataset(tmp_path, {"train": 2}, seed=1, width=512, height=256, progress=False)
    class_map = ClassMap.from_yaml()
    dataset = CityscapesDataset(
        tmp_path, "train", class_map, TrainAugmentation(128, 256, min_box_size=2)
    )
    torch.manual_seed(0)
    batch = collate([dataset[0], dataset[1]])
    assert (batch.classes >= 0).sum() >= 2
    anchors = [[[v / 3 for v in wh] for wh in branch] for branch in DEFAULT_ANCHORS]
    config = ModelConfig(width_multiplier=0.125, anchors=anchors)
    model = MultiTaskNet(config).train()
    criterion = MultiTaskLoss(torch.tensor(config.anchors), STRIDE)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    images = normalize_images(batch.images)
    first = None
    for _ in range(400):
        optimizer.zero_grad()
        loss = criterion(model(images), batch.segmentation, batch.boxes, batch.classes)["loss"]
        loss.backward()
        optimizer.step()
        first = first or loss.item()
        if loss.item() * 10 <= first:
            break
    assert loss.item() * 10 <= first, (first, loss.item())


def test_anchor_cli_writes_a_model_config_section(tmp_path):
    import subprocess
    import sys

    write_dataset(tmp_path / "data", {"train": 6}, seed=2, width=512, height=256, progress=False)
    out = tmp_path / "anchors.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtl_perception.detection.anchors",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    config = ModelConfig.from_yaml(out)
    areas = [w * h for branch in config.anchors for w, h in branch]
    assert areas == sorted(areas)
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtl_perception.detection.anchors",
            "--data",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "other.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr
