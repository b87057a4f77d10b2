"""The run stage: check everything, start the node, replay a bag, write the output bag.

Everything that can be checked is checked BEFORE the node starts: the output folder (new),
``--node-params`` (YAML, names and types of the node's parameters), the checkpoint (readable,
weights fit) and the bag (readable, a camera topic with an image type). The output bag (MCAP)
holds the node's masks and detections and its /diagnostics, each logged at its receive time, and
one :data:`.read.RUN_TOPIC` message: the run's settings (bag, checkpoint, node parameters, replay
pace), provenance (hashes, versions, host), every frame sent (stamps, send time, size, why the
node will reject it), the node process's CPU, memory and GPU use over the replay
(:mod:`.resources`) and, with ``--find-peak-rate``, every trial of the search (:mod:`.peak`; the
frames and outputs are those of one pass of the bag at the peak rate). Scoring needs nothing
else (:mod:`.score`).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from std_msgs.msg import String

from ...cli import one_line
from ...model.checkpoint import load_model
from ...model.config import ModelConfig
from ..parameters import NodeParameters
from .node_process import start_node
from .peak import PeakSearch, find_peak_rate
from .provenance import content_hash, software_and_host
from .read import (
    COMPRESSED_TYPE,
    DEFAULT_TOPICS,
    RUN_FORMAT,
    RUN_TOPIC,
    STRING_TYPE,
    BagFrames,
    BagTopics,
    read_camera,
)
from .record import typestore
from .replay import Collected, NodeTopics, replay
from .resources import ResourceSampler, not_sampled
from .settings import NODE_NAME, check_forced, node_settings, read_node_params


@dataclass
class PreparedRun:
    """A run whose inputs are all checked: what the node gets, and the frames to send."""

    bag: BagFrames
    checkpoint: Path
    model_config: ModelConfig
    params_file: Path | None
    defaults: dict[str, Any]
    forced: dict[str, Any]
    params: NodeParameters
    rate_factor: float | None
    peak: PeakSearch | None = None  # --find-peak-rate: the search replaces rate_factor


def check_rate_factor(rate_factor: float | None) -> None:
    if rate_factor is not None and not (math.isfinite(rate_factor) and rate_factor > 0):
        raise ValueError(
            f"the rate factor must be positive and finite, got {rate_factor} (--rate-factor)"
        )


def load_model_config(checkpoint: Path) -> ModelConfig:
    try:
        model, _ = load_model(checkpoint)
    except (OSError, ValueError) as error:
        raise ValueError(f"{one_line(error)} (--checkpoint)") from error
    return model.config


def prepare_run(
    bag_path: Path,
    checkpoint: Path,
    *,
    rate_factor: float | None = 1.0,
    params_file: Path | None = None,
    topics: BagTopics = DEFAULT_TOPICS,
    model_config: ModelConfig | None = None,
    peak: PeakSearch | None = None,
) -> PreparedRun:
    """Checks the pace (or the peak-rate search), the parameter file, the checkpoint and the
    bag's camera topic.

    Raises:
        ValueError: a bad input, naming the option, file or topic.
    """
    check_rate_factor(rate_factor)
    if peak is not None:
        peak.check()
        rate_factor = None
    overrides = read_node_params(params_file)
    if model_config is None:
        model_config = load_model_config(checkpoint)
    model_input = (model_config.input_height, model_config.input_width)
    try:
        defaults, forced, params = node_settings(model_input, overrides, checkpoint, False)
    except ValueError as error:
        raise ValueError(f"{error} (--node-params {params_file})") from error
    bag = read_camera(bag_path, topics, params.max_pixels)
    compressed = bag.camera_type == COMPRESSED_TYPE
    check_forced(params_file, checkpoint, bag.camera_topic, bag.camera_type)
    _, forced, params = node_settings(model_input, overrides, checkpoint, compressed)
    return PreparedRun(
        bag, checkpoint, model_config, params_file, defaults, forced, params, rate_factor, peak
    )


def run_info(
    prepared: PreparedRun,
    collected: Collected,
    node: NodeTopics,
    *,
    resources: dict[str, Any] | None = None,
    peak: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's settings, provenance and frames: the output bag's :data:`RUN_TOPIC` message.

    Args:
        resources: the node process's use over the replay (:mod:`.resources`).
        peak: the peak-rate search's record (:func:`.peak.find_peak_rate`); ``collected`` is
            then its recorded trial.
    """
    bag = prepared.bag
    return {
        "format": RUN_FORMAT,
        "bag": str(bag.path),
        "bag_absolute": str(bag.path.resolve()),
        "bag_hash": content_hash(bag.path),
        "camera_topic": bag.camera_topic,
        "camera_type": bag.camera_type,
        "checkpoint": str(prepared.checkpoint),
        "checkpoint_hash": content_hash(prepared.checkpoint),
        "model_config": prepared.model_config.to_dict(),
        "node": {
            "name": node.name,
            "outputs": {"semantic": node.semantic, "detections": node.detections},
            "params_file": str(prepared.params_file) if prepared.params_file else None,
            "attached": False,
            "parameters": asdict(prepared.params),
        },
        "replay": {
            "rate_factor": prepared.rate_factor,
            "as_fast_as_possible": prepared.rate_factor is None and peak is None,
            "rate_hz": peak["recorded_trial_hz"] if peak else None,
            "find_peak_rate": peak is not None,
        },
        "peak_rate": peak,
        "resources": resources,
        "node_counters_at_start": collected.counters_at_start,
        "provenance": software_and_host(),
        "frames_in_bag": len(bag.frames) + len(bag.problems),
        "frames_restamped": bag.restamped,
        "zero_stamps": bag.zero_stamps,
        "bag_problems": bag.problems,
        "warnings": bag.warnings,
        "frames": [
            {
                "index": f.index,
                "stamp": f.stamp,
                "bag_stamp": f.bag_stamp,
                "received": f.received,
                "size": list(f.size) if f.size else None,
                "rejected": f.rejected,
                "sent": collected.sent.get(f.stamp),
            }
            for f in bag.frames
        ],
    }


def write_output_bag(path: Path, collected: Collected, info: dict[str, Any]) -> None:
    """The node's messages at their receive times and the run's settings, as an MCAP bag at
    ``path`` (a folder that must not exist)."""
    store = typestore()
    messages = sorted(collected.messages, key=lambda m: m[1])
    end = max([m[1] for m in messages] + list(collected.sent.values()) + [0]) + 1
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for topic, received, raw, msgtype in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], received, raw)
        settings = writer.add_connection(RUN_TOPIC, STRING_TYPE, typestore=store)
        writer.write(settings, end, serialize_message(String(data=json.dumps(info))))


def replay_run(
    prepared: PreparedRun,
    node: NodeTopics,
    *,
    node_failure: Callable[[], str | None] = lambda: None,
    progress: bool = True,
    parameter_names: tuple[str, ...] = (),
    say: Callable[[str], None] = print,
    on_wait: Callable[[str], None] | None = None,
) -> tuple[Collected, dict[str, Any] | None]:
    """The run's replay into ``node``: one at its pace, or the peak-rate search's trials
    (:mod:`.peak`). Returns the recorded replay and the search's record (None without one).
    ``on_wait``: told when the first replay starts waiting for the node (:func:`.replay.replay`).
    """
    if prepared.peak is None:
        collected = replay(
            prepared.bag,
            node,
            rate_factor=prepared.rate_factor,
            node_failure=node_failure,
            progress=progress,
            parameter_names=parameter_names,
            on_wait=on_wait,
        )
        return collected, None
    waits = [on_wait]  # the first trial only: the node is known to be there after it

    def play(rate_hz: float | None, frames: int | None) -> Collected:
        return replay(
            prepared.bag,
            node,
            rate_factor=None,
            rate_hz=rate_hz,
            node_failure=node_failure,
            progress=False,
            parameter_names=parameter_names,
            idle_timeout=10.0,  # the last trial's frames done before this one's counters
            frame_count=frames,
            on_wait=waits.pop() if waits else None,
        )

    return find_peak_rate(play, prepared.bag, prepared.peak, say)


def execute_run(
    prepared: PreparedRun,
    bag_out: Path,
    log: Path,
    *,
    progress: bool = True,
    attach: NodeTopics | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Starts the node (its output in ``log``), replays while sampling its process's resources,
    stops it and writes the output bag to ``bag_out`` (a path that must not exist); returns the
    run's settings.

    With ``attach``, no node is started: the frames go to the node already running there (on a
    robot, from ``ros2 launch``; any node publishing the same message types), and the parameters
    it reports replace the run's own in the settings (what it actually ran with); its resources
    are not sampled (its process is not known).
    """
    if attach is not None:
        collected, peak = replay_run(
            prepared,
            attach,
            progress=progress,
            parameter_names=tuple(asdict(prepared.params)),
            say=say,
            on_wait=lambda line: print(line, file=sys.stderr),  # a node elsewhere may be slow
        )
        reported = collected.node_parameters
        prepared.params = replace(
            prepared.params, **{k: v for k, v in reported.items() if k in asdict(prepared.params)}
        )
        info = run_info(prepared, collected, attach, resources=not_sampled(), peak=peak)
        info["node"]["attached"] = True
        info["node"]["reported_parameters"] = sorted(reported)
        write_output_bag(bag_out, collected, info)
        return info
    node = NodeTopics.of(NODE_NAME)
    process = start_node(
        prepared.bag.camera_topic,
        prepared.bag.camera_type == COMPRESSED_TYPE,
        prepared.params_file,
        log,
        prepared.defaults,
        prepared.forced,
    )
    try:
        with ResourceSampler(process.process.pid) as sampler:
            collected, peak = replay_run(
                prepared, node, node_failure=process.failure, progress=progress, say=say
            )
    finally:
        process.stop()
    resources = sampler.summary(*(collected.window_ns or (None, None)))
    info = run_info(prepared, collected, node, resources=resources, peak=peak)
    write_output_bag(bag_out, collected, info)
    return info
