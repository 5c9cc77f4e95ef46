"""Where the commands write: checked before any work, never over a file the user did not name.

The one module that owns the rules for output files of ``track``, ``calibrate`` and ``export``:

- :func:`check_output`: before any work, the output's folder exists, is writable, the output
  is not a folder and is not one of the command's **inputs** (the source video or images, the
  profile and its texture, the intrinsics, the model file).
- :func:`check_companions`: files written beside the output (``NAME.mtl``, ``NAME.png``,
  ``NAME.profile.json``) follow the same rule, and an existing companion is replaced only when
  the output itself is being replaced (a re-export under the same name) or with ``--force``;
  otherwise the command refuses, naming the file, before any work.
- :class:`StreamingOutput`: a file written line by line (``track``'s JSONL) goes to a hidden
  ``*.part`` beside it and replaces the output only when the run succeeded; a failure (no
  hand found, disk full, an interrupt) leaves the previous output untouched and no ``*.part``.
- :func:`interrupt_on_signals`: SIGTERM and SIGHUP become :class:`Terminated` (a
  ``KeyboardInterrupt``), so every ``finally`` / context manager runs: temporary files are
  removed and the detector's shared memory is released, as for Ctrl+C.
"""

from __future__ import annotations

import errno
import glob
import os
import signal
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from core.errors import ExportError

__all__ = [
    "StreamingOutput",
    "Terminated",
    "check_companions",
    "check_output",
    "interrupt_on_signals",
    "source_inputs",
]

PathLike = str | os.PathLike[str]

#: Inside an input folder, an existing file with one of these suffixes is an input.
_MEDIA_SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp",
    ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv",
    ".pkl", ".npz", ".npy", ".json", ".jsonl",
})


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.abspath(a) == os.path.abspath(b)


def _is_input(out: Path, inputs: Iterable[PathLike | None]) -> Path | None:
    """The input ``out`` would overwrite, or None."""
    for item in inputs:
        if item is None:
            continue
        text = os.fspath(item)
        p = Path(text).expanduser()
        if p.is_dir():
            # a folder source: its media files (and everything of a recorded session) are inputs
            inside = os.path.abspath(out).startswith(os.path.abspath(p) + os.sep)
            session = (p / "manifest.json").is_file()
            if inside and out.exists() and (session or out.suffix.lower() in _MEDIA_SUFFIXES):
                return out
        elif p.exists() or not glob.has_magic(text):
            if _same(out, p):
                return p
        else:
            for match in glob.glob(text, recursive=True):
                if _same(out, Path(match)):
                    return Path(match)
    return None


def source_inputs(source: str | None) -> list[str]:
    """The paths a SRC string reads (for :func:`check_output`); cameras read no file."""
    if source is None:
        return []
    text = str(source).strip()
    if text == "demo":
        from core.capture.open import DEMO_CLIP_PATH

        return [str(DEMO_CLIP_PATH)]
    if not text or text.isdigit() or text.startswith("/dev/") or "://" in text:
        return []
    return [text]


def _probe_folder(path: Path) -> None:
    """Create and remove an empty temporary file beside ``path``: raise :class:`ExportError`
    now, not after the work, when its folder is missing, not a folder or not writable."""
    folder = path.parent
    if not folder.exists():
        raise ExportError(f"Cannot write {path}: the folder {folder} does not exist.")
    if not folder.is_dir():
        raise ExportError(f"Cannot write {path}: {folder} is not a folder.")
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except PermissionError:
        raise ExportError(f"Cannot write {path}: the folder {folder} is read-only (permission denied).") from None
    except OSError as exc:
        raise _write_error(path, exc) from None
    os.close(fd)
    os.unlink(name)


def check_output(out: PathLike, inputs: Iterable[PathLike | None] = ()) -> Path:
    """Check an output file before any work; return it as a :class:`~pathlib.Path`.

    Raises:
        ExportError: the output is a folder, its folder is missing, not a folder or not
            writable, or the output is one of ``inputs`` (files, folders or globs).
    """
    path = Path(out).expanduser()
    if path.is_dir():
        raise ExportError(f"Cannot write {path}: it is a folder, not a file name.")
    if _is_input(path, inputs) is not None:
        raise ExportError(f"Refusing to write {path}: it is an input of this command; choose another output name.")
    _probe_folder(path)
    return path


def check_companions(
    out: Path, companions: Iterable[Path], inputs: Iterable[PathLike | None] = (), force: bool = False
) -> None:
    """Check the files written beside ``out`` (before any work).

    A companion that is an input is always refused. An existing companion is replaced only
    when ``out`` exists too (the same export made again: its own companions) or with
    ``force``; otherwise it belongs to something else and the export is refused.

    Raises:
        ExportError: naming the file and how to proceed.
    """
    inputs = list(inputs)
    replacing = out.exists()
    for path in companions:
        if path == out:
            continue
        if path.is_dir():
            raise ExportError(f"Cannot write {path} beside {out.name}: it is a folder.")
        hit = _is_input(path, inputs)
        if hit is not None:
            raise ExportError(
                f"Refusing to export {out.name}: it would overwrite {path}, an input of this command; "
                f"choose another output name."
            )
        if path.exists() and not replacing and not force:
            raise ExportError(
                f"Refusing to export {out.name}: it would overwrite {path}, which it did not write; "
                f"choose another output name or pass --force."
            )


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived (``signum``); raised where Python was, like Ctrl+C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def interrupt_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` in this (main) thread, so cleanup runs.

    The command line calls it once; the GUI keeps Qt's own handling.
    """
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, _raise_terminated)


#: Errors of writing a file (others raised while producing the output pass unchanged).
_WRITE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EIO", "EROFS") if hasattr(errno, n))


def _write_error(path: Path, exc: OSError) -> ExportError:
    if exc.errno == errno.ENOSPC:
        return ExportError(f"Cannot write {path}: the disk is full; the previous {path.name} is unchanged.")
    return ExportError(f"Cannot write {path}: {exc.strerror or exc}.")


class StreamingOutput:
    """A text output written progressively and committed only on success.

    Usage::

        out = StreamingOutput(path)
        with out.open() as f:        # a hidden temporary "*.part" beside ``path``
            f.write(...)
        out.commit()                 # replace ``path`` atomically

    Leaving ``open()`` with an exception, or never calling :meth:`commit`, removes the
    temporary file (call :meth:`discard` in the second case) and leaves ``path`` untouched.
    A write error (ENOSPC ...) becomes an :class:`ExportError`.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._tmp: Path | None = None

    @contextmanager
    def open(self) -> Iterator[IO[str]]:
        try:
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".part")
        except OSError as exc:
            raise _write_error(self.path, exc) from exc
        self._tmp = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                try:
                    yield handle
                    handle.flush()
                    os.fsync(handle.fileno())
                except OSError as exc:
                    if exc.errno not in _WRITE_ERRNOS:
                        raise
                    raise _write_error(self.path, exc) from exc
        except OSError as exc:  # the close (a final flush) failed
            self.discard()
            raise _write_error(self.path, exc) from exc
        except BaseException:
            self.discard()
            raise

    def commit(self) -> Path:
        """Move the finished temporary file over the output."""
        if self._tmp is None:
            raise RuntimeError("StreamingOutput.commit before open")
        try:
            os.chmod(self._tmp, 0o644)
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self.discard()
            raise _write_error(self.path, exc) from exc
        self._tmp = None
        return self.path

    def discard(self) -> None:
        """Remove the temporary file (the output stays as it was)."""
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
