"""``mtl-bag``: record a dataset split to a rosbag2; run the node on a bag, score, gate.

mtl-bag record-dataset --data DIR --split val --out BAG [--storage mcap|sqlite3] [--rate HZ]
    [--compressed] [--classes YAML] [--camera-topic T] [--semantic-topic T] [--detections-topic T]
    [--cameras N|NAME,NAME...]   (a synthetic camera rig: each camera on /NAME/image, see rig.py)
mtl-bag run --bag BAG --checkpoint CKPT --out OUTPUT_BAG [--rate-factor F | --as-fast-as-possible
    | --find-peak-rate [--peak-rate-min HZ] [--peak-rate-max HZ] [--peak-rate-tolerance HZ]
    [--peak-trial-seconds S]]
    [--node-params FILE] [--camera-topic T]   (the node process's CPU, RSS and GPU are sampled:
    resources.py; the peak-rate search: peak.py)
mtl-bag score --run OUTPUT_BAG --out DIR [--ground-truth BAG] [--classes YAML]
    [--semantic-topic T] [--detections-topic T] [SCORING OPTIONS]
mtl-bag evaluate --bag BAG --checkpoint CKPT --out DIR [run's and score's options]   (run + score)
    (a rig bag of record-dataset --cameras: one node with every camera, a report per camera and
    the total, which the criteria judge)
mtl-bag evaluate --bag DIR_OR_GLOB [--jobs N] ...   (every bag in a folder or matching a quoted
    glob, N at a time, each in its own network namespace and ROS domain; one report per bag and
    an overall one, which the criteria judge)

SCORING OPTIONS: [--frames first:N,last:N,A-B] [--match-tolerance-ms MS] [--overlays N]
    [--fail-under miou=65,map50=40,coverage=0.95,latency_p95_ms=300]
    [--baseline OLD/report.json --max-drop miou=1.0,map50=2.0 --max-rise latency_p95_ms=20%]

Exit codes: 0 done (and every criterion passed), 1 a criterion failed (the table of what failed
is printed; the report lists every criterion), 2 a bad input: one line ``error: <what> (<file,
topic or option>)`` (the traceback only with ``--debug``). Outputs are checked before any work
and written atomically: ``--out`` is either complete or absent.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ...cli import (
    ToolParser,
    non_negative_int,
    path_option,
    positive_float,
    positive_int,
    tool_main,
)
from ...data.labels import DEFAULT_CLASSES_FILE
from ...resources import resolve_config_path
from .record import CAMERA_TOPIC, GT_DETECTIONS_TOPIC, GT_SEMANTIC_TOPIC
from .rig import camera_names

_TOPIC = re.compile(r"(/[A-Za-z_][A-Za-z0-9_]*)+")
EXIT_GATE_FAILED = 1


def topic_name(text: str) -> str:
    """An absolute ROS 2 topic name (``/a/b_c``), as bags store them."""
    if not _TOPIC.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an absolute ROS 2 topic name (like /camera/image_raw: "
            "'/'-separated tokens of letters, digits and '_', not starting with a digit)"
        )
    return text


def namespace_name(text: str) -> str:
    """A ROS 2 namespace: ``/`` or an absolute topic-like name."""
    if text != "/" and not _TOPIC.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an absolute ROS 2 namespace (like / or /robot)"
        )
    return text


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _add_classes(parser: ToolParser) -> None:
    parser.add_argument(
        "--classes",
        type=path_option,
        default=DEFAULT_CLASSES_FILE,
        help="class mapping YAML (default: the package's Cityscapes mapping)",
    )


def _add_camera(parser: ToolParser, *, record: bool) -> None:
    camera_help = (
        f"camera topic (default {CAMERA_TOPIC}; with --compressed its /compressed sibling)"
        if record
        else f"camera topic to replay (default {CAMERA_TOPIC}, or its /compressed sibling)"
    )
    parser.add_argument("--camera-topic", type=topic_name, default=None, help=camera_help)


def _add_ground_truth(parser: ToolParser) -> None:
    parser.add_argument(
        "--semantic-topic",
        type=topic_name,
        default=None,
        help=f"ground-truth mask topic, mono8 class ids (default {GT_SEMANTIC_TOPIC})",
    )
    parser.add_argument(
        "--detections-topic",
        type=topic_name,
        default=None,
        help=f"ground-truth Detection2DArray topic (default {GT_DETECTIONS_TOPIC})",
    )


def _add_run(parser: ToolParser) -> None:
    parser.add_argument("--bag", type=path_option, required=True, help="the bag to replay")
    parser.add_argument("--checkpoint", type=path_option, required=True)
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate-factor",
        type=positive_float,
        default=1.0,
        help="replay at the bag's timing x F (positive, finite)",
    )
    pace.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="send each frame once the last one's outputs arrived",
    )
    pace.add_argument(
        "--find-peak-rate",
        action="store_true",
        help="replay at fixed rates (Hz) in a binary search for the highest with < 5%% of the "
        "frames lost (dropped or no output); then the bag once at the peak rate is recorded "
        "and scored",
    )
    for bound, default in (("min", "half"), ("max", "twice")):
        parser.add_argument(
            f"--peak-rate-{bound}",
            type=positive_float,
            metavar="HZ",
            help=f"with --find-peak-rate: the search's {bound}imum input rate (default: {default} "
            "the throughput of a first trial paced by the node)",
        )
    parser.add_argument(
        "--peak-rate-tolerance",
        type=positive_float,
        metavar="HZ",
        help="with --find-peak-rate: search until the passing and failing rates are closer "
        "(default: an eighth of the passing rate)",
    )
    parser.add_argument(
        "--peak-trial-seconds",
        type=positive_float,
        metavar="S",
        help="with --find-peak-rate: each fixed-rate trial loops the bag this long (at least "
        "once; default 5)",
    )
    parser.add_argument(
        "--node-params",
        type=resolve_config_path,
        help="ROS parameter file for the node (config/<name>: the packaged one)",
    )
    _add_camera(parser, record=False)


def _add_scoring(parser: ToolParser) -> None:
    _add_classes(parser)
    _add_ground_truth(parser)
    parser.add_argument(
        "--overlays", type=non_negative_int, default=4, help="overlay PNGs of the first N frames"
    )
    parser.add_argument(
        "--frames",
        metavar="SPEC",
        action="append",
        help="frames to leave out: first:N, last:N, A-B (positions from 0, receive order), "
        "comma-separated",
    )
    parser.add_argument(
        "--match-tolerance-ms",
        type=non_negative_float,
        default=0.0,
        metavar="MS",
        help="match ground truth to the nearest frame within MS (default 0: exact stamps)",
    )
    parser.add_argument(
        "--deadline-ms",
        type=positive_float,
        metavar="MS",
        help="a frame whose outputs came later than MS after it was sent is late: skipped, not "
        "covered (its latency still counts); default: no deadline",
    )
    parser.add_argument(
        "--fail-under",
        metavar="CRITERIA",
        action="append",
        help="e.g. miou=65,map50=40,coverage=0.95,latency_p95_ms=300 (latencies: ceilings)",
    )
    parser.add_argument(
        "--baseline",
        type=path_option,
        help="an earlier report.json (or its folder) to compare with",
    )
    parser.add_argument(
        "--max-drop",
        metavar="CRITERIA",
        action="append",
        help="vs --baseline, e.g. miou=1.0,map50=2.0 (or N%%)",
    )
    parser.add_argument(
        "--max-rise",
        metavar="CRITERIA",
        action="append",
        help="vs --baseline, e.g. latency_p95_ms=20%%",
    )


def build_parser() -> ToolParser:
    parser = ToolParser(prog="mtl-bag", description=__doc__.strip().splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=ToolParser)
    record = commands.add_parser(
        "record-dataset", help="write a split with ground truth to a rosbag2"
    )
    record.add_argument("--data", type=path_option, required=True, help="dataset root")
    record.add_argument("--split", default="val")
    record.add_argument("--out", type=path_option, required=True, help="new bag folder")
    record.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    record.add_argument(
        "--rate",
        type=positive_float,
        default=10.0,
        help="frames per second of the recorded stamps (positive, finite)",
    )
    record.add_argument(
        "--compressed", action="store_true", help="JPEG CompressedImage instead of rgb8 Image"
    )
    _add_classes(record)
    _add_camera(record, record=True)
    record.add_argument(
        "--cameras",
        type=camera_names,
        help="a synthetic rig of N cameras (camera0...) or of these comma-separated names: the "
        "same scenes, camera k k scenes later and mirrored when k is odd, each on /NAME/image "
        "with its ground truth on /NAME/ground_truth/...",
    )
    _add_ground_truth(record)
    run = commands.add_parser(
        "run", help="replay a bag through the node and record its outputs to an output bag"
    )
    _add_run(run)
    run.add_argument("--out", type=path_option, required=True, help="new output bag folder")
    run.add_argument(
        "--attach",
        metavar="NAMESPACE",
        type=namespace_name,
        help="replay into a node already running in NAMESPACE (e.g. on the robot, started by "
        "ros2 launch) instead of starting one; it must subscribe to the bag's camera topic and "
        "publish NAMESPACE/NODE_NAME/semantic and .../detections; --node-params is ignored",
    )
    run.add_argument(
        "--node-name",
        help="with --attach: the running node's name (its outputs and /diagnostics entries; "
        "default perception_node)",
    )
    score = commands.add_parser(
        "score", help="score an output bag of `run` against ground truth (no model, no node)"
    )
    score.add_argument(
        "--run",
        type=path_option,
        required=True,
        help="an output bag of mtl-bag run (a rig run's folder, or a report folder of mtl-bag "
        "evaluate: its output bags)",
    )
    score.add_argument("--out", type=path_option, required=True, help="new report folder")
    score.add_argument(
        "--ground-truth",
        type=path_option,
        help="bag with the ground truth (default: the bag the run replayed)",
    )
    _add_scoring(score)
    evaluate = commands.add_parser(
        "evaluate", help="run + score: replay a bag through the node and report"
    )
    _add_run(evaluate)
    evaluate.add_argument("--out", type=path_option, required=True, help="new report folder")
    evaluate.add_argument(
        "--output-bag",
        action="store_true",
        help="(kept for old scripts: the output bag is always written to OUT/outputs_bag)",
    )
    _add_scoring(evaluate)
    evaluate.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="with --bag naming a folder of bags or a quoted glob: bags evaluated at once",
    )
    for sub in (record, run, score, evaluate):
        # `mtl-bag --debug evaluate ...` must survive the subcommand's own --debug default.
        for action in sub._actions:
            if action.dest == "debug":
                action.default = argparse.SUPPRESS
    return parser


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _warn_foreign_keys(params_file: Path | None) -> None:
    """Names, once, the keys of ``--node-params`` that other nodes' wildcard sections (``/**``)
    hold and the node does not have: it ignores them, as it does with one WARN when started."""
    from .settings import NODE_NAME, foreign_keys

    ignored = foreign_keys(params_file)
    if ignored:
        _warn(
            f"--node-params {params_file}: ignoring {len(ignored)} parameter(s) of a shared "
            f"section (/**) that {NODE_NAME} does not have: {', '.join(ignored)}"
        )


def _topics(args: argparse.Namespace):
    from .read import BagTopics

    return BagTopics(
        getattr(args, "camera_topic", None),
        getattr(args, "semantic_topic", None),
        getattr(args, "detections_topic", None),
    )


def _score_options(args: argparse.Namespace):
    from .pipeline import ScoreOptions

    return ScoreOptions.from_args(args)


def _record(args: argparse.Namespace) -> int:
    from .record import Topics, record_dataset

    defaults = Topics()
    given = [args.camera_topic, args.semantic_topic, args.detections_topic]
    if args.cameras and any(given):
        raise ValueError(
            "a rig names its topics after its cameras (/NAME/image, ...): leave out "
            "--camera-topic, --semantic-topic and --detections-topic (--cameras)"
        )
    topics = Topics(
        camera=args.camera_topic or defaults.camera,
        semantic=args.semantic_topic or defaults.semantic,
        detections=args.detections_topic or defaults.detections,
    )
    named = {"--camera-topic": topics.camera, "--semantic-topic": topics.semantic}
    named["--detections-topic"] = topics.detections
    shared = [o for o, t in named.items() if list(named.values()).count(t) > 1]
    if shared:
        raise ValueError(
            f"{' and '.join(shared)} name the same topic {named[shared[0]]}: each needs its own "
            f"({shared[0]})"
        )
    count = record_dataset(
        args.data,
        args.split,
        args.out,
        storage=args.storage,
        rate=args.rate,
        compressed=args.compressed,
        classes_file=args.classes,
        topics=topics,
        cameras=args.cameras or (),
    )
    print(f"wrote {count} frames to {args.out} ({args.storage})")
    return 0


def _print_speed(resources: dict | None, peak: dict | None) -> None:
    """The node process's resources and the peak-rate search, a line each (when there)."""
    from .peak import peak_line
    from .resources import resources_line

    for line in (resources_line(resources), peak_line(peak)):
        if line is not None:
            print(line)


def _print_scored(scored, out: Path) -> int:
    from .criteria import format_verdicts
    from .report import metrics_table, speed_line

    report = scored.report
    table = metrics_table(report)
    if table is not None:
        print(table)
    coverage = report["coverage"]
    print(
        f"coverage {coverage:.3f} ({report['frames_with_output']} of {report['frames_sent']} "
        "frames sent have outputs"
        + (
            f"; {report['frames_left_out']} more sent but left out by --frames)"
            if report.get("frames_left_out")
            else ")"
        )
        if coverage is not None
        else "coverage n/a (no frame sent)"
    )
    speed = speed_line(report)
    if speed is not None:
        print(f"{speed}; node counters {report['node_counters']}")
    _print_speed(report.get("resources"), report.get("peak_rate"))
    print(f"report: {out / 'report.md'} (and report.json, frames.jsonl, latency_histogram.png)")
    if scored.verdicts is None:
        return 0
    if report["gate"] == "pass":
        print(f"gate: PASS ({len(scored.verdicts)} criteria)")
        return 0
    print("gate: FAIL")
    print(format_verdicts(scored.verdicts, only_failed=True))
    return EXIT_GATE_FAILED


def _rig_cameras(args: argparse.Namespace, peak: object) -> list:
    """The rig cameras of ``--bag`` (none: one camera, or ``--attach``); a rig cannot be
    searched for its peak rate."""
    from .cameras import bag_rig

    cameras = [] if getattr(args, "attach", None) else bag_rig(args.bag, _topics(args))
    if cameras and peak is not None:
        raise ValueError(_PEAK_ONE_CAMERA)
    return cameras


@tool_main(build_parser)
def main(args: argparse.Namespace) -> int:
    if args.command == "record-dataset":
        return _record(args)
    if getattr(args, "node_name", None) is not None and not args.attach:
        raise ValueError("--node-name names the node of --attach: add --attach NAMESPACE")
    if args.command == "score":
        from .cameras import camera_table, rig_runs, score_rig_run
        from .pipeline import score_bag

        if (args.run / "outputs_bag" / "metadata.yaml").is_file():
            args.run = args.run / "outputs_bag"  # the report folder of mtl-bag evaluate
        elif (args.run / "bags").is_dir() and (args.run / "report.json").is_file():
            raise ValueError(
                f"{args.run} is the report of several bags (--jobs): score each bag's run, "
                f"{args.run}/bags/<bag>/outputs_bag (--run)"
            )
        camera_runs = rig_runs(args.run) if args.ground_truth is None else []
        if camera_runs and _topics(args) == _topics(argparse.Namespace()):
            scored = score_rig_run(
                args.run,
                camera_runs,
                args.out,
                classes_file=args.classes,
                options=_score_options(args),
                warn=_warn,
            )
            print(camera_table(scored.report))
            return _print_scored(scored, args.out)
        scored = score_bag(
            args.run,
            args.out,
            ground_truth=args.ground_truth,
            classes_file=args.classes,
            topics=_topics(args),
            options=_score_options(args),
            warn=_warn,
        )
        return _print_scored(scored, args.out)
    peak = _peak_search(args)  # its options checked before anything starts
    from ..isolation import ensure_private_network

    if getattr(args, "attach", None) is None:  # a node of our own: no traffic leaves the machine
        ensure_private_network()  # may run this tool again inside a namespace: warn after it
    _warn_foreign_keys(getattr(args, "node_params", None))
    # what every run of the node takes, one camera or a rig, run or evaluate
    node_run = {
        "rate_factor": None if args.as_fast_as_possible else args.rate_factor,
        "params_file": args.node_params,
        "warn": _warn,
    }
    if args.command == "run":
        from .cameras import run_rig
        from .pipeline import run_bag
        from .replay import NodeTopics
        from .settings import NODE_NAME

        cameras = _rig_cameras(args, peak)
        if cameras:
            infos = run_rig(args.bag, cameras, args.checkpoint, args.out, **node_run)
            sent = sum(f["sent"] is not None for info in infos for f in info["frames"])
            print(
                f"sent {sent} frames on {len(cameras)} cameras; output bags: {args.out}/<camera> "
                "(score them with mtl-bag score --run)"
            )
            return 0
        info = run_bag(
            args.bag,
            args.checkpoint,
            args.out,
            topics=_topics(args),
            attach=NodeTopics.of(args.node_name or NODE_NAME, args.attach) if args.attach else None,
            peak=peak,
            **node_run,
        )
        sent = sum(f["sent"] is not None for f in info["frames"])
        print(f"sent {sent} frames; output bag: {args.out} (score it with mtl-bag score --run)")
        _print_speed(info.get("resources"), info.get("peak_rate"))
        return 0
    from .multi import evaluate_bags, find_bags

    bags = find_bags(args.bag)
    if bags is not None and peak is not None:
        raise ValueError(
            "--find-peak-rate searches one bag's peak: give --bag one bag, not several (--bag)"
        )
    if bags is not None:
        from .cameras import bag_rig

        rigs = [bag.name for bag in bags if bag_rig(bag, _topics(args))]
        if rigs:  # each bag's figures would be in OUT/bags/<bag>/cameras/<camera>/
            raise ValueError(
                f"{', '.join(rigs)}: camera rig bags are evaluated one at a time, not among "
                "several (--bag)"
            )
        scored, out = evaluate_bags(args, bags)
        return _print_scored(scored, out)
    from .cameras import camera_table, evaluate_rig
    from .pipeline import evaluate_bag

    cameras = _rig_cameras(args, peak)
    if cameras:
        scored = evaluate_rig(
            args.bag,
            cameras,
            args.checkpoint,
            args.out,
            classes_file=args.classes,
            options=_score_options(args),
            **node_run,
        )
        print(camera_table(scored.report))
        return _print_scored(scored, args.out)
    scored = evaluate_bag(
        args.bag,
        args.checkpoint,
        args.out,
        classes_file=args.classes,
        topics=_topics(args),
        options=_score_options(args),
        peak=peak,
        **node_run,
    )
    return _print_scored(scored, args.out)


_PEAK_ONE_CAMERA = (
    "--find-peak-rate searches a single camera's peak: a camera rig bag is replayed on every "
    "camera at once; name one camera's topics (--camera-topic /c/image ...) (--find-peak-rate)"
)


def _peak_search(args: argparse.Namespace):
    """The peak-rate search of ``run`` and ``evaluate`` (None without --find-peak-rate).

    Raises:
        ValueError: a search option without --find-peak-rate, or bounds that make no search.
    """
    from dataclasses import replace

    from .peak import PeakSearch

    given = {
        option: value
        for option, value in (
            ("--peak-rate-min", args.peak_rate_min),
            ("--peak-rate-max", args.peak_rate_max),
            ("--peak-rate-tolerance", args.peak_rate_tolerance),
            ("--peak-trial-seconds", args.peak_trial_seconds),
        )
        if value is not None
    }
    if not args.find_peak_rate:
        if given:
            option = next(iter(given))
            raise ValueError(f"{option} sets the peak-rate search: add --find-peak-rate ({option})")
        return None
    search = PeakSearch(args.peak_rate_min, args.peak_rate_max, args.peak_rate_tolerance)
    if args.peak_trial_seconds is not None:
        search = replace(search, trial_seconds=args.peak_trial_seconds)
    search.check()
    return search


if __name__ == "__main__":
    sys.exit(main())
