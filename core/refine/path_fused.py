"""Execution path 2, the fused evaluation: one step's loss and gradient written by hand
(:func:`core.refine.fused.loss_and_grad`, or its C twin :mod:`core.refine._fused_native` in one
call), used by the PyTorch loop (:mod:`core.refine.path_torch`) in place of autograd where it
applies: the CPU and the C kernels, one camera, no depth, no second hand to keep apart."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from core.refine import _fused_native
from core.refine.common import RefinerCore, _Group
from core.refine.contracts import RefineSettings


class FusedPath(RefinerCore):
    """The fused loss and gradient of one group (hands of one side) for the PyTorch loop."""

    def _fusable(self, groups: list[_Group], st: RefineSettings, theta: Tensor,
                 pen_pairs: list) -> bool:
        """Whether this call can use the hand-written loss and gradient (:mod:`core.refine.fused`):
        one camera, no depth, no second hand to keep apart, the C kernels for these tensors."""
        from core.refine import _native as refine_native
        from core.render import _native as raster_native

        return (not pen_pairs and not st.saturate_interior and st.raster_backend in ("auto", "native")
                and all(len(g.views) == 1 and (g.depth_target is None or not st.w_depth) for g in groups)
                and raster_native.native_supported(theta) and raster_native.library() is not None
                and all(self._lean[g.side].uses_native(theta) for g in groups)
                and refine_native.supported(theta))

    def _fused_setup(self, g: _Group, st: RefineSettings) -> None:
        """What the fused evaluations of a group keep for the call: the start's front faces (as
        :meth:`_evaluate`), NumPy views of the fixed tensors and, where it builds, the C
        evaluation (:mod:`core.refine._fused_native`)."""
        from core.refine.fused import FusedView, numpy_view

        view = g.views[0]
        if view.faces is None:  # as _evaluate: the start's front faces
            view.faces = torch.from_numpy(self._start_faces(g.side, g.pose0.numpy(), g.betas0.numpy(),
                                                            g.transl0.numpy(), st))
        if g.fused is None:  # NumPy arrays sharing the tensors' memory, once per call
            topo = self._topology_numpy(g.side, g.pose0.numpy().dtype)
            g.fused = numpy_view(FusedView(g.pose0, g.betas0, g.transl0, g.t_scale, g.edge0, view.K,
                                           view.affine, view.target, view.weight, view.area,
                                           view.keypoints, view.faces, topo, g.free_focal))
            if _fused_native.available(g.fused.pose0.dtype):
                g.fused_native = _fused_native.NativeEvaluation(self._lean[g.side], g.fused, st.soft,
                                                                st.keypoint_scale_px)

    def _evaluate_fused(self, g: _Group, st: RefineSettings, need_grad: bool):
        """:meth:`_evaluate` (one view, no depth) and its gradient by :func:`core.refine.fused.loss_and_grad`
        (or its C version)."""
        from core.refine.fused import FusedOutput, loss_and_grad

        self._fused_setup(g, st)
        view = g.views[0]
        weights = self._fused_weights(st)
        key = tuple(p.data_ptr() for p in g.params.values())  # the flat offsets, stepped in place
        if g.fused_params is None or g.fused_params[0] != key:
            g.fused_params = (key, {name: p.detach().numpy() for name, p in g.params.items()})
        params = g.fused_params[1]
        slack = None if view.slack is None else view.slack.numpy()
        threads = torch.get_num_threads()
        if g.fused_native is not None:  # one C call, the GIL released
            out = g.fused_native(params, weights, slack, st.keypoint_slack, st.keypoint_tolerance_px,
                                 need_grad, threads)
        else:  # the C kernels joined by NumPy glue (the reference)
            out = loss_and_grad(self._lean[g.side], g.fused, params, weights, st.soft, st.keypoint_scale_px,
                                slack, st.keypoint_slack, st.keypoint_tolerance_px, need_grad, threads)
        t = torch.from_numpy
        if st.keypoint_slack and out.slack is not None:
            view.slack = t(out.slack)
        grads = None if out.grads is None else {k: t(v) for k, v in out.grads.items()}
        return FusedOutput(t(out.loss), t(out.iou), t(out.verts), t(out.base), t(out.keypoints),
                           t(np.ascontiguousarray(out.K)), view.slack, grads)

