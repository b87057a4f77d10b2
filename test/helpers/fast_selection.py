"""Which test is being set up, so that helpers can refuse what the fast selection must not do.

The robot runs ``colcon test -m "not slow"``, under pytest's 600 s timeout, on a CPU slower than a
workstation; a module fixture that trains a network for minutes once took 437 s of those 600 s
(issue 22 section 7). test/conftest.py records the node id of each test not marked ``slow`` as
its set-up starts; :func:`refuse_in_fast_test` raises there, so a fast test that reaches a
training run (its own fixture or a shared one) fails at once, naming itself, instead of passing
slowly until a slower machine times it out.
"""

from __future__ import annotations

_current_fast_test: str | None = None


def set_current_test(nodeid: str, slow: bool) -> None:
    """Called by test/conftest.py as each test's set-up starts."""
    global _current_fast_test
    _current_fast_test = None if slow else nodeid


def refuse_in_fast_test(what: str) -> None:
    """Raises RuntimeError when the test being set up or run is not marked ``slow``.

    Args:
        what: what would have taken minutes, for the message.
    """
    if _current_fast_test is not None:
        raise RuntimeError(
            f"{_current_fast_test} is not marked slow but waits for {what}: the fast selection "
            "(colcon test -m 'not slow') must not; use helpers.models.untrained_small_model, or "
            "mark the test slow"
        )
