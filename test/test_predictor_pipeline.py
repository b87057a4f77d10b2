"""The Predictor's side of the node's fast frame path (issue 23): BGR frames reordered on the
device, masks at the network resolution, batches submitted now and collected later, and the
default fast path per device. The CUDA forms (graph replay, pinned buffers in flight) are in
test_fast_paths.py, run where CUDA is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.models import SMALL_SCALED_ANCHORS, calibrated_small_model

from mtl_perception.data.synthetic import generate_scene
from mtl_perception.inference import predictor as predictor_module
from mtl_perception.inference.fallback import FallbackPredictor, describe, simpler_paths
from mtl_perception.inference.predictor import (
    PendingPrediction,
    Predictor,
    PredictorConfig,
    default_fast_path,
    mask_scale,
    upsample_mask,
)
from mtl_perception.inference.standin import STANDIN_BOXES, StandInNetwork, standin_factory
from mtl_perception.model.config import ModelConfig

FIELDS = ("mask", "boxes", "scores", "classes")
SIZES = [(100, 300), (128, 256), (100, 300), (61, 97)]  # (H, W): three sizes, one twice


@pytest.fixture(scope="module")
def model():
    return calibrated_small_model(config=SMALL_SCALED_ANCHORS)


@pytest.fixture(scope="module")
def frames():
    """RGB scenes of the sizes above (a scene has structure, so detections and classes vary)."""
    return [generate_scene(w, h, seed=20 + i)[0] for i, (h, w) in enumerate(SIZES)]


def make(model, **options) -> Predictor:
    return Predictor(model, SMALL_SCALED_ANCHORS, PredictorConfig(score_threshold=0.05, **options))


def assert_same(expected, got, name: str = "") -> None:
    assert len(expected) == len(got), name
    for index, (first, second) in enumerate(zip(expected, got, strict=True)):
        for field in FIELDS:
            a, b = getattr(first, field), getattr(second, field)
            assert a.shape == b.shape and a.dtype == b.dtype, (name, index, field)
            assert np.array_equal(a, b), (name, index, field)


def read_only_bgr(image: np.ndarray) -> np.ndarray:
    """The frame as a bgr8 message's bytes would be viewed: BGR, contiguous, read-only."""
    bgr = np.ascontiguousarray(image[..., ::-1])
    bgr.flags.writeable = False
    return bgr


# -- BGR frames ---------------------------------------------------------------------------------


OPTIONS = {
    "eager": {},
    "preallocate": {"preallocate": True},
    "host_resize": {"resize": "host"},
    "host_resize_preallocate": {"resize": "host", "preallocate": True},
    "fixed_shapes_channels_last": {"fixed_shapes": True, "channels_last": True},
    "network_masks": {"mask_resolution": "network"},
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_bgr_frames_give_exactly_the_results_of_converting_them_to_rgb_first(model, frames, name):
    """Mixed sizes and mixed channel orders in one call equal the same frames converted to RGB
    on the host, to the bit (the reorder is a permutation); the frames are never written."""
    predictor = make(model, **OPTIONS[name])
    expected = predictor.predict(frames)
    assert sum(len(p.boxes) for p in expected) > 0  # detections are compared, not none
    orders = [True, False, False, True]
    inputs = [read_only_bgr(f) if bgr else f for f, bgr in zip(frames, orders, strict=True)]
    before = [i.copy() for i in inputs]
    assert_same(expected, predictor.predict(inputs, bgr=orders), f"{name} mixed")
    assert_same(expected, predictor.predict([read_only_bgr(f) for f in frames], bgr=True), name)
    for frame, bgr in ((frames[1], True), (frames[0], [False])):  # one frame, one size
        image = read_only_bgr(frame) if bgr is True else frame
        assert_same(predictor.predict(frame), predictor.predict(image, bgr=bgr), f"{name} one")
    same_size = [frames[0], read_only_bgr(frames[2])]  # one upload of one size, mixed orders
    assert_same(
        predictor.predict([frames[0], frames[2]]),
        predictor.predict(same_size, bgr=(False, np.bool_(True))),
        f"{name} same size",
    )
    for image, copy in zip(inputs, before, strict=True):
        assert np.array_equal(image, copy)


def test_a_bgr_tensor_batch_is_reordered_too(model, frames):
    predictor = make(model)
    rgb = torch.from_numpy(np.stack([frames[0], frames[2]])).permute(0, 3, 1, 2)
    expected = predictor.predict(rgb)
    assert_same(expected, predictor.predict(rgb.flip(1), bgr=True))
    mixed = torch.stack([rgb[0], rgb[1].flip(0)])
    assert_same(expected, predictor.predict(mixed, bgr=[False, True]))


def test_a_single_read_only_frame_is_not_copied_on_the_cpu(model, frames):
    image = read_only_bgr(frames[1])
    staged = make(model)._upload([image])
    assert staged.data_ptr() == image.__array_interface__["data"][0]  # a view of the bytes


@pytest.mark.parametrize(
    "bgr,words",
    [
        ([True], "1 flags for 2 images"),
        ([True, False, True], "3 flags for 2 images"),
        ("yes", "bgr must be a bool or one bool per image"),
        ([1, 0], "bgr must be a bool or one bool per image"),
        (None, "bgr must be a bool or one bool per image"),
    ],
)
def test_bgr_flags_that_do_not_fit_are_named(model, frames, bgr, words):
    predictor = make(model)
    with pytest.raises(ValueError, match=words):
        predictor.submit([frames[0], frames[1]], bgr=bgr)
    with pytest.raises(ValueError, match="empty batch"):
        predictor.predict([])


# -- masks at the network resolution ------------------------------------------------------------


@pytest.mark.parametrize("resize", ["device", "host"])
def test_network_masks_upsampled_by_the_stated_mapping_equal_input_masks(model, frames, resize):
    """With mask_resolution "network" the masks are (h, w) and the boxes unchanged;
    upsample_mask gives the "input" mask exactly, and mask_scale's rule (the cell holding each
    pixel's centre) gives it at every pixel whose centre is not exactly on a cell border."""
    full = make(model, resize=resize)
    small = make(model, resize=resize, mask_resolution="network")
    images = [*frames, generate_scene(512, 256, seed=5)[0], generate_scene(333, 211, seed=6)[0]]
    for batch in (images, [images[0]], [images[0], images[2]]):
        expected, got = full.predict(batch), small.predict(batch)
        for image, first, second in zip(batch, expected, got, strict=True):
            assert second.mask.shape == small.input_size == (128, 256)
            for field in ("boxes", "scores", "classes"):
                assert np.array_equal(getattr(first, field), getattr(second, field)), field
            height, width = image.shape[:2]
            assert np.array_equal(upsample_mask(second.mask, (height, width)), first.mask)
            sx, sy = mask_scale((height, width), small.input_size)
            assert (sx, sy) == (width / 256, height / 128)
            # mask pixel (u, v) covers [u*sx, (u+1)*sx) x [v*sy, (v+1)*sy): pixel x's centre
            # x + 0.5 lies in cell floor((x + 0.5) / sx) (exact rationals: 2x+1 over 2*sx)
            u = np.minimum((2 * np.arange(width) + 1) * 256 // (2 * width), 255)
            v = np.minimum((2 * np.arange(height) + 1) * 128 // (2 * height), 127)
            by_rule = second.mask[v][:, u]
            on_border_u = (2 * np.arange(width) + 1) * 256 % (2 * width) == 0
            on_border_v = (2 * np.arange(height) + 1) * 128 % (2 * height) == 0
            differs = by_rule != first.mask
            assert not (differs & ~on_border_v[:, None] & ~on_border_u[None, :]).any()
            if not on_border_u.any() and not on_border_v.any():
                assert not differs.any()


def test_mask_scale_matches_the_upsampling_at_every_pixel_for_the_node_sizes():
    """The node's 768x384 network masks onto common camera sizes: the rule and the upsampling
    agree at every pixel, those whose centre lies on a cell border included (there are such
    pixels at 640, 1920, 1080...: PyTorch's float32 scale rounds the right way for these)."""
    torch.manual_seed(0)
    mask = torch.randint(1, 12, (384, 768), dtype=torch.uint8).numpy()
    for height, width in ((1024, 2048), (480, 640), (1200, 1920), (720, 1280), (1080, 1920)):
        sx, sy = mask_scale((height, width), (384, 768))
        assert (sx, sy) == (width / 768, height / 384)
        u = (2 * np.arange(width) + 1) * 768 // (2 * width)  # floor((x + 0.5) / sx), exactly
        v = (2 * np.arange(height) + 1) * 384 // (2 * height)
        assert np.array_equal(mask[v][:, u], upsample_mask(mask, (height, width))), (height, width)


def test_logit_masks_at_the_network_resolution_are_the_argmax_there(model, frames):
    """mask_mode "logits" upsamples logits to the mask's size: at the network resolution that
    is no upsampling, so it equals the "nearest" mask; mixed sizes then share one pass."""
    nearest = make(model, mask_resolution="network")
    logits = make(model, mask_resolution="network", mask_mode="logits")
    calls = []
    hook = model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        got = logits.predict(frames)
    finally:
        hook.remove()
    assert calls == [len(frames)]
    assert_same(nearest.predict(frames), got)


def test_an_unknown_mask_resolution_is_named():
    with pytest.raises(ValueError, match="mask_resolution must be one of"):
        PredictorConfig(mask_resolution="full")


# -- submit now, collect later ------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"preallocate": True, "fixed_shapes": True}, {"mask_resolution": "network"}],
    ids=["eager", "preallocate_fixed", "network_masks"],
)
def test_interleaved_submits_give_the_results_of_predict_one_by_one(model, frames, options):
    predictor = make(model, **options)
    batches = [[frames[0]], [frames[2]], frames, [frames[1], read_only_bgr(frames[3])]]
    flags = [False, False, False, [False, True]]
    expected = [predictor.predict(b, bgr=f) for b, f in zip(batches, flags, strict=True)]
    first = predictor.submit(batches[0])
    second = predictor.submit(batches[1])
    assert_same(expected[1], second.result())
    third = predictor.submit(batches[2])
    fourth = predictor.submit(batches[3], bgr=flags[3])
    assert_same(expected[0], first.result())
    assert_same(expected[3], fourth.result())
    assert_same(expected[2], third.result())
    assert first.done() and first.result() is first.result()  # collected once, kept


def test_unsettled_nms_is_finished_from_the_batchs_own_detections(monkeypatch, model, frames):
    """With one NMS round some frames are unsettled and finished on the host from their
    detections, collected after later batches were submitted: the same as one by one."""
    finished = []
    original = predictor_module.postprocess
    monkeypatch.setattr(
        predictor_module, "postprocess", lambda *a, **k: finished.append(1) or original(*a, **k)
    )
    predictor = make(model, fixed_shapes=True)
    predictor.nms_rounds = 1
    scenes = [generate_scene(512, 256, seed=s)[0] for s in (11, 12, 13)]
    expected = [predictor.predict(scene) for scene in scenes]
    assert finished, "no frame needed the host's NMS: the case is not exercised"
    pending = [predictor.submit(scene) for scene in scenes]
    for result, pend in zip(expected, pending, strict=True):
        assert_same(result, pend.result())


def test_non_finite_outputs_are_raised_by_result_not_submit():
    config = ModelConfig(width_multiplier=0.125, input_height=64, input_width=128)
    network = StandInNetwork(config)
    outputs = network(torch.zeros(1, 3, 64, 128))
    outputs.detections[1].view(-1)[5] = float("nan")
    predictor = Predictor(network, config, PredictorConfig())
    pending = predictor.submit(np.zeros((64, 128, 3), np.uint8))
    for _ in range(2):  # every call: the batch stays failed
        with pytest.raises(FloatingPointError, match="non-finite"):
            pending.result()


def test_a_pending_made_from_results_or_an_error_gives_them_back(model, frames):
    predictions = make(model).predict(frames[0])
    assert PendingPrediction.completed(predictions).result() is predictions
    with pytest.raises(FloatingPointError, match="injected"):
        PendingPrediction.failed(FloatingPointError("injected")).result()


def test_the_fallback_predictor_submits_its_first_frame_through_the_fallback(
    monkeypatch, model, frames
):
    """A fast path that fails at its first frame (here a compiled network that raises when run)
    still falls back when that frame is submitted; later submits go to the path that works."""
    calls = []

    def compile_that_breaks_when_run(module, **kwargs):
        def network(*args):
            calls.append(1)
            raise RuntimeError("injected: graph capture failed")

        return network

    monkeypatch.setattr(torch, "compile", compile_that_breaks_when_run)
    lines = []
    config = PredictorConfig(compile="max-autotune", score_threshold=0.05)
    factory = lambda c: Predictor(model, SMALL_SCALED_ANCHORS, c)  # noqa: E731
    predictor = FallbackPredictor(config, factory, lines.append)
    reference = make(model)
    bgr = read_only_bgr(frames[1])
    first = predictor.submit([frames[0], bgr], bgr=[False, True])
    assert predictor.active_path == "fp32 eager" and len(lines) == 1 and calls == [1]
    assert_same(reference.predict([frames[0], frames[1]]), first.result())
    second, third = predictor.submit(frames[2]), predictor.submit(bgr, bgr=True)
    assert_same(reference.predict(frames[1]), third.result())
    assert_same(reference.predict(frames[2]), second.result())
    assert calls == [1] and len(predictor.fallbacks) == 1


def test_the_fallback_predictors_first_frame_non_finite_everywhere_raises_from_result():
    config = ModelConfig(width_multiplier=0.125, input_height=64, input_width=128)
    network = StandInNetwork(config)
    network(torch.zeros(1, 3, 64, 128)).seg_logits.view(-1)[3] = float("inf")
    factory = lambda c: Predictor(network, config, c)  # noqa: E731
    predictor = FallbackPredictor(PredictorConfig(channels_last=True), factory)
    pending = predictor.submit(np.zeros((64, 128, 3), np.uint8))
    with pytest.raises(FloatingPointError, match="non-finite"):
        pending.result()
    assert predictor.active_path == "channels_last"  # the frame's fault, not the path's


# -- the stand-in and the default fast path -----------------------------------------------------


def test_the_standin_takes_bgr_frames_network_masks_and_submits():
    predictor = standin_factory()(PredictorConfig(mask_resolution="network"))
    sizes = [(480, 640), (1024, 2048)]
    frames = [np.zeros((*size, 3), np.uint8) for size in sizes]
    first = predictor.submit(frames, bgr=[True, False])
    second = predictor.submit(frames[1], bgr=True)
    for result, shapes in ((second.result(), sizes[1:]), (first.result(), sizes)):
        for prediction, (height, width) in zip(result, shapes, strict=True):
            assert prediction.mask.shape == predictor.input_size
            assert len(prediction.boxes) == STANDIN_BOXES
            assert (prediction.boxes[:, 2] <= width).all()
            assert (prediction.boxes[:, 3] <= height).all()


def test_the_default_fast_path_per_device_and_its_fallback_chain():
    cuda = default_fast_path("cuda")
    assert cuda == default_fast_path("cuda:1") == default_fast_path("benchmark-standin:cuda")
    assert (cuda["cuda_graph"], cuda["precision"], cuda["preallocate"]) == (True, "fp16", True)
    chain = [describe(c) for c in simpler_paths(PredictorConfig(device="cuda", **cuda))]
    assert chain == ["cuda_graph+fp16+preallocate", "fp16+preallocate", "fp16", "fp32 eager"]
    cpu = default_fast_path("cpu")
    assert cpu == default_fast_path("benchmark-standin")
    config = PredictorConfig(device="cpu", **cpu)  # valid on a CPU
    assert [describe(c) for c in simpler_paths(config)] == ["channels_last", "fp32 eager"]
    for bad in ("gpu", "cuda:x", ""):
        with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
            default_fast_path(bad)


def test_input_resolution_masks_are_c_contiguous():
    """The CPU mask up-sampling's fancy index laid the mask out column by column: serialising
    it (a C-order copy) then cost 8 ms per 2048x1024 frame in the node."""
    from mtl_perception.inference.predictor import _upsample_ids

    ids = torch.randint(1, 12, (2, 1, 48, 96), dtype=torch.uint8)
    mask = _upsample_ids(ids, (128, 256))
    assert mask.is_contiguous() and mask.numpy().flags.c_contiguous
    expected = F.interpolate(ids, size=(128, 256), mode="nearest-exact")[:, 0]
    assert torch.equal(mask, expected)
