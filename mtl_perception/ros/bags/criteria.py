"""The gate: pass/fail criteria on a report's figures, absolute or against a baseline report.

    --fail-under miou=65,map50=40,coverage=0.95,latency_p95_ms=300
    --baseline OLD/report.json --max-drop miou=1.0,map50=2.0 --max-rise latency_p95_ms=20%

Figures (:data:`FIGURES`) are in the units people write them in: ``miou`` and ``map50`` in
percent (the tables' numbers), ``coverage`` a fraction (0-1), latencies in ms, throughput in
frames/s, ``peak_rate_hz`` (``--find-peak-rate``'s peak input rate) in Hz. ``--fail-under`` is
a floor for figures where higher is better and a ceiling for those where lower is better
(latencies). ``--max-drop`` bounds how far a higher-is-better figure may fall
below the baseline's, ``--max-rise`` how far a lower-is-better one may rise above it; either in the
figure's unit or, with ``%``, relative to the baseline's value. A figure the run does not have (no
ground truth: no mIoU) fails its criterion.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    """A figure the gate can judge: where it is in a report, its unit and direction."""

    unit: str
    higher_is_better: bool
    scale: float  # report value x scale = the figure in its unit
    path: tuple[str, ...]


FIGURES = {
    "miou": Figure("%", True, 100.0, ("miou",)),
    "map50": Figure("%", True, 100.0, ("map",)),
    "coverage": Figure("", True, 1.0, ("coverage",)),
    "throughput_fps": Figure("fps", True, 1.0, ("throughput_fps",)),
    "latency_mean_ms": Figure("ms", False, 1.0, ("latency_ms", "mean")),
    "latency_p50_ms": Figure("ms", False, 1.0, ("latency_ms", "p50")),
    "latency_p95_ms": Figure("ms", False, 1.0, ("latency_ms", "p95")),
    "latency_max_ms": Figure("ms", False, 1.0, ("latency_ms", "max")),
    "peak_rate_hz": Figure("Hz", True, 1.0, ("peak_rate", "peak_hz")),  # --find-peak-rate
}


# The highest value a figure can take (fractions and percentages); a floor above it is a typo.
FIGURE_BOUNDS = {"miou": 100.0, "map50": 100.0, "coverage": 1.0}


@dataclass(frozen=True)
class Criterion:
    kind: str  # "fail-under", "max-drop" or "max-rise"
    figure: str
    limit: float
    relative: bool = False  # limit in percent of the baseline's value

    def text(self) -> str:
        return f"--{self.kind} {self.figure}={self.limit:g}{'%' if self.relative else ''}"


def _raw_figure(report: dict[str, Any], name: str) -> Any:
    value: Any = report
    for key in FIGURES[name].path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def figure_value(report: dict[str, Any], name: str) -> float | None:
    """A report's figure in the gate's unit, None when the report has none."""
    value = _raw_figure(report, name)
    if not _is_number(value) or not math.isfinite(value):
        return None
    return float(value) * FIGURES[name].scale


# Why a report may lack a figure (said when a baseline lacks one a criterion compares).
WITHOUT = {
    "miou": "a run without ground truth has none",
    "map50": "a run without ground truth has none",
    "peak_rate_hz": "only a run with --find-peak-rate has one",
}


def parse_criteria(text: str | None, kind: str) -> list[Criterion]:
    """``name=value[,name=value...]`` of ``--<kind>``.

    Raises:
        ValueError: one line naming the bad token and the option.
    """
    if text is None:
        return []
    option = f"--{kind}"
    criteria = []
    for token in text.split(","):
        token = token.strip()
        m = re.fullmatch(r"([A-Za-z0-9_]+)=([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(%?)", token)
        if not m:
            raise ValueError(
                f"cannot read {token!r} in {option}: expected name=number"
                + ("[%]" if kind != "fail-under" else "")
                + f", comma-separated, names: {', '.join(FIGURES)} ({option})"
            )
        name, limit, percent = m[1], float(m[2]), bool(m[3])
        if name not in FIGURES:
            raise ValueError(
                f"unknown figure {name!r} in {option} {token}; known: {', '.join(FIGURES)} "
                f"({option})"
            )
        if percent and kind == "fail-under":
            raise ValueError(
                f"{token!r}: a percentage needs a baseline; --fail-under takes the figure's own "
                f"unit ({FIGURES[name].unit or 'a fraction'}) ({option})"
            )
        if not math.isfinite(limit):
            raise ValueError(f"{token!r}: the limit must be finite ({option})")
        bound = FIGURE_BOUNDS.get(name)
        if kind == "fail-under" and bound is not None and limit > bound:
            raise ValueError(
                f"{token!r}: {name} is at most {bound:g}{FIGURES[name].unit}, so no run could "
                f"pass ({option})"
            )
        if name in (c.figure for c in criteria if c.kind == kind):
            raise ValueError(f"{name} is given twice in {option} ({option})")
        higher = FIGURES[name].higher_is_better
        if kind == "max-drop" and not higher:
            raise ValueError(
                f"{name} gets worse by rising, not dropping: use --max-rise {token} ({option})"
            )
        if kind == "max-rise" and higher:
            raise ValueError(
                f"{name} gets worse by dropping, not rising: use --max-drop {token} ({option})"
            )
        criteria.append(Criterion(kind, name, limit, percent))
    return criteria


# Keys every mtl-bag report.json has (one bag, a rig, several bags): what tells it from other JSON.
REPORT_KEYS = frozenset({"coverage", "latency_ms", "reproducibility"})


def read_baseline(path: Path) -> dict[str, Any]:
    """A previous report.json (a folder holding one is accepted)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"baseline report not found: {path} (--baseline)") from None
    except (OSError, ValueError) as error:
        raise ValueError(
            f"baseline {path} is not a readable report.json: {error} (--baseline)"
        ) from None
    missing = sorted(REPORT_KEYS - set(report) if isinstance(report, dict) else REPORT_KEYS)
    if missing:
        raise ValueError(
            f"baseline {path} is not a report.json of mtl-bag evaluate or score (no "
            f"{', '.join(missing)}; mtl-eval's metrics.json is not a bag report) (--baseline)"
        )
    return report


def check_gate_options(
    fail_under: str | None,
    max_drop: str | None,
    max_rise: str | None,
    baseline: Path | None,
) -> tuple[list[Criterion], dict[str, Any] | None]:
    """Parses the gate's options and reads the baseline, before any work is done.

    Raises:
        ValueError: a bad criterion, a baseline without relative criteria or the reverse, an
            unreadable baseline.
    """
    criteria = parse_criteria(fail_under, "fail-under")
    relative = parse_criteria(max_drop, "max-drop") + parse_criteria(max_rise, "max-rise")
    if relative and baseline is None:
        raise ValueError("--max-drop and --max-rise compare with a baseline: add --baseline")
    if baseline is not None and not relative:
        raise ValueError("--baseline needs --max-drop or --max-rise to say what may change")
    if baseline is None:
        return criteria, None
    old = read_baseline(baseline)
    for figure in dict.fromkeys(c.figure for c in relative):
        value = _raw_figure(old, figure)
        if value is not None and not (_is_number(value) and math.isfinite(value)):
            raise ValueError(
                f"the baseline {baseline} has {figure} {value!r}, not a finite number (--baseline)"
            )
        bound = FIGURE_BOUNDS.get(figure)
        number = figure_value(old, figure)
        if number is not None and (number < 0 or (bound is not None and number > bound)):
            limit = f"0-{bound:g}{FIGURES[figure].unit}" if bound is not None else ">= 0"
            raise ValueError(
                f"the baseline {baseline} has {figure} {number:g}{FIGURES[figure].unit}, outside "
                f"{limit} (--baseline)"
            )
        if number is None:
            why = WITHOUT.get(figure, "a run with no frame answered has none")
            raise ValueError(
                f"the baseline {baseline} has no {figure} to compare with ({why}) (--baseline)"
            )
    return criteria + relative, old


@dataclass
class Verdict:
    criterion: str
    figure: str
    value: float | None
    baseline: float | None
    limit: float  # the bound the value was held to, in the figure's unit
    passed: bool
    note: str


def judge(
    report: dict[str, Any], criteria: list[Criterion], baseline: dict[str, Any] | None
) -> list[Verdict]:
    """Every criterion's value, bound and verdict."""
    verdicts = []
    for criterion in criteria:
        spec = FIGURES[criterion.figure]
        value = figure_value(report, criterion.figure)
        relative = criterion.kind != "fail-under" and baseline is not None
        old = figure_value(baseline, criterion.figure) if relative else None
        higher = spec.higher_is_better
        note = ""
        if criterion.kind == "fail-under":
            bound = criterion.limit
        elif old is None:
            bound, note = math.nan, "the baseline has no value"
        else:
            allowed = abs(old) * criterion.limit / 100 if criterion.relative else criterion.limit
            bound = old - allowed if higher else old + allowed
        if value is None:
            passed, note = False, note or "the run has no value"
        elif math.isnan(bound):
            passed = False
        else:
            passed = value >= bound if higher else value <= bound
        verdicts.append(
            Verdict(criterion.text(), criterion.figure, value, old, bound, passed, note)
        )
    return verdicts


def verdict_dicts(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    return [asdict(v) | {"verdict": "pass" if v.passed else "fail"} for v in verdicts]


def format_verdicts(verdicts: list[Verdict], only_failed: bool = False) -> str:
    """A table of criteria: figure, value, baseline, bound, verdict."""

    def show(value: float | None, figure: str) -> str:
        if value is None or math.isnan(value):
            return "n/a"
        unit = FIGURES[figure].unit
        return f"{value:.4g}{' ' + unit if unit and unit != '%' else unit}"

    rows = [v for v in verdicts if not (only_failed and v.passed)]
    header = ("criterion", "value", "baseline", "bound", "verdict")
    table = [header] + [
        (
            v.criterion,
            show(v.value, v.figure),
            show(v.baseline, v.figure),
            ("<= " if not FIGURES[v.figure].higher_is_better else ">= ") + show(v.limit, v.figure),
            ("PASS" if v.passed else "FAIL") + (f" ({v.note})" if v.note else ""),
        )
        for v in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    )
