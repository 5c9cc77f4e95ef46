"""Wavefront OBJ export: ``NAME.obj`` + ``NAME.mtl`` + ``NAME.png``.

:func:`build_obj` is pure: it returns every file's bytes keyed by file name, and
:func:`core.export.io.write_bundle` writes them. OBJ keeps UVs as their own topology
(``f v/vt/vn``), so seams need no vertex splitting here, and its UV origin is the
bottom-left corner, which is the convention :class:`~core.export.bundle.MeshBundle` uses.

Coordinates are written as given (metres, model frame, y up) with 9 significant digits, enough
to reproduce every float32 exactly. Vertex colours are not written (OBJ has no standard
field for them); use PLY or GLB for those.
"""

from __future__ import annotations

import io
import logging

import numpy as np

from core.export.bundle import DEFAULT_BASE_COLOR, GENERATOR, MeshBundle, check_name, encode_png

__all__ = ["build_obj"]

log = logging.getLogger(__name__)


def _rows(prefix: str, values: np.ndarray) -> str:
    """Format an (N, K) float array as N lines ``prefix v1 ... vK`` (float32-exact)."""
    out = io.StringIO()
    if values.shape[0]:
        fmt = " ".join([prefix] + ["%.9g"] * values.shape[1])
        np.savetxt(out, values.astype(np.float64), fmt=fmt)
    return out.getvalue()


def build_obj(mesh: MeshBundle, name: str | None = None) -> dict[str, bytes]:
    """Build an OBJ, its MTL and (when textured) its PNG, in memory.

    Args:
        mesh: the mesh; see :class:`~core.export.bundle.MeshBundle`. Uses vertices, faces,
            normals (computed when absent), ``uv``/``uv_faces`` and ``texture``.
        name: base name of the files (default ``mesh.name``); the OBJ refers to the MTL and
            the MTL to the PNG by these relative names, so keep the files together.

    Returns:
        ``{"NAME.obj": ..., "NAME.mtl": ..., "NAME.png": ...}`` in that order; the PNG only
        when the mesh has a texture.
    """
    stem = check_name(name if name is not None else mesh.name)
    obj_name, mtl_name, png_name = f"{stem}.obj", f"{stem}.mtl", f"{stem}.png"
    material = f"{stem}_skin"

    faces = mesh.faces + 1  # OBJ indices start at 1
    lines = [
        f"# {GENERATOR} hand mesh: {mesh.num_vertices} vertices, {len(mesh.faces)} triangles",
        "# units: metres; axes: right-handed, y up",
        f"mtllib {mtl_name}",
        f"o {stem}",
    ]
    body = [_rows("v", mesh.vertices)]
    if mesh.uv is not None and mesh.uv_faces is not None:
        body.append(_rows("vt", mesh.uv))
    body.append(_rows("vn", mesh.vertex_normals()))
    text = "\n".join(lines) + "\n" + "".join(body) + f"usemtl {material}\ns 1\n"

    if mesh.uv is not None and mesh.uv_faces is not None:
        uv_faces = mesh.uv_faces + 1
        corners = np.stack([faces, uv_faces, faces], axis=2).reshape(len(faces), 9)
        face_fmt = "f %d/%d/%d %d/%d/%d %d/%d/%d"
    else:
        corners = np.stack([faces, faces], axis=2).reshape(len(faces), 6)
        face_fmt = "f %d//%d %d//%d %d//%d"
    face_text = io.StringIO()
    np.savetxt(face_text, corners, fmt=face_fmt)
    obj_bytes = (text + face_text.getvalue()).encode("ascii")

    color = (
        "1 1 1"
        if mesh.texture is not None
        else " ".join(f"{c:.4f}" for c in DEFAULT_BASE_COLOR[:3])
    )
    mtl_lines = [
        f"# {GENERATOR} material",
        f"newmtl {material}",
        "Ka 1 1 1",
        f"Kd {color}",
        "Ks 0 0 0",
        "Ns 10",
        "d 1",
        "illum 1",
    ]
    if mesh.texture is not None:
        mtl_lines.append(f"map_Kd {png_name}")
    files: dict[str, bytes] = {
        obj_name: obj_bytes,
        mtl_name: ("\n".join(mtl_lines) + "\n").encode("ascii"),
    }
    if mesh.texture is not None:
        files[png_name] = encode_png(mesh.texture)
    log.debug("OBJ built: %s", ", ".join(f"{k} ({len(v)} bytes)" for k, v in files.items()))
    return files
