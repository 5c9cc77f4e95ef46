"""core.outputs' atomic writer: the old file or the complete new one, never a leftover."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from core.camera import atomic_write_text
from core.errors import ExportError
from core.outputs import atomic_path, atomic_write_bytes, write_atomic, write_files_atomic


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_replaces_on_success_with_a_shared_mode(tmp_path: Path) -> None:
    target = tmp_path / "cache.npz"
    target.write_bytes(b"old")
    with atomic_path(target, ".part.npz") as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".cache.npz.") and temp.name.endswith(".npz")
        np.savez_compressed(temp, a=np.arange(3))  # keeps the name: it ends in .npz
        assert target.read_bytes() == b"old"  # nothing visible before the block ends
    with np.load(target) as z:
        assert z["a"].tolist() == [0, 1, 2]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert _names(tmp_path) == ["cache.npz"]


def test_atomic_path_keeps_the_old_file_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")
    for error in (ValueError("half written"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with atomic_path(target) as temp:
                temp.write_text("new, half")
                raise error
        assert target.read_text() == "old" and _names(tmp_path) == ["a.json"]


def test_raw_writers_pass_os_errors_and_exports_name_the_path(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "m.json", "{}\n")
    assert atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert (tmp_path / "m.json").read_text() == "{}\n"
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing" / "m.json", "{}")
    with pytest.raises(ExportError, match="does not exist"):
        write_atomic(tmp_path / "missing" / "m.json", b"{}")
    with pytest.raises(ExportError, match="not a plain file name"):
        write_files_atomic(tmp_path, {"../x": b""})
    assert _names(tmp_path) == ["b.bin", "m.json"]


def test_several_files_are_written_all_or_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.obj").write_bytes(b"previous")
    real_fsync, calls = os.fsync, []

    def flaky_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", flaky_fsync)
    with pytest.raises(ExportError, match=r"c\.png: No space left"):
        write_files_atomic(tmp_path, {"a.obj": b"new", "b.mtl": b"m", "c.png": b"p"})
    assert _names(tmp_path) == ["a.obj"] and (tmp_path / "a.obj").read_bytes() == b"previous"
    monkeypatch.setattr(os, "fsync", real_fsync)
    written = write_files_atomic(tmp_path, {"a.obj": b"new", "b.mtl": b"m"})
    assert written == [tmp_path / "a.obj", tmp_path / "b.mtl"] and (tmp_path / "a.obj").read_bytes() == b"new"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_an_output_that_is_a_pipe_or_device_is_refused_before_any_work(tmp_path, capsys) -> None:
    """``--out /dev/stdout`` (or a named pipe) passed the checks and was then replaced by a
    regular file renamed onto it (as root, in /dev); such a target is refused up front."""
    import main as cli
    from core.outputs import check_output

    fifo = tmp_path / "r.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(ExportError, match="not a regular file"):
        check_output(fifo)
    assert cli.main(["track", "demo", "--out", str(fifo)]) == 2
    os.mkfifo(tmp_path / "h.glb")
    assert cli.main(["export", "--profile", "nothing.json", "--out", str(tmp_path / "h.glb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("not a regular file" in line for line in err)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISFIFO(os.stat(tmp_path / "h.glb").st_mode)
