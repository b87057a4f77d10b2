"""Runs ``mtl-train`` and SIGKILLs itself when its N-th validation starts: after the
checkpoints of that iteration are written (the checkpoint hook runs before the validation
hook), before the validation is logged in ``metrics.jsonl``. A crash at that exact instant.

    python kill_before_validation.py N [mtl-train arguments...]
"""

from __future__ import annotations

import os
import signal
import sys

from mtl_perception.training import hooks
from mtl_perception.training.cli import main

_evaluate = hooks.evaluate
_calls = 0


def _dying_evaluate(*args, **kwargs):
    global _calls
    _calls += 1
    if _calls == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    return _evaluate(*args, **kwargs)


hooks.evaluate = _dying_evaluate
sys.exit(main(sys.argv[2:]))
