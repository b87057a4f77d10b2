"""Checking how a tool or the node refuses bad input: exit code, one clear line, no traceback,
nothing that existed before changed, nothing half-written left behind."""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Outcome:
    """What a tool run produced."""

    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def invoke(main: Callable[..., int], *argv: object) -> Outcome:
    """Calls a tool's ``main(argv)`` in this process, capturing what it prints."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # a tool must not exit past main(); kept visible
            code = f"SystemExit({exit_.code})"
    return Outcome(code, out.getvalue(), err.getvalue())


def run_module(module: str, *argv: object, timeout: float = 300, **kwargs) -> Outcome:
    """Runs ``python -m module argv...`` as a separate process (a user's view of the tool)."""
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
    return Outcome(result.returncode, result.stdout, result.stderr)


def assert_refused(outcome: Outcome, *mentions: str, code: int = 2) -> str:
    """The tool failed with ``code``, printed exactly one ``error:`` line naming every one of
    ``mentions``, and no traceback. Returns that line."""
    everything = outcome.stdout + outcome.stderr
    assert outcome.code == code, f"exit {outcome.code}, expected {code}:\n{everything[-3000:]}"
    assert "Traceback" not in everything, everything[-3000:]
    lines = outcome.error_lines
    assert len(lines) == 1, f"expected one 'error:' line, got {lines}:\n{outcome.stderr[-3000:]}"
    for mention in mentions:
        assert mention in lines[0], f"{mention!r} not named in: {lines[0]}"
    return lines[0]


class Snapshot:
    """Every file under some folders (bytes and mode), to prove a failed run changed nothing
    that existed and left nothing behind."""

    def __init__(self, *roots: Path) -> None:
        self.roots = [Path(r) for r in roots]
        self.files = self._read()

    def _read(self) -> dict[Path, tuple[str, int]]:
        files = {}
        for root in self.roots:
            paths: Iterable[Path] = [root] if root.is_file() else root.rglob("*")
            for path in paths:
                if path.is_file() and not path.is_symlink():
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    files[path] = (digest, path.stat().st_mode)
                elif path.is_dir():
                    files[path] = ("<dir>", path.stat().st_mode)
        return files

    def assert_unchanged(self, allow_new: Iterable[Path] = ()) -> None:
        """Every file is byte-identical with the same mode, none is gone, and no new one
        appeared (except ``allow_new`` and what lies below them)."""
        now = self._read()
        allowed = [Path(p) for p in allow_new]
        for path, before in self.files.items():
            assert path in now, f"{path} was removed"
            assert now[path] == before, f"{path} was changed"
        new = [
            p
            for p in now
            if p not in self.files and not any(p == a or a in p.parents for a in allowed)
        ]
        assert not new, f"new files left behind: {sorted(map(str, new))[:10]}"
