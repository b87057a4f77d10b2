"""Starting and stopping the perception node as a process of its own, for a bag run.

Separate from the replay (:mod:`.replay`), which only needs the node's topics: a run that attaches
to a node started elsewhere simply does not start one.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .settings import NODE_NAME


@dataclass
class NodeProcess:
    """A started node: its process, its log file and the stream writing it."""

    process: subprocess.Popen
    log: Path
    stream: IO

    def failure(self) -> str | None:
        """None while it runs; else its exit code and the telling line of its log."""
        if self.process.poll() is None:
            return None
        lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines()]
        errors = [line for line in lines if "ERROR" in line or "FATAL" in line or "Error" in line]
        last = (errors or [line for line in lines if line] or ["(no output)"])[-1]
        fatal = [e for e in errors if "configure failed" in e or "invalid parameter" in e]
        return f"the node exited with code {self.process.returncode}: {(fatal or [last])[-1]}"

    def stop(self, timeout: float = 15.0) -> None:
        """SIGINT (the node's clean shutdown), SIGKILL after ``timeout`` s; closes the log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stream.close()


def parameter_text(value: Any) -> str:
    """A parameter value as ``--ros-args -p name:=value`` reads it back with its type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def start_node(
    camera_topic: str,
    compressed: bool,
    params_file: Path | None,
    log: Path,
    defaults: dict[str, Any],
    forced: dict[str, Any],
    namespace: str | None = None,
) -> NodeProcess:
    """The perception node named :data:`NODE_NAME` (in ``namespace``, default the root):
    ``defaults`` (overridable by ``params_file``), then the file, then ``forced``; its output
    goes to ``log``."""
    remap = f"image/compressed:={camera_topic}" if compressed else f"image:={camera_topic}"
    args = [sys.executable, "-m", "mtl_perception.ros.node", "--ros-args"]
    args += ["-r", f"__node:={NODE_NAME}", "-r", remap]
    if namespace:
        args += ["-r", f"__ns:={namespace}"]
    for name, value in defaults.items():
        args += ["-p", f"{name}:={parameter_text(value)}"]
    if params_file:
        args += ["--params-file", str(params_file)]
    for name, value in forced.items():
        args += ["-p", f"{name}:={parameter_text(value)}"]
    stream = log.open("w")
    return NodeProcess(subprocess.Popen(args, stdout=stream, stderr=subprocess.STDOUT), log, stream)


def keep_node_log(log: Path, out: Path) -> Path | None:
    """Moves a failed run's node log beside ``out`` (never over an existing file)."""
    if not log.is_file():
        return None
    target = out.parent / f"{out.name}.failed-node.log"
    number = 1
    while target.exists() or target.is_symlink():
        target = out.parent / f"{out.name}.failed-node.{number}.log"
        number += 1
    log.rename(target)
    return target
