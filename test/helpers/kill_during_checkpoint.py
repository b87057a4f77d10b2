"""Runs ``mtl-train`` and SIGKILLs itself in the middle of its N-th checkpoint file write,
after half of the file's bytes went to disk: a crash at a deterministic, worst-case instant.

    python kill_during_checkpoint.py N [mtl-train arguments...]
"""

from __future__ import annotations

import io
import os
import signal
import sys

import torch

from mtl_perception.training.cli import main

_save = torch.save
_writes = 0


def _dying_save(content, stream, *args, **kwargs):
    global _writes
    _writes += 1
    if _writes == int(sys.argv[1]):
        buffer = io.BytesIO()
        _save(content, buffer, *args, **kwargs)
        data = buffer.getvalue()
        stream.write(data[: len(data) // 2])
        stream.flush()
        os.fsync(stream.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(content, stream, *args, **kwargs)


torch.save = _dying_save
sys.exit(main(sys.argv[2:]))
