"""Writing exports to disk, atomically, and the one ``export_mesh`` entry point.

The builders (:func:`~core.export.obj.build_obj`, :func:`~core.export.gltf.build_glb`,
:func:`~core.export.gltf.build_rigged_glb`, :func:`~core.export.ply.build_ply`) are pure and
return bytes; this module is the only place that touches the file system.

Every file is written atomically by :func:`core.outputs.write_atomic` /
:func:`core.outputs.write_files_atomic` (re-exported here as :func:`write_atomic` and
:func:`write_bundle`): a reader sees the old file or the complete new one, never half of one,
and a failure leaves no partial file behind. Every failure becomes an
:class:`~core.errors.ExportError` whose message names the path and the reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from core.errors import ExportError
from core.export.bundle import MeshBundle
from core.export.gltf import build_glb, build_rigged_glb
from core.export.obj import build_obj
from core.export.ply import build_ply
from core.outputs import _check_folder, _check_target, write_atomic
from core.outputs import write_files_atomic as write_bundle

__all__ = ["SUPPORTED_SUFFIXES", "export_mesh", "write_atomic", "write_bundle"]

#: File suffixes :func:`export_mesh` understands.
SUPPORTED_SUFFIXES: tuple[str, ...] = (".obj", ".glb", ".ply")


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
