"""``--find-peak-rate``: the highest input rate the node keeps up with, as ros2_benchmark finds it.

One node; the bag's camera frames are replayed again and again into it at fixed input rates
(frames per second, the bag's own timing ignored), each replay a *trial*. A trial's lost frames are
the frames sent that the node does not reject (rejected frames are the input's fault) but that got
no outputs: dropped by the node's latest-frame-wins slot, or never answered. A rate passes when
less than :data:`LOST_LIMIT` of them are lost.

The search (a bisection between bounds, to a tolerance): without both bounds given, a first trial
paced by the node (each frame once the last one's outputs are in) measures its throughput T; the
bounds default to T / 2 and 2 T. The upper bound is tried first (passing it ends the search: the
peak is at least that), then the lower one (failing it ends the search: no peak in the range),
then a rate between the highest passing rate (good) and the lowest failing one (bad) until they
are at most the tolerance apart. While bad > 2 good that rate is their geometric mean
sqrt(good bad), so a far upper bound (``--peak-rate-max 1e9``) is narrowed in a few trials; then
their arithmetic mean. The default tolerance is relative: an eighth of the current passing rate
(:data:`TOLERANCE_FRACTION`), so the peak is found to within 12.5 % whatever the bounds; for the
default bounds that is at most 6 fixed-rate trials. ``--peak-rate-tolerance`` gives one in Hz
instead. The peak is the highest passing rate.

A fixed-rate trial lasts ``trial_seconds`` (default :data:`TRIAL_SECONDS`) or one pass of the bag,
whichever is longer: like ros2_benchmark, it loops the bag's frames for that time (each pass after
the first re-stamped, :func:`.replay.schedule`), so a short bag's burst cannot hide in the node's
one waiting frame and the peak is a rate the node sustains. After the search, the bag is replayed
once at the peak rate (without a peak: at the lower bound): that run is recorded and scored, so
accuracy and latency are those at the peak rate. The report lists every trial.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...cli import ToolError
from .read import BagFrames
from .replay import Collected

LOST_LIMIT = 0.05  # a rate passes when fewer than this fraction of the frames are lost
BOUND_FACTOR = 2.0  # default bounds: the paced throughput / and x this
TOLERANCE_FRACTION = 0.125  # default tolerance: this fraction of the highest passing rate
TRIAL_SECONDS = 5.0  # a fixed-rate trial loops the bag this long (ros2_benchmark's default: 5 s)


@dataclass(frozen=True)
class PeakSearch:
    """The search's bounds and tolerance (Hz); None: bounds from a first paced trial, the
    tolerance relative to the passing rate (module doc)."""

    low_hz: float | None = None
    high_hz: float | None = None
    tolerance_hz: float | None = None
    trial_seconds: float = TRIAL_SECONDS

    def check(self) -> None:
        """Refuses bounds and a tolerance that cannot make a search.

        Raises:
            ValueError: one line naming the options.
        """
        for value, option in (
            (self.low_hz, "--peak-rate-min"),
            (self.high_hz, "--peak-rate-max"),
            (self.tolerance_hz, "--peak-rate-tolerance"),
            (self.trial_seconds, "--peak-trial-seconds"),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                unit = "duration in s" if option == "--peak-trial-seconds" else "rate in Hz"
                raise ValueError(f"{option} must be a positive finite {unit}, got {value}")
        low, high = self.low_hz, self.high_hz
        if low is not None and high is not None:
            if low >= high:
                raise ValueError(
                    f"--peak-rate-min {low:g} Hz must be below --peak-rate-max {high:g} Hz "
                    "(--peak-rate-min)"
                )
            if self.tolerance_hz is not None and self.tolerance_hz >= high - low:
                raise ValueError(
                    f"--peak-rate-tolerance {self.tolerance_hz:g} Hz is not below the range "
                    f"{low:g}-{high:g} Hz: nothing to search (--peak-rate-tolerance)"
                )

    def bounds(self, throughput_fps: float | None) -> tuple[float, float]:
        """(low, high) Hz, the missing ones from the paced trial's throughput."""
        low, high = self.low_hz, self.high_hz
        if low is None or high is None:
            if not throughput_fps:
                raise ToolError(
                    "the node gave no outputs in the paced first trial, so there is no rate to "
                    "search from (give --peak-rate-min and --peak-rate-max)"
                )
            if low is None:
                low = throughput_fps / BOUND_FACTOR
                if high is not None:
                    low = min(low, high / BOUND_FACTOR)
            if high is None:
                high = max(throughput_fps, low) * BOUND_FACTOR
        return low, high

    def resolved(self, good: float, bad: float) -> bool:
        """Whether the highest passing rate ``good`` and the lowest failing one ``bad`` (Hz)
        are within the tolerance: ``--peak-rate-tolerance``, else :data:`TOLERANCE_FRACTION`
        of ``good``."""
        tolerance = self.tolerance_hz if self.tolerance_hz else good * TOLERANCE_FRACTION
        return bad - good <= tolerance

    @property
    def needs_paced_trial(self) -> bool:
        return self.low_hz is None or self.high_hz is None

    def trial_frames(self, rate_hz: float, bag_frames: int) -> int:
        """Frames a trial at ``rate_hz`` sends: ``trial_seconds`` of them, at least the bag."""
        return max(bag_frames, math.ceil(rate_hz * self.trial_seconds))


def next_rate(good: float, bad: float) -> float:
    """The rate (Hz) to try between a passing ``good`` and a failing ``bad``: their geometric
    mean while bad > 2 good (a far bound is narrowed by ratios), then their arithmetic mean."""
    return math.sqrt(good * bad) if bad > 2 * good else (good + bad) / 2


def _latencies_ms(collected: Collected) -> np.ndarray:
    """(N,) ms from send to both outputs of the frames that got them."""
    return np.array(
        [(t - collected.sent[s]) / 1e6 for s, t in collected.arrived.items() if s in collected.sent]
    )


def trial_record(rate_hz: float | None, collected: Collected) -> dict[str, Any]:
    """One trial for the report: its rate (None: paced by the node), frames sent, rejected
    (known from the bag), lost and their fraction of the rest, latency p50 (ms), throughput
    (frames with outputs / s from the first send to the last output) and whether it passed."""
    sent = list(collected.sent)
    accepted = [s for s in sent if s not in collected.rejected]
    lost = sum(not collected.has_outputs(s) for s in accepted)
    fraction = lost / len(accepted) if accepted else None
    latencies = _latencies_ms(collected)
    span_ns = (
        max(collected.arrived.values()) - min(collected.sent.values()) if collected.arrived else 0
    )
    return {
        "rate_hz": rate_hz,
        "sent": len(sent),
        "rejected": len(sent) - len(accepted),
        "lost": lost,
        "lost_fraction": fraction,
        "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies.size else None,
        "throughput_fps": len(collected.arrived) / (span_ns / 1e9) if span_ns > 0 else None,
        "passed": fraction is not None and fraction < LOST_LIMIT if rate_hz is not None else None,
    }


def find_peak_rate(
    play: Callable[[float | None, int | None], Collected],
    bag: BagFrames,
    search: PeakSearch,
    say: Callable[[str], None] = lambda message: None,
) -> tuple[Collected, dict[str, Any]]:
    """Runs the trials (module doc); ``play(rate_hz, frames)`` replays the bag at that rate
    (None: paced by the node), ``frames`` frames cycling through it (None: the bag once).
    Returns the recorded run (the bag once at the peak rate; without a peak, at the lower bound)
    and the search's record for the run's settings.

    Raises:
        ValueError: the node rejects every frame of the bag (nothing can be lost or kept).
        ToolError: the paced first trial got no outputs.
    """
    if all(f.rejected is not None for f in bag.frames):
        raise ValueError(
            f"the node rejects all {len(bag.frames)} frames of {bag.path} "
            f"(first: {bag.frames[0].rejected}): no rate to find (--find-peak-rate)"
        )
    trials: list[dict[str, Any]] = []
    throughput = None
    if search.needs_paced_trial:
        paced = trial_record(None, play(None, None))
        trials.append(paced)
        throughput = paced["throughput_fps"]
        say(
            "peak rate: paced trial, throughput "
            + (f"{throughput:.3g} fps" if throughput else "n/a")
        )
    low, high = search.bounds(throughput)

    def passes(rate: float) -> bool:
        record = trial_record(rate, play(rate, search.trial_frames(rate, len(bag.frames))))
        trials.append(record)
        say(
            f"peak rate: trial at {rate:.3g} Hz lost {record['lost']} of "
            f"{record['sent'] - record['rejected']} frames: "
            + ("pass" if record["passed"] else "fail")
        )
        return record["passed"]

    if passes(high):
        peak, note = high, "the upper bound passed: the node may keep up with more"
    elif not passes(low):
        peak, note = None, "even the lower bound lost too many frames"
    else:
        good, bad = low, high
        while not search.resolved(good, bad):
            middle = next_rate(good, bad)
            if passes(middle):
                good = middle
            else:
                bad = middle
        peak, note = good, None
    recorded = peak if peak is not None else low
    say(f"peak rate: recording one pass of the bag at {recorded:.3g} Hz")
    record = {
        "peak_hz": peak,
        "lost_limit": LOST_LIMIT,
        "low_hz": low,
        "high_hz": high,
        "tolerance_hz": search.tolerance_hz,  # None: relative, tolerance_fraction
        "tolerance_fraction": None if search.tolerance_hz else TOLERANCE_FRACTION,
        "trial_seconds": search.trial_seconds,
        "recorded_trial_hz": recorded,
        "note": note,
        "trials": trials,
    }
    return play(recorded, None), record


def peak_lines(peak: dict[str, Any] | None) -> list[str]:
    """report.md's lines of the search: the peak and a table of the trials."""
    if peak is None:
        return []
    limit = f"{100 * peak['lost_limit']:g} %"
    found = (
        f"**{peak['peak_hz']:.3g} Hz**" if peak["peak_hz"] is not None else "**none** in the range"
    )
    lines = [
        f"Peak input rate (--find-peak-rate; highest rate with < {limit} of the frames lost, "
        f"searched {peak['low_hz']:.3g}-{peak['high_hz']:.3g} Hz to {_tolerance(peak)}, "
        f"each fixed-rate trial {peak['trial_seconds']:g} s or "
        f"the bag once, whichever is longer): {found}"
        + (f" ({peak['note']})" if peak["note"] else "")
        + f". The figures above are those of one pass of the bag at "
        f"{peak['recorded_trial_hz']:.3g} Hz.",
        "",
        "| trial | rate (Hz) | sent | rejected | lost | lost fraction | latency p50 (ms) | "
        "throughput (fps) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def number(value: float | None, form: str) -> str:
        return "n/a" if value is None else format(value, form)

    for i, t in enumerate(peak["trials"]):
        verdict = "paced by the node" if t["passed"] is None else "pass" if t["passed"] else "fail"
        lines.append(
            f"| {i} | {'paced' if t['rate_hz'] is None else format(t['rate_hz'], '.3g')} | "
            f"{t['sent']} | {t['rejected']} | "
            f"{t['lost']} | {number(t['lost_fraction'], '.3f')} | "
            f"{number(t['latency_p50_ms'], '.1f')} | {number(t['throughput_fps'], '.2f')} | "
            f"{verdict} |"
        )
    return [*lines, ""]


def _tolerance(peak: dict[str, Any]) -> str:
    """The search's tolerance in words: Hz, or a fraction of the passing rate."""
    if peak["tolerance_hz"] is not None:
        return f"{peak['tolerance_hz']:.3g} Hz"
    return f"{100 * peak['tolerance_fraction']:g} % of the passing rate"


def peak_line(peak: dict[str, Any] | None) -> str | None:
    """The command line's summary of the search."""
    if peak is None:
        return None
    rates = [t["rate_hz"] for t in peak["trials"] if t["rate_hz"] is not None]
    paced = len(peak["trials"]) - len(rates)
    found = f"{peak['peak_hz']:.3g} Hz" if peak["peak_hz"] is not None else "none"
    trials = f"{len(rates)} fixed-rate trial{'s' if len(rates) != 1 else ''}"
    return (
        f"peak input rate {found} (< {100 * peak['lost_limit']:g} % frames lost; "
        + ("a paced trial and " if paced else "")
        + f"{trials} at "
        + ", ".join(f"{r:.3g}" for r in rates)
        + " Hz)"
    )
