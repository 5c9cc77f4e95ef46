"""Mesh topology and the mesh regularizers of the refinement (pure functions, batched).

The refinement deforms a parametric mesh ``M = M(p + dp, s + ds)`` by free per-vertex offsets
``dv`` (RealisticHands, paper 001, Eq. 1): ``H = M + dv``. The regularizers keep the free part
plausible. Each is written so that it is **zero, and a minimum, at dv = 0** (the undeformed
parametric mesh), so it never fights the pose or shape offsets, only the free-form part:

* vertex offsets (001 Eq. 2, ``L_v = ||dv||^2``): ``mean_v |dv_v|^2 / e^2``;
* Laplacian (001 Eq. 3, in the offset form of paper 003 Eq. 5, the Laplacian of ``dv`` =
  ``lap(H) - lap(M)``): ``mean_v |dv_v - mean_{k in N(v)} dv_k|^2 / e^2``;
* edge lengths (the edge-length consistency of 003 Eq. 4, each edge against its own length in
  ``M``): ``mean_edges ((|e_H|^2 - |e_M|^2) / |e_M|^2)^2`` over the faces' edges;
* normal consistency (003 Eq. 3, the edges of ``H`` against the face normals of ``M``, with
  unit edges so the term has no unit): ``mean_{faces, edges} <e_H / |e_H|, n_M>^2``.

``e`` is the mean edge length of ``M`` (per hand), so the offset terms are in units of "edge
lengths" and every term is scale-free: the same weights work for any hand size. Paper 001's
own Eq. 2 edge term (``sum |v - k|^2``) and Eq. 4 normal term (``1 - cos`` between neighbouring
faces) are not zero on a curved hand mesh and would shrink and flatten it; the forms above are
the ones the same papers use for consistency with a reference mesh (see the notes in
:mod:`core.refine`).

Shapes: vertices ``(B, V, 3)`` float, metres, any frame (the terms are rigid-invariant).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MeshTopology",
    "edge_loss",
    "edge_normal_losses",
    "edge_normal_losses_reference",
    "face_edge_vectors",
    "face_normals",
    "front_faces",
    "laplacian",
    "laplacian_loss",
    "mean_edge_length",
    "normal_loss",
    "offset_losses",
    "plausibility",
    "vertex_normals",
    "vertex_offset_loss",
]


@dataclass(frozen=True, eq=False)
class MeshTopology:
    """Fixed connectivity of a triangle mesh, as index tensors on one device.

    Attributes:
        faces: (F, 3) int64 vertex indices (counter-clockwise seen from outside).
        edges: (E, 2) int64 unique undirected edges, ``edges[:, 0] < edges[:, 1]``.
        face_edges: (F, 3, 2) int64 the three directed edges of every face (corner k to k+1).
        degree: (V,) float number of edge neighbours of every vertex (>= 1 for used vertices;
            unused vertices count 1 so nothing divides by 0).
        laplacian: (V, V) sparse COO float64 uniform graph Laplacian ``I - D^-1 A``
            (:meth:`laplacian_as` gives it in another dtype).
        num_vertices: V.
    """

    faces: Tensor
    edges: Tensor
    face_edges: Tensor
    degree: Tensor
    laplacian: Tensor
    num_vertices: int
    _laplacian32: Tensor | None = None
    _lap_csr: tuple[Tensor, Tensor] | None = None  # float32 (L, L^T) as CSR (fast products)
    _corners: tuple[Tensor, Tensor] | None = None  # (3F,) corner k and k + 1, corner-major
    _incidence: tuple[Tensor, Tensor] | None = None  # (3F, V) float32 CSR (D, D^T): D x = edges
    _adjacency: tuple[Tensor, Tensor] | None = None  # (V + 1,), (2E,) int64 neighbours in CSR

    def laplacian_as(self, dtype: torch.dtype) -> Tensor:
        """The Laplacian matrix in ``dtype`` (float32 is kept ready)."""
        if dtype == torch.float32 and self._laplacian32 is not None:
            return self._laplacian32
        return self.laplacian if dtype == self.laplacian.dtype else self.laplacian.to(dtype)

    @staticmethod
    def from_faces(faces: np.ndarray | Tensor, num_vertices: int,
                   device: torch.device | str = "cpu") -> "MeshTopology":
        """Build the topology of ``faces`` (F, 3) over ``num_vertices`` vertices."""
        f = np.asarray(faces.cpu() if isinstance(faces, Tensor) else faces, dtype=np.int64)
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"faces must be (F, 3), got {f.shape}")
        directed = np.stack([f, np.roll(f, -1, axis=1)], axis=-1)  # (F, 3, 2)
        und = np.sort(directed.reshape(-1, 2), axis=1)
        edges = np.unique(und, axis=0)
        degree = np.bincount(edges.reshape(-1), minlength=num_vertices).astype(np.float32)
        degree = np.maximum(degree, 1.0)
        dev = torch.device(device)
        i, j = edges[:, 0], edges[:, 1]
        diag = np.arange(num_vertices)
        index = np.stack([np.concatenate([i, j, diag]), np.concatenate([j, i, diag])])
        inv = 1.0 / degree.astype(np.float64)
        values = np.concatenate([-inv[i], -inv[j], np.ones(num_vertices)])
        lap = torch.sparse_coo_tensor(torch.as_tensor(index), torch.as_tensor(values, dtype=torch.float64),
                                      (num_vertices, num_vertices), check_invariants=False).coalesce().to(dev)
        faces_t = torch.as_tensor(f, device=dev)
        return MeshTopology(
            faces=faces_t,
            edges=torch.as_tensor(edges, device=dev),
            face_edges=torch.as_tensor(directed, device=dev),
            degree=torch.as_tensor(degree, device=dev),
            laplacian=lap,
            num_vertices=int(num_vertices),
            _laplacian32=lap.to(torch.float32),
            _lap_csr=_csr_pair(lap),
            _corners=_corner_index(faces_t),
            _incidence=_incidence_pair(faces_t, int(num_vertices)),
            _adjacency=_adjacency(edges, int(num_vertices), dev),
        )

    def to(self, device: torch.device | str) -> "MeshTopology":
        """The same topology on another device."""
        lap = self.laplacian.to(device)
        faces = self.faces.to(device)
        return MeshTopology(faces, self.edges.to(device), self.face_edges.to(device),
                            self.degree.to(device), lap, self.num_vertices, lap.to(torch.float32),
                            _csr_pair(lap), _corner_index(faces), _incidence_pair(faces, self.num_vertices),
                            _adjacency(self.edges.cpu().numpy(), self.num_vertices, torch.device(device)))


def _adjacency(edges: np.ndarray, num_vertices: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(V + 1,) row pointers and (2E,) neighbour indices (int64) of the undirected ``edges``."""
    both = np.concatenate([edges, edges[:, ::-1]])
    both = both[np.lexsort((both[:, 1], both[:, 0]))]
    ptr = np.zeros(num_vertices + 1, dtype=np.int64)
    np.cumsum(np.bincount(both[:, 0], minlength=num_vertices), out=ptr[1:])
    return (torch.as_tensor(ptr, device=device),
            torch.as_tensor(np.ascontiguousarray(both[:, 1]), device=device))


def _csr_pair(lap: Tensor) -> tuple[Tensor, Tensor] | None:
    """float32 (L, L^T) in CSR layout, or None where this build cannot make them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            l32 = lap.to(torch.float32).coalesce()
            return l32.to_sparse_csr(), l32.t().coalesce().to_sparse_csr()
    except (RuntimeError, NotImplementedError):  # pragma: no cover - depends on the build
        return None


def _incidence_pair(faces: Tensor, num_vertices: int) -> tuple[Tensor, Tensor] | None:
    """float32 CSR (D, D^T) of the face-edge operator: row r of ``D x`` is x[end_r] - x[start_r]."""
    i0, i1 = _corner_index(faces)
    rows = torch.arange(i0.numel(), device=faces.device)
    index = torch.stack([torch.cat([rows, rows]), torch.cat([i1, i0])])
    values = torch.cat([torch.ones(rows.numel()), -torch.ones(rows.numel())]).to(faces.device)
    d = torch.sparse_coo_tensor(index, values, (rows.numel(), num_vertices),
                                check_invariants=False).coalesce()
    return _csr_pair(d)


def _corner_index(faces: Tensor) -> tuple[Tensor, Tensor]:
    """(3F,) start and end vertex of every face edge, corner-major (all corner-0 edges first)."""
    fk = faces.t().contiguous()  # (3, F)
    return fk.reshape(-1), fk.roll(-1, 0).reshape(-1)


class _SparseProduct(torch.autograd.Function):
    """``m @ x`` for a constant sparse ``m`` (CSR), with the gradient ``m^T @ g``."""

    @staticmethod
    def forward(ctx, x: Tensor, m: Tensor, mt: Tensor) -> Tensor:  # type: ignore[override]
        ctx.mt = mt
        return m @ x

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return ctx.mt @ g.contiguous(), None, None


# ----------------------------------------------------------------------------- geometry


def face_normals(verts: Tensor, faces: Tensor, unit: bool = True) -> Tensor:
    """(B, F, 3) face normals (right-hand rule on the corner order); unit unless ``unit=False``."""
    tri = verts[:, faces]  # (B, F, 3, 3)
    n = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12) if unit else n


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """(B, V, 3) unit area-weighted vertex normals (outward for counter-clockwise faces)."""
    n = face_normals(verts, faces, unit=False)  # (B, F, 3), length = 2 x area
    out = torch.zeros_like(verts)
    out.index_add_(1, faces.reshape(-1), n.repeat_interleave(3, dim=1))
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def edge_vectors(verts: Tensor, edges: Tensor) -> Tensor:
    """(B, E, 3) ``v[edges[:, 1]] - v[edges[:, 0]]``."""
    return verts[:, edges[:, 1]] - verts[:, edges[:, 0]]


def mean_edge_length(verts: Tensor, topo: MeshTopology) -> Tensor:
    """(B,) mean edge length, same unit as ``verts``."""
    return edge_vectors(verts, topo.edges).norm(dim=-1).mean(dim=1)


def laplacian(x: Tensor, topo: MeshTopology, transpose: bool = False) -> Tensor:
    """Uniform graph Laplacian ``x_v - mean_{k in N(v)} x_k`` of a per-vertex field.

    Args:
        x: (B, V, C) values per vertex.
        transpose: apply ``L^T`` instead (the Laplacian's adjoint, for gradients).

    Returns:
        (B, V, C). (A sparse product with :attr:`MeshTopology.laplacian`.)
    """
    b, v, c = x.shape
    flat = x.permute(1, 0, 2).reshape(v, b * c)
    if x.dtype == torch.float32 and topo._lap_csr is not None:
        m, mt = topo._lap_csr
        out = _SparseProduct.apply(flat, *((mt, m) if transpose else (m, mt)))
    else:
        lap = topo.laplacian_as(x.dtype)
        out = torch.sparse.mm(lap.t() if transpose else lap, flat)
    return out.reshape(v, b, c).permute(1, 0, 2)


# ----------------------------------------------------------------------------- losses


def _scale2(scale: Tensor | float, like: Tensor) -> Tensor:
    s = torch.as_tensor(scale, dtype=like.dtype, device=like.device)
    return (s * s).reshape(-1, *([1] * (like.ndim - 1))) if s.ndim else s * s


def vertex_offset_loss(offsets: Tensor, scale: Tensor | float = 1.0) -> Tensor:
    """(B,) ``mean_v |dv_v|^2 / scale^2`` (paper 001 Eq. 2, ``L_v``).

    Args:
        offsets: (B, V, 3) free vertex offsets dv.
        scale: (B,) or scalar length unit (the mean edge length of the parametric mesh).
    """
    return (offsets.pow(2).sum(-1) / _scale2(scale, offsets[..., 0])).mean(dim=1)


def laplacian_loss(offsets: Tensor, topo: MeshTopology, scale: Tensor | float = 1.0) -> Tensor:
    """(B,) ``mean_v |lap(dv)_v|^2 / scale^2`` (001 Eq. 3 applied to the offsets, 003 Eq. 5).

    Zero for any constant offset (a translation), and for dv = 0.
    """
    lap = laplacian(offsets, topo)
    return (lap.pow(2).sum(-1) / _scale2(scale, offsets[..., 0])).mean(dim=1)


def offset_losses(offsets: Tensor, topo: MeshTopology) -> tuple[Tensor, Tensor]:
    """``(vertex_offset_loss(dv), laplacian_loss(dv, topo))`` in one pass, (B,) each.

    Offsets in units of the length scale (the refiner's mean edge lengths). The gradient is
    written out (``2 / V (g_v dv + g_l L^T L dv)``): two sparse products instead of the dozen
    small ops the two functions record for autograd.
    """
    from core.refine import _native

    if topo._adjacency is not None and _native.supported(offsets):
        return _NativeOffsetLosses.apply(offsets, topo)
    return _OffsetLosses.apply(offsets, topo)


def _per_hand_grad(grad: Tensor | None, like: Tensor) -> Tensor:
    """A (B,) incoming gradient as a contiguous tensor (zeros where autograd passes None)."""
    return torch.zeros(like.shape[0], dtype=like.dtype) if grad is None else grad.contiguous()


class _NativeOffsetLosses(torch.autograd.Function):
    """:func:`offset_losses` by the C kernels (one pass forward, one backward)."""

    @staticmethod
    def forward(ctx, u: Tensor, topo: MeshTopology) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        from core.refine import _native

        u = u.detach().contiguous()
        inv_deg = 1.0 / topo.degree.to(u.dtype)
        vertex, lap, lu = _native.offset_losses(u, *topo._adjacency, inv_deg)
        ctx.save_for_backward(u, lu, inv_deg)
        ctx.topo = topo
        return vertex, lap

    @staticmethod
    def backward(ctx, g_vertex: Tensor | None, g_lap: Tensor | None):  # type: ignore[override]
        from core.refine import _native

        u, lu, inv_deg = ctx.saved_tensors
        gv, gl = _per_hand_grad(g_vertex, u), _per_hand_grad(g_lap, u)
        return _native.offset_grad(u, lu, *ctx.topo._adjacency, inv_deg, gv, gl), None


class _OffsetLosses(torch.autograd.Function):
    """:func:`offset_losses` in PyTorch ops (CUDA; the C kernels' reference)."""

    @staticmethod
    def forward(ctx, u: Tensor, topo: MeshTopology) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        u = u.detach()
        lap = laplacian(u, topo)
        ctx.save_for_backward(u, lap)
        ctx.topo = topo
        n = u.shape[1]
        return (u * u).sum((1, 2)) / n, (lap * lap).sum((1, 2)) / n

    @staticmethod
    def backward(ctx, g_vertex: Tensor | None, g_lap: Tensor | None):  # type: ignore[override]
        u, lap = ctx.saved_tensors
        n = u.shape[1]
        grad = torch.zeros_like(u)
        if g_vertex is not None:
            grad += (2.0 / n) * g_vertex[:, None, None] * u
        if g_lap is not None:
            grad += (2.0 / n) * g_lap[:, None, None] * laplacian(lap, ctx.topo, transpose=True)
        return grad, None


def face_edge_vectors(verts: Tensor, faces: Tensor) -> Tensor:
    """(B, F, 3, 3) the three edge vectors of every face, corner k to corner k + 1."""
    tri = verts[:, faces]  # (B, F, 3 corners, 3)
    return tri.roll(-1, dims=2) - tri


def edge_loss(verts: Tensor, ref: Tensor, topo: MeshTopology,
              edges: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """(B,) ``mean ((|e|^2 - |e_ref|^2) / |e_ref|^2)^2`` over face edges (003 Eq. 4, per edge).

    Interior edges count once per face (twice), which weighs them like the normal term does.

    Args:
        verts: (B, V, 3) the deformed mesh H. ref: (B, V, 3) the reference M (same topology).
        edges: optional precomputed ``(face_edge_vectors(verts), face_edge_vectors(ref))``.
    """
    e, r = edges if edges is not None else (face_edge_vectors(verts, topo.faces),
                                            face_edge_vectors(ref, topo.faces))
    l2 = (e * e).sum(-1)
    r2 = (r * r).sum(-1).clamp_min(1e-16)
    return ((l2 - r2) / r2).pow(2).mean(dim=(1, 2))


def normal_loss(verts: Tensor, ref: Tensor, topo: MeshTopology,
                edges: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """(B,) ``mean_{t, (i, j) in t} <(v_i - v_j) / |v_i - v_j|, n_t>^2`` (003 Eq. 3, unit edges).

    ``n_t`` are the unit face normals of the reference ``ref``; the edges are those of
    ``verts``. Zero (a minimum) when ``verts`` equals ``ref``, and for any deformation that
    keeps every face in its plane.

    Args:
        edges: optional precomputed ``(face_edge_vectors(verts), face_edge_vectors(ref))``.
    """
    e, r = edges if edges is not None else (face_edge_vectors(verts, topo.faces),
                                            face_edge_vectors(ref, topo.faces))
    n = torch.cross(r[:, :, 0], -r[:, :, 2], dim=-1)  # (B, F, 3): (c1 - c0) x (c2 - c0)
    # cos^2 = (e . n)^2 / (|e|^2 |n|^2), without square roots.
    dot = (e * n[:, :, None, :]).sum(-1)
    cos2 = dot.pow(2) / ((e * e).sum(-1) * (n * n).sum(-1)[..., None]).clamp_min(1e-30)
    return cos2.mean(dim=(1, 2))


def edge_normal_losses(verts: Tensor, ref: Tensor, topo: MeshTopology,
                       backend: str = "auto") -> tuple[Tensor, Tensor]:
    """``(edge_loss(verts, ref, topo), normal_loss(verts, ref, topo))`` in one pass, (B,) each.

    Args:
        backend: "auto" (one C call forward and one backward, :mod:`core.refine._native`, for
            CPU float tensors when the kernels build; else PyTorch ops), "native" or "eager"
            (:func:`edge_normal_losses_reference`).
    """
    if backend not in ("auto", "native", "eager"):
        raise ValueError(f"backend must be auto, native or eager, got {backend!r}")
    if backend != "eager":
        from core.refine import _native

        if verts.dtype == ref.dtype and _native.supported(verts, ref):
            return _NativeEdgeNormal.apply(verts, ref, topo.faces)
        if backend == "native":
            _native.LIBRARY.require()
            raise ValueError("the native edge/normal terms need CPU tensors of one float dtype")
    return edge_normal_losses_reference(verts, ref, topo)


class _NativeEdgeNormal(torch.autograd.Function):
    """(verts, ref) -> (edge, normal) terms by the C kernel, and their gradients."""

    @staticmethod
    def forward(ctx, verts: Tensor, ref: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        from core.refine import _native

        verts, ref = verts.detach().contiguous(), ref.detach().contiguous()
        ctx.save_for_backward(verts, ref, faces)
        edge, normal, _, _ = _native.edge_normal(verts, ref, faces)
        return edge, normal

    @staticmethod
    def backward(ctx, g_edge: Tensor | None, g_normal: Tensor | None):  # type: ignore[override]
        from core.refine import _native

        verts, ref, faces = ctx.saved_tensors
        ge, gn = _per_hand_grad(g_edge, verts), _per_hand_grad(g_normal, verts)
        _, _, g_v, g_r = _native.edge_normal(verts, ref, faces, ge, gn)
        return g_v, g_r, None


def edge_normal_losses_reference(verts: Tensor, ref: Tensor,
                                 topo: MeshTopology) -> tuple[Tensor, Tensor]:
    """:func:`edge_normal_losses` in PyTorch ops (CUDA, and the C kernel's test reference).

    The same terms as :func:`edge_loss` and :func:`normal_loss`, computed on component planes
    ((B, 3, 3F) contiguous arrays, no strided vector slices) from one gather of both meshes:
    about half the ops of the two functions.
    """
    b = verts.shape[0]
    i0, i1 = topo._corners if topo._corners is not None else _corner_index(topo.faces)
    x = torch.cat([verts, ref], dim=-1)  # (B, V, 6)
    if x.dtype == torch.float32 and topo._incidence is not None:
        # The edge vectors as one sparse product (and its transpose in backward): much faster
        # than a gather, whose backward is a scatter-add.
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)  # (V, B * 6)
        d = _SparseProduct.apply(flat, *topo._incidence).view(-1, b, 6).permute(1, 2, 0)
    else:
        d = (x[:, i1] - x[:, i0]).transpose(1, 2)  # (B, 6, 3F)
    d = d.contiguous().view(b, 2, 3, 3, -1)  # (B, mesh, xyz, corner, F)
    e, r = d.unbind(1)  # (unbind, not indexing: one cheap node in backward)
    l2 = (e * e).sum(1)  # (B, 3 corners, F)
    r2 = (r * r).sum(1).clamp_min(1e-16)
    edge = ((l2 - r2) / r2).pow(2).mean(dim=(1, 2))
    a, _, c = r.unbind(2)  # (B, xyz, F): c1 - c0 and c0 - c2 of ref
    n = torch.linalg.cross(a, -c, dim=1)  # (B, xyz, F): (c1 - c0) x (c2 - c0)
    dot = (e * n[:, :, None]).sum(1)  # (B, 3 corners, F)
    cos2 = dot.pow(2) / (l2 * (n * n).sum(1)[:, None]).clamp_min(1e-30)
    return edge, cos2.mean(dim=(1, 2))


@torch.no_grad()
def plausibility(verts: Tensor, ref: Tensor, topo: MeshTopology) -> tuple[Tensor, Tensor]:
    """Paper 004's edge-length and normal errors of ``verts`` against ``ref``, batched.

    The same definitions as :func:`core.metrics.edge_length_error` and
    :func:`core.metrics.normal_error` (numpy), in torch for the refiner.

    Returns:
        ((B,) mean | |e| - |e_ref| | over face edges, same unit as the vertices;
        (B,) mean |cos| between the edges of ``verts`` and the face normals of ``ref``).
        (One C call on CPU float tensors where the kernels build, :mod:`core.refine._native`.)
    """
    from core.refine import _native

    if verts.dtype == ref.dtype and _native.supported(verts, ref):
        return _native.plausibility(verts.contiguous(), ref.contiguous(), topo.faces)
    e, r = face_edge_vectors(verts, topo.faces), face_edge_vectors(ref, topo.faces)
    edge = (e.norm(dim=-1) - r.norm(dim=-1)).abs().mean(dim=(1, 2))
    n = torch.cross(r[:, :, 0], -r[:, :, 2], dim=-1)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = (e * n[:, :, None, :]).sum(-1) / e.norm(dim=-1).clamp_min(1e-12)
    return edge, cos.abs().mean(dim=(1, 2))


def front_faces(verts: Tensor, faces: Tensor) -> Tensor:
    """(F', 3) the faces that face the camera in at least one mesh of the batch (``verts``
    (B, V, 3), camera frame; :func:`core.refine._native.front_faces` is its C twin).

    For a closed surface the silhouette is the union of its front faces; drawing only those
    halves the renderer's work. (The hand is open at the wrist, where a few back faces would
    show through the opening; that region is past the wrist line and ignored.)
    """
    with torch.no_grad():
        # Corner-major gather (index_select is the fast one): three contiguous (B, F, 3) planes.
        c0, c1, c2 = verts.detach().index_select(1, faces.t().reshape(-1)).view(
            verts.shape[0], 3, -1, 3).unbind(1)
        n = torch.linalg.cross(c1 - c0, c2 - c0, dim=-1)
        front = ((n * (c0 + c1 + c2)).sum(-1) < 0).any(0)  # normal against the view ray
    return faces[front]
