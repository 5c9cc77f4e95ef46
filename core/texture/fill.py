"""Filling the texels a capture never saw, so the exported hand has no holes or seams.

Two steps, both vectorized and cheap enough to run on every export or preview:

1. **Over the surface.** Each vertex takes the barycentric-weighted mean of the known texels
   around it; vertices with too little known texture around them get the harmonic
   extension of the known ones over the mesh's edge graph (a sparse Laplace solve: colours
   diffuse smoothly across the unseen part of the hand). An unseen texel then takes the
   colour interpolated from its face's vertices. Working on the mesh, not in UV space,
   carries colour across UV seams (both sides of a seam share the vertex), and an unseen
   region never borrows colour from a UV island that is merely near it in the texture.
2. **Edge padding.** Texels outside every UV triangle copy their nearest covered texel, so
   bilinear filtering and mipmaps at island borders never pull in a background colour.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from core.texture.texels import TexelMap

__all__ = ["DEFAULT_SKIN_RGB", "fill_texture", "vertex_colours"]

log = logging.getLogger(__name__)

#: sRGB skin tone used when nothing at all has been seen.
DEFAULT_SKIN_RGB = (224, 172, 150)

#: A vertex counts as known when known texels carry at least this share of its texel weight.
MIN_KNOWN_SHARE = 0.2


def vertex_colours(tmap: TexelMap, colour: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(V, 3) float64 RGB per vertex: from the known texels around it, else diffused.

    Args:
        tmap: the texel map.
        colour: (N, 3) float RGB in [0, 255] per covered texel (ignored where not known).
        known: (N,) bool.

    Returns:
        Colours of every vertex; :data:`DEFAULT_SKIN_RGB` everywhere when nothing is known.
    """
    known = np.asarray(known, dtype=bool)
    num_v = tmap.num_vertices
    if not known.any():
        return np.tile(np.asarray(DEFAULT_SKIN_RGB, dtype=np.float64), (num_v, 1))
    stacked = np.concatenate([np.where(known[:, None], colour, 0.0), known[:, None]], axis=1).astype(np.float32)
    sums = np.asarray(tmap.to_vertex @ stacked, dtype=np.float64)  # (V, 4)
    share = sums[:, 3]
    is_known = share >= MIN_KNOWN_SHARE
    out = np.zeros((num_v, 3))
    out[is_known] = sums[is_known, :3] / share[is_known, None]
    if is_known.all():
        return out
    if not is_known.any():  # only scattered texels: use their mean everywhere
        return np.tile(colour[known].mean(axis=0).astype(np.float64), (num_v, 1))
    unknown = np.flatnonzero(~is_known)
    fixed = np.flatnonzero(is_known)
    lap = tmap.laplacian
    # A small pull toward the mean keeps the system regular when a part of the mesh has no
    # known vertex (it then takes the mean colour) and barely changes the harmonic solution.
    eps = 1e-4
    mean = out[fixed].mean(axis=0)
    a = (lap[unknown][:, unknown] + eps * scipy.sparse.identity(unknown.size)).tocsc()
    rhs = -(lap[unknown][:, fixed] @ out[fixed]) + eps * mean[None, :]
    out[unknown] = scipy.sparse.linalg.spsolve(a, rhs).reshape(unknown.size, 3)
    return out


def fill_texture(tmap: TexelMap, colour: np.ndarray, known: np.ndarray) -> np.ndarray:
    """An (S, S, 3) uint8 texture with every texel set: known texels kept, the rest filled.

    Args:
        tmap: the texel map of the texture.
        colour: (N, 3) float RGB in [0, 255] per covered texel.
        known: (N,) bool, which of them hold an observation.

    Returns:
        (S, S, 3) uint8 RGB, UV origin bottom-left, top row first: no hole inside the UV
        islands (unseen texels interpolated from the diffused vertex colours) and edge
        padding outside them.
    """
    colour = np.asarray(colour, dtype=np.float32)
    known = np.asarray(known, dtype=bool)
    if colour.shape != (tmap.num_texels, 3) or known.shape != (tmap.num_texels,):
        raise ValueError(f"colour must be ({tmap.num_texels}, 3) and known ({tmap.num_texels},)")
    values = colour.copy()
    missing = np.flatnonzero(~known)
    if missing.size:
        per_vertex = vertex_colours(tmap, colour, known).astype(np.float32)
        values[missing] = np.einsum("mk,mkc->mc", tmap.bary[missing], per_vertex[tmap.vertex_ids[missing]])
    texels = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return texels[tmap.pad_source].reshape(tmap.size, tmap.size, 3)
