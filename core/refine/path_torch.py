"""Execution path 3, the general one: the optimization loop on PyTorch tensors, each evaluation
by autograd (every term: several views, depth, the penetration of two hands; any device), or by
the fused loss and gradient (:mod:`core.refine.path_fused`) where that applies."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from core.fit import HandFit
from core.model.layer import HandOutput
from core.refine.common import (
    _check_image,
    _crop_arrays,
    _free_focal,
    _Group,
    _layout_spec,
    _result,
    _translation_scale,
    _View,
    wrist_weight,
)
from core.refine.contracts import RefineResult, RefineSettings, RefineTarget, RefineView
from core.refine.crop import as_tensor, crop_box
from core.refine.mesh import edge_normal_losses, front_faces, offset_losses, plausibility
from core.refine.optim import Adam
from core.refine.path_fused import FusedPath
from core.refine.penetration import penetration_loss
from core.render import (
    RasterSettings,
    project_points,
    rasterize,
    rasterize_silhouette,
    render_depth_differentiable,
    smooth_l1_depth_loss,
)


@dataclass
class _Eval:
    """One evaluation of a group: per-hand losses and the detached outputs."""

    loss: Tensor  # (B,) with graph
    sil_iou: Tensor  # (B,)
    verts: Tensor  # (B, V, 3)
    base: Tensor  # (B, V, 3) parametric mesh M
    keypoints: Tensor  # (B, 21, 3)
    K: Tensor  # (B, 3, 3) primary image intrinsics in use
    terms: dict[str, Tensor]  # (B,) each weighted term (diagnostics)


class TorchPath(FusedPath):
    """Groups (hands of one side, batched), their evaluation, and the loop with its kept iterate."""

    def _groups(self, fits: Sequence[HandFit], targets: Sequence[RefineTarget],
                st: RefineSettings) -> list[_Group]:
        dev = self.device
        groups = []
        for side, idx in self._by_side(fits).items():
            layer, topo = self.layers[side], self.topology[side]
            pose0 = as_tensor(np.stack([fits[i].pose for i in idx]), dev)
            betas0 = as_tensor(np.stack([fits[i].betas for i in idx]), dev)
            transl0 = as_tensor(np.stack([fits[i].transl for i in idx]), dev)
            # The fit's keypoints frame the crops (no model pass needed before the first step).
            kp0_np = np.stack([fits[i].keypoints_3d for i in idx]).astype(np.float32)
            kp0 = as_tensor(kp0_np, dev)
            depth0 = kp0[:, 0, 2].clamp_min(1e-3)
            edge0 = self._edge_unit[side].expand(len(idx))
            Ks = [self._image_K(targets[i]) for i in idx]
            views = [self._primary_view(kp0_np, Ks, [targets[i] for i in idx], st)]
            for k in range(len(targets[idx[0]].views)):
                views.append(self._extra_view(kp0, [targets[i].views[k] for i in idx], st))
            depth_target = None
            if any(targets[i].depth is not None for i in idx):
                maps = []
                for j, i in enumerate(idx):
                    d = targets[i].depth
                    box = views[0].boxes[j]
                    maps.append(np.zeros((box.size, box.size), np.float32) if d is None
                                else box.resample_depth(_check_image(d, "depth")))
                depth_target = as_tensor(np.stack(maps), dev)
            g = _Group(side, idx, layer, topo, pose0, betas0, transl0, depth0, edge0, views,
                       depth_target, _free_focal(st, [targets[i] for i in idx]))
            g.t_scale = self._translation_scale(g, st)
            groups.append(g)
        return groups

    def _primary_view(self, points0: np.ndarray, Ks: list[np.ndarray], targets: list[RefineTarget],
                      st: RefineSettings) -> _View:
        dev = self.device
        boxes, affine, tgt, wts, kps = _crop_arrays(points0, np.stack(Ks), targets, st)
        return _View(affine=as_tensor(affine, dev), K=as_tensor(np.stack(Ks), dev), R=None, t=None,
                     target=as_tensor(tgt, dev), weight=as_tensor(wts, dev), keypoints=as_tensor(kps, dev),
                     boxes=boxes)

    def _extra_view(self, points0: Tensor, views: list[RefineView], st: RefineSettings) -> _View:
        dev = self.device
        K = as_tensor(np.stack([np.asarray(v.K, np.float32) for v in views]), dev)
        R = as_tensor(np.stack([np.asarray(v.R, np.float32) for v in views]), dev)
        t = as_tensor(np.stack([np.asarray(v.t, np.float32).reshape(3) for v in views]), dev)
        with torch.no_grad():
            uv = project_points(points0 @ R.transpose(1, 2) + t[:, None], K).cpu().numpy()
        boxes, tgt, wts, kps = [], [], [], []
        has_kp = all(v.keypoints_2d is not None for v in views)
        for j, v in enumerate(views):
            pts = uv[j] if v.keypoints_2d is None else np.concatenate([uv[j], v.keypoints_2d])
            mask = _check_image(v.mask, "view mask")
            box = crop_box(pts, st.image_size, st.crop_margin, max_side=2 * max(mask.shape))
            boxes.append(box)
            tgt.append(box.resample_mask(mask))
            if has_kp and st.ignore_beyond_wrist:
                wts.append(wrist_weight(box, np.asarray(v.keypoints_2d, np.float64)))
            else:
                wts.append(np.ones((box.size, box.size), np.float32))
            if has_kp:
                kps.append(box.to_crop(v.keypoints_2d))
        return _View(
            affine=as_tensor(np.stack([b.affine() for b in boxes]), dev), K=K, R=R, t=t,
            target=as_tensor(np.stack(tgt), dev), weight=as_tensor(np.stack(wts), dev),
            keypoints=as_tensor(np.stack(kps), dev) if has_kp else None, boxes=boxes,
        )

    def _layout(self, g: _Group, st: RefineSettings) -> list[tuple[Tensor, float, bool]]:
        """Lay out the group's offsets in the flat parameter vector; returns (zeros, lr, free) each.

        Offsets (all zero at the start): pose (B, 48) radians, shape (B, S), vertices (B, V, 3)
        in mean edge lengths, translation (B, 3) crop pixels, focal (B, 1) log focal scale.
        """
        spec = _layout_spec(g.pose0.shape[0], g.betas0.shape[1], g.topo.num_vertices, g.free_focal, st)
        g.layout = [(name, shape, math.prod(shape)) for name, shape, _, _ in spec]
        return [(torch.zeros(math.prod(shape)), lr, free) for _, shape, lr, free in spec]

    @staticmethod
    def _bind(groups: list[_Group], theta: Tensor) -> None:
        """Point every group's ``params`` at its slices of the flat offsets ``theta``."""
        offset = 0
        for g in groups:
            for name, shape, n in g.layout:
                g.params[name] = theta[offset:offset + n].view(shape)
                offset += n

    def _mesh(self, g: _Group, st: RefineSettings) -> tuple[HandOutput, Tensor, Tensor, Tensor]:
        """The model's output, the parametric mesh M, the refined mesh H (B, V, 3) and the
        primary camera's intrinsics (B, 3, 3), from the group's current offsets."""
        p = g.params
        pose = g.pose0 + p["pose"]
        betas = g.betas0 + p["shape"]
        transl = g.transl0 + p["translation"] * g.t_scale
        out = self._lean[g.side](pose, betas, transl)
        base = out.vertices
        verts = base + p["vertices"] * g.edge0[:, None, None]
        if g.free_focal:
            focal = torch.exp(p["focal"])  # (B, 1): fx and fy scaled (columns 0, 1 of K)
            scale = torch.cat([focal, focal, torch.ones_like(focal)], dim=1)  # (B, 3)
            K_img = g.views[0].K * scale[:, None, :]
        else:
            K_img = g.views[0].K
        return out, base, verts, K_img

    def _evaluate(self, g: _Group, st: RefineSettings, with_depth: bool) -> _Eval:
        p = g.params
        out, base, verts, K_img = self._mesh(g, st)
        faces = g.topo.faces
        soft = st.soft
        sil_terms, ious = [], None
        kp_terms = []
        for k, view in enumerate(g.views):
            Kv = K_img if k == 0 else view.K
            Kc = view.affine @ Kv
            v = verts if view.R is None else verts @ view.R.transpose(1, 2) + view.t[:, None]
            if view.faces is None:  # the start's front faces, and those near grazing
                view.faces = front_faces(v, faces) if st.cull_backfaces else faces
            sil = rasterize_silhouette(v, view.faces, Kc, soft)
            w = view.weight
            sil_terms.append(((sil - view.target).pow(2) * w).flatten(1).sum(1) / view.area)
            if k == 0:
                with torch.no_grad():
                    a, t = (sil > 0.5) & (w > 0), (view.target > 0.5) & (w > 0)
                    inter = (a & t).flatten(1).sum(1).float()
                    union = (a | t).flatten(1).sum(1).float()
                    ious = torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))
            if view.keypoints is not None and st.w_keypoints > 0:
                kp3 = out.keypoints if view.R is None else out.keypoints @ view.R.transpose(1, 2) + view.t[:, None]
                dist = (project_points(kp3, Kc) - view.keypoints).norm(dim=-1)  # (B, 21) crop px
                if st.keypoint_slack:
                    if view.slack is None:  # the fit's own distances, taken at the first evaluation
                        view.slack = dist.detach()
                        if st.keypoint_tolerance_px is not None:
                            view.slack = view.slack.clamp(max=st.keypoint_tolerance_px)
                    dist = torch.relu(dist - view.slack)
                kp_terms.append(dist.pow(2).mean(1) / st.keypoint_scale_px ** 2)
        terms = {"silhouette": st.w_silhouette * torch.stack(sil_terms).mean(0)}  # Eq. 8
        if kp_terms:
            terms["keypoints"] = st.w_keypoints * torch.stack(kp_terms).mean(0)
        if st.optimize_vertices:
            if st.w_vertex or st.w_laplacian:  # offsets in mean edge lengths
                vertex, lap = offset_losses(p["vertices"], g.topo)
                terms["vertex"] = st.w_vertex * vertex
                terms["laplacian"] = st.w_laplacian * lap
            if st.w_edge or st.w_normal:
                edge, normal = edge_normal_losses(verts, base, g.topo)
                if st.w_edge:
                    terms["edge"] = st.w_edge * edge
                if st.w_normal:
                    terms["normal"] = st.w_normal * normal
        if st.optimize_pose and st.w_pose:
            terms["pose"] = st.w_pose * p["pose"].pow(2).mean(1)
        if st.optimize_shape and st.w_shape:
            terms["shape"] = st.w_shape * p["shape"].pow(2).mean(1)
        if with_depth and g.depth_target is not None and st.w_depth:
            terms["depth"] = st.w_depth * self._depth_term(g, verts, g.views[0].affine @ K_img, st)
        loss = torch.stack(list(terms.values())).sum(0)
        return _Eval(loss, ious, verts, base, out.keypoints, K_img, terms)

    @staticmethod
    def _translation_scale(g: _Group, st: RefineSettings) -> Tensor:
        """(B, 3) metres per crop pixel of the translation offsets (primary view): see
        :func:`_translation_scale`."""
        return _translation_scale(g.views[0].affine, g.views[0].K, g.depth0, st)

    def _depth_term(self, g: _Group, verts: Tensor, Kc: Tensor, st: RefineSettings) -> Tensor:
        """(B,) smooth-L1 of rendered vs measured depth, in mean edge lengths (paper 003 Eq. 7)."""
        size = (st.image_size, st.image_size)
        with torch.no_grad():
            frags = rasterize(verts.detach(), g.topo.faces, Kc.detach(), RasterSettings(image_size=size))
        depth = render_depth_differentiable(verts, g.topo.faces, Kc, frags)
        unit = g.edge0[:, None, None]
        valid = (frags.pix_to_face >= 0) & (g.views[0].weight > 0)
        terms = [smooth_l1_depth_loss(depth[j:j + 1] / unit[j], g.depth_target[j:j + 1] / unit[j],
                                      valid[j:j + 1], beta=1.0) for j in range(depth.shape[0])]
        return torch.stack(terms)

    def _optimize(self, groups: list[_Group], n_iter: int, st: RefineSettings,
                  n_hands: int) -> list[RefineResult]:
        # Every offset of every hand lives in one flat vector, stepped by one Adam update with
        # per-entry step sizes (frozen offsets: step 0): a handful of ops per iteration.
        parts = [p for g in groups for p in self._layout(g, st)]
        dev = self.device
        theta = torch.cat([z for z, _, _ in parts]).to(dev).requires_grad_(True)
        lr = torch.cat([torch.full_like(z, lr if free else 0.0) for z, lr, free in parts]).to(dev)
        adam = Adam(theta, lr) if n_iter > 0 and bool((lr > 0).any()) else None
        pen_pairs = self._pen_pairs(groups) if st.w_penetration > 0 else []
        fused = self._fusable(groups, st, theta, pen_pairs)
        best: list[dict[str, Tensor] | None] = [None] * len(groups)
        iou_before: list[Tensor | None] = [None] * len(groups)
        for it in range(n_iter + 1):
            final = it == n_iter or adam is None
            self._bind(groups, theta)
            if fused:  # the hand-written loss and gradient (core.refine.fused)
                outs = evals = [self._evaluate_fused(g, st, need_grad=not final) for g in groups]
                losses, ious = [o.loss for o in outs], [o.iou for o in outs]
            else:
                with torch.set_grad_enabled(not final):
                    evals = [self._evaluate(g, st, with_depth=True) for g in groups]
                    losses, ious = [e.loss for e in evals], [e.sil_iou for e in evals]
                    if pen_pairs:
                        losses = self._add_penetration(groups, evals, losses, pen_pairs, st)
            for gi, (iou, loss) in enumerate(zip(ious, losses)):
                if it == 0:
                    iou_before[gi] = iou
                e = evals[gi]
                meshes = {"verts": e.verts, "base": e.base, "keypoints": e.keypoints, "K": e.K}
                self._keep(best, gi, groups[gi], iou, loss.detach(), it, st.keep_best, meshes)
            if final:
                break
            if fused:
                grad = torch.cat([o.grads[name].reshape(-1) for g, o in zip(groups, outs)
                                  for name, _, _ in g.layout])
            else:
                grad, = torch.autograd.grad(torch.stack([loss.sum() for loss in losses]).sum(), theta)
            adam.step(grad)
        return self._results(groups, best, iou_before, n_iter, st, n_hands)

    def _results(self, groups: list[_Group], best: list[dict[str, Tensor] | None],
                 iou_before: list[Tensor | None], n_iter: int, st: RefineSettings,
                 n_hands: int) -> list[RefineResult]:
        """The kept iterates (their offsets and the meshes of their evaluation) as results."""
        results: list[RefineResult | None] = [None] * n_hands
        with torch.no_grad():
            for gi, g in enumerate(groups):
                b = best[gi]
                offset = 0
                for name, shape, n in g.layout:  # (B, P) rows, one hand each
                    per_hand = n // shape[0]
                    g.params[name] = b["theta"][:, offset:offset + per_hand].reshape(shape)
                    offset += per_hand
                verts, base = b["verts"], b["base"]
                edge_err, normal_err = plausibility(verts, base, g.topo)
                pose = (g.pose0 + g.params["pose"]).cpu().numpy()
                betas = (g.betas0 + g.params["shape"]).cpu().numpy()
                transl = (g.transl0 + g.params["translation"] * g.t_scale).cpu().numpy()
                crop_kp = g.views[0].keypoints.cpu().numpy()
                n = {k: b[k].cpu().numpy() for k in ("keypoints", "verts", "base", "K", "iou", "iteration")}
                for j, i in enumerate(g.index):
                    results[i] = _result(g.side, g.views[0].boxes[j], crop_kp[j], pose[j], betas[j], transl[j],
                                         n["verts"][j], n["base"][j], n["keypoints"][j], n["K"][j],
                                         float(iou_before[gi][j]), float(n["iou"][j]), n_iter,
                                         int(n["iteration"][j]), float(edge_err[j]), float(normal_err[j]))
        return [r for r in results if r is not None]

    def _pen_pairs(self, groups: list[_Group]) -> list[tuple[int, int, int, int]]:
        """(group a, hand a, group b, hand b) for every pair of hands of the call."""
        hands = [(gi, j) for gi, g in enumerate(groups) for j in range(len(g.index))]
        return [(*hands[x], *hands[y]) for x in range(len(hands)) for y in range(x + 1, len(hands))]

    def _add_penetration(self, groups, evals, losses, pairs, st) -> list[Tensor]:
        losses = list(losses)
        for ga, ja, gb, jb in pairs:
            unit = 0.5 * (groups[ga].edge0[ja] + groups[gb].edge0[jb])
            pen = penetration_loss(evals[ga].verts[ja], groups[ga].topo.faces,
                                   evals[gb].verts[jb], groups[gb].topo.faces) / unit
            # Each hand of the pair carries half of the pair's term.
            for gi, j in ((ga, ja), (gb, jb)):
                add = torch.zeros_like(losses[gi])
                add = add.index_put((torch.tensor([j], device=add.device),), 0.5 * st.w_penetration * pen.reshape(1))
                losses[gi] = losses[gi] + add
        return losses

    @staticmethod
    def _keep(best: list[dict[str, Tensor] | None], gi: int, g: _Group, iou: Tensor, loss: Tensor,
              it: int, keep_best: bool, meshes: dict[str, Tensor]) -> None:
        """Remember, per hand, the offsets with the lowest loss (or the last ones) and the
        meshes they gave (``verts``, ``base``, ``keypoints``, ``K``: the evaluation's outputs)."""
        b = g.pose0.shape[0]
        theta = torch.cat([g.params[name].detach().reshape(b, -1) for name, _, _ in g.layout], 1)
        snap = {"loss": loss, "iteration": torch.full_like(loss, it), "iou": iou, "theta": theta,
                **{k: v.detach() for k, v in meshes.items()}}
        if best[gi] is None:
            best[gi] = {k: v.clone() for k, v in snap.items()}
            return
        cur = best[gi]
        better = snap["loss"] < cur["loss"] if keep_best else torch.ones_like(loss, dtype=torch.bool)
        for k, v in snap.items():
            cur[k] = torch.where(better.reshape(-1, *([1] * (v.ndim - 1))), v, cur[k])
