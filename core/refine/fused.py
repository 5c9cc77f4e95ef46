"""The refinement's loss and its gradient written out by hand, for the common live case.

:meth:`core.refine.Refiner._evaluate` builds the loss of paper 001 Eq. 5 (plus HandTwin's
anchors) from PyTorch ops and lets autograd differentiate it: general (extra views, depth,
two hands, CUDA), but each of its ~100 small ops and ~70 backward nodes costs microseconds
of dispatch, more than the arithmetic. For one camera, no depth and no second hand on the CPU
(live tracking), :func:`loss_and_grad` computes the same loss and the same gradient with the
C kernels (skinning, projection, soft silhouette, regularizers) and a few dozen NumPy
operations on views of the refiner's tensors, with no graph. NumPy rather than PyTorch for the
glue: each PyTorch op releases the GIL and takes it back, and in the engine's stream (where
the detector and the texture run in other threads) every take-back can wait for another
thread's turn; small NumPy operations keep the GIL.
The tests check it against ``_evaluate`` + autograd (values and gradients).

Chain rule, in the order of the backward pass (B hands, V vertices, crop pixels):

* silhouette: ``dL/dsil = 2 w_sil weight (sil - target) / area``; the rasterizer's backward
  turns ``dL/dsil * prod`` into ``dL/duv``;
* keypoints: ``dist = |uv_k - kp|``, ``e = relu(dist - slack)``, ``L = w_kp mean(e^2) / s^2``:
  ``dL/duv_k = 2 w_kp e (uv_k - kp) / (21 s^2 dist)``;
* projection ``u = fx x / z + cx``: ``dL/dx = g_u fx / z``, ``dL/dy = g_v fy / z``,
  ``dL/dz = -(g_u (u - cx) + g_v (v - cy)) / z``; a free focal scale ``s = exp(df)`` (fx, fy
  times s) gets ``dL/d(df) = sum g_u (u - cx) + g_v (v - cy)``;
* ``H = M + e0 dv``: ``dL/dM += dL/dH``, ``dL/d(dv) = e0 dL/dH`` (+ the offset terms');
* keypoints are joints and fingertip vertices of ``M``: their gradients go to those;
* the skinning kernel's backward gives pose, shape and translation gradients; the
  translation offsets are in crop pixels: ``dL/d(dt) = dL/dtransl * t_scale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from core.refine import _native
from core.refine.lbs import LeanHand
from core.refine.mesh import MeshTopology
from core.render import _native as _raster

__all__ = ["FusedView", "FusedOutput", "loss_and_grad", "numpy_view"]


@dataclass(frozen=True)
class FusedView:
    """One group's fixed data (B hands of one side, one camera), as the refiner holds it.

    Attributes:
        pose0, betas0, transl0: (B, 48), (B, S), (B, 3) the fit.
        t_scale: (B, 3) metres per crop pixel of the translation offsets.
        edge0: (B,) metres, the unit of the vertex offsets.
        K: (B, 3, 3) image intrinsics (before the focal offset). affine: (B, 3, 3) image to crop.
        target, weight: (B, S, S) float target silhouette and 0/1 weight in the crop.
        area: (B,) the target's area inside the weight, crop pixels.
        keypoints: (B, 21, 2) crop pixels, or None (no keypoint term).
        faces: (F', 3) int64 the faces drawn (front faces of the start).
        topo: the mesh topology (regularizers), or its :class:`TopologyArrays`; always the
            latter in a :func:`numpy_view`.
        free_focal: whether the focal offset is free (weak-perspective path).
    """

    pose0: Tensor
    betas0: Tensor
    transl0: Tensor
    t_scale: Tensor
    edge0: Tensor
    K: Tensor
    affine: Tensor
    target: Tensor
    weight: Tensor
    area: Tensor
    keypoints: Tensor | None
    faces: Tensor
    topo: MeshTopology | TopologyArrays
    free_focal: bool


@dataclass(frozen=True)
class FusedOutput:
    """One evaluation: per-hand loss (B,), IoU (B,), the meshes and, when asked, the gradient.

    ``verts``/``base`` (B, V, 3) metres, ``keypoints`` (B, 21, 3), ``K`` (B, 3, 3) image
    intrinsics in use, ``slack`` (B, 21) crop px the keypoint slack in use (None without
    one), ``grads`` the gradient of ``loss.sum()`` per offset name (the offsets' shapes), or None.
    """

    loss: Tensor
    iou: Tensor
    verts: Tensor
    base: Tensor
    keypoints: Tensor
    K: Tensor
    slack: Tensor | None
    grads: dict[str, Tensor] | None


@dataclass(frozen=True)
class TopologyArrays:
    """What :func:`loss_and_grad` needs of a :class:`MeshTopology`, as NumPy arrays: ``faces``
    (F, 3) int64, the adjacency in CSR ``adj_ptr`` (V + 1,) and ``adj_nbr`` (2E,) int64, and
    ``inv_deg`` (V,) 1 / vertex degree in the offsets' dtype."""

    faces: np.ndarray
    adj_ptr: np.ndarray
    adj_nbr: np.ndarray
    inv_deg: np.ndarray

    @classmethod
    def of(cls, topo: MeshTopology, dtype) -> "TopologyArrays":
        """The arrays of ``topo`` (CPU copies where it lives elsewhere), ``inv_deg`` in ``dtype``."""
        def a(t):
            return np.ascontiguousarray(t.detach().cpu().numpy())

        ptr, nbr = topo._adjacency
        return cls(a(topo.faces), a(ptr), a(nbr), (1.0 / a(topo.degree)).astype(dtype))


def numpy_view(view: FusedView) -> FusedView:
    """The same view with NumPy arrays (CPU; shared memory where contiguous) in place of its
    tensors and :class:`TopologyArrays` in place of its topology: what :func:`loss_and_grad`
    takes. Made once per refinement call."""
    def a(t):
        return None if t is None else np.ascontiguousarray(t.detach().cpu().numpy())

    topo = view.topo
    arrays = topo if isinstance(topo, TopologyArrays) else TopologyArrays.of(topo, a(view.pose0).dtype)
    return FusedView(a(view.pose0), a(view.betas0), a(view.transl0), a(view.t_scale), a(view.edge0),
                     a(view.K), a(view.affine), a(view.target), a(view.weight), a(view.area),
                     a(view.keypoints), a(view.faces), arrays, view.free_focal)


def loss_and_grad(lean: LeanHand, view: FusedView, params: dict[str, np.ndarray], weights: dict[str, float],
                  soft, keypoint_scale_px: float, slack: np.ndarray | None, use_slack: bool,
                  slack_tolerance_px: float | None, need_grad: bool, threads: int = 1) -> FusedOutput:
    """The refiner's loss of one group and, with ``need_grad``, its gradient (NumPy arrays in
    and out: small NumPy operations keep the GIL, each PyTorch op releases and retakes it,
    which stalls this thread whenever another one holds it, e.g. the texture's or the
    detector's, in the engine's stream).

    Args:
        lean: the side's skinning (its C kernels must be usable for these tensors).
        view: the group's fixed data, as :func:`numpy_view` gives it. params: the offsets
            (``pose``, ``shape``, ``vertices``, ``translation``, ``focal``), NumPy views.
        weights: ``silhouette``, ``keypoints``, ``vertex``, ``laplacian``, ``edge``, ``normal``,
            ``pose``, ``shape`` (0 switches a term off).
        soft: the :class:`~core.render.SoftRasterSettings` of the crop.
        keypoint_scale_px: the keypoint term's unit, crop px.
        slack, use_slack, slack_tolerance_px: with ``use_slack`` the keypoint term counts only
            the distance beyond ``slack`` (B, 21); None: take this evaluation's distances
            (clamped to the tolerance), as ``Refiner._evaluate`` does at the start.
        need_grad: also compute the gradient.
        threads: the soft rasterizer's threads.
    """
    m = lean.arrays()
    b = view.pose0.shape[0]
    dp, ds, du, dt, df = (params[k] for k in ("pose", "shape", "vertices", "translation", "focal"))
    pose = view.pose0 + dp
    if m.pose_mean is not None:
        pose += m.pose_mean
    betas = view.betas0 + ds
    transl = view.transl0 + dt * view.t_scale
    base, joints, work = _native.lbs_forward(pose, betas, transl, m.v_template, m.shapedirs_flat,
                                             m.j_template, m.j_shapedirs, m.posedirs, m.weights,
                                             m.parents_all)
    keypoints = np.concatenate([joints, base[:, m.tip_ids]], axis=1)[:, m.mp_order]
    e0 = view.edge0[:, None, None]
    verts = base + du * e0
    if view.free_focal:
        scale = np.exp(df)  # (B, 1): fx and fy scaled (columns 0, 1 of K)
        K_img = view.K * np.concatenate([scale, scale, np.ones_like(scale)], 1)[:, None, :]
    else:
        K_img = view.K
    Kc = np.ascontiguousarray(view.affine @ K_img)

    # silhouette (SoftRas, C kernels)
    uv = _native.project(verts, Kc)
    h, w = soft.image_size
    r2 = soft.cull_radius ** 2
    prod, _, workspace = _raster.forward(uv, verts, view.faces, h, w, soft.z_near, soft.sigma, r2, threads)
    # sil = 1 - prod; the term, the IoU and the backward's input in one pass
    loss, iou, g_sil = _native.silhouette_loss(prod, view.target, view.weight, view.area,
                                               weights["silhouette"], need_grad)

    # keypoints
    g_kuv = None
    if view.keypoints is not None and weights["keypoints"] > 0:
        kuv = _native.project(keypoints, Kc)
        d = kuv - view.keypoints
        kp_dist = np.sqrt((d * d).sum(-1))  # (B, 21)
        if use_slack and slack is None:
            slack = kp_dist if slack_tolerance_px is None else np.minimum(kp_dist, slack_tolerance_px)
        excess = np.maximum(kp_dist - slack, 0) if use_slack else kp_dist
        unit = weights["keypoints"] / (kp_dist.shape[1] * keypoint_scale_px ** 2)
        loss += unit * (excess * excess).sum(1)
        if need_grad:
            g_kuv = np.ascontiguousarray((2.0 * unit) * (excess / np.maximum(kp_dist, 1e-12))[..., None] * d)

    # regularizers
    wv, wl, we, wn = (weights[k] for k in ("vertex", "laplacian", "edge", "normal"))
    if wv or wl:
        t = view.topo
        vertex, lap, lu = _native.offset_losses(du, t.adj_ptr, t.adj_nbr, t.inv_deg)
        loss += wv * vertex + wl * lap
    gv_en = gb_en = None
    if we or wn:  # with need_grad the kernel gives the gradients in the same pass
        ones = np.ones(b, base.dtype)
        edge, normal, gv_en, gb_en = _native.edge_normal(
            verts, base, view.topo.faces, *((we * ones, wn * ones) if need_grad else ()))
        loss += we * edge + wn * normal
    if weights["pose"]:
        loss += weights["pose"] * (dp * dp).mean(1)
    if weights["shape"]:
        loss += weights["shape"] * (ds * ds).mean(1)
    if not need_grad:
        return FusedOutput(loss, iou, verts, base, keypoints, K_img, slack, None)

    # ---- backward
    g_uv = _raster.backward(uv, verts, view.faces, h, w, soft.z_near, soft.sigma, r2, g_sil,
                            threads, workspace)
    g_verts, g_focal = _native.project_backward(g_uv, uv, verts, Kc)
    g_base = g_verts
    if gv_en is not None:
        g_verts = g_verts + gv_en
        g_base = g_verts + gb_en
    g_du = g_verts * e0
    if wv or wl:
        ones = np.ones(b, du.dtype)
        g_du += _native.offset_grad(du, lu, t.adj_ptr, t.adj_nbr, t.inv_deg, wv * ones, wl * ones)
    nj = joints.shape[1]
    g_joints = np.zeros_like(joints)
    if g_kuv is not None:
        g_kp, g_kfocal = _native.project_backward(g_kuv, kuv, keypoints, Kc)
        g_focal = g_focal + g_kfocal
        g_kp21 = np.empty_like(g_kp)
        g_kp21[:, m.mp_order] = g_kp  # back to (joints, tips) order
        g_joints = np.ascontiguousarray(g_kp21[:, :nj])
        np.add.at(g_base, (slice(None), m.tip_ids), g_kp21[:, nj:])
    g_pose, g_betas, g_transl = _native.lbs_backward(pose, m.shapedirs_flat, m.j_shapedirs, m.posedirs,
                                                     m.weights, m.parents_all, work,
                                                     np.ascontiguousarray(g_base), g_joints)
    if weights["pose"]:
        g_pose += (2.0 * weights["pose"] / dp.shape[1]) * dp
    if weights["shape"]:
        g_betas += (2.0 * weights["shape"] / ds.shape[1]) * ds
    grads = {"pose": g_pose, "shape": g_betas, "vertices": g_du, "translation": g_transl * view.t_scale,
             "focal": g_focal[:, None] if view.free_focal else np.zeros_like(df)}
    return FusedOutput(loss, iou, verts, base, keypoints, K_img, slack, grads)
