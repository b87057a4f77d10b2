"""The node's ``device`` values that select the benchmark stand-in, without importing torch.

The parameter checks (run in the node and in the launch process) need only the names;
:mod:`.standin` holds the stand-in network itself.
"""

from __future__ import annotations

import re

STANDIN_DEVICE = "benchmark-standin"  # the node's `device` value that selects it (+ ":cuda")
_STANDIN_PATTERN = re.compile(rf"{STANDIN_DEVICE}(?::(cpu|cuda(?::\d+)?))?")


def standin_device(device: str) -> str | None:
    """The torch device a stand-in ``device`` value runs its device step on
    ("benchmark-standin": "cpu", "benchmark-standin:cuda:1": "cuda:1"); None for any other
    value (a real device)."""
    match = _STANDIN_PATTERN.fullmatch(device)
    return (match.group(1) or "cpu") if match else None
