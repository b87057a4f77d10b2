"""Runs a tool and stops it in the middle of writing its output, at a chosen call, so that a test
can SIGKILL a real tool process at a known instant.

    python pause_mid_write.py MODULE:ATTRIBUTE N TOOL_MODULE [tool arguments...]

After the N-th call of ``MODULE.ATTRIBUTE`` (a function or ``Class.method``) returns, it prints
``paused`` on stdout and waits forever; ``TOOL_MODULE.main(arguments)`` is the tool.
"""

from __future__ import annotations

import functools
import importlib
import signal
import sys


def pause_after(target: str, call: int) -> None:
    module_name, _, attribute = target.partition(":")
    *owners, name = attribute.split(".")
    owner = importlib.import_module(module_name)
    for part in owners:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    def paused(*args, **kwargs):
        nonlocal calls
        result = original(*args, **kwargs)
        calls += 1
        if calls == call:
            print("paused", flush=True)
            while True:
                signal.pause()
        return result

    setattr(owner, name, paused)


if __name__ == "__main__":
    target, call, tool, *argv = sys.argv[1:]
    pause_after(target, int(call))
    sys.exit(importlib.import_module(tool).main(argv))
