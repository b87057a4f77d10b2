"""A ROS node as a process of its own: started with ``--ros-args``, stopped as Ctrl-C would.

The one way the bag tools (:mod:`.bags.node_process`), the benchmarks, the scripts and the tests
start a node process and stop it. No ROS import: it only builds a command line.

A node dies with the process that started it, however that one dies (SIGKILL, the OOM killer):
it is given SIGTERM, its clean shutdown, by the kernel (Linux's parent-death signal). It also
holds the folder of its log as this process does: the flock by which
:func:`mtl_perception.outputs.atomic_directory` owns a temporary output folder is shared with a
node logging into it, so the next run cannot remove that folder while the node still writes there.

    with start_node("perception_node", parameters={"checkpoint": path}, log=log) as node:
        ...  # node.process is the Popen; node.failure() says whether it died and why
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO, Any

NODE_MODULE = "mtl_perception.ros.node"
STOP_TIMEOUT = 15.0  # seconds a node is given to shut down after SIGINT before SIGKILL
PARENT_DEATH_SIGNAL = signal.SIGTERM  # what a node gets when the process that started it dies
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass
class NodeProcess:
    """A started node: its process, its log file and the stream writing it (both None where its
    output goes to this process's stdout and stderr)."""

    process: subprocess.Popen
    log: Path | None = None
    stream: IO | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def failure(self) -> str | None:
        """None while it runs; else its exit code and the telling line of its log (a configure
        failure or invalid parameter first, else the last error line, else the last line)."""
        if self.process.poll() is None:
            return None
        exited = f"the node exited with code {self.process.returncode}"
        if self.log is None:
            return exited
        lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines()]
        errors = [line for line in lines if "ERROR" in line or "FATAL" in line or "Error" in line]
        last = (errors or [line for line in lines if line] or ["(no output)"])[-1]
        fatal = [e for e in errors if "configure failed" in e or "invalid parameter" in e]
        return f"{exited}: {(fatal or [last])[-1]}"

    def interrupt(self) -> None:
        """SIGINT (the node's clean shutdown) if it still runs; returns at once."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGINT, SIGKILL after ``timeout`` s; closes the log. Returns the exit code (negative:
        killed by that signal)."""
        if self.process.poll() is None:
            self.interrupt()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        code = self.process.wait()
        if self.stream is not None:
            self.stream.close()
        return code

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def stop_nodes(nodes: Iterable[NodeProcess], timeout: float = STOP_TIMEOUT) -> list[int]:
    """Stops several nodes at once: SIGINT to all, then :meth:`NodeProcess.stop` each (so their
    shutdowns overlap). Returns their exit codes."""
    nodes = list(nodes)
    for node in nodes:
        node.interrupt()
    return [node.stop(timeout) for node in nodes]


def parameter_text(value: Any) -> str:
    """A parameter value as ``--ros-args -p name:=value`` reads it back with its type: booleans
    ``true``/``false``, floats by ``repr`` (``1.0`` stays a double), lists as a YAML sequence
    (strings quoted), anything else (int, str, Path) as ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple):
        items = (parameter_text(v) if isinstance(v, bool | float) else repr(v) for v in value)
        return f"[{', '.join(items)}]"
    return str(value)


def ros_arguments(
    name: str | None = None,
    *,
    namespace: str | None = None,
    remaps: Mapping[str, str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    params_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[str]:
    """``--ros-args`` and what follows: the node's name, remaps, namespace, then ``parameters``,
    ``params_file`` and ``overrides`` in that order (the later wins: the file over
    ``parameters``, ``overrides`` over the file)."""
    args = ["--ros-args"]
    if name:
        args += ["-r", f"__node:={name}"]
    for source, target in (remaps or {}).items():
        args += ["-r", f"{source}:={target}"]
    if namespace:
        args += ["-r", f"__ns:={namespace}"]
    for key, value in (parameters or {}).items():
        args += ["-p", f"{key}:={parameter_text(value)}"]
    if params_file:
        args += ["--params-file", str(params_file)]
    for key, value in (overrides or {}).items():
        args += ["-p", f"{key}:={parameter_text(value)}"]
    return args


def start_node(
    name: str | None = None,
    *,
    namespace: str | None = None,
    remaps: Mapping[str, str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    params_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    module: str = NODE_MODULE,
    command: Sequence[str | os.PathLike] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
) -> NodeProcess:
    """Starts a node process; returns at once (the node comes up in the background).

    Args:
        name: the node's name (``__node:=``); None keeps the one it gives itself.
        namespace, remaps, parameters, params_file, overrides: see :func:`ros_arguments`.
        module: the Python module run with this interpreter (``python -m module``).
        command: what to run instead of ``module`` (a node script with its own arguments, an
            installed executable); the ROS arguments follow it.
        env: the process's environment (default: this process's).
        cwd: its working directory (default: this process's).
        log: file its stdout and stderr are written to (truncated); None: this process's.
    """
    program = [str(part) for part in command] if command else [sys.executable, "-m", module]
    args = program + ros_arguments(
        name,
        namespace=namespace,
        remaps=remaps,
        parameters=parameters,
        params_file=params_file,
        overrides=overrides,
    )
    stream = log.open("w") if log is not None else None
    try:
        process = start_child(
            args,
            holds=log.parent if log is not None else None,
            stdout=stream,
            stderr=subprocess.STDOUT if stream is not None else None,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    except BaseException:
        if stream is not None:
            stream.close()
        raise
    return NodeProcess(process, log, stream)


def start_child(args: Sequence[str], holds: Path | None = None, **options: Any) -> subprocess.Popen:
    """``subprocess.Popen(args, **options)`` for a child that must not outlive this process (a
    node, a tool's worker): it is sent :data:`PARENT_DEATH_SIGNAL` when this process dies, even
    by SIGKILL.

    Args:
        holds: a folder whose open descriptors (and so the flock of an output being written,
            mtl_perception/outputs.py) the child inherits, so that the folder counts as in use
            while the child lives.
    """
    return _spawn(
        list(args),
        preexec_fn=_dies_with_this_process(),
        pass_fds=_descriptors_of(holds) if holds is not None else (),
        **options,
    )


@cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (loaded here, never in a forked child), or None where there is none."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def _dies_with_this_process() -> Callable[[], None] | None:
    """The ``preexec_fn`` of a child to be sent :data:`PARENT_DEATH_SIGNAL` when this process
    dies (None where the system has no ``prctl``). Run in the child between fork and exec: it
    only calls what is loaded already."""
    prctl, parent = _prctl(), os.getpid()
    if prctl is None:
        return None

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL, 0, 0, 0)
        if os.getppid() != parent:  # it died before the prctl: no signal will come
            os._exit(128 + PARENT_DEATH_SIGNAL)

    return set_parent_death_signal


def _descriptors_of(folder: Path) -> tuple[int, ...]:
    """This process's open descriptors of ``folder`` (Linux's /proc/self/fd; none elsewhere):
    given to the node, so that a flock held on one of them is held by the node too."""
    try:
        wanted = folder.stat()
        descriptors = [int(entry.name) for entry in Path("/proc/self/fd").iterdir()]
    except OSError:
        return ()
    found = []
    for descriptor in descriptors:
        try:
            status = os.fstat(descriptor)
        except OSError:  # the listing's own descriptor, closed since
            continue
        if (status.st_dev, status.st_ino) == (wanted.st_dev, wanted.st_ino):
            found.append(descriptor)
    return tuple(found)


@cache
def _spawner() -> ThreadPoolExecutor:
    """One thread that starts nodes for threads other than the main one and lives until this
    process exits."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="node-spawner")


def _spawn(args: list[str], **options: Any) -> subprocess.Popen:
    """``subprocess.Popen(args, **options)`` forked by a thread that lives as long as this
    process: the parent-death signal is sent when the forking THREAD ends, so a node started from
    a short-lived thread would be stopped with it."""
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(args, **options)
    return _spawner().submit(subprocess.Popen, args, **options).result()
