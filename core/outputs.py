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

It also owns the project's one way of writing a file atomically, which every writer uses
(exports, profiles, intrinsics, session manifests, caches, built resources, the C kernels):
the data goes to a hidden temporary file in the destination's folder, is flushed and fsynced,
made readable by all (0o644) and moved over the destination with :func:`os.replace` (atomic
on POSIX and within one Windows volume). A reader sees the old file or the complete new one;
a failure or an interrupt leaves the old file and no temporary file.

- :func:`atomic_path`: the primitive, a temporary path for writers that need a file name
  (NumPy, a video writer, a compiler); ``OSError`` passes unchanged.
- :func:`write_atomic` / :func:`write_files_atomic`: bytes to one file, or to several files
  all or none; every failure becomes an :class:`~core.errors.ExportError` naming the path.
- :class:`StreamingOutput`: the same for a file written line by line.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import signal
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from core.errors import ExportError

__all__ = [
    "NEW_FILE_MODE",
    "StreamingOutput",
    "Terminated",
    "atomic_path",
    "atomic_write_bytes",
    "check_companions",
    "check_output",
    "interrupt_on_signals",
    "write_atomic",
    "write_files_atomic",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: Mode of every written file (``mkstemp`` creates 0o600; outputs are meant to be shared).
NEW_FILE_MODE = 0o644

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
    _refuse_special(path)
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
            # the usual case: the same hand exported earlier to another format under this name
            sibling = next((out.with_suffix(s) for s in (".obj", ".glb", ".ply")
                            if s != out.suffix.lower() and out.with_suffix(s).is_file()), None)
            owner = "" if sibling is None else f" (it belongs to {sibling.name}: exports to one name share it)"
            raise ExportError(
                f"Refusing to export {out.name}: it would overwrite {path}, which it did not write{owner}; "
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


@contextmanager
def atomic_path(path: PathLike, suffix: str = ".part") -> Iterator[Path]:
    """A new hidden temporary file beside ``path`` (name ``.<name>.<random><suffix>``), for a
    writer that needs a file name; moved over ``path`` when the block ends without an
    exception, removed otherwise (``path`` then stays as it was).

    The block writes the file completely (and fsyncs it where that matters); this makes it
    readable by all (:data:`NEW_FILE_MODE`) and replaces ``path`` with :func:`os.replace`.
    ``suffix`` keeps writers that add their own (``np.savez``: ``.npz``) or choose a format
    from it (a video writer: ``.mp4``) on the temporary name.

    Raises:
        OSError: creating, writing or moving the file failed (unchanged).
    """
    target = Path(path)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        os.chmod(temp, NEW_FILE_MODE)
        os.replace(temp, target)
    except BaseException:  # a failed write or an interrupt (Ctrl+C, SIGTERM, SIGHUP): nothing stays
        temp.unlink(missing_ok=True)
        raise


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`), for callers that handle
    ``OSError`` themselves; :func:`write_atomic` checks more and raises :class:`ExportError`.

    Raises:
        OSError: the write failed (``path`` is unchanged, no temporary file remains).
    """
    with atomic_path(path) as temp:
        _write_synced(temp, data)
    return Path(path)


def _check_folder(folder: Path) -> None:
    """Raise :class:`ExportError` unless ``folder`` exists and is a folder."""
    if not folder.exists():
        raise ExportError(f"Cannot export: the folder {folder} does not exist.")
    if not folder.is_dir():
        raise ExportError(f"Cannot export: {folder} is not a folder.")


def _check_target(path: Path) -> None:
    """Raise :class:`ExportError` if ``path`` is an existing folder, device, pipe or socket."""
    if path.is_dir():
        raise ExportError(f"Cannot export to {path}: it is a folder, not a file name.")
    _refuse_special(path)


def _refuse_special(path: Path) -> None:
    """Raise :class:`ExportError` if ``path`` exists (through links) and is not a regular file.

    Outputs are written beside the target and renamed onto it, which would put a file in
    place of ``/dev/stdout``, ``/dev/null`` or a named pipe (or, without the right to write
    in ``/dev``, fail with a puzzling message): such a target is refused before any work.
    """
    if path.exists() and not path.is_file():
        raise ExportError(f"Cannot write {path}: it is not a regular file (a device, pipe or socket); HandTwin "
                          f"writes its outputs as files (a new file renamed into place): give a file name.")


def _export_error(path: Path, exc: OSError) -> ExportError:
    """What a failed :func:`write_atomic` / :func:`write_files_atomic` of ``path`` raises."""
    if isinstance(exc, PermissionError):
        return ExportError(f"Cannot export to {path.parent}: the folder is read-only (permission denied).")
    if isinstance(exc, IsADirectoryError) or path.is_dir():
        return ExportError(f"Cannot export to {path}: it is a folder, not a file name.")
    return ExportError(f"Cannot write {path}: {exc.strerror or exc}.")


def write_atomic(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module's notes).

    An existing file at ``path`` is replaced; on any failure it is left untouched and no
    temporary file remains.

    Args:
        path: destination file; its folder must exist.
        data: the complete file contents.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ExportError: the folder is missing or read-only, ``path`` is a folder, or the write
            failed.
    """
    return write_files_atomic(Path(path).parent, {Path(path).name: data})[0]


def write_files_atomic(folder: PathLike, files: dict[str, bytes]) -> list[Path]:
    """Write several files into ``folder``, all or none.

    Every file goes to a temporary file first; only when all of them are written are they
    moved into place, so a failure while writing leaves the folder as it was.

    Args:
        folder: existing destination folder.
        files: file name (no folder part) -> contents.

    Returns:
        The written paths, in the order of ``files``.

    Raises:
        ExportError: the folder is missing or read-only, a name is not a plain file name
            or names an existing folder, or a write failed.
    """
    base = Path(folder)
    _check_folder(base)
    targets = []
    for name in files:
        if not name or Path(name).name != name or name in (".", ".."):
            raise ExportError(f"Cannot export {name!r}: not a plain file name.")
        targets.append(base / name)
        _check_target(base / name)
    target = targets[0] if targets else base
    try:
        with ExitStack() as stack:  # leaving it moves every file into place, or removes them all
            for target, data in zip(targets, files.values(), strict=True):
                _write_synced(stack.enter_context(atomic_path(target)), data)
    except OSError as exc:
        raise _export_error(target, exc) from exc
    log.debug("wrote %s", ", ".join(str(t) for t in targets))
    return targets


class _Discard(Exception):
    """Thrown into a pending :func:`atomic_path` to remove its temporary file."""


class StreamingOutput:
    """A text output written progressively and committed only on success.

    Usage::

        out = StreamingOutput(path)
        with out.open() as f:        # a hidden temporary "*.part" beside ``path``
            f.write(...)
        out.commit()                 # replace ``path`` atomically

    The temporary file is an :func:`atomic_path` held open between :meth:`open` and
    :meth:`commit`. Leaving ``open()`` with an exception, or never calling :meth:`commit`,
    removes the temporary file (call :meth:`discard` in the second case) and leaves ``path``
    untouched. A write error (ENOSPC ...) becomes an :class:`ExportError`.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._tmp: Path | None = None
        self._pending: ExitStack | None = None  # the atomic_path, until commit or discard

    @contextmanager
    def open(self) -> Iterator[IO[str]]:
        pending = ExitStack()
        try:
            self._tmp = pending.enter_context(atomic_path(self.path))
        except OSError as exc:
            raise _write_error(self.path, exc) from exc
        self._pending = pending
        try:
            with os.fdopen(os.open(self._tmp, os.O_WRONLY), "w", encoding="utf-8") as handle:
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
        if self._pending is None:
            raise RuntimeError("StreamingOutput.commit before open")
        pending, self._pending, self._tmp = self._pending, None, None
        try:
            pending.close()  # atomic_path: chmod, os.replace; removes the file where that fails
        except OSError as exc:
            raise _write_error(self.path, exc) from exc
        return self.path

    def discard(self) -> None:
        """Remove the temporary file (the output stays as it was)."""
        if self._pending is not None:
            pending, self._pending, self._tmp = self._pending, None, None
            pending.__exit__(_Discard, _Discard(), None)
