"""The Predictor, ONNX export and mtl-eval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.models import SMALL, SMALL_NAMED, calibrated_small_model, save_model
from helpers.oracle import assert_masks_match, predict_with_logits
from helpers.refusal import invoke
from torch import nn

from mtl_perception.data.synthetic import generate_scene, write_dataset
from mtl_perception.detection.boxes import tight_boxes
from mtl_perception.detection.targets import assign_targets
from mtl_perception.evaluation import evaluate
from mtl_perception.inference import Predictor, PredictorConfig, export
from mtl_perception.model import ModelConfig, MultiTaskNet
from mtl_perception.model.checkpoint import load_model, save_checkpoint


class FixedHead(nn.Module):
    """Replaces a YOLO head: returns a fixed raw map whatever the features."""

    def __init__(self, raw: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("raw", raw)  # (1, A * (5 + K), h, w)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.raw.expand(features.shape[0], -1, -1, -1)


def _heads_for(
    boxes: torch.Tensor, classes: torch.Tensor, config: ModelConfig
) -> list[torch.Tensor]:
    """Raw maps that decode to exactly ``boxes`` (network-input pixels), confidently."""
    h, w = config.input_height // 16, config.input_width // 16
    anchors = torch.tensor(config.anchors)
    targets = assign_targets(boxes[None], classes[None], anchors, (h, w), 16)
    maps = []
    for target in targets:
        raw = torch.full((1, 3, 5 + config.num_det_classes, h, w), -12.0)
        positive = target.positive[0]  # (A, h, w)
        offsets = target.boxes[0][..., :2].clamp(1e-6, 1 - 1e-6)
        raw[0, :, 0:2] = torch.logit(offsets).permute(0, 3, 1, 2)
        raw[0, :, 2:4] = target.boxes[0][..., 2:].permute(0, 3, 1, 2)
        raw[0, :, 4] = torch.where(positive, 12.0, -12.0)
        for a, y, x in positive.nonzero().tolist():
            raw[0, a, 5 + target.classes[0, a, y, x], y, x] = 12.0
        maps.append(raw.flatten(1, 2))
    return maps


@pytest.mark.parametrize(("width", "height"), [(2048, 1024), (1280, 720), (640, 480)])
def test_boxes_come_back_in_original_pixels(width, height):
    config = ModelConfig(width_multiplier=0.125)  # 768 x 384 network input
    image, _, instances = generate_scene(width, height, seed=11)
    values, boxes = tight_boxes(instances)
    sizes = boxes[:, 2:] - boxes[:, :2]
    # Well-separated, not-tiny objects so that no two share a cell and anchor.
    chosen, centres = [], []
    for i in np.argsort(-sizes.prod(axis=1)):
        centre = (boxes[i, :2] + boxes[i, 2:]) / 2
        if sizes[i].min() * 384 / height >= 6 and all(
            np.abs(centre - c).max() > 80 for c in centres
        ):
            chosen.append(i)
            centres.append(centre)
        if len(chosen) == 4:
            break
    assert len(chosen) >= 2
    known = torch.tensor(boxes[chosen])
    classes = torch.tensor([v // 1000 % 3 for v in values[chosen]])
    scale = torch.tensor([768 / width, 384 / height] * 2)
    model = MultiTaskNet(config).eval()
    for head, raw in zip(
        model.detector.heads, _heads_for(known * scale, classes, config), strict=True
    ):
        head.__class__ = FixedHead  # keep the module slot, replace behaviour
        FixedHead.__init__(head, raw)
    predictor = Predictor(model, config, PredictorConfig(score_threshold=0.5))
    (prediction,) = predictor.predict(image)
    assert prediction.mask.shape == (height, width)
    assert len(prediction.boxes) == len(chosen)
    order = np.lexsort((prediction.boxes[:, 1], prediction.boxes[:, 0]))
    expected_order = np.lexsort((known[:, 1].numpy(), known[:, 0].numpy()))
    assert np.allclose(prediction.boxes[order], known.numpy()[expected_order], atol=0.05)
    assert np.array_equal(prediction.classes[order], classes.numpy()[expected_order])
    assert (prediction.scores > 0.99).all()


def test_predictor_accepts_lists_arrays_and_tensors_and_rejects_bad_images():
    model = calibrated_small_model()
    predictor = Predictor(model, SMALL, PredictorConfig(score_threshold=0.0, max_detections=5))
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 255, (300, 500, 3), np.uint8),
        rng.integers(0, 255, (97, 61, 3), np.uint8),
    ]
    results, logits = predict_with_logits(predictor, images)
    assert [r.mask.shape for r in results] == [(300, 500), (97, 61)]
    assert all(r.mask.dtype == np.uint8 and r.mask.min() >= 1 for r in results)  # never void
    assert all(len(r.boxes) <= 5 for r in results)
    for result, image in zip(results, images, strict=True):
        assert (result.boxes[:, [0, 2]] <= image.shape[1]).all() and (result.boxes >= 0).all()
    # Alone, or second of a (2, 3, H, W) tensor, the image runs in another batch (other kernels,
    # another rounding): its mask agrees but at near-tied logits (helpers/oracle.py).
    (single,), alone = predict_with_logits(predictor, images[0])
    assert_masks_match(single.mask, results[0].mask, alone[0], logits[0])
    batch = torch.from_numpy(np.stack([images[0]] * 2)).permute(0, 3, 1, 2)
    twice, twice_logits = predict_with_logits(predictor, batch)
    assert_masks_match(twice[1].mask, results[0].mask, twice_logits[1], logits[0])
    for bad in (
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 5, 3), np.uint8),
    ):
        with pytest.raises(ValueError):
            predictor.predict(bad)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Predictor(model, SMALL, PredictorConfig(precision="fp16"))


@pytest.mark.slow
def test_onnxruntime_matches_pytorch(tmp_path, small_dataset):
    model = calibrated_small_model()
    checkpoint = save_model(tmp_path / "model.pt", model)
    path = tmp_path / "small.onnx"
    outcome = invoke(export.main, "--checkpoint", checkpoint, "--out", path)
    assert outcome.code == 0, outcome.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "small.onnx"]  # no .tmp
    import onnxruntime as ort

    images = torch.randn(2, 3, 128, 256)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        outputs = model(images)
    for ours, theirs in zip((outputs.seg_logits, *outputs.detections), onnx_outputs, strict=True):
        assert ours.shape == theirs.shape
        assert np.abs(ours.numpy() - theirs).max() <= 1e-3
    # The onnxruntime backend of the Predictor gives the same results as the torch one.
    image = np.random.default_rng(1).integers(0, 255, (200, 400, 3), np.uint8)
    config = PredictorConfig(score_threshold=0.05, max_detections=1000)  # no cut among ties
    (by_torch,), torch_logits = predict_with_logits(Predictor(model, SMALL, config), image)
    (by_onnx,), onnx_logits = predict_with_logits(Predictor.from_onnx(path, config), image)
    assert_masks_match(by_torch.mask, by_onnx.mask, torch_logits[0], onnx_logits[0])
    # This untrained network's scores saturate at 1.0 and tie, so the order of the boxes may
    # differ (test_fast_paths compares a trained one's): the same boxes, as sets.
    assert len(by_torch.boxes) == len(by_onnx.boxes)
    distance = np.abs(by_torch.boxes[:, None] - by_onnx.boxes[None]).max(axis=2)
    same_class = by_torch.classes[:, None] == by_onnx.classes[None]
    assert (np.where(same_class, distance, np.inf).min(axis=1) <= 0.1).all()
    # mtl-eval --onnx needs no checkpoint and records the model it evaluated.
    out = tmp_path / "eval"
    outcome = invoke(
        evaluate.main, "--onnx", path, "--data", small_dataset, "--out", out, "--max-images", 1
    )
    assert outcome.code == 0, outcome.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["onnx"] == str(path) and metrics["backend"] == "onnxruntime"
    assert "checkpoint" not in metrics and metrics["images"] == 1


def test_checkpoints_round_trip_and_bad_files_are_named(tmp_path):
    model = calibrated_small_model()
    path = save_model(tmp_path / "model.pt", model)
    loaded, _ = load_model(path)
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary behind
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:5000])
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    wrong = tmp_path / "wrong.pt"
    state = dict(model.state_dict())
    state.pop("decoder.aux1.bias")
    save_checkpoint(wrong, {"model_config": model.config.to_dict(), "model": state})
    for bad, message in (
        (truncated, "not a readable checkpoint"),
        (other, "not an mtl_perception checkpoint"),
        (wrong, r"does not fit .*decoder\.aux1\.bias"),
    ):
        with pytest.raises(ValueError, match=message) as error:
            load_model(bad)
        assert str(bad) in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_model(tmp_path / "missing.pt")


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval_data")
    write_dataset(root, {"val": 3}, seed=4, width=512, height=256, progress=False)
    return root


def test_mtl_eval_prints_table_and_writes_metrics_and_overlays(tmp_path, small_dataset):
    names = SMALL_NAMED
    checkpoint = save_model(tmp_path / "model.pt", calibrated_small_model(config=names))
    out = tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtl_perception.evaluation",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(small_dataset),
            "--split",
            "val",
            "--out",
            str(out),
            "--save-overlays",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    for row in (
        "Road IoU",
        "Mean IoU (mIoU)",
        "AP Car/Truck/Bus",
        "Mean AP (mAP)",
        "Parameters",
        "Latency",
    ):
        assert row in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 3 and set(metrics["ap"]) == set(names.det_class_names)
    assert 0 <= metrics["miou"] <= 1 and metrics["latency_ms"]["mean"] > 0
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 2


def test_mtl_eval_refuses_mismatched_classes_and_missing_files(tmp_path, small_dataset):
    config = ModelConfig(
        width_multiplier=0.125, num_det_classes=5, input_height=128, input_width=256
    )
    checkpoint = save_model(tmp_path / "five.pt", calibrated_small_model(config=config))
    for args, message in (
        (["--checkpoint", str(checkpoint)], "5 detection classes vs 3"),
        (["--checkpoint", str(tmp_path / "none.pt")], "checkpoint not found"),
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "mtl_perception.evaluation",
                *args,
                "--data",
                str(small_dataset),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_non_finite_network_outputs_are_refused():
    model = calibrated_small_model()
    with torch.no_grad():
        model.decoder.classifier.bias[3] = float("nan")
    predictor = Predictor(model, SMALL, PredictorConfig())
    with pytest.raises(FloatingPointError, match="non-finite"):
        predictor.predict(np.zeros((64, 128, 3), np.uint8))
