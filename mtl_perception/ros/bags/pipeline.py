"""``mtl-bag run``, ``score`` and ``evaluate`` (= run + score) as functions: checks, then stages.

Every input is checked before the node starts (or before scoring begins); output folders are new
and written atomically (complete or absent). If a run fails after the node started, the node's log
is kept beside the output as ``<out>.failed-node.log`` and the error names it; not on a full disk,
which leaves nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ...cli import ToolError, one_line
from ...data.labels import DEFAULT_CLASSES_FILE, ClassMap
from ...evaluation.evaluate import check_classes
from ...model.config import ModelConfig
from ...outputs import atomic_directory, check_new_directory, full_disk_errno
from .criteria import Criterion, Verdict, check_gate_options, judge
from .node_process import keep_node_log
from .peak import PeakSearch
from .provenance import content_hash
from .read import (
    DEFAULT_TOPICS,
    GT_DETECTIONS_TOPIC,
    GT_SEMANTIC_TOPIC,
    BagTopics,
    GroundTruth,
    RunOutputs,
    read_ground_truth,
    read_run,
)
from .replay import NodeTopics
from .report import build_report, write_report
from .rig import camera_of_topic
from .run import PreparedRun, execute_run, load_model_config, prepare_run
from .score import Scoring, check_ground_truth, match_ground_truth, parse_frames, score_frames


@dataclass(frozen=True)
class ScoreOptions:
    """How to score: frames left out, stamp tolerance, the gate, overlays."""

    frames: str | None = None
    match_tolerance_ms: float = 0.0
    fail_under: str | None = None
    max_drop: str | None = None
    max_rise: str | None = None
    baseline: Path | None = None
    overlays: int = 4
    deadline_ms: float | None = None  # outputs later than this after sending: the frame is late

    def check(self) -> tuple[list[Criterion], dict[str, Any] | None]:
        """Refuses bad options (before any work); returns the criteria and the baseline."""
        if self.overlays < 0:
            raise ValueError(
                f"the number of overlays must be >= 0, got {self.overlays} (--overlays)"
            )
        if not (self.match_tolerance_ms >= 0 and self.match_tolerance_ms < float("inf")):
            raise ValueError(
                f"the match tolerance must be >= 0 ms and finite, got {self.match_tolerance_ms} "
                "(--match-tolerance-ms)"
            )
        if self.deadline_ms is not None and not (0 < self.deadline_ms < float("inf")):
            raise ValueError(
                f"the deadline must be positive and finite, got {self.deadline_ms} ms "
                "(--deadline-ms)"
            )
        if self.frames is not None and not all(t.strip() for t in self.frames.split(",")):
            raise ValueError(
                f"--frames {self.frames!r} has an empty part: give first:N, last:N, A-B or A, "
                "comma-separated (--frames)"
            )
        parse_frames(self.frames, 0)
        return check_gate_options(self.fail_under, self.max_drop, self.max_rise, self.baseline)

    def check_frames(self, count: int, camera: str | None = None) -> None:
        """Refuses a ``--frames`` that reaches past a run's ``count`` frames or leaves out all of
        them (before the run or the scoring starts)."""
        try:
            parse_frames(self.frames, count)
        except ValueError as error:
            raise ValueError(f"camera {camera}: {error}" if camera else str(error)) from None

    @classmethod
    def from_args(cls, args: Any) -> ScoreOptions:
        """From mtl-bag's parsed options; a gate option given several times counts whole
        (``--fail-under miou=60 --fail-under map50=30`` = ``--fail-under miou=60,map50=30``)."""

        def joined(values: list[str] | str | None) -> str | None:
            return ",".join(values) if isinstance(values, list) else values

        return cls(
            frames=joined(args.frames),
            match_tolerance_ms=args.match_tolerance_ms,
            fail_under=joined(args.fail_under),
            max_drop=joined(args.max_drop),
            max_rise=joined(args.max_rise),
            baseline=args.baseline,
            overlays=args.overlays,
            deadline_ms=args.deadline_ms,
        )

    @property
    def tolerance_ns(self) -> int:
        return round(self.match_tolerance_ms * 1e6)

    def score(self, run: RunOutputs, truth: GroundTruth | None, class_map: ClassMap) -> Scoring:
        """A run's frames scored with these options (frames left out, tolerance, deadline)."""
        return score_frames(
            run,
            truth,
            class_map,
            frames_spec=self.frames,
            tolerance_ns=self.tolerance_ns,
            deadline_ns=None if self.deadline_ms is None else round(self.deadline_ms * 1e6),
        )


@dataclass
class Scored:
    report: dict[str, Any]
    verdicts: list[Verdict] | None


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _check_out(out: Path, *inputs: Path) -> Path:
    out = check_new_directory(out)
    for path in inputs:
        if path is not None and Path(path).exists() and _inside(out, Path(path)):
            raise ValueError(f"the report folder would be inside the bag {path} (--out {out})")
    return out


def _class_map(classes_file: Path | None, model_config: ModelConfig, checkpoint: str) -> ClassMap:
    try:
        class_map = ClassMap.from_yaml(classes_file or DEFAULT_CLASSES_FILE)
    except ValueError as error:
        raise ValueError(f"{error} (--classes)") from None
    try:
        check_classes(model_config, class_map, checkpoint)
    except ValueError as error:
        raise ValueError(f"{error} (--classes {classes_file or DEFAULT_CLASSES_FILE})") from error
    return class_map


def _score_into(
    work: Path,
    run: RunOutputs,
    truth: GroundTruth | None,
    truth_hash: str | None,
    class_map: ClassMap,
    options: ScoreOptions,
    criteria: list[Criterion],
    baseline: dict[str, Any] | None,
) -> Scored:
    scoring = options.score(run, truth, class_map)
    figures = scoring.figures
    report = build_report(run, truth, truth_hash, figures, None, options.frames)
    verdicts = judge(report, criteria, baseline) if criteria else None
    if verdicts is not None:
        report = build_report(run, truth, truth_hash, figures, verdicts, options.frames)
    write_report(work, run, report, scoring.records, verdicts, options.overlays, scoring)
    return Scored(report, verdicts)


def _ground_truth(
    path: Path, topics: BagTopics, option: str, known_hash: str | None = None
) -> tuple[GroundTruth, str]:
    truth = read_ground_truth(path, topics, option)
    return truth, known_hash or content_hash(path)


def _frame_records(prepared: PreparedRun) -> list[dict[str, Any]]:
    return [
        {"bag_stamp": f.bag_stamp, "size": list(f.size) if f.size else None}
        for f in prepared.bag.frames
    ]


def run_bag(
    bag_path: Path,
    checkpoint: Path,
    out: Path,
    *,
    rate_factor: float | None = 1.0,
    params_file: Path | None = None,
    topics: BagTopics = DEFAULT_TOPICS,
    progress: bool = True,
    warn: Callable[[str], None] = lambda message: None,
    attach: NodeTopics | None = None,
    peak: PeakSearch | None = None,
) -> dict[str, Any]:
    """``mtl-bag run``: the output bag in the new folder ``out`` (with the node's log,
    ``node.log``, unless ``attach`` names a running node to replay into); returns the run's
    settings."""
    bag_path, checkpoint = Path(bag_path), Path(checkpoint)
    out = _check_out(Path(out), bag_path)
    prepared = prepare_run(
        bag_path,
        checkpoint,
        rate_factor=rate_factor,
        params_file=params_file,
        topics=topics,
        peak=peak,
    )
    for message in prepared.bag.warnings:
        warn(message)
    with atomic_directory(out) as work:
        # rosbags names its storage file after the folder: write it under the final name, then
        # lift its files up beside the node's log.
        inner = work / out.name
        log = work / "node.log"
        try:
            info = execute_run(prepared, inner, log, progress=progress, attach=attach)
        except BaseException as error:
            _fail(error, log, out)
        for child in inner.iterdir():
            child.rename(work / child.name)
        inner.rmdir()
    return info


def _fail(error: BaseException, log: Path, out: Path):
    """Re-raises a failed run's ``error``, naming the node's ``log`` kept beside ``out``; on a
    full disk the log goes with the rest of the output folder (the error says nothing was kept)."""
    if full_disk_errno(error) is not None:
        raise error
    kept = keep_node_log(log, out)
    if kept is not None and isinstance(error, Exception):
        raise ToolError(f"{one_line(error)} (node log kept in {kept})") from error
    raise error


def score_bag(
    run_path: Path,
    out: Path,
    *,
    ground_truth: Path | None = None,
    classes_file: Path | None = None,
    topics: BagTopics = DEFAULT_TOPICS,
    options: ScoreOptions = ScoreOptions(),
    warn: Callable[[str], None] = lambda message: None,
) -> Scored:
    """``mtl-bag score``: the report of a run's output bag against ground truth (the run's input
    bag unless ``ground_truth`` names another), in the new folder ``out``."""
    run_path = Path(run_path)
    out = _check_out(Path(out), run_path, ground_truth)
    criteria, baseline = options.check()
    run = read_run(run_path)
    info = run.info
    class_map = _class_map(
        classes_file, ModelConfig.from_dict(info["model_config"]), info["checkpoint"]
    )
    # the run's camera decides the default ground truth (a rig camera's own, read.py)
    topics = replace(topics, camera=info["camera_topic"])
    if ground_truth is None:
        truth, truth_hash = _ground_truth(
            Path(info["bag_absolute"]), topics, "--ground-truth (the run's bag)", info["bag_hash"]
        )
    else:
        truth, truth_hash = _ground_truth(Path(ground_truth), topics, "--ground-truth")
        if truth.semantic_topic is None and truth.detections_topic is None:
            camera = camera_of_topic(info["camera_topic"])
            semantic = camera.semantic if camera else GT_SEMANTIC_TOPIC
            detections = camera.detections if camera else GT_DETECTIONS_TOPIC
            raise ValueError(
                f"{ground_truth} has no ground truth: no {topics.semantic or semantic} and no "
                f"{topics.detections or detections} (--ground-truth; --semantic-topic and "
                "--detections-topic name others)"
            )
    options.check_frames(len(info["frames"]))
    matching = match_ground_truth(info["frames"], truth, options.tolerance_ns)
    check_ground_truth(info["frames"], matching, truth, class_map)
    for message in info["warnings"] + matching.warnings:
        warn(message)
    with atomic_directory(out) as work:
        return _score_into(work, run, truth, truth_hash, class_map, options, criteria, baseline)


def evaluate_bag(
    bag_path: Path,
    checkpoint: Path,
    out: Path,
    *,
    rate_factor: float | None = 1.0,
    params_file: Path | None = None,
    classes_file: Path | None = None,
    topics: BagTopics = DEFAULT_TOPICS,
    options: ScoreOptions = ScoreOptions(),
    progress: bool = True,
    warn: Callable[[str], None] = lambda message: None,
    peak: PeakSearch | None = None,
) -> Scored:
    """``mtl-bag evaluate`` = run into ``out/outputs_bag`` + score into ``out``: the same code
    and the same bytes as ``mtl-bag score`` on that output bag."""
    bag_path, checkpoint = Path(bag_path), Path(checkpoint)
    out = _check_out(Path(out), bag_path)
    criteria, baseline = options.check()
    model_config = load_model_config(checkpoint)
    class_map = _class_map(classes_file, model_config, str(checkpoint))
    prepared = prepare_run(
        bag_path,
        checkpoint,
        rate_factor=rate_factor,
        params_file=params_file,
        topics=topics,
        model_config=model_config,
        peak=peak,
    )
    options.check_frames(len(prepared.bag.frames))
    truth = read_ground_truth(bag_path, topics)
    frames = _frame_records(prepared)
    matching = match_ground_truth(frames, truth, options.tolerance_ns)
    check_ground_truth(frames, matching, truth, class_map)
    for message in prepared.bag.warnings + matching.warnings:
        warn(message)
    with atomic_directory(out) as work:
        log = work / "node.log"
        try:
            execute_run(prepared, work / "outputs_bag", log, progress=progress)
        except BaseException as error:
            _fail(error, log, out)
        run = read_run(work / "outputs_bag")
        return _score_into(
            work, run, truth, run.info["bag_hash"], class_map, options, criteria, baseline
        )
