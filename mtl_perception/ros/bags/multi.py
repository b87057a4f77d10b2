"""``mtl-bag evaluate --bag DIR_OR_GLOB --jobs N``: several bags, one aggregated report.

``--bag`` names one bag (a folder with ``metadata.yaml``), a folder of bags (its sub-folders that
are bags) or a glob (``'bags/*'``, quoted so the tool expands it); every other entry or match is
named as skipped, with why, on stderr and in the report (``skipped``). Each bag is evaluated by its
own ``mtl-bag evaluate`` process, at most N at a time: each re-executes itself in a private
network namespace of its own (nested in this one) with a ROS_DOMAIN_ID no other bag of the run
has, so the bags' nodes never see each other's topics. Every bag's report (the same bytes as a
single ``mtl-bag evaluate`` of it, its output bag included) lands in ``OUT/bags/<name>/``.

The overall figures add up the bags' scored data (pixel and detection counts, AP over all
detections, latencies, frames; :class:`.score.Tally`), re-scored from their output bags here
(no model); the criteria apply to them. Bags evaluated in parallel share the machine, so their
latency and throughput are those of a loaded machine: compare accuracy across ``--jobs``, not
speed.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...cli import ToolError
from ...outputs import atomic_directory
from ..node_process import start_child
from .criteria import judge, verdict_dicts
from .pipeline import Scored, ScoreOptions, _check_out, _class_map
from .read import BagTopics, read_ground_truth, read_run
from .report import SUMMARY_KEYS, summary_table, write_summary_report
from .run import load_model_config
from .score import Tally

GLOB_CHARACTERS = set("*?[")


def is_bag(path: Path) -> bool:
    """A rosbag2 folder: a directory with a metadata.yaml."""
    return path.is_dir() and (path / "metadata.yaml").is_file()


@dataclass(frozen=True)
class SkippedPath:
    """A path ``--bag`` covers that is not a bag (said on stderr and in the report)."""

    path: Path
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "reason": self.reason}


def _candidates(spec: Path | str) -> list[Path] | None:
    """Every path ``--bag`` covers when it names several bags (a glob's matches, or a folder's
    entries), sorted; None when it names one path."""
    text = str(spec)
    if GLOB_CHARACTERS & set(text):
        return sorted(Path(m) for m in glob.glob(text))  # noqa: PTH207 (any pattern)
    path = Path(text)
    if not path.is_dir() or is_bag(path):
        return None
    return sorted(path.iterdir())


def skipped_paths(spec: Path | str) -> list[SkippedPath]:
    """The paths ``--bag`` covers that :func:`find_bags` leaves out, each with why."""
    skipped = []
    for path in _candidates(spec) or []:
        if is_bag(path):
            continue
        if path.is_dir():
            reason = "a folder without metadata.yaml: not a bag"
        elif path.suffix in (".mcap", ".db3"):
            reason = "a bag's storage file without its folder (give the folder that holds it)"
        else:
            reason = "a file, not a bag folder"
        skipped.append(SkippedPath(path, reason))
    return skipped


def find_bags(spec: Path | str) -> list[Path] | None:
    """The bags ``--bag`` names when it names several (a folder of bags or a glob), sorted;
    None when it names one bag (or a path the single-bag tool will judge). What else it covers
    is left out (:func:`skipped_paths`).

    Raises:
        ValueError: a glob matching nothing or no bag, a folder holding no bag (names --bag).
    """
    text = str(spec)
    path = Path(text)
    candidates = _candidates(spec)
    if GLOB_CHARACTERS & set(text):
        if not candidates:
            raise ValueError(f"no file or folder matches {text!r} (--bag)")
        bags = [m for m in candidates if is_bag(m)]
        if not bags:
            raise ValueError(
                f"{text!r} matches {len(candidates)} paths but no bag (a folder with "
                "metadata.yaml) (--bag)"
            )
        return bags
    if candidates is None:
        return None
    bags = [child for child in candidates if is_bag(child)]
    if not bags:
        raise ValueError(
            f"folder {path} is not a bag and holds no bag (no metadata.yaml in it or in its "
            "sub-folders) (--bag)"
        )
    return bags


def report_names(bags: list[Path]) -> list[str]:
    """Each bag's report folder name: its folder name, numbered where two bags share one."""
    names = [bag.name for bag in bags]
    if len(set(names)) == len(names):
        return names
    return [f"{i:03d}_{name}" for i, name in enumerate(names)]


def domain_ids(count: int, base: int) -> list[int]:
    """``count`` distinct ROS_DOMAIN_IDs in 1..100 (at most 100 bags run at once), from
    ``base`` on."""
    return [1 + (base + i) % 100 for i in range(count)]


@dataclass(frozen=True)
class BagJob:
    name: str
    bag: Path
    out: Path
    domain_id: int


def child_options(args: Any) -> list[str]:
    """The single-bag ``evaluate`` options of a parsed command line, without --bag, --out,
    --jobs and the gate (the criteria judge the overall figures)."""
    options = ["--checkpoint", str(args.checkpoint)]
    if args.as_fast_as_possible:
        options.append("--as-fast-as-possible")
    else:
        options += ["--rate-factor", repr(args.rate_factor)]
    for flag, value in (
        ("--node-params", args.node_params),
        ("--camera-topic", args.camera_topic),
        ("--semantic-topic", args.semantic_topic),
        ("--detections-topic", args.detections_topic),
        ("--frames", ScoreOptions.from_args(args).frames),
    ):
        if value is not None:
            options += [flag, str(value)]
    options += ["--classes", str(args.classes), "--overlays", str(args.overlays)]
    options += ["--match-tolerance-ms", repr(args.match_tolerance_ms)]
    if args.deadline_ms is not None:
        options += ["--deadline-ms", repr(args.deadline_ms)]
    return options


def _child_environment(domain_id: int) -> dict[str, str]:
    """This environment, but outside any namespace set-up (the child makes its own) and with
    its own domain."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTL_NETNS")}
    env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


def _last_error(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1]


def run_jobs(
    jobs: list[BagJob],
    options: list[str],
    parallel: int,
    logs: Path,
    say: Callable[[str], None],
    holds: Path | None = None,
) -> None:
    """Runs one ``mtl-bag evaluate`` per job, at most ``parallel`` at once, each logging to
    ``logs/<name>.log``. Each dies with this process (and its node with it) and inherits the
    descriptors of ``holds`` (the output being written), so a rerun never removes it under them.

    Raises:
        ToolError: a bag's evaluation failed (names the bag, its error and its log).
    """
    waiting, running, failed = list(jobs), {}, []
    while waiting or running:
        while waiting and len(running) < parallel and not failed:
            job = waiting.pop(0)
            log = logs / f"{job.name}.log"
            command = [sys.executable, "-m", "mtl_perception.ros.bags.cli", "evaluate"]
            command += ["--bag", str(job.bag), "--out", str(job.out), *options]
            with log.open("w") as stream:
                running[job] = start_child(
                    command,
                    holds=holds,
                    stdout=stream,
                    stderr=subprocess.STDOUT,
                    env=_child_environment(job.domain_id),
                )
            say(f"bag {job.name}: evaluating (ROS_DOMAIN_ID {job.domain_id})")
        for job, process in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[job]
            if code == 0:
                say(f"bag {job.name}: done")
            else:
                failed.append((job, code))
        if failed and not running:
            break
        time.sleep(0.2)
    if failed:
        job, code = failed[0]
        log = logs / f"{job.name}.log"
        raise ToolError(
            f"bag {job.bag} failed (exit {code}): {_last_error(log)} (its log: {log}; "
            "kept beside --out)"
        )


def _bag_summary(name: str, bag: Path, figures: dict[str, Any], domain_id: int) -> dict[str, Any]:
    return {
        "name": name,
        "bag": str(bag),
        "report": f"bags/{name}/report.json",
        "ros_domain_id": domain_id,
        **{key: figures[key] for key in SUMMARY_KEYS},
    }


def _node_counters(reports: list[dict[str, Any]]) -> dict[str, int | None]:
    """The bags' node counters added up (None where a bag has none)."""
    total: dict[str, int | None] = {}
    for key in ("received", "processed", "dropped", "rejected", "failed"):
        values = [r["node_counters"].get(key) for r in reports]
        try:
            total[key] = sum(int(v) for v in values)
        except (TypeError, ValueError):
            total[key] = None
    return total


def evaluate_bags(
    args: Any, bags: list[Path], say: Callable[[str], None] = print
) -> tuple[Scored, Path]:
    """``mtl-bag evaluate`` over ``bags`` (module doc) into the new folder ``args.out``;
    returns the overall scored report and the folder."""
    out = _check_out(Path(args.out), *bags)
    options = ScoreOptions.from_args(args)
    criteria, baseline = options.check()
    class_map = _class_map(
        args.classes, load_model_config(Path(args.checkpoint)), str(args.checkpoint)
    )
    topics = BagTopics(args.camera_topic, args.semantic_topic, args.detections_topic)
    names = report_names(bags)
    base = int(os.environ.get("ROS_DOMAIN_ID", "0"))
    ids = domain_ids(len(bags), base)
    skipped = skipped_paths(args.bag)
    for entry in skipped:
        print(f"warning: --bag {args.bag}: skipped {entry.path} ({entry.reason})", file=sys.stderr)
    logs = out.parent / f"{out.name}.logs"
    logs.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out) as work:
        (work / "bags").mkdir()
        jobs = [
            BagJob(name, bag, work / "bags" / name, domain)
            for name, bag, domain in zip(names, bags, ids, strict=True)
        ]
        run_jobs(jobs, child_options(args), args.jobs, logs, say, holds=work)
        total, summaries, reports, frames = None, [], [], []
        for job in jobs:
            run = read_run(job.out / "outputs_bag")
            truth = read_ground_truth(job.bag, topics)
            scoring = options.score(run, truth, class_map)
            if total is None:
                total = Tally.empty(class_map)
            total.add(scoring.tally)
            reports.append(json.loads((job.out / "report.json").read_text()))
            summaries.append(_bag_summary(job.name, job.bag, scoring.figures, job.domain_id))
            summaries[-1]["resources"] = reports[-1].get("resources")  # its own node's
            frames += [{"bag": job.name, **record} for record in scoring.records]
        report = _overall_report(args, total, class_map, summaries, reports)
        report["skipped"] = [entry.as_dict() for entry in skipped]
        verdicts = judge(report, criteria, baseline) if criteria else None
        if verdicts is not None:
            report["gate"] = "pass" if all(v.passed for v in verdicts) else "fail"
            report["criteria"] = verdict_dicts(verdicts)
        _write_overall(work, report, frames, total, verdicts)
        (work / "logs").mkdir()
        for log in logs.iterdir():
            log.rename(work / "logs" / log.name)
        logs.rmdir()
    return Scored(report, verdicts), out


def _overall_report(
    args: Any,
    total: Tally,
    class_map,
    summaries: list[dict[str, Any]],
    reports: list[dict[str, Any]],
) -> dict[str, Any]:
    figures = total.figures(class_map)
    first = reports[0]["reproducibility"]
    return {
        "bag": str(args.bag),
        "bags": summaries,
        "jobs": args.jobs,
        "note": "overall = all bags' frames added up; latency and throughput of bags evaluated "
        "in parallel are those of a shared machine",
        "node_counters": _node_counters(reports),
        "frames_spec": ScoreOptions.from_args(args).frames,
        **figures,
        "gate": None,
        "criteria": [],
        "reproducibility": {
            "bag_hashes": {
                s["name"]: r["reproducibility"]["bag_hash"]
                for s, r in zip(summaries, reports, strict=True)
            },
            **{
                key: first[key]
                for key in first
                if key not in ("bag_hash", "ground_truth_hash", "replay")
            },
            "replay": first["replay"],
        },
    }


def _write_overall(
    work: Path, report: dict[str, Any], frames: list[dict[str, Any]], total: Tally, verdicts
) -> None:
    title = f"{len(report['bags'])} bags"
    rows = [
        (f"[{bag['name']}]({Path(bag['report']).parent}/report.md)", bag) for bag in report["bags"]
    ]
    intro = [f"# Evaluation of {title}", "", summary_table("bag", rows), ""]
    if report["skipped"]:
        intro += ["", f"Skipped (not bags; {len(report['skipped'])}):", ""]
        intro += [f"- `{entry['path']}`: {entry['reason']}" for entry in report["skipped"]]
    intro += ["", f"Overall ({report['note']}):", ""]
    write_summary_report(work, report, frames, total, verdicts, title=title, intro=intro)
