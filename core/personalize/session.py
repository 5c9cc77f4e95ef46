"""A calibration session: candidate frames in, one personal hand shape out.

The pipeline of the identity-aware paper (Sec. 3.4) on top of our tracker:

1. every offered frame's hand is refitted with a free shape (beta_i, theta_i), independently
   of its neighbours, and described by quality features (:mod:`core.personalize.features`);
2. the confidence predictor gives c_i (:mod:`core.personalize.confidence`);
3. K frames are chosen for quality and diversity (:mod:`core.personalize.selection`); the
   user may add or drop frames;
4. attention calibration: w = softmax(c / T) (Eq. 6), one shape solving Eq. 7
   (:mod:`core.personalize.attention`);
5. the size is pinned as the :class:`~core.personalize.scale.ScaleOption` says;
6. one joint optimization over the chosen frames gives the personal skeleton and every frame's
   pose (:mod:`core.personalize.bundle`), and the surface offsets are fitted to the frames'
   hand segmentations from those poses (:mod:`core.personalize.surface`; on by default,
   ``CalibrationSession(surface=False)`` or ``calibrate(surface=False)`` leaves them out).

:meth:`CalibrationSession.to_profile` turns the result into the profile JSON of docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from core.fit import FitSettings, HandFit, HandObservation, TailorFitter
from core.keypoints import Keypoint
from core.model import HandModel, load_model_data
from core.personalize.attention import DEFAULT_TEMPERATURE, attention_weights, calibrate_shape, shape_normal_matrices
from core.personalize.confidence import ConfidencePredictor
from core.personalize.convention import load_convention
from core.personalize.features import FEATURE_NAMES, frame_features, hand_crop, pose_descriptor
from core.personalize.scale import ScaleOption, apply_scale, measures, rest_keypoint_basis, scale_note
from core.personalize.selection import CoverageReport, bone_observability, coverage_report, select_frames
from core.personalize.surface import HandSilhouette, SurfaceResult

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class CalibrationFrame:
    """One candidate frame of a calibration session.

    Attributes:
        source: the source's name. frame_index: the frame's index in it. side: "right"/"left".
        thumbnail: (h, w, 3) uint8 RGB crop of the hand, 96 x 96 px.
        features: (F,) float32 quality features (``FEATURE_NAMES``).
        pose: (48,) float32 free-shape fit pose (axis-angle, radians).
        betas: (S,) float32 free-shape fit shape.
        confidence: c_i from the predictor (higher: more trustworthy shape).
        descriptor: (8,) float32 pose/view descriptor for diversity.
        keypoints_2d: (21, 2) float32 detected keypoints, px.
        timestamp_s: the frame's time, seconds.
        normal_matrix: (S, S) float64 ``A^T A`` of Eq. 7 at this pose (cached by the session).
        K: (3, 3) float32 the frame's intrinsics, pixels, or None when unknown.
        image_size: (width, height) pixels.
        world_landmarks: (21, 3) float32 MediaPipe world landmarks, metres, or None.
        score: the detector's confidence.
        observability: (20,) float64 how much of each bone's length this view shows
            (:func:`core.personalize.selection.bone_observability`), or None.
        silhouette: the hand's segmentation around it (:func:`core.personalize.surface.hand_silhouette`),
            for the surface fit, or None (not segmented).
    """

    source: str
    frame_index: int
    side: str
    thumbnail: np.ndarray
    features: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    confidence: float
    descriptor: np.ndarray | None = None
    keypoints_2d: np.ndarray | None = None
    timestamp_s: float = 0.0
    normal_matrix: np.ndarray | None = None
    K: np.ndarray | None = None
    image_size: tuple[int, int] = (0, 0)
    world_landmarks: np.ndarray | None = None
    score: float = 1.0
    observability: np.ndarray | None = None
    silhouette: HandSilhouette | None = None


@dataclass(frozen=True)
class CalibrationResult:
    """A calibrated personal shape.

    Attributes:
        shape: (S,) float32 the personal shape (size pinned per ``scale_source``).
        hand_length_mm, hand_width_mm: its measures (flat rest pose, docs/ARCHITECTURE.md definitions).
        bone_lengths_mm: (20,) its bone lengths, child order 1..20 of the keypoint tree.
        scale_source: "prior" | "hand_length" | "aruco" | "stereo" | "depth".
        weights: (K,) attention weights (Eq. 6). confidences: (K,) the frames' c_i.
        frame_lengths_mm: (K,) each frame's own free-shape hand length.
        seconds: wall time of :meth:`CalibrationSession.calibrate`.
        frames: (K,) indices of the frames used, into the session's candidates.
        unscaled_shape: (S,) the Eq. 7 shape before the size was pinned.
        skeleton: (21, 3) float64 the personal rest keypoints (metres, the session side's rest
            frame, at ``shape``) from the joint optimization, or None (Eq. 7 only).
        frame_weights: (K,) the joint optimization's final frame weights (attention x robust).
        rejected: ((candidate index, reason), ...) frames the joint optimization rejected.
        focal_px: the focal length it estimated (frames without intrinsics), or None.
        focal_image_size: (w, h) of the frame that focal length belongs to, or None.
        scale_note: where the size comes from, in words.
        residual_px: (K,) mean reprojection error of each frame after the joint optimization.
        surface: the surface offsets fitted to the frames' silhouettes
            (:class:`~core.personalize.surface.SurfaceResult`, offsets in metres in the
            session side's personal rest frame; its ``rejected`` indices are into ``frames``),
            or None (no skeleton, surface off, or too few segmented frames).
    """

    shape: np.ndarray
    hand_length_mm: float
    hand_width_mm: float
    bone_lengths_mm: np.ndarray
    scale_source: str
    weights: np.ndarray
    confidences: np.ndarray
    frame_lengths_mm: np.ndarray
    seconds: float
    frames: tuple[int, ...] = ()
    unscaled_shape: np.ndarray | None = None
    skeleton: np.ndarray | None = None
    frame_weights: np.ndarray | None = None
    rejected: tuple[tuple[int, str], ...] = ()
    focal_px: float | None = None
    focal_image_size: tuple[int, int] | None = None
    scale_note: str = ""
    residual_px: np.ndarray | None = None
    surface: SurfaceResult | None = None


#: The free-shape refit of a candidate: a weaker shape prior than tracking's, so that each
#: frame's shape says what its keypoints show (the attention average tames the noise).
REFIT_SETTINGS = FitSettings(w_shape=5.0)

#: A candidate is unusable beyond these (relative reprojection error, keypoints inside).
MAX_REPROJECTION_REL = 0.08
MIN_INSIDE_FRACTION = 0.85


class CalibrationSession:
    """Collects candidate frames of one hand and calibrates its shape.

    Args:
        side: the hand to calibrate, "right" or "left".
        k: frames to calibrate from (the paper uses 20).
        model: hand model path (None: $HANDTWIN_MODEL or the bundled open hand).
        device: "cpu" (the refits are tiny; "cuda" is accepted and used for the fitter).
        confidence: a predictor, a weights path, "heuristic", or None (the bundled weights).
        temperature: T of Eq. 6.
        fit_iterations: tailor iterations of each candidate's free-shape refit.
        max_candidates: candidates kept; beyond it a new frame replaces the least confident
            one in place (its index is reused), so long streams stay bounded.
        fit_settings: the free-shape refit's tailor settings (default :data:`REFIT_SETTINGS`).
        surface: segment every candidate's hand (about 2 ms) and fit the surface offsets in
            :meth:`calibrate` (default on).
    """

    def __init__(
        self,
        side: str = "right",
        k: int = 20,
        model: str | None = None,
        device: str = "cpu",
        confidence: ConfidencePredictor | str | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        fit_iterations: int = 40,
        max_candidates: int = 400,
        fit_settings: FitSettings | None = None,
        surface: bool = True,
    ) -> None:
        if side not in ("right", "left"):
            raise ValueError(f"side must be 'right' or 'left', got {side!r}")
        self.side = side
        self.k = int(k)
        self.temperature = float(temperature)
        self.fit_iterations = int(fit_iterations)
        self.max_candidates = int(max_candidates)
        self.surface = bool(surface)
        data = {s: load_model_data(model, s) for s in ("right", "left")}
        self.model_data = data[side]
        self.layer = HandModel(data[side])
        self.fitter = TailorFitter(data["right"], data["left"], fit_settings or REFIT_SETTINGS,
                                   "cpu" if device == "auto" else device)
        self.predictor = confidence if isinstance(confidence, ConfidencePredictor) else ConfidencePredictor(confidence)
        self._basis = rest_keypoint_basis(self.layer)
        #: MediaPipe's per-bone keypoint bias against the model's joints and the shrinkage
        #: toward the shape-space hand (:mod:`core.personalize.convention`), applied to the
        #: joint optimization's skeleton; None: not applied.
        self.convention = load_convention()
        self._candidates: list[CalibrationFrame] = []
        self._added: list[int] = []
        self._dropped: set[int] = set()
        self._selected: list[int] | None = None

    # ------------------------------------------------------------------ candidates

    @property
    def candidates(self) -> list[CalibrationFrame]:
        """The usable frames offered so far (a copy of the list)."""
        return list(self._candidates)

    @property
    def selected(self) -> list[int]:
        """Indices into :attr:`candidates` chosen for calibration (user overrides applied)."""
        if self._selected is None:
            if not self._candidates:
                self._selected = []
            else:
                conf = np.array([c.confidence for c in self._candidates])
                desc = np.stack([c.descriptor for c in self._candidates])
                obs = None
                if all(c.observability is not None for c in self._candidates):
                    obs = np.stack([c.observability for c in self._candidates])
                self._selected = select_frames(conf, desc, self.k, forced=self._added, excluded=self._dropped,
                                               observability=obs)
        return list(self._selected)

    def coverage(self, frames: list[int] | None = None) -> CoverageReport:
        """Per-bone coverage and length uncertainty of the selected frames (or ``frames``):
        which bones the chosen views constrain, and whether every bone is constrained enough
        (``done``) for the guided session to stop asking for poses."""
        idx = self.selected if frames is None else [int(i) for i in frames]
        obs = [self._candidates[i].observability for i in idx if self._candidates[i].observability is not None]
        return coverage_report(np.stack(obs) if obs else np.zeros((0, 20)))

    def add(self, index: int) -> None:
        """Force candidate ``index`` into the selection (it replaces an automatic choice)."""
        self._check_index(index)
        self._dropped.discard(index)
        if index not in self._added:
            self._added.append(index)
        self._added = self._added[-self.k:]
        self._selected = None

    def drop(self, index: int) -> None:
        """Keep candidate ``index`` out of the selection (another frame takes its place)."""
        self._check_index(index)
        self._dropped.add(index)
        if index in self._added:
            self._added.remove(index)
        self._selected = None

    def _check_index(self, index: int) -> None:
        if not 0 <= int(index) < len(self._candidates):
            raise IndexError(f"no candidate {index} (there are {len(self._candidates)})")

    def offer(self, frame: Any, result: Any) -> CalibrationFrame | None:
        """Evaluate a tracked frame (``core.capture.Frame``, ``core.engine.FrameResult``).

        The hand of this session's side (the most confident one) is refitted with a free
        shape; the candidate is kept if usable. Returns it, or None.
        """
        hands = [h for h in getattr(result, "hands", ()) if h.detection.handedness == self.side]
        if not hands:
            return None
        det = max(hands, key=lambda h: h.detection.score).detection
        K = None if frame.intrinsics is None else frame.intrinsics.K
        return self.offer_detection(frame.image, det, K, frame.source, frame.index, frame.timestamp_s)

    def offer_detection(self, image: np.ndarray, detection: Any, K: np.ndarray | None, source: str = "",
                        frame_index: int = 0, timestamp_s: float = 0.0) -> CalibrationFrame | None:
        """Like :meth:`offer`, from an image and one :class:`~core.detect.Detection`."""
        cand = self.evaluate(image, detection, K, source, frame_index, timestamp_s)
        if cand is None:
            return None
        self._insert(cand)
        return cand

    def evaluate(self, image: np.ndarray, detection: Any, K: np.ndarray | None, source: str = "",
                 frame_index: int = 0, timestamp_s: float = 0.0) -> CalibrationFrame | None:
        """The candidate a detection makes (free-shape refit, features, confidence), or None
        when unusable; nothing is stored."""
        h, w = image.shape[:2]
        obs = HandObservation(detection.handedness, detection.keypoints_2d, detection.world_landmarks,
                              None if K is None else np.asarray(K, dtype=np.float32), (w, h), float(detection.score))
        fit = self.fitter.fit([obs], None, None, self.fit_iterations)[0]
        return self._candidate(image, detection, fit, source, frame_index, timestamp_s, K=K,
                               segment=self.surface)

    def _candidate(self, image, detection, fit: HandFit, source, frame_index, timestamp_s,
                   crop: np.ndarray | None = None, K: np.ndarray | None = None, segment: bool = False,
                   silhouette: HandSilhouette | None = None) -> CalibrationFrame | None:
        """The candidate of a fitted detection, or None when unusable. ``segment``: segment
        the hand in ``image`` for the surface fit (else ``silhouette``, or none)."""
        if crop is None:
            crop = hand_crop(image, detection.keypoints_2d)
        feats = frame_features(image, detection.keypoints_2d, detection.keypoints_z, detection.world_landmarks,
                               detection.score, fit.side, fit.pose, fit.betas, fit.keypoints_3d,
                               fit.reprojection_error_px, crop, fit.keypoints_2d)
        named = dict(zip(FEATURE_NAMES, feats))
        if named["reprojection_rel"] > MAX_REPROJECTION_REL or named["inside_fraction"] < MIN_INSIDE_FRACTION:
            return None
        conf = float(self.predictor(feats[None])[0])
        if segment and silhouette is None:
            silhouette = _segment(image, detection.keypoints_2d)
        return CalibrationFrame(
            source=str(source), frame_index=int(frame_index), side=fit.side, thumbnail=crop, features=feats,
            pose=np.asarray(fit.pose, dtype=np.float32), betas=np.asarray(fit.betas, dtype=np.float32),
            confidence=conf, descriptor=pose_descriptor(fit.pose, fit.keypoints_3d, fit.side),
            keypoints_2d=np.asarray(detection.keypoints_2d, dtype=np.float32), timestamp_s=float(timestamp_s),
            normal_matrix=shape_normal_matrices(self.layer, np.asarray(fit.pose)[None])[0],
            K=None if K is None else np.asarray(K, dtype=np.float32),
            image_size=(int(image.shape[1]), int(image.shape[0])),
            world_landmarks=None if detection.world_landmarks is None else np.asarray(detection.world_landmarks,
                                                                                      np.float32),
            score=float(detection.score),
            observability=bone_observability(fit.keypoints_3d),
            silhouette=silhouette,
        )

    def _insert(self, cand: CalibrationFrame) -> None:
        if len(self._candidates) < self.max_candidates:
            self._candidates.append(cand)
        else:
            worst = int(np.argmin([c.confidence for c in self._candidates]))
            if self._candidates[worst].confidence >= cand.confidence:
                return
            self._candidates[worst] = cand
            self._dropped.discard(worst)
            if worst in self._added:
                self._added.remove(worst)
        self._selected = None

    def add_candidates(self, frames: list[CalibrationFrame]) -> None:
        """Add already evaluated candidates (e.g. from a cache)."""
        for c in frames:
            self._insert(c)

    # ------------------------------------------------------------------ calibration

    def frame_lengths_mm(self, betas: np.ndarray) -> np.ndarray:
        """(N,) hand length (mm) of each shape in (N, S), flat rest pose."""
        from core.keypoints import Keypoint

        k0, kd = self._basis
        kp = k0[None] + (np.asarray(betas, dtype=np.float64) @ kd.T).reshape(-1, 21, 3)
        return np.linalg.norm(kp[:, Keypoint.MIDDLE_TIP] - kp[:, Keypoint.WRIST], axis=1) * 1000.0

    def calibrate(self, scale: ScaleOption | None = None, progress: Progress | None = None,
                  frames: list[int] | None = None, uniform: bool = False,
                  personal: bool = True, cancel: Callable[[], bool] | None = None,
                  surface: bool | None = None) -> CalibrationResult:
        """Calibrate the hand from the selected frames (or ``frames``).

        First one shape by attention calibration (Eq. 6-7) with its size pinned; then, from that
        start, the personal skeleton (and a focal length where intrinsics are unknown) jointly
        with every frame's pose (:func:`core.personalize.bundle.bundle_adjust`), which also
        rejects frames that disagree with the shared hand.

        Args:
            scale: how to pin the size (None: the prior).
            progress: called with (fraction, message).
            frames: candidate indices to use instead of :attr:`selected`.
            uniform: w_i = 1/K instead of the attention weights (the paper's ablation).
            personal: run the joint optimization (False: Eq. 7 only, the shape-space hand).
            cancel: polled between steps and every joint-optimization iteration; once it
                returns True the calibration stops (a progress callback may also raise).
            surface: fit the surface offsets after it (None: the session's ``surface``); needs
                segmented frames (at least :attr:`SurfaceSettings.min_frames`).

        Raises:
            InputError: no usable candidate.
            Cancelled: ``cancel()`` returned True; the session is unchanged.
        """
        from core.errors import InputError

        t0 = time.perf_counter()
        idx = self.selected if frames is None else [int(i) for i in frames]
        if not idx:
            raise InputError("no usable hand frame to calibrate from (is the hand visible and the side right?)")
        chosen = [self._candidates[i] for i in idx]
        if progress:
            progress(0.1, f"calibrating from {len(chosen)} frames")
        conf = np.array([c.confidence for c in chosen], dtype=np.float64)
        w = np.full(len(chosen), 1.0 / len(chosen)) if uniform else attention_weights(conf, self.temperature)
        betas = np.stack([c.betas for c in chosen])
        poses = np.stack([c.pose for c in chosen])
        ata = np.stack([c.normal_matrix if c.normal_matrix is not None else
                        shape_normal_matrices(self.layer, c.pose[None])[0] for c in chosen])
        with torch.inference_mode():
            cal = calibrate_shape(self.layer, betas, poses, w, normal_matrices=ata)
        if progress:
            progress(0.7, "pinning the size")
        shape = apply_scale(self.layer, cal.betas, scale)
        length, width, bones = measures(self.layer, shape)
        source = "prior" if scale is None else scale.source
        extra: dict[str, Any] = {}
        if personal and all(c.keypoints_2d is not None and c.image_size[0] > 0 for c in chosen):
            if progress:
                progress(0.75, "fitting the personal skeleton to all frames at once")
            with_surface = (self.surface if surface is None else surface) and any(c.silhouette is not None
                                                                                  for c in chosen)
            extra = self._bundle(chosen, idx, w, shape, length, progress, cancel, 0.13 if with_surface else 0.23)
            if extra:
                length, width, bones = extra.pop("measures")
                ba = extra.pop("bundle")
                if with_surface:
                    if progress:
                        progress(0.88, "fitting the surface to the frames' silhouettes")
                    extra["surface"] = self._surface(chosen, ba, shape, progress, cancel)
        result = CalibrationResult(
            shape=np.asarray(shape, dtype=np.float32),
            hand_length_mm=length * 1000.0,
            hand_width_mm=width * 1000.0,
            bone_lengths_mm=(bones * 1000.0).astype(np.float32),
            scale_source="prior" if scale is None else scale.source,
            weights=np.asarray(w, dtype=np.float64),
            confidences=conf,
            frame_lengths_mm=self.frame_lengths_mm(betas),
            seconds=time.perf_counter() - t0,
            frames=tuple(idx),
            unscaled_shape=np.asarray(cal.betas, dtype=np.float32),
            scale_note=scale_note(source, length * 1000.0),
            **extra,
        )
        if progress:
            progress(1.0, f"hand length {result.hand_length_mm:.1f} mm, width {result.hand_width_mm:.1f} mm")
        return result

    def _bundle(self, chosen: list[CalibrationFrame], idx: list[int], weights: np.ndarray, shape: np.ndarray,
                length_m: float, progress: Progress | None = None,
                cancel: Callable[[], bool] | None = None, span: float = 0.23) -> dict[str, Any]:
        """The joint optimization's part of a :class:`CalibrationResult` (see :meth:`calibrate`)."""
        from core.keypoints import bone_lengths
        from core.personalize.bundle import BundleFrame, bundle_adjust

        frames = [BundleFrame(c.keypoints_2d, c.image_size, c.K, c.pose.astype(np.float64), c.world_landmarks,
                              float(wi), c.score) for c, wi in zip(chosen, weights)]
        try:
            with torch.inference_mode(False), torch.no_grad():
                ba = bundle_adjust(self.model_data, frames, length_m, betas=shape,
                                   nominal_fov_deg=self.fitter.settings.nominal_fov_deg,
                                   progress=None if progress is None else
                                   (lambda f, m: progress(0.75 + span * f, m)), cancel=cancel)
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:  # numerical failure: keep Eq. 7's hand
            log.warning("the joint calibration failed (%s); keeping the shape-space hand", exc)
            return {}
        if not np.isfinite(ba.skeleton).all():
            log.warning("the joint calibration diverged; keeping the shape-space hand")
            return {}
        skel = ba.skeleton
        if self.convention is not None:
            k0, kd = self._basis
            skel = self.convention.apply(skel, k0 + (kd @ np.asarray(shape, dtype=np.float64)).reshape(21, 3), length_m)
        width = float(np.linalg.norm(skel[Keypoint.RING_MCP] - skel[Keypoint.INDEX_MCP]))
        free = [i for i, c in enumerate(chosen) if c.K is None]
        for i, reason in ba.rejected:
            log.info("calibration rejected frame %s:%d: %s", chosen[i].source, chosen[i].frame_index, reason)
        return {
            "measures": (length_m, width, bone_lengths(skel)),
            "bundle": ba,
            "skeleton": skel,
            "frame_weights": ba.frame_weights,
            "rejected": tuple((idx[i], reason) for i, reason in ba.rejected),
            "focal_px": float(ba.focal_px[free[0]]) if free else None,
            "focal_image_size": tuple(chosen[free[0]].image_size) if free else None,
            "residual_px": ba.residual_px,
        }

    def _surface(self, chosen: list[CalibrationFrame], ba: Any, shape: np.ndarray,
                 progress: Progress | None = None, cancel: Callable[[], bool] | None = None) -> SurfaceResult | None:
        """The surface offsets fitted to the segmented frames, posed as the joint optimization
        posed them; None when the fit fails."""
        from core.camera import weak_perspective_camera
        from core.model.personal import personal_model
        from core.personalize.surface import SurfaceFrame, fit_surface

        frames, rows = [], []
        for i, c in enumerate(chosen):
            if c.silhouette is None:
                continue
            if c.K is not None:
                K = np.asarray(c.K, dtype=np.float64)
            else:  # the bundle's estimated focal length, the principal point at the centre
                cam = weak_perspective_camera(c.image_size, self.fitter.settings.nominal_fov_deg)
                s = float(ba.focal_px[i]) / cam.fx
                K = np.array([[cam.fx * s, 0.0, cam.cx], [0.0, cam.fy * s, cam.cy], [0.0, 0.0, 1.0]])
            frames.append(SurfaceFrame(c.silhouette, c.keypoints_2d, K, ba.poses[i], ba.transl[i],
                                       float(ba.frame_weights[i])))
            rows.append(i)
        try:
            # Posed on the bundle's own skeleton: its poses were fitted to it (the stored skeleton
            # has MediaPipe's keypoint convention taken out, which moves the fingers in the image
            # by a few pixels: measured on the demo clip, silhouette IoU 0.82 instead of 0.84).
            # The displacements along the normals carry over to the stored skeleton's mesh.
            model = personal_model(self.model_data, ba.skeleton, betas=np.asarray(shape, dtype=np.float64))
            res = fit_surface(model, frames, np.asarray(shape, dtype=np.float64), cancel=cancel,
                              progress=None if progress is None else (lambda f, m: progress(0.88 + 0.1 * f, m)))
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
            log.warning("the surface fit failed (%s); the profile has no surface", exc)
            return None
        if not res.used.any():
            return None
        for j, reason in res.rejected:
            log.info("surface fit left out frame %s:%d: %s", chosen[rows[j]].source, chosen[rows[j]].frame_index,
                     reason)
        return dataclasses.replace(res, rejected=tuple((rows[j], reason) for j, reason in res.rejected))

    def to_profile(self, result: CalibrationResult, name: str) -> dict[str, Any]:
        """The profile JSON document (docs/ARCHITECTURE.md) for ``result``."""
        from core.mirror import mirror_points
        from core.profile_io import PROFILE_FORMAT, PROFILE_VERSION

        # Profiles keep the skeleton in the right hand's frame (a left hand's is its mirror image).
        skel = result.skeleton
        if skel is not None and self.side == "left":
            skel = mirror_points(np.asarray(skel, dtype=np.float64))
        frames = [
            {"source": self._candidates[i].source, "frame": self._candidates[i].frame_index,
             "confidence": round(float(c), 4), "weight": round(float(w), 5)}
            for i, c, w in zip(result.frames, result.confidences,
                                result.weights if result.frame_weights is None else result.frame_weights)
        ]
        return {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "name": str(name),
            "handedness": self.side,
            "model": {"name": self.model_data.name, "sha256": self.model_data.sha256},
            "shape": [round(float(v), 6) for v in result.shape],
            "hand_length_mm": round(float(result.hand_length_mm), 2),
            "hand_width_mm": round(float(result.hand_width_mm), 2),
            "bone_lengths_mm": [round(float(v), 2) for v in result.bone_lengths_mm],
            "scale_source": result.scale_source,
            "frames": frames,
            "texture": None,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "skeleton_mm": None if skel is None else [[round(float(v), 3) for v in row] for row in skel * 1000.0],
            "surface": None if result.surface is None else self._surface_doc(result.surface),
            "focal_px": None if result.focal_px is None else round(float(result.focal_px), 2),
            "focal_image_size": None if result.focal_image_size is None else [int(v) for v in result.focal_image_size],
            "rejected_frames": [{"source": self._candidates[i].source, "frame": self._candidates[i].frame_index,
                                 "reason": reason} for i, reason in result.rejected],
            "scale_note": result.scale_note,
        }

    def _surface_doc(self, surface: SurfaceResult) -> dict[str, Any]:
        """``profile["surface"]`` (:func:`core.profile_io.encode_surface`): right hand's frame."""
        from core.mirror import mirror_points
        from core.profile_io import encode_surface

        offsets = np.asarray(surface.offsets, dtype=np.float64)
        if self.side == "left":
            offsets = mirror_points(offsets)
        used = surface.used
        return encode_surface(offsets * 1000.0, frames=int(used.sum()),
                              iou_before=round(float(np.nanmean(surface.iou_before[used])), 4),
                              iou_after=round(float(np.nanmean(surface.iou_after[used])), 4))


def _segment(image: np.ndarray, keypoints_2d: np.ndarray) -> HandSilhouette | None:
    """The hand's segmentation (:func:`core.segment.segment_hand`, cut at the wrist) as a
    :class:`~core.personalize.surface.HandSilhouette`, or None when it fails."""
    from core.errors import HandTwinError
    from core.personalize.surface import hand_silhouette
    from core.segment import segment_hand

    try:
        hand = segment_hand(np.ascontiguousarray(image), keypoints_2d)
    except (HandTwinError, ValueError) as exc:
        log.debug("no silhouette for this calibration frame: %s", exc)
        return None
    if not hand.mask.any():
        return None
    return hand_silhouette(hand.mask, keypoints_2d)
