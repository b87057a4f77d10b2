"""One error path for every command-line tool.

Every console script builds its parser with :class:`ToolParser` and wraps its body with
:func:`tool_main`. A known failure (bad input, a missing or unreadable file, an output that would
overwrite something) prints ONE line ``error: <what> (<file or field>)`` to stderr and exits 2;
the traceback appears only with ``--debug``. An unexpected exception is a bug: one line that
says so and exit 3 (not 1: ``mtl-bag``'s gate exits 1 for a failed criterion, and a CI job must
not read a crash as a verdict), the traceback again only with ``--debug``.

Known failures are the exception types below. Code that detects a bad input raises
``ValueError`` (or :class:`ToolError`) with a message that names the file, field or option.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from .outputs import full_disk_errno

EXIT_ERROR = 2  # a known failure: bad input, output collision, unreadable file
EXIT_BUG = 3  # an unexpected exception (1 is the bag gate's "a criterion failed")


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, systemd, `docker stop` and CI cancellations send), raised like
    Ctrl-C so that the same clean-up runs: temporary outputs are removed, nothing half-written
    stays."""


def _raise_terminated(signum: int, frame: object) -> NoReturn:
    raise Terminated


class ToolError(Exception):
    """A failure to report in one line (for conditions that are not a bad value, e.g. a node
    process that exited)."""


KNOWN_ERRORS: tuple[type[BaseException], ...] = (  # and a full disk, whatever it is raised as
    ToolError,
    ValueError,
    OSError,  # FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError, ENOSPC
    FloatingPointError,
)


class ToolParser(argparse.ArgumentParser):
    """argparse with a ``--debug`` flag and one-line errors (``error: ...``, exit 2)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--debug", action="store_true", help="show the full traceback of a failure"
        )

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message keeps its first line and says how
    many more there are)."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        named = str(error.filename) in error.strerror  # e.g. outputs' "... writing --out PATH"
        text = error.strerror if named else f"{error.strerror} ({error.filename})"
    lines = text.splitlines()
    if len(lines) > 1:
        extra = [line.strip() for line in lines[1:] if line.strip()]
        text = f"{lines[0]} {'; '.join(extra[:3])}" + (" ..." if len(extra) > 3 else "")
    return text


def _error_line(error: BaseException, args: argparse.Namespace) -> str:
    """The one line for a known failure. A full disk that named no file (a library's own write,
    e.g. TensorBoard's event thread) is told against the tool's ``--out``."""
    text = one_line(error)
    full = full_disk_errno(error)
    out = getattr(args, "out", None)
    if full is not None and out is not None and str(out) not in text:
        text = f"{os.strerror(full).lower()} writing --out {out}"
    return text


class _ThreadFailures:
    """While installed, an exception that ends a thread is kept instead of printed with its
    traceback. One that also reaches the main thread (TensorBoard's writer raises its thread's
    error again there) is reported once, by the tool; the others as one warning line each when
    the tool ends. ``--debug`` prints the tracebacks as well."""

    def __init__(self, debug: bool) -> None:
        self.debug = debug
        self.failures: list[threading.ExceptHookArgs] = []
        self.reported: BaseException | None = None  # what the tool's error line told

    def install(self) -> None:
        self.previous = threading.excepthook
        threading.excepthook = self._keep

    def _keep(self, failure: threading.ExceptHookArgs) -> None:
        if self.debug:
            self.previous(failure)
        if failure.exc_type is not SystemExit:
            self.failures.append(failure)

    def uninstall(self) -> None:
        threading.excepthook = self.previous
        for failure in self.failures:
            if failure.exc_value is None or not self._told(failure.exc_value):
                name = failure.thread.name if failure.thread is not None else "a thread"
                error = failure.exc_value or failure.exc_type()
                print(f"warning: {name} failed: {one_line(error)}", file=sys.stderr)

    def _told(self, error: BaseException) -> bool:
        """Whether ``error`` is the reported one or one it came from."""
        current = self.reported
        while current is not None:
            if current is error:
                return True
            current = current.__cause__ or current.__context__
        return False


def tool_main(build_parser: Callable[[], ToolParser]):
    """Decorator: turns ``body(args) -> exit code`` into ``main(argv=None) -> exit code``.

    ``build_parser`` makes the tool's :class:`ToolParser`. The body returns an exit code (None
    means 0) or raises; see the module docstring for what is printed.
    """

    def decorate(body: Callable[[argparse.Namespace], int | None]) -> Callable[..., int]:
        @functools.wraps(body)
        def main(argv: Sequence[str] | None = None) -> int:
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as exit_:  # --help, or a usage error already printed
                return int(exit_.code or 0)
            in_main_thread = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
            threads = _ThreadFailures(args.debug)
            if in_main_thread:
                threads.install()
            try:
                code = body(args)
            except Terminated:
                print("error: terminated", file=sys.stderr)
                return 128 + signal.SIGTERM
            except KeyboardInterrupt:
                print("error: interrupted", file=sys.stderr)
                return 130
            except Exception as error:
                threads.reported = error
                if args.debug:
                    traceback.print_exc()
                if isinstance(error, KNOWN_ERRORS) or full_disk_errno(error) is not None:
                    print(f"error: {_error_line(error, args)}", file=sys.stderr)
                    return EXIT_ERROR
                print(  # a bug: one line, the traceback with --debug
                    f"error: unexpected {type(error).__name__}: {one_line(error)} "
                    "(a bug; rerun with --debug for the traceback and report it)",
                    file=sys.stderr,
                )
                return EXIT_BUG
            finally:
                if in_main_thread:
                    signal.signal(signal.SIGTERM, previous)
                    threads.uninstall()
            return 0 if code is None else int(code)

        return main

    return decorate


# -- argument types: a bad number is refused by argparse, naming the option -----------------


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def path_option(text: str) -> Path:
    """A file or folder option: any path but the empty one (which would mean the working
    directory, silently)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def multiple_of(step: int) -> Callable[[str], int]:
    """A positive integer that is a multiple of ``step`` (network input sizes)."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value % step:
            raise argparse.ArgumentTypeError(f"must be a multiple of {step}, got {value}")
        return value

    parse.__name__ = f"multiple_of_{step}"
    return parse
