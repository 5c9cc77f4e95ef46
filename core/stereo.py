"""One hand from a calibrated stereo pair, in the reference camera (paper 001, Sec. 3.3).

Each view is detected and fitted on its own (an :class:`~core.engine.Engine` per camera, no
refinement there). A hand seen by both cameras (same side) is then fused:

* pose (Eq. 6): ``p = w p_ref + (1 - w) xi(p_other)``: the other view's global rotation
  brought into the reference camera (``R^T R_other``) and blended with the reference's
  on the rotation group, the finger pose blended linearly. The paper learns ``w`` per
  parameter; HandTwin has no stereo training set and uses ``w = 0.5``.
* shape and camera (Eq. 7): ``s = (s_ref + s_other) / 2``; the wrist position the mean of the
  reference's and the other's carried into the reference camera.
* metric distance and size (HandTwin's addition, the calibrated form of Eq. 7's camera): the
  keypoints triangulated from both views say how far the hand is; the fused hand is scaled
  about the reference camera's centre to that distance (its image there unchanged, its size
  metric), or, with a profile's fixed size, moved to it.

The fused hand is refined against both views' silhouettes, their mean (Eq. 8), and both views'
keypoints (:class:`~core.refine.RefineView`). The result is an ordinary
:class:`~core.engine.FrameResult` of the reference camera; hands only one camera sees keep
that camera's (reference) monocular result.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from core.capture.frame import Frame, FrameSet
from core.capture.stereo import StereoCalibration, triangulate_keypoints
from core.engine import Engine, EngineSettings, FrameResult, HandResult
from core.fit import HandFit
from core.rotations import axis_angle_to_matrix, matrix_to_axis_angle

__all__ = ["StereoEngine", "fuse_fits", "place_metric", "triangulated"]

#: Eq. 6's weight of the reference view's pose (the paper learns it; no stereo training here).
POSE_WEIGHT = 0.5


def _rot(aa: np.ndarray) -> np.ndarray:
    return axis_angle_to_matrix(torch.as_tensor(np.asarray(aa, dtype=np.float64))).numpy()


def _aa(R: np.ndarray) -> np.ndarray:
    return matrix_to_axis_angle(torch.as_tensor(np.asarray(R, dtype=np.float64))).numpy()


def fuse_fits(fitter, ref: HandFit, other: HandFit, cal: StereoCalibration, keypoints_2d: np.ndarray,
              image_size: tuple[int, int], weight: float = POSE_WEIGHT) -> HandFit:
    """The fits of one hand in both views fused into the reference camera (Eq. 6-7).

    Args:
        fitter: the reference engine's :class:`~core.fit.TailorFitter` (its ``compose``).
        ref, other: perspective fits of the same hand, in their own cameras.
        cal: the pair. keypoints_2d: (21, 2) the reference view's detected keypoints (for the
            fused fit's reprojection error). image_size: the reference image's (width, height).
        weight: ``w`` of Eq. 6 (the reference view's share).

    Returns:
        A fit in the reference camera.
    """
    w = float(weight)
    R_ref = _rot(ref.pose[:3])
    R_other = cal.R.T @ _rot(other.pose[:3])
    glob = R_ref @ _rot((1.0 - w) * _aa(R_ref.T @ R_other))  # w R_ref (+) (1 - w) R_other on SO(3)
    pose = np.concatenate([_aa(glob), w * ref.pose[3:] + (1.0 - w) * other.pose[3:]]).astype(np.float32)
    betas = (0.5 * (ref.betas + other.betas)).astype(np.float32)
    own = np.asarray(ref.keypoints_3d[0], np.float64)
    wrist = 0.5 * (own + cal.to_reference(other.keypoints_3d[0]))
    K = cal.K1
    # the mean wrist's depth, on the reference view's ray through its wrist (the mean point
    # itself lies on neither camera's ray and would shift the hand in the reference image)
    u, v = K[0, 0] * own[0] / own[2] + K[0, 2], K[1, 1] * own[1] / own[2] + K[1, 2]
    return fitter.compose(ref.side, pose, betas, np.array([u, v, np.log(K[0, 0] / wrist[2])]), K,
                          image_size, keypoints_2d, ref.iterations)


def triangulated(kp_ref: np.ndarray, kp_other: np.ndarray, cal: StereoCalibration) -> np.ndarray | None:
    """(21, 3) keypoints triangulated from both views, reference camera, metres; None when any
    lies behind either camera (a mismatched pair)."""
    tri = triangulate_keypoints(kp_ref, kp_other, cal)
    z2 = (tri @ cal.R.T + cal.T)[:, 2]
    return tri if (tri[:, 2] > 0).all() and (z2 > 0).all() else None


def place_metric(fitter, layer, fit: HandFit, tri: np.ndarray, keypoints_2d: np.ndarray, K: np.ndarray,
                 image_size: tuple[int, int], fixed_shape: bool = False) -> HandFit:
    """The fused fit put at the distance the triangulated keypoints say (HandTwin's addition,
    the calibrated form of Eq. 7's camera): ``k`` = the median over keypoints of triangulated
    depth / fitted depth (robust: one keypoint's triangulation is noisy in depth); a free
    shape is scaled about the reference camera's centre by ``k`` (its image there unchanged,
    its size and distance metric, :func:`core.metric_depth.rescale_fit`), a profile's fixed
    size moves that far along its wrist's ray instead. A ``k`` beyond
    :data:`~core.metric_depth.MAX_DEPTH_RESCALE` either way (a wrong calibration) leaves the
    fit as it is."""
    from core.metric_depth import rescale_fit

    z = np.asarray(fit.keypoints_3d, np.float64)[:, 2]
    k = float(np.median(tri[:, 2] / z))
    shift = float(np.median(tri[:, 2] - z)) if fixed_shape else None
    return rescale_fit(fitter, layer, fit, k, keypoints_2d, K, image_size, shift)[0]


class _Splitter:
    """Frame sets read once, handed to two consumers (each its own view), thread-safe: the
    engines' detector threads pull from their iterators concurrently."""

    def __init__(self, sets: Iterable[FrameSet]) -> None:
        self._it = iter(sets)
        self._lock = threading.Lock()
        self._queues: tuple[deque, deque] = (deque(), deque())
        self._done = False

    def view(self, k: int) -> Iterator[Frame]:
        while True:
            with self._lock:
                if not self._queues[k]:
                    if self._done:
                        return
                    fs = next(self._it, None)
                    if fs is None:
                        self._done = True
                        return
                    for j in (0, 1):
                        self._queues[j].append(fs[j])
                frame = self._queues[k].popleft()
            yield frame


class StereoEngine:
    """Track hands from a calibrated stereo pair into the reference camera (see the module docstring).

    Args:
        settings: the engines' settings; ``refine_iterations`` is the fused hands' refinement
            (the per-view engines fit only).
        calibration: the pair. shape: a profile's fixed shape or identity (see :class:`Engine`).
        stream: the caller will use :meth:`process_stream`.
    """

    def __init__(self, settings: EngineSettings, calibration: StereoCalibration, shape=None,
                 stream: bool = False) -> None:
        from core.refine import Refiner

        self.settings = settings
        self.calibration = calibration
        per_view = dataclasses.replace(settings, refine_iterations=0)
        self.reference = Engine(per_view, shape, stream)
        try:
            self.other = Engine(per_view, shape, stream)
        except BaseException:
            self.reference.close()
            raise
        self.refiner = None
        if settings.refine_iterations > 0:
            refine = settings.refine
            if self.reference.shape is not None:
                refine = dataclasses.replace(refine, optimize_shape=False)
            data = self.reference.model_data
            self.refiner = Refiner(data["right"], data["left"], refine, self.reference.device,
                                   settings.fit.nominal_fov_deg)
        #: The other view's detection of each hand of the last result (None where only the
        #: reference camera saw it), in the order of its ``hands``.
        self.partners: tuple = ()

    def __enter__(self) -> StereoEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.reference.close()
        self.other.close()

    def reset(self) -> None:
        """Forget the previous frames (a new stream starts)."""
        self.reference.reset()
        self.other.reset()

    @property
    def detects_in_child(self) -> bool:
        """Whether both views detect in child processes now."""
        return self.reference.detects_in_child and self.other.detects_in_child

    @property
    def model_data(self) -> dict:
        """The hand models by side (the reference engine's)."""
        return self.reference.model_data

    def process(self, frames: FrameSet) -> FrameResult:
        """Detect, fit, fuse and refine one frame set (reference camera first)."""
        return self._fuse(frames[0], frames[1], self.reference.process(frames[0]), self.other.process(frames[1]))

    def process_stream(self, sets: Iterable[FrameSet],
                       after: Callable[[Frame, FrameResult], None] | None = None) -> Iterator[FrameResult]:
        """:meth:`process` over a stream, each view's engine pipelined (:meth:`Engine.process_stream`).

        Args:
            sets: the pair's frame sets (reference first).
            after: called as ``after(reference_frame, result)`` for every result, in order,
                before it is yielded (in the caller's thread).
        """
        split = _Splitter(sets)
        pending: tuple[deque, deque] = (deque(), deque())  # each view's frames, in order

        def remember(k: int) -> Iterator[Frame]:
            for f in split.view(k):
                pending[k].append(f)
                yield f

        ref_results = self.reference.process_stream(remember(0))
        other_results = self.other.process_stream(remember(1))
        try:
            for r1 in ref_results:
                r2 = next(other_results, None)
                if r2 is None:
                    return
                f1, f2 = pending[0].popleft(), pending[1].popleft()
                result = self._fuse(f1, f2, r1, r2)
                if after is not None:
                    after(f1, result)
                yield result
        finally:
            ref_results.close()
            other_results.close()

    # -------------------------------------------------------------------------------- fusion

    def _partners(self, r1: FrameResult, r2: FrameResult) -> list[HandResult | None]:
        """For each reference hand, the other view's hand of the same side (the one whose
        triangulation reprojects best), or None."""
        cal = self.calibration
        out, taken = [], set()
        for h in r1.hands:
            best, best_err = None, np.inf
            for j, g in enumerate(r2.hands):
                if j in taken or g.detection.handedness != h.detection.handedness:
                    continue
                tri = triangulate_keypoints(h.detection.keypoints_2d, g.detection.keypoints_2d, cal)
                uv = tri @ cal.K1.T
                err = float(np.linalg.norm(uv[:, :2] / uv[:, 2:] - h.detection.keypoints_2d, axis=1).mean())
                if err < best_err:
                    best, best_err = j, err
            if best is not None:
                taken.add(best)
            out.append(None if best is None else r2.hands[best])
        return out

    def _fuse(self, f1: Frame, f2: Frame, r1: FrameResult, r2: FrameResult) -> FrameResult:
        from core.refine import RefineTarget, RefineView
        from core.segment import segment_hands

        t0 = time.perf_counter()
        cal = self.calibration
        size = (f1.width, f1.height)
        partners = self._partners(r1, r2)
        self.partners = tuple(None if g is None else g.detection for g in partners)
        fits: list[HandFit] = []
        fused: list[bool] = []
        for h, g in zip(r1.hands, partners):
            fit = h.fit
            fused.append(g is not None and h.fit.projection == "perspective" and g.fit.projection == "perspective")
            if fused[-1]:
                kp1, kp2 = h.detection.keypoints_2d, g.detection.keypoints_2d
                fit = fuse_fits(self.reference.fitter, h.fit, g.fit, cal, kp1, size)
                tri = triangulated(kp1, kp2, cal)
                if tri is not None:
                    fit = place_metric(self.reference.fitter, self.reference._layers[fit.side], fit, tri, kp1, cal.K1,
                                       size, fixed_shape=self.reference.shape is not None)
            fits.append(fit)
        times = dict(r1.time_ms)
        times["detect"] = r1.time_ms.get("detect", 0.0) + r2.time_ms.get("detect", 0.0)
        times["fit"] = r1.time_ms.get("fit", 0.0) + r2.time_ms.get("fit", 0.0)
        times["fuse"] = (time.perf_counter() - t0) * 1000
        refined: list = [None] * len(fits)
        masks1 = [h.mask for h in r1.hands]
        if self.refiner is not None and fits:
            t1 = time.perf_counter()

            def masks_of(image: np.ndarray, hands: list[HandResult | None]) -> list[np.ndarray | None]:
                """Each hand's mask: the view's engine's when it segmented, else segmented here."""
                todo = [h for h in hands if h is not None and h.mask is None]
                made = iter(segment_hands(image, [h.detection.keypoints_2d for h in todo]))
                out = []
                for h in hands:
                    if h is None or h.mask is not None:
                        out.append(None if h is None else h.mask)
                    else:
                        m = next(made)
                        out.append(None if m is None else m.mask)
                return out

            masks1 = masks_of(f1.image, list(r1.hands))
            masks2 = masks_of(f2.image, partners)
            times["segment"] = (time.perf_counter() - t1) * 1000
            t2 = time.perf_counter()
            K1 = cal.K1.astype(np.float32)
            groups: dict[bool, list[tuple[int, RefineTarget]]] = {True: [], False: []}
            for i, (h, g) in enumerate(zip(r1.hands, partners)):
                m = masks1[i]
                if m is None:
                    continue
                depth = None if f1.depth is None else np.where(m, f1.depth, np.float32(0)).astype(np.float32)
                if fused[i] and masks2[i] is not None:
                    view = RefineView(masks2[i], cal.K2, cal.R, cal.T, g.detection.keypoints_2d)
                    groups[True].append((i, RefineTarget(m, h.detection.keypoints_2d, K1, depth, (view,))))
                else:
                    groups[False].append((i, RefineTarget(m, h.detection.keypoints_2d, K1, depth)))
            for items in groups.values():
                if items:
                    res = self.refiner.refine([fits[i] for i, _ in items], [t for _, t in items],
                                              iterations=self.settings.refine_iterations)
                    for (i, _), r in zip(items, res):
                        refined[i] = r
            times["refine"] = (time.perf_counter() - t2) * 1000
        times.pop("total", None)
        times["total"] = sum(times.values())
        camera = r1.camera if r1.camera is not None else f1.intrinsics
        hands = tuple(self.reference._hand_result(h.detection, f, r, h.track_id, m, camera)
                      for h, f, r, m in zip(r1.hands, fits, refined, masks1))
        return dataclasses.replace(r1, hands=hands, time_ms=times)
