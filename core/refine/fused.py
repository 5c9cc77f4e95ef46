"""The refinement's loss and its gradient written out by hand, for the common live case.

:meth:`core.refine.Refiner._evaluate` builds the loss of paper 001 Eq. 5 (plus HandTwin's
anchors) from PyTorch ops and lets autograd differentiate it: general (extra views, depth,
two hands, CUDA), but each of its ~100 small ops and ~70 backward nodes costs microseconds
of dispatch, more than the arithmetic. For one camera, no depth and no second hand on the CPU
(live tracking), :func:`loss_and_grad` computes the same loss and the same gradient with the
C kernels (skinning, soft silhouette, regularizers) and a few dozen tensor ops with no graph.
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

import torch
from torch import Tensor

from core.refine import _native
from core.refine.lbs import LeanHand
from core.refine.mesh import MeshTopology
from core.render import _native as _raster

__all__ = ["FusedView", "FusedOutput", "loss_and_grad"]


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
        topo: the mesh topology (regularizers).
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
    topo: MeshTopology
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


@torch.no_grad()
def loss_and_grad(lean: LeanHand, view: FusedView, params: dict[str, Tensor], weights: dict[str, float],
                  soft, keypoint_scale_px: float, slack: Tensor | None, use_slack: bool,
                  slack_tolerance_px: float | None, need_grad: bool) -> FusedOutput:
    """The refiner's loss of one group and, with ``need_grad``, its gradient.

    Args:
        lean: the side's skinning (its C kernels must be usable for these tensors).
        view: the group's fixed data. params: the offsets (``pose``, ``shape``, ``vertices``,
            ``translation``, ``focal``).
        weights: ``silhouette``, ``keypoints``, ``vertex``, ``laplacian``, ``edge``, ``normal``,
            ``pose``, ``shape`` (0 switches a term off).
        soft: the :class:`~core.render.SoftRasterSettings` of the crop.
        keypoint_scale_px: the keypoint term's unit, crop px.
        slack, use_slack, slack_tolerance_px: with ``use_slack`` the keypoint term counts only
            the distance beyond ``slack`` (B, 21); None: take this evaluation's distances
            (clamped to the tolerance), as ``Refiner._evaluate`` does at the start.
        need_grad: also compute the gradient.
    """
    b = view.pose0.shape[0]
    dp, ds, du, dt, df = (params[k] for k in ("pose", "shape", "vertices", "translation", "focal"))
    pose = view.pose0 + dp
    if lean.pose_mean is not None:
        pose = pose + lean.pose_mean
    pose, betas = pose.contiguous(), (view.betas0 + ds).contiguous()
    transl = (view.transl0 + dt * view.t_scale).contiguous()
    base, joints, work = _native.lbs_forward(pose, betas, transl, lean.v_template, lean.shapedirs_flat,
                                             lean.j_template, lean.j_shapedirs, lean.posedirs,
                                             lean.weights, lean.parents_all)
    tips = base[:, lean.tip_ids]
    keypoints = torch.cat([joints, tips], dim=1)[:, lean.mp_order]
    e0 = view.edge0[:, None, None]
    verts = base + du * e0
    scale = torch.exp(df) if view.free_focal else None  # (B, 1)
    K_img = view.K * torch.cat([scale, scale, torch.ones_like(scale)], 1)[:, None, :] if scale is not None else view.K
    Kc = view.affine @ K_img

    # silhouette (SoftRas, C kernels)
    Kc = Kc.contiguous()
    uv = _native.project(verts, Kc)
    h, w = soft.image_size
    r2 = soft.cull_radius ** 2
    prod, _, workspace = _raster.forward(uv, verts, view.faces, h, w, soft.z_near, soft.sigma, r2,
                                         torch.get_num_threads())
    # sil = 1 - prod; the term, the IoU and the backward's input in one pass
    loss, iou, g_sil = _native.silhouette_loss(prod, view.target, view.weight, view.area,
                                               weights["silhouette"], need_grad)

    # keypoints
    g_kuv = None
    if view.keypoints is not None and weights["keypoints"] > 0:
        keypoints = keypoints.contiguous()
        kuv = _native.project(keypoints, Kc)
        d = kuv - view.keypoints
        kp_dist = d.norm(dim=-1)  # (B, 21)
        if use_slack and slack is None:
            slack = kp_dist if slack_tolerance_px is None else kp_dist.clamp(max=slack_tolerance_px)
        excess = torch.relu(kp_dist - slack) if use_slack else kp_dist
        unit = weights["keypoints"] / (kp_dist.shape[1] * keypoint_scale_px ** 2)
        loss = loss + unit * (excess * excess).sum(1)
        if need_grad:
            g_kuv = (2.0 * unit) * (excess / kp_dist.clamp_min(1e-12))[..., None] * d

    # regularizers
    wv, wl, we, wn = (weights[k] for k in ("vertex", "laplacian", "edge", "normal"))
    if wv or wl:
        inv_deg = 1.0 / view.topo.degree.to(du.dtype)
        vertex, lap, lu = _native.offset_losses(du.contiguous(), *view.topo._adjacency, inv_deg)
        loss = loss + wv * vertex + wl * lap
    gv_en = gb_en = None
    if we or wn:  # with need_grad the kernel gives the gradients in the same pass
        ones = torch.ones(b, dtype=base.dtype)
        edge, normal, gv_en, gb_en = _native.edge_normal(
            verts.contiguous(), base, view.topo.faces, *((we * ones, wn * ones) if need_grad else ()))
        loss = loss + we * edge + wn * normal
    if weights["pose"]:
        loss = loss + weights["pose"] * (dp * dp).mean(1)
    if weights["shape"]:
        loss = loss + weights["shape"] * (ds * ds).mean(1)
    if not need_grad:
        return FusedOutput(loss, iou, verts, base, keypoints, K_img, slack, None)

    # ---- backward
    g_uv = _raster.backward(uv, verts, view.faces, h, w, soft.z_near, soft.sigma, r2, g_sil,
                            torch.get_num_threads(), workspace)
    g_verts, g_focal = _native.project_backward(g_uv.contiguous(), uv, verts, Kc)
    g_base = g_verts
    if gv_en is not None:
        g_verts = g_verts + gv_en
        g_base = g_verts + gb_en
    g_du = g_verts * e0
    if wv or wl:
        ones = torch.ones(b, dtype=du.dtype)
        g_du = g_du + _native.offset_grad(du.contiguous(), lu, *view.topo._adjacency, inv_deg,
                                          wv * ones, wl * ones)
    g_joints = torch.zeros_like(joints)
    if g_kuv is not None:
        g_kp, g_kfocal = _native.project_backward(g_kuv.contiguous(), kuv, keypoints, Kc)
        g_focal = g_focal + g_kfocal
        g_kp21 = torch.zeros(b, 21, 3, dtype=g_kp.dtype)
        g_kp21[:, lean.mp_order] = g_kp  # back to (joints, tips) order
        nj = joints.shape[1]
        g_joints = g_kp21[:, :nj].contiguous()
        g_base.index_add_(1, lean.tip_ids, g_kp21[:, nj:])
    g_pose, g_betas, g_transl = _native.lbs_backward(pose, lean.shapedirs_flat, lean.j_shapedirs,
                                                     lean.posedirs, lean.weights, lean.parents_all,
                                                     work, g_base.contiguous(), g_joints)
    if weights["pose"]:
        g_pose = g_pose + (2.0 * weights["pose"] / dp.shape[1]) * dp
    if weights["shape"]:
        g_betas = g_betas + (2.0 * weights["shape"] / ds.shape[1]) * ds
    grads = {"pose": g_pose, "shape": g_betas, "vertices": g_du, "translation": g_transl * view.t_scale,
             "focal": g_focal[:, None] if view.free_focal else torch.zeros_like(df)}
    return FusedOutput(loss, iou, verts, base, keypoints, K_img, slack, grads)
