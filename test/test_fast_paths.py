"""Every Predictor fast path against fp32 eager (issue 9): masks agree on >= 99% of pixels and
detections match one to one with IoU > 0.9. CPU-runnable paths run here; the CUDA-only ones
run where CUDA is (the GPU benchmark machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.models import (
    SMALL_SCALED_ANCHORS,
    calibrated_small_model,
    trained_small_model,
    untrained_small_model,
)
from helpers.oracle import assert_detections_match, assert_masks_match, predict_with_logits

from mtl_perception.data.synthetic import generate_scene
from mtl_perception.detection.boxes import box_iou
from mtl_perception.detection.postprocess import (
    PostprocessConfig,
    cluster_nms,
    cluster_nms_fixed,
    postprocess,
    postprocess_fixed,
)
from mtl_perception.inference import predictor as predictor_module
from mtl_perception.inference.export import export_onnx
from mtl_perception.inference.fallback import FallbackPredictor
from mtl_perception.inference.predictor import Predictor, PredictorConfig, default_fast_path

SCORE_THRESHOLD = 0.05
MARGIN = 0.05  # detections this far above the threshold must appear in both
MIN_SIDE = 4.0  # pixels; evaluation ignores smaller boxes, and IoU of sub-pixel boxes is noise
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA-only fast path; no CUDA device here")

# bf16 autocast is a CUDA fast path; on this CPU it is slower than fp32 (docs/benchmarks.md) and
# moves the briefly trained network's boxes too far for IoU > 0.9 (0.77 seen), so it is not
# offered as a CPU fast path and not held to the parity bar here.
CPU_PATHS = {
    "channels_last": {"channels_last": True},
    "fixed_shapes": {"fixed_shapes": True},
    "preallocate": {"preallocate": True},
    "host_resize": {"resize": "host"},
    "compile_default": {"compile": "default"},
    "combined": {"channels_last": True, "preallocate": True, "fixed_shapes": True},
}
CUDA_PATHS = {
    "cuda_fp32": {},
    "cuda_fp16": {"precision": "fp16"},
    "cuda_bf16": {"precision": "bf16"},
    "cuda_channels_last_fp16": {"precision": "fp16", "channels_last": True},
    "cuda_compile_max_autotune": {"compile": "max-autotune"},
    "cuda_compile_reduce_overhead": {"compile": "reduce-overhead"},
    "cuda_graph": {"cuda_graph": True, "preallocate": True},
    "cuda_graph_fp16": {"cuda_graph": True, "preallocate": True, "precision": "fp16"},
    "cuda_host_resize": {"resize": "host", "preallocate": True},
}
# bf16 keeps 8 significant bits (fp16 11). On an H200 (docs/benchmarks.md, "The GPU check") every
# fp32 and fp16 path kept each box above IoU 0.9, while bf16 moved one box to IoU 0.886 in one run
# and another (a 726x512 box) to 0.788 in the next (cuDNN picks kernels per run); on the CPU bf16
# gave 0.77. bf16 is therefore held to "the same objects" (IoU > 0.7; a broken path scores near 0)
# and the docs recommend fp16 on CUDA. Masks are held to the same 99% agreement as every path.
MIN_BOX_IOU = {"cuda_bf16": 0.7}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Trained for minutes: only the slow parity tests, whose bars need a trained network."""
    torch.manual_seed(0)
    return trained_small_model(tmp_path_factory.mktemp("scenes"))


@pytest.fixture(scope="module")
def untrained():
    """Made in seconds, for the fast tests of what holds for any network (issue 22 section 7:
    the robot's `colcon test -m "not slow"` waited minutes for `model`'s training)."""
    return untrained_small_model()


@pytest.fixture(scope="module")
def images():
    # Held-out scenes (other seeds than training's), two sizes the node sees in practice.
    return [generate_scene(512, 256, 11)[0], generate_scene(1024, 512, 12)[0]]


@pytest.fixture(scope="module")
def reference(model, images):
    predictor = Predictor(model, SMALL_SCALED_ANCHORS, PredictorConfig(score_threshold=0.05))
    return [predictor.predict(image)[0] for image in images]


def _comparable(prediction) -> np.ndarray:
    sides = prediction.boxes[:, 2:] - prediction.boxes[:, :2]
    return (prediction.scores >= SCORE_THRESHOLD + MARGIN) & (sides >= MIN_SIDE).all(axis=1)


def assert_parity(reference, candidate, min_iou: float = 0.9) -> None:
    for expected, got in zip(reference, candidate, strict=True):
        agreement = (expected.mask == got.mask).mean()
        assert agreement >= 0.99, f"mask agrees on {agreement:.4f} of pixels"
        assert _comparable(expected).sum() >= 2, "the reference must have detections to compare"
        for first, second in ((expected, got), (got, expected)):
            sure = _comparable(first)
            for box, cls in zip(first.boxes[sure], first.classes[sure], strict=True):
                same = second.classes == cls
                assert same.any(), f"class {cls} detection {box} missing"
                iou = box_iou(torch.tensor(box[None]), torch.tensor(second.boxes[same]))
                assert iou.max() > min_iou, f"detection {box} best match IoU {iou.max():.3f}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CPU_PATHS))
def test_cpu_fast_path_matches_fp32_eager(name, model, images, reference):
    config = PredictorConfig(score_threshold=SCORE_THRESHOLD, **CPU_PATHS[name])
    predictor = Predictor(model, SMALL_SCALED_ANCHORS, config)
    assert_parity(reference, [predictor.predict(image)[0] for image in images])
    # A second frame through the same predictor (reused buffers, compiled graph) agrees too.
    assert_parity(reference[:1], predictor.predict([images[0]]))


@pytest.mark.slow
def test_onnxruntime_backend_matches_fp32_eager(tmp_path, model, images, reference):
    path = export_onnx(model, tmp_path / "small.onnx", 128, 256)
    predictor = Predictor.from_onnx(path, PredictorConfig(score_threshold=SCORE_THRESHOLD))
    assert_parity(reference, [predictor.predict(image)[0] for image in images])
    # The exported batch dimension is dynamic: three frames in one call.
    assert_parity(reference[:1] * 3, predictor.predict([images[0]] * 3))


@needs_cuda
@pytest.mark.parametrize("name", sorted(CUDA_PATHS))
def test_cuda_fast_path_matches_fp32_eager(name, model, images, reference):
    config = PredictorConfig(device="cuda", score_threshold=SCORE_THRESHOLD, **CUDA_PATHS[name])
    predictor = Predictor(model, SMALL_SCALED_ANCHORS, config)
    for _ in range(2):  # the first call captures or compiles, the second replays
        candidate = [predictor.predict(image)[0] for image in images]
        assert_parity(reference, candidate, MIN_BOX_IOU.get(name, 0.9))


def _assert_identical(expected, got) -> None:
    assert len(expected) == len(got)
    for first, second in zip(expected, got, strict=True):
        for field in ("mask", "boxes", "scores", "classes"):
            assert np.array_equal(getattr(first, field), getattr(second, field)), field


def _read_only_bgr(image: np.ndarray) -> np.ndarray:
    """A frame as a bgr8 message's bytes are viewed: BGR, contiguous, read-only."""
    bgr = np.ascontiguousarray(image[..., ::-1])
    bgr.flags.writeable = False
    return bgr


@needs_cuda
def test_cuda_graph_fp16_reorders_bgr_frames_exactly_and_matches_fp32_eager(
    model, images, reference
):
    """BGR frames (mixed with RGB ones, and of mixed sizes) through the CUDA graph's static
    per-image flags: the same graph on the same pixels, so the very same results as RGB."""
    options = CUDA_PATHS["cuda_graph_fp16"]
    config = PredictorConfig(device="cuda", score_threshold=SCORE_THRESHOLD, **options)
    predictor = Predictor(model, SMALL_SCALED_ANCHORS, config)
    rgb = predictor.predict(images)  # two sizes in one pass (captures that graph)
    assert_parity(reference, rgb)
    bgr = [_read_only_bgr(image) for image in images]
    _assert_identical(rgb, predictor.predict([bgr[0], images[1]], bgr=[True, False]))
    _assert_identical(rgb, predictor.predict([images[0], bgr[1]], bgr=[False, True]))
    _assert_identical(rgb, predictor.predict(bgr, bgr=True))
    single = predictor.predict(images[1])
    assert_parity(reference[1:], single)
    _assert_identical(single, predictor.predict(bgr[1], bgr=True))
    _assert_identical(single, predictor.predict(images[1]))  # the flags were reset


@needs_cuda
@pytest.mark.parametrize(
    "options",
    [
        {"cuda_graph": True, "preallocate": True, "precision": "fp16"},
        {"cuda_graph": True, "preallocate": True, "mask_resolution": "network"},
        {"preallocate": True, "precision": "fp16", "fixed_shapes": True},
        {"cuda_graph": True, "precision": "fp16"},  # no pinned buffers: collected in submit
    ],
    ids=["graph_fp16", "graph_network_masks", "eager_fp16_preallocate", "graph_fp16_unpinned"],
)
def test_cuda_batches_collected_later_equal_predict_one_by_one(monkeypatch, untrained, options):
    """Batch k+1 (and k+2) submitted before batch k is collected: each batch's outputs reach
    pinned buffers of their own before the next replay overwrites the graph's, and the frames
    whose NMS needs the host (one fixed round here) are finished from their own detections."""
    finished = []
    original = predictor_module.postprocess
    monkeypatch.setattr(
        predictor_module, "postprocess", lambda *a, **k: finished.append(1) or original(*a, **k)
    )
    config = PredictorConfig(device="cuda", score_threshold=SCORE_THRESHOLD, **options)
    predictor = Predictor(untrained, SMALL_SCALED_ANCHORS, config)
    predictor.nms_rounds = 1  # before the first capture: graphs keep the rounds they saw
    scenes = [generate_scene(512, 256, seed)[0] for seed in (11, 12, 13, 14)]
    batches = [[scene] for scene in scenes] + [[scenes[1], generate_scene(1024, 512, 12)[0]]]
    expected = [predictor.predict(batch) for batch in batches]  # captures each shape first
    assert finished, "no frame needed the host's NMS: that case is not exercised"
    pending = [predictor.submit(batches[0]), predictor.submit(batches[1])]
    pending.append(predictor.submit(batches[2]))  # a third waits for the first
    assert pending[0].done()
    pending += [predictor.submit(batch) for batch in batches[3:]]
    for index in reversed(range(len(batches))):  # collected newest first
        _assert_identical(expected[index], pending[index].result())
    _assert_identical(expected[0], predictor.predict(batches[0]))


@needs_cuda
def test_the_default_cuda_fast_path_runs_without_falling_back_and_matches_fp32_eager(
    model, images, reference
):
    config = PredictorConfig(
        device="cuda", score_threshold=SCORE_THRESHOLD, **default_fast_path("cuda")
    )
    lines = []
    predictor = FallbackPredictor(
        config, lambda c: Predictor(model, SMALL_SCALED_ANCHORS, c), lines.append
    )
    first = predictor.submit(images[0])  # the first frame: synchronous, may fall back
    second = predictor.submit(images[1])
    third = predictor.submit(_read_only_bgr(images[0]), bgr=True)
    assert predictor.active_path == "cuda_graph+fp16+preallocate", lines
    assert not lines
    assert_parity(reference, [first.result()[0], second.result()[0]])
    _assert_identical(first.result(), third.result())


def test_batched_images_give_the_same_results_as_single_ones(untrained, images):
    config = PredictorConfig(score_threshold=SCORE_THRESHOLD, preallocate=True, fixed_shapes=True)
    predictor = Predictor(untrained, SMALL_SCALED_ANCHORS, config)
    frames = [images[0], images[0][:, ::-1].copy(), images[0]]
    batched, logits = predict_with_logits(predictor, frames)
    # Within a batch size, a frame's results depend on that frame alone: not on its place in the
    # batch nor on its neighbours, to the bit.
    rotated = predictor.predict(frames[1:] + frames[:1])
    for first, second in (
        (batched[0], batched[2]),
        (batched[0], rotated[1]),
        (batched[1], rotated[0]),
    ):
        for field in ("mask", "boxes", "scores", "classes"):
            assert np.array_equal(getattr(first, field), getattr(second, field)), field
    # Across batch sizes only to float32 rounding: oneDNN chooses its convolution kernels by
    # batch size, so a batch of 3 and a batch of 1 sum in another order (raw outputs 4e-5 apart,
    # 0 with torch.backends.mkldnn disabled), and a decoded box (anchor * exp(t), then x2 to
    # 512 px) moves by up to 4.3e-3 px on 466-px boxes, about 1e-5 of its size. (Before the
    # Predictor stopped converting the shared model in place, this test ran on channels-last
    # weights and stayed within 1e-3 px plus np.allclose's rtol by luck.) So masks are equal but
    # at near-tied logits, and detections within the tolerances of helpers/oracle.py.
    for frame, result, batch_logits in zip(frames, batched, logits, strict=True):
        (single,), alone = predict_with_logits(predictor, frame)
        assert_masks_match(single.mask, result.mask, alone[0], batch_logits)
        assert_detections_match(single, result, frame.shape, config)


def test_fixed_shape_postprocessing_equals_the_dynamic_one():
    generator = torch.Generator().manual_seed(3)
    anchors = torch.tensor(
        [
            [[8.0, 6], [5, 15], [9, 31]],
            [[21, 15], [15, 49], [41, 29]],
            [[21, 71], [66, 52], [91, 79]],
        ]
    )
    config = PostprocessConfig(score_threshold=0.3, max_detections=40, pre_nms_top_k=500)
    compared = 0
    for _ in range(10):
        maps = tuple(torch.randn(2, 3, 8, 12, 24, generator=generator) * 2 for _ in range(3))
        dynamic = postprocess(maps, anchors, 16, config)
        fixed = postprocess_fixed(maps, anchors, 16, config)
        assert fixed.settled.all()
        for index, found in enumerate(dynamic):
            count = int(fixed.counts[index])
            assert count == len(found.boxes)
            assert torch.equal(fixed.table[index, :count, :4], found.boxes)
            assert torch.equal(fixed.table[index, :count, 4], found.scores)
            assert torch.equal(fixed.table[index, :count, 5].long(), found.classes)
            assert not fixed.table[index, count:].any()
            compared += count
    assert compared > 100


def test_unsettled_fixed_nms_is_finished_exactly(untrained, images):
    config = PredictorConfig(score_threshold=SCORE_THRESHOLD, fixed_shapes=True)
    predictor = Predictor(untrained, SMALL_SCALED_ANCHORS, config)
    predictor.nms_rounds = 1  # one round settles only frames where nothing is suppressed
    dynamic = Predictor(untrained, SMALL_SCALED_ANCHORS, PredictorConfig(score_threshold=0.05))
    for image in images:
        expected = dynamic.predict(image)[0]
        assert _comparable(expected).sum() >= 2, "the reference must have detections to compare"
        got = predictor.predict(image)[0]
        assert np.array_equal(got.classes, expected.classes)  # the same kept set, in order
        assert np.allclose(got.boxes, expected.boxes, atol=1e-3)


def test_a_fast_path_predictor_leaves_the_callers_model_as_it_was():
    # The tests of this module share one model. A channels-last Predictor used to convert that
    # model's parameters in place, so every test after test_cpu_fast_path_matches_fp32_eager
    # [channels_last] ran channels-last convolutions (another summation order) against a
    # reference computed before, and test_unsettled_fixed_nms_is_finished_exactly failed in a
    # whole-file run with boxes 3.6e-3 px off (it passed alone).
    model = calibrated_small_model(config=SMALL_SCALED_ANCHORS)
    image = generate_scene(512, 256, 11)[0]
    config = PredictorConfig(score_threshold=SCORE_THRESHOLD)
    before = Predictor(model, SMALL_SCALED_ANCHORS, config).predict(image)[0]
    state = {name: (t.clone(), t.stride()) for name, t in model.state_dict().items()}
    for options in CPU_PATHS.values():
        if options.get("compile", "none") == "none":  # compile wraps, it changes nothing
            Predictor(model, SMALL_SCALED_ANCHORS, PredictorConfig(**options))
    for name, tensor in model.state_dict().items():
        value, stride = state[name]
        assert tensor.stride() == stride, f"{name} changed layout"
        assert torch.equal(tensor, value), f"{name} changed value"
    after = Predictor(model, SMALL_SCALED_ANCHORS, config).predict(image)[0]
    assert np.array_equal(after.boxes, before.boxes)
    assert np.array_equal(after.scores, before.scores)


def test_fixed_rounds_report_unsettled_chains():
    # a suppresses b, b would suppress c, a and c barely overlap: greedy keeps a and c, and
    # Cluster-NMS needs three rounds to know (two to get there, one to see nothing change).
    boxes = torch.tensor([[[0.0, 0, 10, 10], [2, 0, 12, 10], [4, 0, 14, 10]]])
    classes = torch.zeros(1, 3, dtype=torch.long)
    valid = torch.ones(1, 3, dtype=torch.bool)
    greedy = cluster_nms(boxes[0], torch.tensor([0.9, 0.8, 0.7]), 0.6)
    assert greedy.tolist() == [0, 2]
    for rounds, settled in ((1, False), (2, False), (3, True)):
        keep, done = cluster_nms_fixed(boxes, classes, valid, 0.6, rounds)
        assert bool(done[0]) is settled
        if settled:
            assert keep[0].nonzero()[:, 0].tolist() == [0, 2]


def test_bad_fast_path_options_are_named(untrained):
    for options, words in (
        ({"compile": "fastest"}, "compile must be one of"),
        ({"resize": "gpu"}, "resize must be one of"),
        ({"cuda_graph": True}, "cuda_graph needs a CUDA device"),
        ({"precision": "fp16"}, "fp16 needs a CUDA device"),
    ):
        with pytest.raises(ValueError, match=words):
            Predictor(untrained, SMALL_SCALED_ANCHORS, PredictorConfig(**options))
