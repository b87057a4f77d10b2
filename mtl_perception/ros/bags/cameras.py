"""``mtl-bag evaluate`` of a rig bag (:mod:`.rig`): one node, every camera, a report per camera
and in total.

One node is started with ``cameras:=[<the bag's cameras>]`` (each camera's transport from its
topic's type), and every camera's topic is replayed to it at the same time, each by its own
player (:func:`.replay.replay`), paced as asked (the bag's timing x F, or each camera by its own
outputs). Each camera is then written and scored exactly as a single-camera evaluation of its
topics (its ground truth, its node counters: the node's ``<node>: camera <name>`` status) into
``OUT/cameras/<name>/`` (report, output bag). The total adds the cameras' scored data up
(:class:`.score.Tally`: pixel and detection counts, AP over every camera's detections,
latencies, frames; throughput over the common wall time) in ``OUT/report.json`` / ``report.md``
with a per-camera table; the gate's criteria judge the total. ``mtl-bag run`` of a rig bag writes
one output bag per camera (``OUT/<name>/``), and ``mtl-bag score --run OUT`` scores them as
``evaluate`` does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...data.labels import ClassMap
from ...model.config import ModelConfig
from ...outputs import atomic_directory
from .criteria import Criterion, judge, verdict_dicts
from .multi import _node_counters
from .node_process import start_node
from .pipeline import (
    Scored,
    ScoreOptions,
    _check_out,
    _class_map,
    _fail,
    _frame_records,
    _score_into,
)
from .read import (
    COMPRESSED_TYPE,
    BagTopics,
    GroundTruth,
    RunOutputs,
    read_ground_truth,
    read_messages,
    read_run,
)
from .replay import Collected, NodeTopics, replay
from .report import SUMMARY_KEYS, summary_table, write_summary_report
from .resources import ResourceSampler
from .rig import RigCamera, check_rig_cameras, player_name, rig_cameras
from .run import PreparedRun, load_model_config, prepare_run, run_info, write_output_bag
from .score import Tally, check_ground_truth, match_ground_truth
from .settings import NODE_NAME


def bag_rig(bag: Path, topics: BagTopics) -> list[RigCamera]:
    """The rig cameras of ``bag`` when it is a rig bag evaluated without topic options, else
    [] (a single-camera evaluation, as before)."""
    if topics != BagTopics() or not Path(bag).is_dir():
        return []
    found: dict[str, Any] = {}

    def choose(types):
        found["topics"] = set(types)
        return None, set()

    read_messages(bag, choose)
    return rig_cameras(found["topics"])


def camera_topics(camera: RigCamera) -> BagTopics:
    return BagTopics(camera.camera, camera.semantic, camera.detections)


def node_topics(camera: RigCamera) -> NodeTopics:
    """Where the node publishes this camera's outputs, and the camera's own /diagnostics
    status (its counters pace and settle the camera's player)."""
    base = f"/{NODE_NAME}/{camera.name}"
    return NodeTopics(camera_status(camera), f"{base}/semantic", f"{base}/detections")


def camera_status(camera: RigCamera) -> str:
    """The name of the node's /diagnostics status of this camera (see ros/node.py)."""
    return f"{NODE_NAME}: camera {camera.name}"


def node_overrides(cameras: list[RigCamera], prepared: list[PreparedRun]) -> dict[str, Any]:
    """What the rig's node is given on top of a single-camera run's settings: the cameras and
    each camera's transport."""
    overrides: dict[str, Any] = {"cameras": [c.name for c in cameras]}
    for camera, run in zip(cameras, prepared, strict=True):
        compressed = run.bag.camera_type == COMPRESSED_TYPE
        overrides[f"{camera.name}.input_transport"] = "compressed" if compressed else "raw"
    return overrides


def replay_rig(
    cameras: list[RigCamera], prepared: list[PreparedRun], log: Path
) -> tuple[list[Collected], dict[str, Any]]:
    """Starts one node for every camera, replays the cameras at once (a player thread each)
    while sampling the node process's resources, stops the node; returns what each camera's
    player collected and the resources over the replay (:mod:`.resources`).

    Raises:
        ToolError: the node failed or a camera's replay failed (the first error).
    """
    first = prepared[0]
    process = start_node(
        first.bag.camera_topic,
        first.bag.camera_type == COMPRESSED_TYPE,
        first.params_file,
        log,
        first.defaults,
        {**first.forced, **node_overrides(cameras, prepared)},
    )
    results: list[Collected | None] = [None] * len(cameras)
    errors: list[BaseException] = []

    def play(index: int) -> None:
        try:
            results[index] = replay(
                prepared[index].bag,
                node_topics(cameras[index]),
                rate_factor=first.rate_factor,
                node_failure=process.failure,
                progress=False,
                player_name=player_name(cameras[index].name),  # one node name each
            )
        except BaseException as error:  # re-raised in the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=play, args=(i,)) for i in range(len(cameras))]
    try:
        with ResourceSampler(process.process.pid) as sampler:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]
        collected = [c for c in results if c is not None]
    finally:
        process.stop()
    windows = [c.window_ns for c in collected if c.window_ns is not None]
    start, end = min(w[0] for w in windows), max(w[1] for w in windows)
    return collected, sampler.summary(start, end)


def prepare_rig(
    bag_path: Path,
    cameras: list[RigCamera],
    checkpoint: Path,
    *,
    rate_factor: float | None,
    params_file: Path | None,
    model_config,
) -> list[PreparedRun]:
    """Each camera's run, checked as a single-camera run of its topic is, and the cameras as
    the node checks them (before any node).

    Raises:
        ValueError: a bad input, naming the option, file or topic (``--bag`` for cameras the
            node would refuse).
    """
    prepared = [
        prepare_run(
            bag_path,
            checkpoint,
            rate_factor=rate_factor,
            params_file=params_file,
            topics=camera_topics(camera),
            model_config=model_config,
        )
        for camera in cameras
    ]
    compressed = [run.bag.camera_type == COMPRESSED_TYPE for run in prepared]
    try:
        check_rig_cameras([camera.name for camera in cameras], compressed)
    except ValueError as error:
        raise ValueError(f"--bag {bag_path}: {error}") from None
    return prepared


def write_camera_bag(
    path: Path,
    camera: RigCamera,
    names: tuple[str, ...],
    run: PreparedRun,
    got: Collected,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A camera's output bag at ``path``: a single-camera run's (its node name: the camera's
    /diagnostics status), whose settings also say the node's cameras and this camera's name
    (and the one node's ``resources``, the same in every camera's); returns the settings."""
    run.params = replace(run.params, cameras=names)
    info = run_info(run, got, node_topics(camera), resources=resources)
    info["node"]["cameras"] = list(names)
    info["rig_camera"] = camera.name
    write_output_bag(path, got, info)
    return info


def _replay_into(
    work: Path,
    out: Path,
    cameras: list[RigCamera],
    prepared: list[PreparedRun],
    say: Callable[[str], None],
) -> tuple[list[Collected], dict[str, Any]]:
    """:func:`replay_rig` with the node's log in ``work/node.log``, kept beside ``out`` if the
    run fails."""
    say(f"replaying {len(cameras)} cameras ({', '.join(c.name for c in cameras)}) into one node")
    log = work / "node.log"
    try:
        return replay_rig(cameras, prepared, log)
    except BaseException as error:
        _fail(error, log, out)


def run_rig(
    bag_path: Path,
    cameras: list[RigCamera],
    checkpoint: Path,
    out: Path,
    *,
    rate_factor: float | None = 1.0,
    params_file: Path | None = None,
    warn: Callable[[str], None] = lambda message: None,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """``mtl-bag run`` of a rig bag: ``out/<camera>/`` is each camera's output bag (score them
    all with ``mtl-bag score --run out``), ``out/node.log`` the node's log; returns each
    camera's run settings."""
    bag_path, checkpoint = Path(bag_path), Path(checkpoint)
    out = _check_out(Path(out), bag_path)
    prepared = prepare_rig(
        bag_path,
        cameras,
        checkpoint,
        rate_factor=rate_factor,
        params_file=params_file,
        model_config=load_model_config(checkpoint),
    )
    for camera, run in zip(cameras, prepared, strict=True):
        for message in run.bag.warnings:
            warn(f"camera {camera.name}: {message}")
    names = tuple(c.name for c in cameras)
    with atomic_directory(out) as work:
        collected, resources = _replay_into(work, out, cameras, prepared, say)
        return [
            write_camera_bag(work / camera.name, camera, names, run, got, resources)
            for camera, run, got in zip(cameras, prepared, collected, strict=True)
        ]


def evaluate_rig(
    bag_path: Path,
    cameras: list[RigCamera],
    checkpoint: Path,
    out: Path,
    *,
    rate_factor: float | None = 1.0,
    params_file: Path | None = None,
    classes_file: Path | None = None,
    options: ScoreOptions | None = None,
    warn: Callable[[str], None] = lambda message: None,
    say: Callable[[str], None] = print,
) -> Scored:
    """``mtl-bag evaluate`` of a rig bag (module doc) into the new folder ``out``; returns the
    total's scored report (its ``cameras``: each camera's figures)."""
    bag_path, checkpoint = Path(bag_path), Path(checkpoint)
    out = _check_out(Path(out), bag_path)
    options = options or ScoreOptions()
    criteria, baseline = options.check()
    model_config = load_model_config(checkpoint)
    class_map = _class_map(classes_file, model_config, str(checkpoint))
    prepared = prepare_rig(
        bag_path,
        cameras,
        checkpoint,
        rate_factor=rate_factor,
        params_file=params_file,
        model_config=model_config,
    )
    truths = []
    for camera, run in zip(cameras, prepared, strict=True):
        options.check_frames(len(run.bag.frames), camera.name)
        truth = read_ground_truth(bag_path, camera_topics(camera))
        frames = _frame_records(run)
        matching = match_ground_truth(frames, truth, options.tolerance_ns)
        check_ground_truth(frames, matching, truth, class_map)
        for message in run.bag.warnings + matching.warnings:
            warn(f"camera {camera.name}: {message}")
        truths.append(truth)
    names = tuple(c.name for c in cameras)
    with atomic_directory(out) as work:
        collected, resources = _replay_into(work, out, cameras, prepared, say)
        outputs = []
        for camera, run, got in zip(cameras, prepared, collected, strict=True):
            folder = work / "cameras" / camera.name
            folder.mkdir(parents=True)
            write_camera_bag(folder / "outputs_bag", camera, names, run, got, resources)
            outputs.append(read_run(folder / "outputs_bag"))
        hashes = [run.info["bag_hash"] for run in outputs]
        return score_rig(
            work, bag_path, outputs, truths, hashes, class_map, options, criteria, baseline
        )


def rig_runs(path: Path) -> list[Path]:
    """The camera output bags of a rig run folder (``mtl-bag run`` of a rig bag: ``<camera>/``)
    or of a rig report folder (``mtl-bag evaluate`` of one: ``cameras/<camera>/outputs_bag``),
    in name order; [] when ``path`` is neither."""
    path = Path(path)
    if not path.is_dir() or (path / "metadata.yaml").is_file():
        return []
    if (path / "cameras").is_dir():
        return sorted(
            c / "outputs_bag"
            for c in (path / "cameras").iterdir()
            if (c / "outputs_bag" / "metadata.yaml").is_file()
        )
    return sorted(c for c in path.iterdir() if (c / "metadata.yaml").is_file())


def score_rig_run(
    run_folder: Path,
    bags: list[Path],
    out: Path,
    *,
    classes_file: Path | None = None,
    options: ScoreOptions | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> Scored:
    """``mtl-bag score --run RIG_RUN``: every camera's output bag scored against its camera's
    ground truth in the bag the run replayed; the same report as ``evaluate`` of that bag."""
    out = _check_out(Path(out), Path(run_folder))
    options = options or ScoreOptions()
    criteria, baseline = options.check()
    runs = [read_run(bag) for bag in bags]
    first = runs[0].info
    if any("rig_camera" not in run.info for run in runs):
        raise ValueError(
            f"{run_folder} holds output bags that are not cameras of one rig run (--run)"
        )
    class_map = _class_map(
        classes_file, ModelConfig.from_dict(first["model_config"]), first["checkpoint"]
    )
    truths = []
    for run in runs:
        info = run.info
        topics = camera_topics(RigCamera.of(info["rig_camera"]))
        options.check_frames(len(info["frames"]), info["rig_camera"])
        truth = read_ground_truth(Path(info["bag_absolute"]), topics, "--run (the run's bag)")
        matching = match_ground_truth(info["frames"], truth, options.tolerance_ns)
        check_ground_truth(info["frames"], matching, truth, class_map)
        for message in info["warnings"] + matching.warnings:
            warn(f"camera {info['rig_camera']}: {message}")
        truths.append(truth)
    hashes = [run.info["bag_hash"] for run in runs]
    with atomic_directory(out) as work:
        return score_rig(
            work, Path(first["bag"]), runs, truths, hashes, class_map, options, criteria, baseline
        )


def score_rig(
    work: Path,
    bag_path: Path,
    runs: list[RunOutputs],
    truths: list[GroundTruth],
    truth_hashes: list[str],
    class_map: ClassMap,
    options: ScoreOptions,
    criteria: list[Criterion],
    baseline: dict[str, Any] | None,
) -> Scored:
    """Each camera's report in ``work/cameras/<name>/`` (not judged), the total in ``work``
    (judged by ``criteria``)."""
    total = Tally.empty(class_map)
    summaries, reports, records, spans = [], [], [], []
    for run, truth, truth_hash in zip(runs, truths, truth_hashes, strict=True):
        name = run.info["rig_camera"]
        folder = work / "cameras" / name
        folder.mkdir(parents=True, exist_ok=True)
        scored = _score_into(folder, run, truth, truth_hash, class_map, options, [], None)
        scoring = options.score(run, truth, class_map)
        total.add(scoring.tally)
        sent = [f["sent"] for f in run.info["frames"] if f["sent"] is not None]
        if sent and scoring.tally.duration_s > 0:
            spans.append((min(sent), min(sent) + round(scoring.tally.duration_s * 1e9)))
        reports.append(scored.report)
        summaries.append(
            {
                "name": name,
                "camera_topic": run.info["camera_topic"],
                "report": f"cameras/{name}/report.json",
                **{key: scored.report[key] for key in SUMMARY_KEYS},
            }
        )
        records += [{"camera": name, **record} for record in scoring.records]
    total.duration_s = rig_duration_s(spans)
    report = total_report(bag_path, total, class_map, summaries, reports, options)
    verdicts = judge(report, criteria, baseline) if criteria else None
    if verdicts is not None:
        report["gate"] = "pass" if all(v.passed for v in verdicts) else "fail"
        report["criteria"] = verdict_dicts(verdicts)
    write_total(work, report, records, total, verdicts)
    return Scored(report, verdicts)


def rig_duration_s(spans: list[tuple[int, int]]) -> float:
    """Seconds from the first frame sent on any camera to the last output of any camera (the
    cameras play at once: the total's throughput is over this wall time, not summed spans);
    ``spans``: (first sent, last output) ns of each camera, one clock."""
    if not spans:
        return 0.0
    return (max(end for _, end in spans) - min(start for start, _ in spans)) / 1e9


def total_report(
    bag: Path,
    total: Tally,
    class_map,
    summaries: list[dict[str, Any]],
    reports: list[dict[str, Any]],
    options: ScoreOptions,
) -> dict[str, Any]:
    """report.json of the total: every camera's frames added up, and each camera's summary."""
    first = reports[0]
    return {
        "bag": str(bag),
        "cameras": summaries,
        "note": "total = all cameras' frames added up (one node, cameras replayed at once)",
        "node_counters": _node_counters(reports),
        "frames_spec": options.frames,
        **total.figures(class_map),
        "resources": first.get("resources"),  # one node: every camera's run has its figures
        "gate": None,
        "criteria": [],
        "reproducibility": first["reproducibility"],
    }


def camera_table(report: dict[str, Any]) -> str:
    """The per-camera table (markdown) of a total report, with the total's row last."""
    rows = [(row["name"], row) for row in report["cameras"]]
    return summary_table("camera", [*rows, ("total", report)])


def write_total(
    work: Path, report: dict[str, Any], records: list[dict[str, Any]], total: Tally, verdicts
) -> None:
    title = f"{len(report['cameras'])} cameras"
    intro = [f"# Evaluation of {report['bag']}: {title}", "", camera_table(report), ""]
    intro += [
        "Each camera's full report: `cameras/<name>/report.md`.",
        "",
        f"Total ({report['note']}):",
        "",
    ]
    write_summary_report(work, report, records, total, verdicts, title=title, intro=intro)
