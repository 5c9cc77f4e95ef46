"""Where every texel of a UV texture lies on the hand mesh (computed once per topology).

A texture of ``S x S`` texels covers the mesh through its UV coordinates, which have their own
faces (``uv_faces``, corner for corner with the mesh's ``faces``). Rasterizing the UV
triangles into the texture grid gives, for every texel whose centre lies inside a UV triangle
("covered"), the mesh face and the barycentric coordinates of that centre. Because the UV map
is affine on each triangle, the texel's 3D point on the posed mesh is exactly
``sum_k bary[k] * vertices[vertex_ids[k]]`` whatever the pose, so the map is computed once per
topology and texture size and reused for every frame (:func:`texel_map`, cached).

Texture convention (as :mod:`core.export.bundle`): UV origin at the **bottom-left** of the
image, the image stored top row first; texel ``(row r, column c)`` has its centre at
``u = (c + 0.5) / S``, ``v = 1 - (r + 0.5) / S`` (the glTF/OpenGL sampling convention).

Besides the texel -> (face, barycentric) map, :class:`TexelMap` keeps what filling needs
(:mod:`core.texture.fill`): for every texel of the grid the nearest covered texel (edge
padding across island borders), the sparse texel -> vertex averaging matrix, and the mesh's
vertex graph Laplacian (diffusing colours over the surface, across UV seams).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import scipy.sparse
import torch

from core.render import RasterSettings, rasterize

__all__ = ["TexelMap", "build_texel_map", "texel_map", "texel_uv"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class TexelMap:
    """The covered texels of an ``S x S`` texture and where they lie on the mesh.

    N covered texels, stored **sorted by face** so that the texels of face ``f`` are the
    contiguous range ``face_start[f]:face_start[f + 1]``.

    Attributes:
        size: S, texels per side.
        num_vertices: V, vertices of the mesh.
        faces: (F, 3) int64 mesh faces (the ones ``vertex_ids`` were taken from).
        faces_t: (3, F) int64, ``faces`` transposed (contiguous corner rows).
        flat_index: (N,) int64 ``row * S + column`` of each covered texel.
        face: (N,) int32 mesh face of each texel.
        vertex_ids: (N, 3) int32 mesh vertices at the face's corners.
        bary: (N, 3) float32 barycentric coordinates of the texel centre (sum to 1, >= 0).
        bary_t: (3, N) float32, ``bary`` transposed (contiguous rows for per-corner access).
        face_start: (F + 1,) int64 offsets of each face's texels (empty range: no texel).
        face_count: (F,) int64 texels per face (``diff(face_start)``).
        has_texels: (F,) bool, ``face_count > 0``.
        pad_source: (S * S,) int32 for every texel of the grid the index (0..N-1) of the
            nearest covered texel (itself when covered): edge padding.
        to_vertex: (V, N) float32 sparse CSR, rows normalized: a vertex's value is the
            barycentric-weighted mean of the texels around it (rows of vertices without
            texels are empty).
        laplacian: (V, V) float64 sparse CSR graph Laplacian of the mesh edges (degree on the
            diagonal, -1 per edge).
    """

    size: int
    num_vertices: int
    faces: np.ndarray
    faces_t: np.ndarray
    flat_index: np.ndarray
    face: np.ndarray
    vertex_ids: np.ndarray
    bary: np.ndarray
    bary_t: np.ndarray
    face_start: np.ndarray
    face_count: np.ndarray
    has_texels: np.ndarray
    pad_source: np.ndarray
    to_vertex: scipy.sparse.csr_matrix
    laplacian: scipy.sparse.csr_matrix

    @property
    def num_texels(self) -> int:
        """N, covered texels."""
        return int(self.flat_index.shape[0])

    @property
    def coverage_of_grid(self) -> float:
        """Fraction of the S x S grid covered by UV triangles."""
        return self.num_texels / float(self.size * self.size)

    def covered_mask(self) -> np.ndarray:
        """(S, S) bool, True on covered texels."""
        mask = np.zeros(self.size * self.size, dtype=bool)
        mask[self.flat_index] = True
        return mask.reshape(self.size, self.size)

    def to_image(self, values: np.ndarray, background: float | np.ndarray = 0) -> np.ndarray:
        """Scatter per-texel values (N, ...) into an (S, S, ...) image; others get ``background``."""
        values = np.asarray(values)
        out = np.empty((self.size * self.size,) + values.shape[1:], dtype=values.dtype)
        out[...] = background
        out[self.flat_index] = values
        return out.reshape((self.size, self.size) + values.shape[1:])

    def from_image(self, image: np.ndarray) -> np.ndarray:
        """(S, S, ...) image -> (N, ...) values at the covered texels."""
        image = np.asarray(image)
        if image.shape[:2] != (self.size, self.size):
            raise ValueError(f"image must be {self.size} x {self.size}, got {image.shape[:2]}")
        return image.reshape((self.size * self.size,) + image.shape[2:])[self.flat_index]


def texel_uv(size: int) -> tuple[np.ndarray, np.ndarray]:
    """UV coordinates of the texel centres of an ``size x size`` texture.

    Returns:
        ``(u, v)``: two (size, size) float64 arrays, ``u`` growing with the column, ``v``
        with decreasing row (origin bottom-left).
    """
    centres = (np.arange(size) + 0.5) / size
    u, rows = np.meshgrid(centres, centres)
    return u, 1.0 - rows


def _rasterize_uv(uv: np.ndarray, uv_faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """UV triangles -> (S*S,) face per texel (-1: none) and (S*S, 3) 2D barycentrics.

    The hard rasterizer samples pixel centres at integer coordinates, so a UV point maps to
    "pixel" ``(u S - 0.5, (1 - v) S - 0.5)``; an identity camera at depth 1 makes the
    projection exactly that.
    """
    uv = np.asarray(uv, dtype=np.float64)
    x = uv[:, 0] * size - 0.5
    y = (1.0 - uv[:, 1]) * size - 0.5
    verts = torch.as_tensor(np.stack([x, y, np.ones_like(x)], axis=1), dtype=torch.float64)[None]
    settings = RasterSettings(image_size=(size, size), perspective_correct=False, cull_backfaces=False)
    frags = rasterize(verts, torch.as_tensor(uv_faces, dtype=torch.long), torch.eye(3, dtype=torch.float64)[None],
                      settings)
    face = frags.pix_to_face[0].reshape(-1).numpy()
    bary = frags.bary_coords[0].reshape(-1, 3).numpy()
    return face, bary


def _laplacian(faces: np.ndarray, num_vertices: int) -> scipy.sparse.csr_matrix:
    """(V, V) graph Laplacian of the mesh's edges."""
    f = np.asarray(faces, dtype=np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    adj = scipy.sparse.coo_matrix((np.ones(i.size), (i, j)), shape=(num_vertices, num_vertices)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    degree = np.asarray(adj.sum(axis=1)).ravel()
    return (scipy.sparse.diags(degree) - adj).tocsr()


def build_texel_map(uv: np.ndarray, uv_faces: np.ndarray, faces: np.ndarray, size: int) -> TexelMap:
    """Compute the :class:`TexelMap` of a mesh's UV layout (about 1 s at 1024 on a CPU core).

    Args:
        uv: (T, 2) float UV coordinates in [0, 1], origin bottom-left.
        uv_faces: (F, 3) int triangles into ``uv``, corner for corner with ``faces``.
        faces: (F, 3) int mesh triangles.
        size: S, texels per side (>= 8).

    Raises:
        ValueError: mismatched shapes, a size below 8, or a layout that covers no texel.
    """
    faces = np.array(faces, dtype=np.int64)  # a copy: frozen below, never the caller's array
    uv_faces = np.asarray(uv_faces, dtype=np.int64)
    if uv_faces.shape != faces.shape or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"uv_faces {uv_faces.shape} must match faces {faces.shape} (F, 3)")
    if int(size) < 8:
        raise ValueError(f"texture size must be at least 8, got {size}")
    size = int(size)
    num_vertices = int(faces.max()) + 1
    face_of_texel, bary_of_texel = _rasterize_uv(uv, uv_faces, size)
    covered = np.flatnonzero(face_of_texel >= 0)
    if covered.size == 0:
        raise ValueError("the UV layout covers no texel centre")
    order = np.argsort(face_of_texel[covered], kind="stable")
    flat_index = covered[order]
    face = face_of_texel[flat_index].astype(np.int32)
    bary = np.clip(bary_of_texel[flat_index], 0.0, 1.0)
    bary = (bary / bary.sum(axis=1, keepdims=True)).astype(np.float32)
    vertex_ids = faces[face].astype(np.int32)
    face_start = np.searchsorted(face, np.arange(faces.shape[0] + 1)).astype(np.int64)

    # Edge padding: the nearest covered texel of every texel of the grid.
    grid_covered = np.zeros(size * size, dtype=bool)
    grid_covered[flat_index] = True
    _, nearest = scipy.ndimage.distance_transform_edt(
        ~grid_covered.reshape(size, size), return_distances=True, return_indices=True
    )
    nearest_flat = (nearest[0] * size + nearest[1]).reshape(-1)
    compact = np.full(size * size, -1, dtype=np.int64)
    compact[flat_index] = np.arange(flat_index.size)
    pad_source = compact[nearest_flat].astype(np.int32)

    n = flat_index.size
    weights = scipy.sparse.coo_matrix(
        (bary.reshape(-1).astype(np.float64), (vertex_ids.reshape(-1), np.repeat(np.arange(n), 3))),
        shape=(num_vertices, n),
    ).tocsr()
    totals = np.asarray(weights.sum(axis=1)).ravel()
    inv = np.where(totals > 0, 1.0 / np.maximum(totals, 1e-12), 0.0)
    to_vertex = (scipy.sparse.diags(inv) @ weights).astype(np.float32).tocsr()

    bary_t = np.ascontiguousarray(bary.T)
    face_count = np.diff(face_start)
    faces_t = np.ascontiguousarray(faces.T)
    has_texels = face_count > 0
    for array in (faces, faces_t, flat_index, face, vertex_ids, bary, bary_t, face_start, face_count,
                  has_texels, pad_source):
        array.flags.writeable = False
    return TexelMap(
        size=size,
        num_vertices=num_vertices,
        faces=faces,
        faces_t=faces_t,
        flat_index=flat_index,
        face=face,
        vertex_ids=vertex_ids,
        bary=bary,
        bary_t=bary_t,
        face_start=face_start,
        face_count=face_count,
        has_texels=has_texels,
        pad_source=pad_source,
        to_vertex=to_vertex,
        laplacian=_laplacian(faces, num_vertices),
    )


_CACHE: dict[tuple[str, int], TexelMap] = {}
_CACHE_LOCK = threading.Lock()


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def texel_map(uv: np.ndarray, uv_faces: np.ndarray, faces: np.ndarray, size: int) -> TexelMap:
    """:func:`build_texel_map`, cached by the layout's content and the size (thread-safe)."""
    key = (_digest(np.asarray(uv, np.float32), np.asarray(uv_faces, np.int64), np.asarray(faces, np.int64)), int(size))
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    built = build_texel_map(uv, uv_faces, faces, size)
    log.debug("texel map %d x %d: %d covered texels", size, size, built.num_texels)
    with _CACHE_LOCK:
        return _CACHE.setdefault(key, built)
