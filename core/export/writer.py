"""Writing exports to disk, atomically, and the one ``export_mesh`` entry point.

The builders (:func:`~core.export.obj.build_obj`, :func:`~core.export.gltf.build_glb`,
:func:`~core.export.gltf.build_rigged_glb`, :func:`~core.export.ply.build_ply`) are pure and
return bytes; this module is the only place that touches the file system.

Every file is first written to a hidden temporary file in the destination folder, flushed
and fsynced, then moved over the destination with :func:`os.replace` (atomic on POSIX and on
Windows within one volume). A reader therefore sees the old file or the complete new one,
never half of one, and a failure leaves no partial file behind. Every failure becomes an
:class:`~core.errors.ExportError` whose message names the path and the reason.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from core.errors import ExportError
from core.export.bundle import MeshBundle
from core.export.gltf import build_glb, build_rigged_glb
from core.export.obj import build_obj
from core.export.ply import build_ply

__all__ = ["SUPPORTED_SUFFIXES", "export_mesh", "write_atomic", "write_bundle"]

log = logging.getLogger(__name__)

#: File suffixes :func:`export_mesh` understands.
SUPPORTED_SUFFIXES: tuple[str, ...] = (".obj", ".glb", ".ply")

_NEW_FILE_MODE = 0o644  # mkstemp creates 0o600; exports are meant to be shared


def _check_folder(folder: Path) -> None:
    """Raise :class:`ExportError` unless ``folder`` exists and is a folder."""
    if not folder.exists():
        raise ExportError(f"Cannot export: the folder {folder} does not exist.")
    if not folder.is_dir():
        raise ExportError(f"Cannot export: {folder} is not a folder.")


def _check_target(path: Path) -> None:
    """Raise :class:`ExportError` if ``path`` is an existing folder."""
    if path.is_dir():
        raise ExportError(f"Cannot export to {path}: it is a folder, not a file name.")


def _write_temp(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a new hidden temporary file in ``folder``; return its path.

    The temporary file is removed again if anything fails.

    Raises:
        ExportError: the folder is not writable or the write failed (disk full, ...).
    """
    try:
        handle, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    except PermissionError as exc:
        raise ExportError(
            f"Cannot export to {folder}: the folder is read-only (permission denied)."
        ) from exc
    except OSError as exc:
        raise ExportError(f"Cannot export to {folder}: {exc.strerror or exc}.") from exc
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, _NEW_FILE_MODE)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise ExportError(f"Cannot write {folder / name}: {exc.strerror or exc}.") from exc
    except BaseException:  # an interrupt (Ctrl+C, SIGTERM, SIGHUP): no temporary file stays
        temp.unlink(missing_ok=True)
        raise
    return temp


def _commit(temp: Path, path: Path) -> None:
    """Move ``temp`` over ``path`` atomically; on failure remove ``temp``."""
    try:
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, IsADirectoryError) or path.is_dir():
            raise ExportError(f"Cannot export to {path}: it is a folder, not a file name.") from exc
        raise ExportError(f"Cannot write {path}: {exc.strerror or exc}.") from exc


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename).

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
    target = Path(path)
    folder = target.parent
    _check_folder(folder)
    _check_target(target)
    _commit(_write_temp(folder, target.name, data), target)
    log.info("wrote %s (%d bytes)", target, len(data))
    return target


def write_bundle(folder: str | os.PathLike[str], files: dict[str, bytes]) -> list[Path]:
    """Write several files into ``folder``, all or none.

    Every file goes to a temporary file first; only when all of them are written are they
    renamed into place, so a failure while writing leaves the folder as it was.

    Args:
        folder: existing destination folder.
        files: file name (no folder part) -> contents, e.g. from
            :func:`~core.export.obj.build_obj`.

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
    temps: list[Path] = []
    try:
        for name, data in files.items():
            temps.append(_write_temp(base, name, data))
    except BaseException:  # a failed write or an interrupt: no temporary file stays
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    for index, (temp, target) in enumerate(zip(temps, targets, strict=True)):
        try:
            _commit(temp, target)
        except BaseException:
            for leftover in temps[index:]:  # (the committed ones are gone already)
                leftover.unlink(missing_ok=True)
            raise
    log.info("wrote %s", ", ".join(str(t) for t in targets))
    return targets


def _companion_stem(stem: str) -> str:
    """A name safe inside OBJ/MTL references: other characters become ``_``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).strip(".")
    return safe or "hand"


def check_export_target(path: str | os.PathLike[str], rigged: bool = False) -> tuple[Path, str]:
    """The export path and its lower-case suffix, or an :class:`ExportError` for a format we
    do not write or a rigged export to anything but GLB."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ExportError(
            f"Cannot export to {target.name}: unknown format {suffix or '(no suffix)'!r}; "
            f"use one of {', '.join(SUPPORTED_SUFFIXES)}."
        )
    if rigged and suffix != ".glb":
        raise ExportError(f"A rigged export needs a .glb file, got {target.name}.")
    return target, suffix


def export_mesh(
    path: str | os.PathLike[str],
    mesh: MeshBundle,
    *,
    rigged: bool = False,
    include_animation: bool = True,
) -> list[Path]:
    """Export ``mesh`` to ``path``, choosing the format from the suffix.

    - ``.obj``: OBJ + MTL + PNG beside it (companion names from the file name, with
      characters other than letters, digits, ``_-.`` replaced by ``_``).
    - ``.glb``: binary glTF; with ``rigged`` skinned to ``mesh.rig`` and, when
      ``include_animation``, animated by ``mesh.animation``.
    - ``.ply``: binary PLY with normals and vertex colours.

    Args:
        path: destination file; its folder must exist.
        mesh: what to export (:class:`~core.export.bundle.MeshBundle`).
        rigged: write the skin (``.glb`` only; needs ``mesh.rig``).
        include_animation: with ``rigged``, also write ``mesh.animation`` if present.

    Returns:
        Every file written (the main file first).

    Raises:
        ExportError: unsupported suffix, a rigged export to a format without skins or of a
            mesh without a rig, mesh data the format cannot hold, or any write failure.
    """
    target, suffix = check_export_target(path, rigged)
    if rigged and mesh.rig is None:
        raise ExportError("A rigged export needs a hand model with a skeleton; this mesh has none.")
    _check_folder(target.parent)
    _check_target(target)
    try:
        if suffix == ".obj":
            built = build_obj(mesh, name=_companion_stem(target.stem))
            # The OBJ itself keeps the user's chosen name; only its companions are sanitized.
            files = {(target.name if n.endswith(".obj") else n): data for n, data in built.items()}
            return write_bundle(target.parent, files)
        if suffix == ".glb":
            data = build_rigged_glb(mesh, include_animation) if rigged else build_glb(mesh)
        else:
            data = build_ply(mesh)
    except ValueError as exc:
        raise ExportError(f"Cannot export {target.name}: {exc}") from exc
    return [write_atomic(target, data)]
