"""Output writers (mtl_perception/outputs.py): a run killed outright leaves its ``.partial``
folder behind, which the next run for the same output removes unless a living process holds it;
a full disk is told against the output the user named, and nothing partial stays.

Processes are real (a holder started with ``python -c``, SIGKILLed); full disks are small tmpfs
mounts (test/helpers/small_disk.py)."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers.refusal import assert_refused, invoke
from helpers.small_disk import entries, small_disk

from mtl_perception import outputs
from mtl_perception.cli import ToolParser, one_line, tool_main
from mtl_perception.model.checkpoint import read_checkpoint, save_checkpoint
from mtl_perception.outputs import (
    atomic_directory,
    atomic_file,
    remove_stale_partials,
    write_bytes,
    write_image,
)

NO_SPACE = "no space left on device"

HOLDER = """
import os
import sys
from mtl_perception.outputs import atomic_directory, atomic_file
if sys.argv[2] == "folder":
    with atomic_directory(sys.argv[1]) as work:
        (work / "half.bin").write_bytes(b"x" * 300_000)
        print(work, flush=True)
        sys.stdin.readline()  # holds the folder until told to finish
else:
    with atomic_file(sys.argv[1]) as stream:
        stream.write(b"x" * 300_000)
        stream.flush()
        print(os.readlink(f"/proc/self/fd/{stream.fileno()}"), flush=True)
        sys.stdin.readline()
"""


def _start_holder(out: Path, kind: str = "folder") -> tuple[subprocess.Popen, Path]:
    """A process writing ``out`` through atomic_directory (``kind`` "folder") or atomic_file
    ("file"), stopped inside it; returns it and its temporary folder or file."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out), kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    temporary = Path(holder.stdout.readline().strip())
    assert temporary.name.startswith(f".{out.name}."), temporary
    assert temporary.is_dir() if kind == "folder" else temporary.is_file(), temporary
    return holder, temporary


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_partial_folder_of_a_killed_run_is_removed_by_the_next_run_in_one_line(tmp_path, capsys):
    out = tmp_path / "report"
    holder, partial = _start_holder(out)
    holder.kill()  # SIGKILL: no clean-up can run
    assert holder.wait() == -signal.SIGKILL
    assert _hidden(tmp_path) == [partial.name]  # left behind, as before
    with atomic_directory(out) as work:
        (work / "report.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("note: removed 1 unfinished temporary folder (300.0 kB)")
    assert f"--out {out}" in lines[0] and partial.name in lines[0]


def test_a_partial_folder_a_living_run_holds_is_left_alone(tmp_path, capsys):
    out = tmp_path / "report"
    holder, partial = _start_holder(out)
    try:
        assert remove_stale_partials(out) == []
        # a second run for the same output (the same command twice) is refused before its work
        expected = f"--out {out} is being written by another running process (pid {holder.pid})"
        with pytest.raises(ValueError, match=re.escape(expected)), atomic_directory(out):
            pytest.fail("the second run was let in")
        assert (partial / "half.bin").stat().st_size == 300_000  # untouched
        assert _hidden(tmp_path) == [partial.name]
        assert capsys.readouterr().err == ""
        holder.communicate("go\n", timeout=60)
        assert holder.returncode == 0
        assert (out / "half.bin").stat().st_size == 300_000  # the living run finished
        assert _hidden(tmp_path) == []
    finally:
        holder.kill()
        holder.wait()


def test_a_temporary_file_of_a_killed_write_is_removed_by_the_next_write(tmp_path, capsys):
    """atomic_file's .NAME.XXXXXXXX.tmp (an ONNX file, a checkpoint) is cleaned the same way;
    a living writer's is left alone."""
    path = tmp_path / "model.onnx"
    living, held = _start_holder(path, "file")
    try:
        killed, stale = _start_holder(path, "file")
        killed.kill()
        assert killed.wait() == -signal.SIGKILL
        write_bytes(path, b"onnx", "--out")
        assert path.read_bytes() == b"onnx"
        assert not stale.exists() and held.stat().st_size == 300_000
        line = capsys.readouterr().err.strip()
        assert line == (
            f"note: removed 1 unfinished temporary file (300.0 kB) left beside --out {path} "
            f"by an earlier run that was killed: {stale.name}"
        )
        living.communicate("go\n", timeout=60)
        assert living.returncode == 0 and path.stat().st_size == 300_000
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    finally:
        living.kill()
        living.wait()


def test_only_this_output_s_own_unowned_partial_folders_are_removed(tmp_path, capsys):
    out = tmp_path / "eval"
    stale = [Path(tempfile.mkdtemp(prefix=".eval.", suffix=".partial", dir=tmp_path))]
    stale.append(Path(tempfile.mkdtemp(prefix=".eval.", suffix=".partial", dir=tmp_path)))
    (stale[1] / "overlays").mkdir()
    (stale[1] / "overlays" / "a.png").write_bytes(b"p" * 2_500_000)
    others = [
        Path(tempfile.mkdtemp(prefix=".eval2.", suffix=".partial", dir=tmp_path)),  # another --out
        Path(tempfile.mkdtemp(prefix=".evaluation.", suffix=".partial", dir=tmp_path)),
        tmp_path / ".eval.abc.partial",  # not a name mkdtemp gives
        tmp_path / ".eval.abcdefgh.tmp",
        tmp_path / ".eval.0123abcd.tmp",  # a folder: atomic_file's temporaries are files
    ]
    for folder in others[2:]:
        folder.mkdir()
    file_alike = tmp_path / ".eval.zzzzzzzz.partial"
    file_alike.write_text("a file, not a folder")
    target = tmp_path / "kept"
    target.mkdir()
    (target / "precious").write_text("data")
    link_alike = tmp_path / ".eval.linklink.partial"
    link_alike.symlink_to(target)  # never followed
    removed = remove_stale_partials(out)
    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in others) and file_alike.read_text().startswith("a file")
    assert link_alike.is_symlink() and (target / "precious").read_text() == "data"
    line = capsys.readouterr().err.strip()
    assert line.startswith("note: removed 2 unfinished temporary folders (2.5 MB)"), line
    assert "\n" not in line and all(p.name in line for p in stale)
    assert remove_stale_partials(out) == [] and capsys.readouterr().err == ""  # nothing to say


def test_a_folder_removed_by_another_run_before_it_was_locked_is_made_again(tmp_path, monkeypatch):
    """Between mkdtemp and flock another run may find the new folder unowned and remove it."""
    out = tmp_path / "bag"
    made = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp_then_another_run_cleans(*args, **kwargs):
        folder = real_mkdtemp(*args, **kwargs)
        made.append(folder)
        if len(made) == 1:
            assert remove_stale_partials(out) == [Path(folder)]
        return folder

    monkeypatch.setattr(outputs.tempfile, "mkdtemp", mkdtemp_then_another_run_cleans)
    with atomic_directory(out) as work:
        assert str(work) == made[1]
        (work / "metadata.yaml").write_text("x")
    assert len(made) == 2 and (out / "metadata.yaml").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]


# -- a full disk ----------------------------------------------------------------------------------


def test_a_full_disk_in_an_output_folder_names_the_folder_and_leaves_nothing(tmp_path):
    disk = tmp_path / "disk"
    with small_disk(disk, 64):
        with pytest.raises(OSError) as caught, atomic_directory(disk / "eval") as work:
            (work / "overlays").mkdir()
            (work / "overlays" / "a.png").write_bytes(b"x" * 200_000)
        line = one_line(caught.value)
        assert line == f"{NO_SPACE} writing --out {disk / 'eval'}; nothing of it was kept"
        assert entries(disk) == []


def test_a_full_disk_in_a_sqlite3_bag_is_told_as_such(tmp_path):
    """SQLite says "database or disk is full" (sqlite3.OperationalError, not an OSError)."""
    disk = tmp_path / "disk"
    with small_disk(disk, 64):
        with pytest.raises(OSError) as caught, atomic_directory(disk / "bag") as work:
            database = sqlite3.connect(work / "bag.db3")
            try:
                database.execute("create table t (b blob)")
                for _ in range(100):
                    database.execute("insert into t values (?)", (b"x" * 10_000,))
                database.commit()
            finally:
                database.close()
        assert one_line(caught.value).startswith(f"{NO_SPACE} writing --out {disk / 'bag'}")
        assert entries(disk) == []


def test_a_full_disk_while_replacing_a_file_keeps_the_old_one(tmp_path):
    disk = tmp_path / "disk"
    with small_disk(disk, 64):
        old = write_bytes(disk / "model.onnx", b"old model")
        with pytest.raises(OSError) as caught:
            write_bytes(old, b"x" * 200_000, "--out")  # the write raises with no filename
        assert one_line(caught.value) == (f"{NO_SPACE} writing --out {old}; nothing of it was kept")
        assert old.read_bytes() == b"old model" and entries(disk) == ["model.onnx"]


def test_a_full_disk_while_saving_a_checkpoint_is_an_oserror_naming_it(tmp_path):
    """torch.save turns the write's ENOSPC into RuntimeError('[enforce fail at
    inline_container.cc...]'), which the tools took for a bug (exit 3)."""
    disk = tmp_path / "disk"
    with small_disk(disk, 128):
        path = disk / "checkpoints" / "last.pt"
        save_checkpoint(path, {"model": {"w": torch.zeros(10)}, "model_config": {}})
        with pytest.raises(OSError) as caught:
            save_checkpoint(path, {"model": {"w": torch.zeros(100_000)}, "model_config": {}})
        assert one_line(caught.value) == f"{NO_SPACE} writing {path}; nothing of it was kept"
        assert read_checkpoint(path)["model"]["w"].shape == (10,)  # the old one, whole
        assert entries(disk) == ["checkpoints", "checkpoints/last.pt"]


def test_an_image_that_cannot_be_written_raises_instead_of_returning_false(tmp_path):
    """cv2.imwrite returns False on a full disk (libpng prints 'Write Error'): the synthetic
    dataset writer said 'wrote 25 images' about a disk that held none of them."""
    disk = tmp_path / "disk"
    picture = np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8)
    with small_disk(disk, 64):
        with pytest.raises(OSError) as caught:
            write_image(disk / "a.png", picture)
        assert caught.value.errno == 28
    written = write_image(tmp_path / "b.png", picture)
    assert np.array_equal(cv2.imread(str(written)), picture)


def test_atomic_file_never_leaves_its_temporary_file(tmp_path):
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "x.yaml", "w") as stream:
        stream.write("half")
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


# -- the command-line error path --------------------------------------------------------------


def _tool(body):
    def build() -> ToolParser:
        parser = ToolParser(prog="tool")
        parser.add_argument("--out", type=Path)
        return parser

    return tool_main(build)(body)


def test_a_full_disk_a_library_thread_hit_is_one_line_naming_out(tmp_path):
    """TensorBoard's event writer fails in its own thread (whose traceback Python prints) and
    raises the same bare '[Errno 28] No space left on device' again in the main thread."""

    @_tool
    def tool(args) -> int:
        failures = []

        def write_events():
            try:
                raise OSError(28, "No space left on device")
            except OSError as error:
                failures.append(error)
                raise

        thread = threading.Thread(target=write_events)
        thread.start()
        thread.join()
        raise failures[0]

    outcome = invoke(tool, "--out", tmp_path / "run")
    line = assert_refused(outcome, f"{NO_SPACE} writing --out {tmp_path / 'run'}")
    assert outcome.stderr.strip() == line  # no thread traceback, no warning


def test_a_thread_failure_the_tool_survives_is_one_warning_line(tmp_path):
    @_tool
    def tool(args) -> int:
        thread = threading.Thread(target=lambda: 1 / 0, name="sampler")
        thread.start()
        thread.join()
        return 0

    outcome = invoke(tool, "--out", tmp_path / "run")
    assert outcome.code == 0 and "Traceback" not in outcome.stderr
    assert outcome.stderr.strip() == "warning: sampler failed: division by zero"
