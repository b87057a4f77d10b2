"""The lean frame path and the one home of class semantics (issue 15, item 2): every faster
step gives exactly what the slower one it replaced gave."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.models import SEG_NAMES, SMALL, SMALL_NAMED, calibrated_small_model

from mtl_perception.data.labels import (
    UNLABELED,
    ClassMap,
    class_semantics,
    default_class_map,
    segmentation_colours,
)
from mtl_perception.inference.predictor import (
    Predictor,
    PredictorConfig,
    _class_ids,
    _nearest_exact_indices,
)
from mtl_perception.inference.standin import STANDIN_BOXES, StandInNetwork, standin_factory
from mtl_perception.model import ModelConfig, MultiTaskNet, normalize_images
from mtl_perception.visualization import colorize, draw_overlay

# The paper's palette as it was written out before it came from the class map: the Cityscapes
# colour of each class's main label, void black.
PAPER_PALETTE = [
    (0, 0, 0),
    (70, 130, 180),
    (70, 70, 70),
    (128, 64, 128),
    (244, 35, 232),
    (190, 153, 153),
    (107, 142, 35),
    (153, 153, 153),
    (0, 0, 142),
    (220, 220, 0),
    (220, 20, 60),
    (255, 0, 0),
]


def _old_colorize(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(colours)] = colours
    return lut[mask]


def test_packaged_class_map_gives_the_paper_palette():
    assert default_class_map().seg_colours.tolist() == [list(c) for c in PAPER_PALETTE]
    assert segmentation_colours(12).tolist() == [list(c) for c in PAPER_PALETTE]
    named = class_semantics(SMALL_NAMED)
    assert named.seg_colours.tolist() == [list(c) for c in PAPER_PALETTE]
    assert named.seg_names == SEG_NAMES and named.void_id == 0


@pytest.mark.parametrize("num_classes", [2, 12, 40])
def test_colorize_equals_the_table_lookup_it_replaced(num_classes):
    rng = np.random.default_rng(num_classes)
    mask = rng.integers(0, 256, (37, 53), dtype=np.uint8)  # ids beyond the classes: black
    colours = segmentation_colours(num_classes)
    expected = _old_colorize(mask, colours)
    assert np.array_equal(colorize(mask, colours), expected)
    assert np.array_equal(colorize(mask, num_classes), expected)
    strided = np.asfortranarray(mask)  # any memory layout
    assert np.array_equal(colorize(strided, colours), expected)
    if num_classes == 40:  # classes beyond the class map: generated, distinct, stable
        assert len({tuple(c) for c in colours[12:]}) == 28
        assert np.array_equal(colours, segmentation_colours(40))


def test_overlay_reuses_a_given_colour_mask():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    mask = rng.integers(1, 12, (60, 80), dtype=np.uint8)
    boxes = np.array([[5, 6, 40, 30]], np.float32)
    args = (image, mask, boxes, np.array([1]), np.array([0.9], np.float32), ("a", "b"))
    colours = segmentation_colours(12)
    fresh = draw_overlay(*args, colours)
    assert np.array_equal(draw_overlay(*args, colours, coloured_mask=colorize(mask, 12)), fresh)
    black = np.zeros_like(image)  # the given colour mask is the one blended in
    assert not np.array_equal(draw_overlay(*args, colours, coloured_mask=black), fresh)


def test_class_semantics_follow_the_class_map(tmp_path):
    classes = tmp_path / "classes.yaml"
    classes.write_text(
        "segmentation:\n"
        "  void_id: 2\n"
        "  classes:\n"
        "    - {id: 0, name: Road, labels: [road]}\n"
        "    - {id: 1, name: Green, labels: [vegetation, terrain]}\n"
        "detection:\n"
        "  classes:\n"
        "    - {id: 0, name: Car, labels: [car]}\n"
    )
    class_map = ClassMap.from_yaml(classes)
    # colours: the first label's Cityscapes colour; void black wherever it is
    assert class_map.seg_colours.tolist() == [[128, 64, 128], [107, 142, 35], [0, 0, 0]]
    # by name for a named model (order of the model, not of the class map), generated otherwise
    colours = segmentation_colours(3, ("Green", "Unknown", "Road"), class_map)
    assert colours[0].tolist() == [107, 142, 35] and colours[2].tolist() == [128, 64, 128]
    assert colours[1].tolist() == segmentation_colours(3, ("x", "y", "z"), class_map)[1].tolist()
    # void <-> UNLABELED in masks that leave the package, both ways
    mask = np.array([[0, 1, 2]], np.uint8)
    published = class_map.to_published(mask)
    assert published.tolist() == [[0, 1, UNLABELED]]
    assert class_map.from_published(published).tolist() == mask.tolist()


def test_unnamed_model_gets_ids_as_names():
    semantics = class_semantics(SMALL)
    assert semantics.seg_names == tuple(str(i) for i in range(12))
    assert semantics.det_names == ("0", "1", "2")


def test_class_ids_equal_argmax_with_ties():
    torch.manual_seed(0)
    logits = torch.randn(2, 11, 40, 70)
    logits[:, 4, :10] = logits[:, 7, :10] = logits[:, :, :10].amax(1) + 1  # ties: the first wins
    logits[:, 2, 30:] = 50.0
    ids = _class_ids(logits)
    assert ids.dtype == torch.uint8 and ids.shape == (2, 1, 40, 70)
    assert torch.equal(ids.long(), logits.argmax(1, keepdim=True) + 1)
    assert (ids[:, 0, :10] == 5).all() and (ids[:, 0, 30:] == 3).all()


@pytest.mark.parametrize(
    "source,target",
    [((384, 768), (1024, 2048)), ((384, 768), (480, 640)), ((128, 256), (97, 61)),
     ((24, 48), (1000, 1999)), ((7, 5), (7, 5))],
)  # fmt: skip
def test_mask_gather_equals_nearest_exact_interpolation(source, target):
    torch.manual_seed(1)
    ids = torch.randint(1, 12, (2, 1, *source), dtype=torch.uint8)
    expected = F.interpolate(ids, size=target, mode="nearest-exact")[:, 0]
    rows = _nearest_exact_indices(source[0], target[0])
    columns = _nearest_exact_indices(source[1], target[1])
    assert torch.equal(torch.from_numpy(ids[:, 0].numpy()[:, rows][:, :, columns]), expected)


def test_predictor_mask_and_finiteness_unchanged_by_the_lean_path():
    """The predictor's mask equals the straightforward argmax + nearest-exact up-sampling of
    the network's own logits, and a single frame is uploaded without a copy."""
    model = calibrated_small_model()
    predictor = Predictor(model, SMALL, PredictorConfig())
    image = np.random.default_rng(2).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    staged = predictor._upload([image])
    assert staged.data_ptr() == image.__array_interface__["data"][0]  # a view, no copy
    with torch.inference_mode():
        batch = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        batch = F.interpolate(batch, size=(128, 256), mode="bilinear", align_corners=False)
        logits = model(normalize_images(batch)).seg_logits
        ids = (logits[:, 1:].argmax(1, keepdim=True) + 1).to(torch.uint8)
        expected = F.interpolate(ids, size=(300, 500), mode="nearest-exact")[0, 0].numpy()
    assert np.array_equal(predictor.predict(image)[0].mask, expected)
    readonly = image.copy()
    readonly.flags.writeable = False  # e.g. a bag's buffer: copied, still right
    assert np.array_equal(predictor.predict(readonly)[0].mask, expected)


@pytest.mark.parametrize("where", ["seg_inf", "det_nan", "det_neg_inf"])
def test_non_finite_outputs_anywhere_are_refused(where):
    config = ModelConfig(width_multiplier=0.125, input_height=64, input_width=128)
    network = StandInNetwork(config)
    outputs = network(torch.zeros(1, 3, 64, 128))
    target = {"seg_inf": outputs.seg_logits, "det_nan": outputs.detections[2]}.get(
        where, outputs.detections[0]
    )
    target.view(-1)[17] = {"seg_inf": np.inf, "det_nan": np.nan}.get(where, -np.inf)
    predictor = Predictor(network, config, PredictorConfig())
    with pytest.raises(FloatingPointError, match="non-finite"):
        predictor.predict(np.zeros((64, 128, 3), np.uint8))


@pytest.mark.parametrize("config", [SMALL, ModelConfig(num_seg_classes=5, num_det_classes=7)])
def test_standin_has_the_network_output_shapes(config):
    images = torch.zeros(2, 3, 96, 160)
    real = MultiTaskNet(_narrow(config)).eval()(images)
    standin = StandInNetwork(config)(images)
    assert standin.seg_logits.shape == real.seg_logits.shape
    assert [d.shape for d in standin.detections] == [d.shape for d in real.detections]
    assert StandInNetwork(config)(images).seg_logits.shape == real.seg_logits.shape


def _narrow(config: ModelConfig) -> ModelConfig:
    """``config`` with a small width (the shapes do not depend on it)."""
    return ModelConfig(**{**config.to_dict(), "width_multiplier": 0.125})


def test_standin_predictor_publishes_every_class_and_its_boxes():
    predictor = standin_factory()(PredictorConfig())
    assert predictor.model_config.seg_class_names == default_class_map().seg_names
    prediction = predictor.predict(np.zeros((480, 640, 3), np.uint8))[0]
    assert prediction.mask.shape == (480, 640)
    assert set(np.unique(prediction.mask)) == set(range(1, 12))  # never void
    assert len(prediction.boxes) == STANDIN_BOXES
    assert (prediction.scores > 0.9).all()
    assert (prediction.boxes[:, 2] <= 640).all() and (prediction.boxes[:, 3] <= 480).all()


def test_standin_is_selected_only_by_its_own_device_value():
    from mtl_perception.inference.device_names import standin_device
    from mtl_perception.ros.parameters import NodeParameters

    assert standin_device("benchmark-standin") == "cpu"
    assert standin_device("benchmark-standin:cuda:1") == "cuda:1"
    assert [standin_device(d) for d in ("auto", "cpu", "cuda", "benchmark-standin:gpu")] == [
        None
    ] * 4
    assert NodeParameters().device == "auto"  # never the default
    NodeParameters(device="benchmark-standin").validate()  # needs no checkpoint
    with pytest.raises(ValueError, match="'checkpoint' is empty"):
        NodeParameters(device="cpu").validate()
    with pytest.raises(ValueError, match="'device'"):
        NodeParameters(checkpoint="m.pt", device="benchmark-standin:gpu").validate()
