"""A lean forward pass of the hand model for the refinement loop (same maths as smplx's ``lbs``).

The refiner evaluates ``M(p + dp, s + ds)`` and its gradient every iteration. smplx's generic
``lbs`` walks the kinematic chain one joint at a time, regresses the joints from all 1610
vertices and skins every vertex by a (4 x 4) @ (4 x 1) product, which is a few hundred small
ops in forward and backward. :class:`LeanHand` computes the same quantities with a handful:

* joints from shape directly (``J = J_regressor @ v_template + (J_regressor @ shapedirs) beta``,
  the regressor folded into the blend shapes once);
* the chain level by level (a hand has 4 levels: wrist, then 3 phalanges of 5 fingers at once);
* skinning as one (V x 16) @ (16 x 12) product and a (3 x 4) affine per vertex;
* pose-corrective blend shapes only when the model has any (the open hand's are all zero;
  MANO's are not, and are applied exactly as smplx does).

Outputs match :class:`core.model.HandModel` to float rounding (tests/test_refine.py checks).
Frames and units as the model's: metres, model frame plus translation.

On CPU tensors the forward and backward passes are one C call each
(:mod:`core.refine._native`, about 20x faster than the PyTorch ops); elsewhere, or with
``backend="eager"``, the PyTorch ops below run (they are also the kernels' test reference).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import Tensor

from core.model import HandModel
from core.model.layer import HandOutput
from core.refine import _native

__all__ = ["LeanHand"]


class LeanHand:
    """Precomputed skinning data of one :class:`HandModel`; call it like the model.

    Args:
        layer: the hand model (its smplx buffers are read once, not copied per call).
        backend: "auto" (the C kernels for CPU float tensors when they build, else PyTorch),
            "native" (the C kernels or an error) or "eager" (PyTorch ops).
    """

    def __init__(self, layer: HandModel, backend: str = "auto") -> None:
        if backend not in ("auto", "native", "eager"):
            raise ValueError(f"backend must be auto, native or eager, got {backend!r}")
        m = layer.mano
        self.layer = layer
        self.backend = backend
        self.v_template = m.v_template  # (V, 3)
        self.shapedirs = m.shapedirs  # (V, 3, S)
        num_v = self.v_template.shape[0]
        s = self.shapedirs.shape[-1]
        self.shapedirs_flat = self.shapedirs.reshape(num_v * 3, s).t().contiguous()  # (S, 3V)
        jreg = m.J_regressor  # (J, V)
        self.j_template = jreg @ self.v_template  # (J, 3)
        j_dirs = torch.einsum("jv,vks->sjk", jreg, self.shapedirs)  # (S, J, 3)
        self.j_shapedirs = j_dirs.reshape(s, -1).contiguous()  # (S, 3J)
        posedirs = m.posedirs  # (P, 3V)
        self.posedirs = posedirs.contiguous() if bool(posedirs.abs().max() > 0) else None
        self.pose_mean = m.pose_mean if bool(m.pose_mean.abs().max() > 0) else None
        self.weights = m.lbs_weights  # (V, J)
        parents = [int(p) for p in m.parents.tolist()]
        self.num_joints = len(parents)
        depth = [0] * len(parents)
        for j in range(1, len(parents)):
            depth[j] = depth[parents[j]] + 1
        dev = self.v_template.device
        # Level by level: the joints of each level and their parents' positions in the
        # concatenation of the previous levels.
        order: list[int] = [0]
        self.levels: list[tuple[Tensor, Tensor]] = []
        for level in range(1, max(depth) + 1):
            joints = [j for j in range(len(parents)) if depth[j] == level]
            par = [order.index(parents[j]) for j in joints]
            self.levels.append((torch.tensor(joints, device=dev), torch.tensor(par, device=dev)))
            order += joints
        inv = [0] * len(order)
        for pos, j in enumerate(order):
            inv[j] = pos
        self.unorder = torch.tensor(inv, device=dev)
        self.parents = torch.tensor(parents[1:], device=dev)
        self.parents_all = torch.tensor(parents, dtype=torch.int64, device=dev)
        self._chain_ok = all(p < j for j, p in enumerate(parents[1:], 1)) and parents[0] == -1
        self.tip_ids, self.mp_order = layer.tip_ids, layer.mp_order
        self.weights = self.weights.contiguous()
        self.v_template = self.v_template.contiguous()
        self.j_template = self.j_template.contiguous()
        self._arrays: SimpleNamespace | None = None

    def arrays(self) -> SimpleNamespace:
        """The skinning data as NumPy arrays (CPU, shared with the tensors), for the C kernels'
        NumPy callers (:mod:`core.refine.fused`): ``v_template``, ``shapedirs_flat``,
        ``j_template``, ``j_shapedirs``, ``posedirs`` (or None), ``weights``, ``parents_all``,
        ``pose_mean`` (or None), ``tip_ids``, ``mp_order``. Made on the first call."""
        if self._arrays is None:
            def a(t):
                return None if t is None else np.ascontiguousarray(torch.as_tensor(t).detach().cpu().numpy())

            self._arrays = SimpleNamespace(
                v_template=a(self.v_template), shapedirs_flat=a(self.shapedirs_flat),
                j_template=a(self.j_template), j_shapedirs=a(self.j_shapedirs), posedirs=a(self.posedirs),
                weights=a(self.weights), parents_all=a(self.parents_all), pose_mean=a(self.pose_mean),
                tip_ids=a(self.tip_ids).astype(np.int64), mp_order=a(self.mp_order).astype(np.int64))
        return self._arrays

    def uses_native(self, pose: Tensor) -> bool:
        """Whether a call with this pose tensor runs the C kernels."""
        if self.backend == "eager":
            return False
        ok = (self._chain_ok and self.num_joints <= _native.MAX_JOINTS
              and pose.dtype == self.v_template.dtype and _native.supported(pose, self.v_template))
        if self.backend == "native" and not ok:
            _native.LIBRARY.require()  # raises NativeUnavailableError where the build failed
            raise ValueError("the native skinning needs CPU tensors of the model's float dtype")
        return ok

    def __call__(self, pose: Tensor, betas: Tensor, transl: Tensor) -> HandOutput:
        """Pose (B, 48) axis-angle, betas (B, S), transl (B, 3) -> :class:`HandOutput`."""
        if self.uses_native(pose):
            if self.pose_mean is not None:
                pose = pose + self.pose_mean
            verts, joints = _NativeSkinning.apply(pose, betas, transl, self)
            keypoints = torch.cat([joints, verts[:, self.tip_ids]], dim=1)[:, self.mp_order]
            return HandOutput(vertices=verts, joints=joints, keypoints=keypoints)
        return self._eager(pose, betas, transl)

    def _eager(self, pose: Tensor, betas: Tensor, transl: Tensor) -> HandOutput:
        b = pose.shape[0]
        nj = self.num_joints
        v_shaped = self.v_template + (betas @ self.shapedirs_flat).view(b, -1, 3)  # (B, V, 3)
        joints = self.j_template + (betas @ self.j_shapedirs).view(b, nj, 3)  # (B, J, 3)
        if self.pose_mean is not None:
            pose = pose + self.pose_mean
        rot = _rodrigues(pose.reshape(-1, 3)).view(b, nj, 3, 3)
        if self.posedirs is not None:
            eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
            feat = (rot[:, 1:] - eye).reshape(b, -1)
            v_shaped = v_shaped + (feat @ self.posedirs).view(b, -1, 3)
        rel = torch.cat([joints[:, :1], joints[:, 1:] - joints[:, self.parents]], dim=1)
        # Compose (R, t) along the chain, one level at a time.
        rots, trans = [rot[:, :1]], [rel[:, :1]]
        all_r, all_t = rots[0], trans[0]
        for idx, par in self.levels:
            pr, pt = all_r[:, par], all_t[:, par]
            r = pr @ rot[:, idx]
            t = (pr @ rel[:, idx, :, None])[..., 0] + pt
            all_r = torch.cat([all_r, r], dim=1)
            all_t = torch.cat([all_t, t], dim=1)
        g_r, g_t = all_r[:, self.unorder], all_t[:, self.unorder]  # (B, J, 3, 3), (B, J, 3)
        posed_joints = g_t
        t_rel = g_t - (g_r @ joints[..., None])[..., 0]  # skinning transform: x -> R x + t_rel
        a = torch.cat([g_r, t_rel[..., None]], dim=-1).reshape(b, nj, 12)  # (B, J, 12)
        per_v = (self.weights @ a).view(b, -1, 3, 4)  # (B, V, 3, 4)
        verts = (per_v[..., :3] * v_shaped[:, :, None, :]).sum(-1) + per_v[..., 3]
        verts = verts + transl[:, None]
        posed_joints = posed_joints + transl[:, None]
        keypoints = torch.cat([posed_joints, verts[:, self.tip_ids]], dim=1)[:, self.mp_order]
        return HandOutput(vertices=verts, joints=posed_joints, keypoints=keypoints)


class _NativeSkinning(torch.autograd.Function):
    """(pose with mean, betas, transl) -> (vertices, joints) by the C kernels, and its gradient."""

    @staticmethod
    def forward(ctx, pose: Tensor, betas: Tensor, transl: Tensor,  # type: ignore[override]
                hand: "LeanHand") -> tuple[Tensor, Tensor]:
        pose, betas, transl = (t.detach().contiguous() for t in (pose, betas, transl))
        verts, joints, work = _native.lbs_forward(
            pose, betas, transl, hand.v_template, hand.shapedirs_flat, hand.j_template,
            hand.j_shapedirs, hand.posedirs, hand.weights, hand.parents_all)
        ctx.hand, ctx.pose, ctx.work = hand, pose, work
        return verts, joints

    @staticmethod
    def backward(ctx, g_verts: Tensor | None, g_joints: Tensor | None):  # type: ignore[override]
        hand, pose = ctx.hand, ctx.pose
        b, nj, nv = pose.shape[0], hand.num_joints, hand.weights.shape[0]
        gv = torch.zeros(b, nv, 3, dtype=pose.dtype) if g_verts is None else g_verts.contiguous()
        gj = torch.zeros(b, nj, 3, dtype=pose.dtype) if g_joints is None else g_joints.contiguous()
        g_pose, g_betas, g_transl = _native.lbs_backward(
            pose, hand.shapedirs_flat, hand.j_shapedirs, hand.posedirs, hand.weights,
            hand.parents_all, ctx.work, gv, gj)
        return g_pose, g_betas, g_transl, None


def _rodrigues(v: Tensor) -> Tensor:
    """(N, 3) axis-angle -> (N, 3, 3) rotations (smplx's ``batch_rodrigues``, same epsilon)."""
    angle = torch.norm(v + 1e-8, dim=1, keepdim=True)  # (N, 1)
    d = v / angle
    cos = torch.cos(angle)[:, :, None]
    sin = torch.sin(angle)[:, :, None]
    rx, ry, rz = d.unbind(1)
    zero = torch.zeros_like(rx)
    k = torch.stack([zero, -rz, ry, rz, zero, -rx, -ry, rx, zero], dim=1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + sin * k + (1 - cos) * (k @ k)
