"""The robustness suite: bad inputs across the node, the bag tools, checkpoints, configs,
datasets and output paths. Every case is marked ``bad_input``; the summary prints their count."""

from __future__ import annotations

import pytest

_cases: dict[str, str] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    for item in session.items:  # after -k / -m deselection
        if item.get_closest_marker("bad_input") is not None:
            _cases[item.nodeid] = "collected"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid not in _cases:
        return
    if report.when == "call" or report.outcome != "passed":  # a failed set-up counts too
        _cases[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter) -> None:
    if not _cases:
        return
    passed = sum(outcome == "passed" for outcome in _cases.values())
    by_file: dict[str, int] = {}
    for nodeid in _cases:
        name = nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        by_file[name] = by_file.get(name, 0) + 1
    parts = ", ".join(f"{name} {count}" for name, count in sorted(by_file.items()))
    terminalreporter.write_line(
        f"robustness suite: {len(_cases)} bad-input cases, {passed} passed ({parts})"
    )
