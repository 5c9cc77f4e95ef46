"""Fused CPU kernels of the refinement loop, in C: the hand model's skinning and its gradient,
the edge / normal-consistency regularizers and their gradients, and the silhouette term's
reduction (loss, IoU and the rasterizer backward's input in one pass over the crop).

Every refinement iteration evaluates ``M(p + dp, s + ds)`` and the mesh regularizers and
back-propagates through them. As PyTorch ops that is several hundred small ops per iteration
(the kinematic chain alone is about 700 ops forward and backward), each costing microseconds of
dispatch for a few hundred flops of work; here each is one C call. The kernels compute exactly
what the PyTorch reference computes (:class:`core.refine.lbs.LeanHand` with
``backend="eager"``, :func:`core.refine.mesh.edge_normal_losses_reference`); the tests check
values and gradients against them and against finite differences.

The C source is ``refine.h`` then ``refine_real.c`` once per float type. Built on first use
by :class:`core.native.NativeLibrary` (system C compiler, cached); where nothing compiles, or
on CUDA tensors, the callers use the PyTorch reference.

Skinning (smplx's ``lbs`` for a model without pose-dependent joint regression):
    v_shaped = v_template + shapedirs beta (+ posedirs (R_j - I), when the model has any)
    J = J_template + J_shapedirs beta                (joints regressed from the shaped mesh)
    R_j = rodrigues(p_j) (smplx's: angle |p_j + 1e-8|, axis p_j / angle)
    G_0 = (R_0, J_0),  G_j = G_parent(j) o (R_j, J_j - J_parent(j))
    verts = sum_j w_vj (G_R_j (v_shaped - J_j) + G_t_j) + transl,  joints = G_t + transl
The backward pass walks the same chain in reverse (parents precede children in the model's
joint order, which the caller checks).
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch
from torch import Tensor

from core.native import NativeLibrary, address, kernel_source

__all__ = ["LIBRARY", "edge_normal", "front_faces", "lbs_backward", "lbs_forward", "offset_grad", "offset_losses",
           "project", "project_backward", "silhouette_loss",
           "plausibility", "supported"]

_FLAVOURS = (  # C type, suffix, sqrt, sin, cos, fabs
    ("float", "f32", "sqrtf", "sinf", "cosf", "fabsf"),
    ("double", "f64", "sqrt", "sin", "cos", "fabs"),
)


def source() -> str:
    """The complete C source (float32 and float64 versions)."""
    text = kernel_source(__file__, "refine.h")
    for real, suffix, sqrt, sin, cos, fabs in _FLAVOURS:
        text += kernel_source(__file__, "refine_real.c", [("REAL", real), ("SFX", suffix), ("SQRT", sqrt),
                                                          ("SIN", sin), ("COS", cos), ("FABS", fabs)])
    return text


def _declare(lib: ctypes.CDLL) -> None:
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    for _, suffix, *_ in _FLAVOURS:
        fwd = getattr(lib, f"lbs_forward_{suffix}")
        fwd.argtypes = [p] * 10 + [i64] * 4 + [p] * 3
        bwd = getattr(lib, f"lbs_backward_{suffix}")
        bwd.argtypes = [p] * 6 + [i64] * 4 + [p] * 7
        en = getattr(lib, f"edge_normal_{suffix}")
        en.argtypes = [p, p, p, i64, i64, i64, p, p, p, p, p, p]
        pl = getattr(lib, f"plausibility_{suffix}")
        pl.argtypes = [p, p, p, i64, i64, i64, p, p]
        pl.restype = None
        ol = getattr(lib, f"offset_losses_{suffix}")
        ol.argtypes = [p, p, p, p, i64, i64, p, p, p]
        og = getattr(lib, f"offset_grad_{suffix}")
        og.argtypes = [p, p, p, p, p, i64, i64, p, p, p]
        ff = getattr(lib, f"front_faces_{suffix}")
        ff.argtypes = [p, p, i64, i64, i64, p]
        ff.restype = i64
        pj = getattr(lib, f"project_{suffix}")
        pj.argtypes = [p, p, i64, i64, p]
        pb = getattr(lib, f"project_backward_{suffix}")
        pb.argtypes = [p, p, p, p, i64, i64, p, p]
        pj.restype = pb.restype = None
        sl = getattr(lib, f"silhouette_loss_{suffix}")
        sl.argtypes = [p, p, p, p, i64, i64, i64, i64, ctypes.c_double if suffix == "f64" else ctypes.c_float,
                       p, p, p]
        fwd.restype = bwd.restype = en.restype = ol.restype = og.restype = sl.restype = None


#: The kernels' library (built on first use).
LIBRARY = NativeLibrary("refine", source, _declare, hold_gil=True)  # 0.02-0.3 ms a call

_JW = 24  # joint workspace per joint (R, G_R, G_t, J), as in the C source
#: Most joints the skinning kernel takes (a hand has 16).
MAX_JOINTS = 64


def supported(*tensors: Tensor) -> bool:
    """Whether the kernels can take these tensors (CPU, one float dtype) and the library built."""
    dtype = tensors[0].dtype
    return (all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)
            and dtype in (torch.float32, torch.float64) and LIBRARY.get() is not None)


# The wrappers take PyTorch tensors or NumPy arrays (contiguous, CPU) and answer in kind:
# NumPy arrays are what the live refinement's fused loss uses (core.refine.fused), since small
# NumPy operations keep the GIL where each PyTorch op gives it up and takes it back.
Array = Tensor | np.ndarray


def _fn(name: str, like: Array):
    f32 = like.dtype == torch.float32 or like.dtype == np.float32
    return getattr(LIBRARY.require(), f"{name}_{'f32' if f32 else 'f64'}")


def _empty(like: Array, *shape: int) -> Array:
    """An uninitialized array of ``like``'s kind and dtype."""
    if isinstance(like, np.ndarray):
        return np.empty(shape, like.dtype)
    return torch.empty(shape, dtype=like.dtype)


def _zeros(like: Array, *shape: int) -> Array:
    if isinstance(like, np.ndarray):
        return np.zeros(shape, like.dtype)
    return torch.zeros(shape, dtype=like.dtype)


def lbs_forward(pose: Tensor, betas: Tensor, transl: Tensor, v_template: Tensor,
                shapedirs: Tensor, j_template: Tensor, j_shapedirs: Tensor,
                posedirs: Tensor | None, weights: Tensor, parents: Tensor,
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Skinned vertices (B, V, 3), posed joints (B, J, 3) and the workspace for the backward.

    Args (contiguous CPU tensors of one float dtype; ``parents`` int64):
        pose (B, 3J) axis-angle (pose mean already added); betas (B, S); transl (B, 3);
        v_template (V, 3); shapedirs (S, 3V); j_template (J, 3); j_shapedirs (S, 3J);
        posedirs (9 (J - 1), 3V) or None; weights (V, J); parents (J,) with parents[0] = -1
        and parents[j] < j.
    """
    b, num_j = pose.shape[0], weights.shape[1]
    num_v, s = v_template.shape[0], betas.shape[1]
    verts = _empty(pose, b, num_v, 3)
    joints = _empty(pose, b, num_j, 3)
    work = _empty(pose, b, num_j * _JW + 3 * num_v)
    _fn("lbs_forward", pose)(address(pose), address(betas), address(transl),
                             address(v_template), address(shapedirs), address(j_template),
                             address(j_shapedirs), address(posedirs), address(weights),
                             address(parents), b, num_v, num_j, s, address(verts),
                             address(joints), address(work))
    return verts, joints, work


def lbs_backward(pose: Tensor, shapedirs: Tensor, j_shapedirs: Tensor, posedirs: Tensor | None,
                 weights: Tensor, parents: Tensor, work: Tensor, g_verts: Tensor,
                 g_joints: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients w.r.t. pose (B, 3J), betas (B, S), transl (B, 3) of
    ``sum(g_verts * verts) + sum(g_joints * joints)``; arguments as :func:`lbs_forward`."""
    b, num_j = pose.shape[0], weights.shape[1]
    num_v, s = weights.shape[0], shapedirs.shape[0]
    g_pose = _empty(pose, *pose.shape)
    g_betas = _empty(pose, b, s)
    g_transl = _empty(pose, b, 3)
    scratch = _empty(pose, 3 * num_v + 39 * num_j)
    _fn("lbs_backward", pose)(address(pose), address(shapedirs), address(j_shapedirs),
                              address(posedirs), address(weights), address(parents), b, num_v,
                              num_j, s, address(work), address(g_verts), address(g_joints),
                              address(g_pose), address(g_betas), address(g_transl),
                              address(scratch))
    return g_pose, g_betas, g_transl


def edge_normal(verts: Tensor, ref: Tensor, faces: Tensor, g_edge: Tensor | None = None,
                g_normal: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The edge and normal terms (B,) each; with ``g_edge``, ``g_normal`` (B,) also the gradients
    (B, V, 3) w.r.t. ``verts`` and ``ref`` of ``sum(g_edge * edge + g_normal * normal)``.

    Args: contiguous CPU tensors of one float dtype; faces (F, 3) int64.
    """
    b, num_v = verts.shape[:2]
    edge = _empty(verts, b)
    normal = _empty(verts, b)
    g_v = g_r = None
    if g_edge is not None and g_normal is not None:
        g_v, g_r = _zeros(verts, *verts.shape), _zeros(ref, *ref.shape)
    _fn("edge_normal", verts)(address(verts), address(ref), address(faces), b, num_v,
                              faces.shape[0], address(edge), address(normal),
                              address(g_edge), address(g_normal), address(g_v), address(g_r))
    return edge, normal, g_v, g_r


def front_faces(verts: Array, faces: Array) -> Array:
    """(F', 3) the faces (F, 3) int64 facing the camera in at least one mesh of ``verts``
    (B, V, 3), in their order (:func:`core.refine.mesh.front_faces`)."""
    b, num_v = verts.shape[:2]
    keep = np.empty(faces.shape[0], np.uint8)
    _fn("front_faces", verts)(address(verts), address(faces), b, num_v, faces.shape[0], address(keep))
    return faces[torch.from_numpy(keep).bool() if isinstance(faces, Tensor) else keep.view(bool)]


def project(points: Tensor, Kc: Tensor) -> Tensor:
    """(B, N, 2) pixels of camera-frame points (B, N, 3) through intrinsics (B, 3, 3)."""
    b, n = points.shape[:2]
    uv = _empty(points, b, n, 2)
    _fn("project", points)(address(points), address(Kc), b, n, address(uv))
    return uv


def project_backward(g_uv: Tensor, uv: Tensor, points: Tensor, Kc: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient (B, N, 3) w.r.t. the points of :func:`project` given ``g_uv`` (B, N, 2), and
    ``sum g_u (u - cx) + g_v (v - cy)`` (B,), the gradient w.r.t. a log scale of the focal."""
    b, n = points.shape[:2]
    g_p = _empty(points, *points.shape)
    g_focal = _empty(points, b)
    _fn("project_backward", points)(address(g_uv), address(uv), address(points), address(Kc),
                                    b, n, address(g_p), address(g_focal))
    return g_p, g_focal


def silhouette_loss(prod: Tensor, target: Tensor, weight: Tensor, area: Tensor, w_silhouette: float,
                    need_grad: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """The silhouette term (B,), the silhouette IoU (B,) and, with ``need_grad``, the rasterizer
    backward's input (B, H, Wp) for that term (see the C source for the formulas).

    Args: contiguous CPU tensors of one float dtype: ``prod`` (B, H, Wp) the soft rasterizer's
    product of (1 - coverage) (rows padded to Wp >= W), ``target``/``weight`` (B, H, W),
    ``area`` (B,) the target's area inside the weight.
    """
    b, h, wp = prod.shape
    w = target.shape[-1]
    loss = _empty(prod, b)
    iou = _empty(prod, b)
    g = _empty(prod, *prod.shape) if need_grad else None
    _fn("silhouette_loss", prod)(address(prod), address(target), address(weight), address(area),
                                 b, h, w, wp, float(w_silhouette), address(loss), address(iou), address(g))
    return loss, iou, g


def offset_losses(u: Tensor, ptr: Tensor, nbr: Tensor, inv_deg: Tensor
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """(vertex (B,), laplacian (B,), L u (B, V, 3)) of offsets ``u`` (B, V, 3).

    Args: contiguous CPU tensors; ``ptr`` (V + 1,), ``nbr`` int64 adjacency in CSR; ``inv_deg``
    (V,) 1 / degree, dtype of ``u``.
    """
    b, num_v = u.shape[:2]
    vertex = _empty(u, b)
    lap = _empty(u, b)
    lu = _empty(u, *u.shape)
    _fn("offset_losses", u)(address(u), address(ptr), address(nbr), address(inv_deg), b,
                            num_v, address(vertex), address(lap), address(lu))
    return vertex, lap, lu


def offset_grad(u: Tensor, lu: Tensor, ptr: Tensor, nbr: Tensor, inv_deg: Tensor,
                g_vertex: Tensor, g_lap: Tensor) -> Tensor:
    """(B, V, 3) gradient of ``sum(g_vertex * vertex + g_lap * laplacian)`` w.r.t. ``u``."""
    b, num_v = u.shape[:2]
    grad = _empty(u, *u.shape)
    _fn("offset_grad", u)(address(u), address(lu), address(ptr), address(nbr),
                          address(inv_deg), b, num_v, address(g_vertex), address(g_lap),
                          address(grad))
    return grad


def plausibility(verts: Tensor, ref: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Paper 004's (edge-length error (B,), normal error (B,)) of ``verts`` against ``ref``
    (contiguous (B, V, 3) CPU tensors of one float dtype; faces (F, 3) int64)."""
    b, num_v = verts.shape[:2]
    edge = _empty(verts, b)
    normal = _empty(verts, b)
    _fn("plausibility", verts)(address(verts), address(ref), address(faces), b, num_v,
                               faces.shape[0], address(edge), address(normal))
    return edge, normal
