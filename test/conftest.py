"""Test-wide set-up: every pytest run happens inside a private network namespace.

No DDS traffic may leave loopback. Rather than trusting each caller to remember a wrapper, the
first thing a pytest run does is re-execute itself through scripts/netns_run.sh, which moves it
into a namespace that has only loopback (or, where no namespace may be created, sets the
LOCALHOST discovery range and its own domain id alone). Every test that starts ROS processes also
gets a ROS_DOMAIN_ID of its own through the ``ros_env`` fixture, so a test never sees another's
leftovers.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fast_selection import set_current_test

from mtl_perception.resources import config_file
from mtl_perception.ros.distribution import ros_distribution
from mtl_perception.ros.fastdds import LARGE_IMAGES_PROFILE, PROFILE_VARIABLES, profile_environment

REPO_ROOT = Path(__file__).resolve().parent.parent
NETNS_RUN = REPO_ROOT / "scripts" / "netns_run.sh"
FASTDDS_PROFILE = config_file(LARGE_IMAGES_PROFILE)

_domain_ids = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("MTL_NETNS"):
        return  # already inside netns_run.sh (private namespace, or none possible)
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.stop_global_capturing()  # give the re-executed run the real stdout/stderr
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(NETNS_RUN, [str(NETNS_RUN), *sys.orig_argv])


def pytest_report_header(config: pytest.Config) -> str:
    name, source = ros_distribution()
    profiles = ", ".join(f"{n}={os.environ.get(n)}" for n in PROFILE_VARIABLES)
    return (
        f"ROS 2 {name} ({source}), "
        f"network isolation: {os.environ.get('MTL_NETNS', 'unset')}, "
        f"ROS_AUTOMATIC_DISCOVERY_RANGE={os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE')}, "
        f"{profiles}"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Module fixtures are made in the set-up of the first test that asks for them: a fast test
    # that would wait for a training run is refused there (helpers/fast_selection.py).
    set_current_test(item.nodeid, slow=item.get_closest_marker("slow") is not None)


def next_domain_id() -> int:
    """A ROS_DOMAIN_ID in 1..100 that no other caller of this run holds at the same time.

    pytest-xdist workers share one network namespace, so each takes its own residue class:
    worker w of n gets base + w, base + w + n, ... (n divides 100, so the classes never meet).
    """
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if 100 % workers:
        raise pytest.UsageError(f"-n {workers}: use a worker count that divides 100 (1, 2, 4, 5)")
    base = int(os.environ.get("ROS_DOMAIN_ID", "0"))
    return 1 + (base + worker + workers * next(_domain_ids)) % 100


def ros_environment() -> dict[str, str]:
    """A copy of the environment with a ROS_DOMAIN_ID no other caller in this run gets, the
    localhost discovery range and the large-image Fast DDS profile (unless the user set one)."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(next_domain_id())
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.update(profile_environment(env, str(FASTDDS_PROFILE), ros_distribution()[0]))
    return env


@pytest.fixture
def ros_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Environment for a test that starts ROS participants, in-process or as subprocesses.

    Gives the test a ROS_DOMAIN_ID no other test of this run uses, the localhost discovery range,
    and the project's large-image Fast DDS profile unless the user set their own.

    Returns:
        The full environment (also applied to ``os.environ`` for the test's duration).
    """
    env = ros_environment()
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", *PROFILE_VARIABLES):
        if key in env:
            monkeypatch.setenv(key, env[key])
    yield dict(os.environ)


# -- the robustness suite's summary line ---------------------------------------------------------
# Counts the cases marked bad_input (test/robustness) and how many passed. The reports carry the
# markers as keywords, so this works in pytest-xdist's controller too, which collects nothing.
_bad_input_cases: dict[str, str] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    for item in session.items:  # after -k / -m deselection; cases that never report count too
        if item.get_closest_marker("bad_input") is not None:
            _bad_input_cases[item.nodeid] = "collected"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "bad_input" not in report.keywords:
        return
    if report.when == "call" or report.outcome != "passed":  # a failed set-up counts too
        _bad_input_cases[report.nodeid] = report.outcome
    else:
        _bad_input_cases.setdefault(report.nodeid, "collected")


def pytest_terminal_summary(terminalreporter) -> None:
    if not _bad_input_cases:
        return
    passed = sum(outcome == "passed" for outcome in _bad_input_cases.values())
    by_file: dict[str, int] = {}
    for nodeid in _bad_input_cases:
        name = nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        by_file[name] = by_file.get(name, 0) + 1
    parts = ", ".join(f"{name} {count}" for name, count in sorted(by_file.items()))
    terminalreporter.write_line(
        f"robustness suite: {len(_bad_input_cases)} bad-input cases, {passed} passed ({parts})"
    )
