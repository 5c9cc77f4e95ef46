"""Execution path 1, the live one: NumPy arrays and one C call per side for the whole loop
(:meth:`core.refine._fused_native.NativeEvaluation.run`), no PyTorch tensor at all."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch

from core.fit import HandFit
from core.refine import _fused_native
from core.refine import _native as refine_kernels
from core.refine.common import RefinerCore, _crop_arrays, _free_focal, _layout_spec, _result, _translation_scale
from core.refine.contracts import RefineResult, RefineSettings, RefineTarget


@functools.lru_cache(maxsize=4)
def _pose_probe(dtype: torch.dtype) -> torch.Tensor:
    """A (1, 48) pose of ``dtype`` to ask :meth:`~core.refine.lbs.LeanHand.uses_native` with (made
    once: a fresh tensor per frame cost more than the question)."""
    return torch.zeros(1, 48, dtype=dtype)


@functools.lru_cache(maxsize=16)
def _step_sizes(spec: tuple) -> np.ndarray:
    """The flat float32 step sizes of a :func:`~core.refine.common._layout_spec` (0 where frozen),
    made once per layout (read-only: the C loop only reads them)."""
    lr = np.concatenate([np.full(math.prod(shape), step if free else 0.0, np.float32)
                         for _, shape, step, free in spec])
    lr.flags.writeable = False
    return lr


class NativePath(RefinerCore):
    """The whole refinement of the live case in C."""

    def _refine_native(self, fits: Sequence[HandFit], targets: Sequence[RefineTarget], n_iter: int,
                       st: RefineSettings) -> list[RefineResult] | None:
        """:meth:`refine` for the live case, on NumPy arrays and one C call per side, or None
        where it does not apply (the general path then runs).

        It applies where :meth:`_fusable` would hold: the CPU and the C kernels, one camera, no
        depth. It has no penetration term: :meth:`refine` checks that the hands it refined do not
        interpenetrate, and otherwise runs the general path. It computes what ``_groups``, ``_optimize`` and
        ``_results`` compute, with the same helpers, but without PyTorch tensors (at live rates
        their dispatch cost more than the setup's arithmetic), and runs the whole loop (the
        evaluations, Adam, the kept iterate) in :meth:`core.refine._fused_native.NativeEvaluation.run`.
        Adam is elementwise, so each side's loop is independent of the other's.
        """
        from core.refine.fused import FusedView
        from core.render import _native as raster_native

        if (self.device.type != "cpu" or st.saturate_interior or st.raster_backend not in ("auto", "native")
                or any(t.views for t in targets) or (st.w_depth and any(t.depth is not None for t in targets))
                or raster_native.library() is None
                or not _fused_native.available(np.float32)):
            return None
        by_side = self._by_side(fits)
        probe = _pose_probe(torch.get_default_dtype())
        if not all(self._lean[side].uses_native(probe) for side in by_side):
            return None
        f32 = np.float32
        weights = self._fused_weights(st)
        results: list[RefineResult | None] = [None] * len(fits)
        for side, idx in by_side.items():
            lean, topo = self._lean[side], self._topology_numpy(side)
            m = lean.arrays()
            b, s_dim, v_dim = len(idx), m.shapedirs_flat.shape[0], m.v_template.shape[0]
            pose0, betas0, transl0, kp0 = (np.ascontiguousarray(np.stack([getattr(fits[i], k) for i in idx]), f32)
                                           for k in ("pose", "betas", "transl", "keypoints_3d"))
            depth0 = np.maximum(kp0[:, 0, 2], f32(1e-3))
            K = np.ascontiguousarray(np.stack([self._image_K(targets[i]) for i in idx]), f32)
            boxes, affine, tgt, wts, kps = _crop_arrays(kp0, K, [targets[i] for i in idx], st)
            area = np.maximum((tgt * wts).reshape(b, -1).sum(1), f32(1.0))
            t_scale = _translation_scale(affine, K, depth0, st).astype(f32)
            free_focal = _free_focal(st, [targets[i] for i in idx])
            view = FusedView(pose0, betas0, transl0, t_scale, np.full(b, self._edge_unit_np[side], f32), K, affine,
                             tgt, wts, area, kps, self._start_faces(side, pose0, betas0, transl0, st), topo,
                             free_focal)
            spec = _layout_spec(b, s_dim, v_dim, free_focal, st)
            lr = _step_sizes(tuple(spec))
            theta = np.zeros(lr.size, f32)
            best = _fused_native.NativeEvaluation(lean, view, st.soft, st.keypoint_scale_px).run(
                theta, lr, n_iter, st.keep_best, weights, None, st.keypoint_slack, st.keypoint_tolerance_px,
                torch.get_num_threads())
            edge_err, normal_err = refine_kernels.plausibility(best["verts"], best["base"], topo.faces)
            offsets, col = {}, 0
            for name, shape, _, _ in spec:  # each hand's row of every block
                width = math.prod(shape[1:])
                offsets[name] = best["theta"][:, col:col + width]
                col += width
            transl = transl0 + offsets["translation"] * t_scale
            for j, i in enumerate(idx):
                results[i] = _result(side, boxes[j], kps[j], pose0[j] + offsets["pose"][j],
                                     betas0[j] + offsets["shape"][j], transl[j], best["verts"][j],
                                     best["base"][j], best["keypoints"][j], best["K"][j],
                                     float(best["iou_before"][j]), float(best["iou"][j]), n_iter,
                                     int(best["iteration"][j]), float(edge_err[j]), float(normal_err[j]))
        return results  # type: ignore[return-value]

