"""Binary little-endian PLY export with normals and per-vertex colours.

:func:`build_ply` is pure and returns the file's bytes. PLY has no texture support, so a
textured mesh without vertex colours gets colours sampled from its texture (bilinear, at each
vertex's UV; a vertex on a seam takes the UV of its first face corner). Coordinates are
written as given: float32 metres, model frame (right-handed, y up).

Layout::

    element vertex V: float x y z, float nx ny nz, [uchar red green blue]
    element face F:   list uchar int vertex_indices
"""

from __future__ import annotations

import logging

import numpy as np

from core.export.bundle import GENERATOR, MeshBundle

__all__ = ["build_ply", "sample_texture"]

log = logging.getLogger(__name__)


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinearly sample an RGB texture at OBJ-convention UVs.

    Args:
        texture: (H, W, 3) uint8 RGB, top row first.
        uv: (N, 2) float in [0, 1] (clamped), origin bottom-left; texel centres at
            ``(i + 0.5) / W``.

    Returns:
        (N, 3) uint8 RGB.
    """
    height, width = texture.shape[:2]
    uv = np.clip(np.asarray(uv, dtype=np.float64), 0.0, 1.0)
    x = uv[:, 0] * width - 0.5
    y = (1.0 - uv[:, 1]) * height - 0.5  # v = 0 is the image's last row
    x0 = np.clip(np.floor(x), 0, width - 1).astype(np.int64)
    y0 = np.clip(np.floor(y), 0, height - 1).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx = np.clip(x - x0, 0.0, 1.0)[:, None]
    fy = np.clip(y - y0, 0.0, 1.0)[:, None]
    image = texture.astype(np.float64)
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return np.clip(np.rint(top * (1 - fy) + bottom * fy), 0, 255).astype(np.uint8)


def _vertex_colors(mesh: MeshBundle) -> np.ndarray | None:
    """(V, 3) uint8 colours: the mesh's own, or sampled from its texture, or ``None``."""
    if mesh.vertex_colors is not None:
        return mesh.vertex_colors
    if mesh.texture is None or mesh.uv is None or mesh.uv_faces is None:
        return None
    # One UV per vertex: the one of its first face corner (reverse order, so first wins).
    uv_of_vertex = np.zeros(mesh.num_vertices, dtype=np.int64)
    used = np.zeros(mesh.num_vertices, dtype=bool)
    corners, uv_corners = mesh.faces.reshape(-1), mesh.uv_faces.reshape(-1)
    uv_of_vertex[corners[::-1]] = uv_corners[::-1]
    used[corners] = True
    colors = sample_texture(mesh.texture, mesh.uv[uv_of_vertex])
    colors[~used] = 255
    log.debug("PLY: vertex colours sampled from the %dx%d texture", *mesh.texture.shape[1::-1])
    return colors


def build_ply(mesh: MeshBundle, with_normals: bool = True) -> bytes:
    """Build a binary little-endian PLY of ``mesh``.

    Args:
        mesh: the mesh; see :class:`~core.export.bundle.MeshBundle`.
        with_normals: write ``nx ny nz`` (the mesh's normals, or smooth computed ones).

    Returns:
        The complete ``.ply`` file as bytes. Colours (``red green blue``) are written when
        the mesh has vertex colours or a texture to sample them from.
    """
    colors = _vertex_colors(mesh)
    fields: list[tuple[str, str]] = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if with_normals:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.zeros(mesh.num_vertices, dtype=np.dtype(fields))
    vertex["x"], vertex["y"], vertex["z"] = mesh.vertices.T
    if with_normals:
        vertex["nx"], vertex["ny"], vertex["nz"] = mesh.vertex_normals().T
    if colors is not None:
        vertex["red"], vertex["green"], vertex["blue"] = colors.T

    face = np.zeros(len(mesh.faces), dtype=np.dtype([("count", "u1"), ("indices", "<i4", (3,))]))
    face["count"] = 3
    face["indices"] = mesh.faces

    type_names = {"<f4": "float", "u1": "uchar"}
    header = [
        "ply",
        "format binary_little_endian 1.0",
        f"comment generator {GENERATOR}",
        "comment units metres, right-handed, y up",
        f"element vertex {mesh.num_vertices}",
        *(f"property {type_names[kind]} {name}" for name, kind in fields),
        f"element face {len(mesh.faces)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    return ("\n".join(header) + "\n").encode("ascii") + vertex.tobytes() + face.tobytes()
