"""The focal length of an unknown camera, estimated from a stream: the hand's own perspective
and, when the camera moves, the background's motion (:mod:`core.scene_focal`).

When the camera moves (head-mounted, handheld), :class:`FocalEstimator` also hands each
frame's image, with the hands' keypoint boxes, to :class:`core.scene_focal.SceneFocal`
(classical self-calibration from background correspondences, independent of MediaPipe); its
accepted estimate (``FocalEstimate.cue`` "scene") takes precedence over the hand's and ends
the hand's collection. The rest of this text is the hand's cue, used alone for a still camera.

A source opened without ``--intrinsics``, ``--fov`` or EXIF data starts in the assumed camera
(:data:`core.camera.DEFAULT_FOV_DEG`, ``Frame.intrinsics_source`` "assumed"). While a hand is
tracked, :class:`FocalEstimator` keeps a few of its frames (spread in time: the detected
keypoints and the fit's pose); once it has :attr:`FocalSettings.frames` of one hand (pooled per
side across tracks, so a hand lost and found again goes on counting), it runs
the calibration's bundle adjustment once (:func:`core.personalize.bundle.bundle_adjust`: one
skeleton and one focal length shared by all frames, each frame's pose and translation free),
in a background thread or in line. A hand seen at several depths and orientations pins the
focal length: its bones keep their lengths, so the changing foreshortening tells how close it
is. MediaPipe's world landmarks are left out of this fit (``w_dir`` 0): on rendered wide-angle
hands they follow a weak-perspective view (bone directions about half-turned toward the
viewing ray), and with them the focal length drifted to the assumed one whatever the truth.

The estimate is used only when it is well constrained (:meth:`FocalSettings.accepts`): its
standard deviation (:attr:`core.personalize.bundle.BundleResult.focal_log_sd`, the poses and
the skeleton marginalized) below :attr:`FocalSettings.max_log_sd`, and a field of view in a
plausible range. A hand that never turns or changes depth leaves the focal length unobserved:
the stream keeps the assumed camera, collects more frames and tries again (at most
:attr:`FocalSettings.attempts` times). Once accepted, the engine switches the stream to the
estimated camera (``camera_source`` "estimated").

Cost: collecting a frame copies two small arrays; an estimate (about 1-4 s of one core for 16
frames, four starts) runs in a background thread while the stream goes on, and is retried only
where more frames could change its verdict (:attr:`FocalSettings.attempts`): on MediaPipe's
keypoints, whose misfit no frame count removes, one estimate per stream and no more.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from core.camera import Intrinsics, fov_from_focal
from core.errors import Cancelled
from core.model.data import HandModelData
from core.scene_focal import SceneFocal, SceneFocalEstimate, SceneFocalSettings

log = logging.getLogger(__name__)

#: Hand length (wrist to middle fingertip) of the bundle's gauge, metres: any length gives the
#: same focal length (size and depth trade off); this is the population's.
GAUGE_LENGTH_M = 0.18


@dataclass(frozen=True)
class FocalSettings:
    """When and how a stream's focal length is estimated.

    Attributes:
        frames: frames of one hand (one side, across tracks) the first estimate uses.
        interval_s: a frame is kept only this long after the side's last kept one (spreads
            the frames over the motion: at most 15 frames a second; every frame of a 15 fps
            stream, every other one at 30 fps). 0.1 s kept every other frame at 15 fps, and a
            120 degree clip whose hand MediaPipe lost for 11 of 48 frames never collected 16.
        min_score: detections below this confidence are not kept.
        max_log_sd: the estimate's standard deviation (log units, about its relative error)
            above which it is rejected as poorly constrained (the Gauss-Newton figure is
            optimistic: estimates with 2-3% were up to 22% off on keypoint-level sequences).
        min_turn_deg, min_size_ratio: the motion the kept frames must show, else the estimate
            is rejected as degenerate: the hand turned by at least ``min_turn_deg`` between
            two of them (its fitted orientation), or its image size (keypoint box diagonal)
            changed by at least this ratio (depth). A single view constrains the focal length
            only through the skeleton prior, and MediaPipe's keypoint convention biases that.
        fov_range_deg: horizontal fields of view an estimate may have; outside, it is rejected.
        starts_deg: the fields of view the search starts from (one bundle adjustment each;
            the lowest energy wins): from a single start the focal length, weakly observed,
            often stopped half-way (keypoint-level sequences: 120 degrees estimated as 150%
            too long from 70, within 5% from the best of four starts).
        attempts: estimates tried per stream; each rejected one waits for ``frames`` more.
            A rejected estimate is retried only where more frames could change the verdict
            (each try is 1-4 s of a core on the 2-core live budget): never after a residual
            over ``retry_max_residual``; after a standard deviation over ``retry_log_sd`` only
            when the next set's motion spread has grown by ``min_turn_deg`` or by the ratio
            ``min_size_ratio``.
        retry_log_sd: a standard deviation up to which a rejected estimate is retried whatever
            the motion (more frames shrink it; 2% from 16 true-keypoint frames at 60
            degrees became 1.7% with 32). MediaPipe's first estimates: 3.3-12.4%.
        retry_max_residual: an estimate's residual (:attr:`FocalEstimate.residual`, the
            median keypoint misfit relative to the hand's image size) above which a rejected
            estimate is not retried: the keypoints are not the perspective view of one rigid
            hand, and more frames do not make them one. Measured on the nine cached MediaPipe
            clips of rendered hands (60-120 degrees, ``focalmp-scratch``): 0.72-1.11% at 16
            frames (every estimate 9-380% too long); the same clips' true keypoints (hands
            about 200 px across): 0.17-0.25% without noise, 0.30-0.34% with 1 px noise,
            0.39-0.51% with 2 px; the tests' 120 degree hand (about 110 px across) with 1 px
            noise 0.55%. Retried, MediaPipe's estimates drifted down to 0.56-0.79% at 32-48
            frames while staying 43-150% too long, and one of them passed the uncertainty gate:
            the 105 degree clip played forward and back (96 frames) was accepted on its third
            try at +43% (standard deviation 1.9%, residual 0.61%). Too close to the true
            keypoints' for an acceptance gate (noise misfits in pixels, so a small hand's is a
            larger share), but the first try's verdict: with this rule that clip stops after it.
        background: estimate in a background thread (the stream goes on in the assumed
            camera meanwhile); False estimates in line, in the frame that completes the set
            (deterministic: tests and benchmarks).
        scene: the focal length from the background's motion when the camera moves
            (:mod:`core.scene_focal`; in the engine's thread, every frame's image with the
            hands masked out); an accepted scene estimate takes precedence over the hand's
            and stops the hand's collection; while the camera is seen moving and the scene's
            verdict is near (fewer than twice its ``min_pairs`` pairs measured), the hand's
            bundle adjustment waits. None: the hand's cue only.
    """

    frames: int = 16
    interval_s: float = 0.06
    min_score: float = 0.5
    max_log_sd: float = 0.02
    min_turn_deg: float = 20.0
    min_size_ratio: float = 1.25
    fov_range_deg: tuple[float, float] = (25.0, 150.0)
    starts_deg: tuple[float, ...] = (40.0, 70.0, 100.0, 130.0)
    attempts: int = 3
    retry_log_sd: float = 0.04
    retry_max_residual: float = 0.006
    background: bool = True
    scene: SceneFocalSettings | None = field(default_factory=SceneFocalSettings)

    def __post_init__(self) -> None:
        if self.frames < 4:
            raise ValueError(f"FocalSettings.frames must be at least 4, got {self.frames}")
        lo, hi = self.fov_range_deg
        if not 0.0 < lo < hi < 180.0:
            raise ValueError(f"FocalSettings.fov_range_deg must be 0 < lo < hi < 180, got {self.fov_range_deg}")


@dataclass(frozen=True)
class FocalEstimate:
    """One estimate of a stream's focal length.

    Attributes:
        focal_px: the estimated focal length (fx = fy), pixels (NaN when the motion was
            degenerate and nothing was estimated).
        fov_deg: the horizontal field of view it gives, degrees.
        log_sd: its standard deviation, log units (about the relative error).
        frames: frames it used. side: the hand's side.
        accepted: whether the stream uses it. reason: why it was rejected ("" when accepted).
        seconds: the bundle adjustment's wall time.
        intrinsics: the estimated camera (the assumed one's principal point and size).
        residual: the median over frames of each frame's median keypoint reprojection error
            at the estimate, relative to the hand's size in the image (NaN when nothing was
            estimated).
        turn_deg, size_ratio: the motion spread of its frames (:func:`motion_spread`).
        cue: what gave it: "hand" (the hand's perspective, this module's bundle adjustment)
            or "scene" (the background's motion, :mod:`core.scene_focal`: then ``frames``
            counts the pairs of frames pooled, ``side`` is "", ``seconds`` the collector's
            wall time so far and ``residual``, ``turn_deg``, ``size_ratio`` are NaN).
    """

    focal_px: float
    fov_deg: float
    log_sd: float
    frames: int
    side: str
    accepted: bool
    reason: str
    seconds: float
    intrinsics: Intrinsics
    residual: float = float("nan")
    turn_deg: float = float("nan")
    size_ratio: float = float("nan")
    cue: str = "hand"


def scene_estimate(est: SceneFocalEstimate, camera: Intrinsics, seconds: float) -> FocalEstimate:
    """A background-motion estimate (:mod:`core.scene_focal`) as a :class:`FocalEstimate`
    (``cue`` "scene") for ``camera``, the assumed one."""
    intr = est.intrinsics if est.intrinsics is not None else camera
    return FocalEstimate(est.focal_px, est.fov_deg, est.log_sd, est.pairs, "", est.accepted, est.reason, seconds,
                         intr, cue="scene")


@dataclass(frozen=True)
class FocalFrame:
    """What a kept frame contributes: keypoints_2d (21, 2) pixels; pose (48,) the fit's
    axis-angle in the assumed camera (the starting point); score the detection's."""

    keypoints_2d: np.ndarray
    pose: np.ndarray
    score: float


def estimate_focal(model: HandModelData, frames: list[FocalFrame], camera: Intrinsics, side: str,
                   settings: FocalSettings = FocalSettings(), limit_threads: bool = True,
                   cancel: Callable[[], bool] | None = None) -> FocalEstimate:
    """Estimate the focal length of ``camera`` (the assumed one) from frames of one hand.

    Args:
        model: the hand model of the hand's side.
        frames: the hand's kept frames (keypoints and starting poses).
        camera: the assumed camera: its principal point is kept, its focal length starts the
            search; ``width``/``height`` must be set.
        side: "right" or "left" (reported).
        limit_threads: see :func:`core.personalize.bundle.bundle_adjust` (False in a
            background thread).
        cancel: polled during the optimization; once it returns True, :class:`Cancelled` is
            raised.
    """
    from core.personalize.bundle import BundleFrame, BundleSettings, bundle_adjust

    if camera.size is None:
        raise ValueError("estimate_focal needs the camera's image size")
    w, h = camera.size
    turn, ratio = motion_spread(frames)
    degenerate = _degenerate(turn, ratio, settings)
    if degenerate:  # no bundle adjustment: nothing it could say would be used
        return FocalEstimate(float("nan"), float("nan"), float("inf"), len(frames), side, False, degenerate, 0.0,
                             camera, turn_deg=turn, size_ratio=ratio)
    ba_frames = [BundleFrame(np.asarray(f.keypoints_2d, np.float64), (w, h), None, np.asarray(f.pose, np.float64),
                             None, 1.0, float(f.score)) for f in frames]
    result, seconds = None, 0.0
    for fov0 in settings.starts_deg:
        r = bundle_adjust(model, ba_frames, GAUGE_LENGTH_M, settings=BundleSettings(w_dir=0.0),
                          nominal_fov_deg=fov0, cancel=cancel, limit_threads=limit_threads)
        seconds += r.seconds
        if np.isfinite(r.energy) and (result is None or r.energy < result.energy):
            result = r
    if result is None:
        raise ValueError("every start diverged")
    # The bundle's camera is the image-centred one: keep the assumed camera's principal point.
    focal = float(result.focal_px[0])
    fov = fov_from_focal(focal, w) if focal > 0 and math.isfinite(focal) else float("nan")
    intr = Intrinsics(focal, focal * camera.fy / camera.fx, camera.cx, camera.cy, w, h) \
        if focal > 0 and math.isfinite(focal) else camera
    reason = _rejection(result.focal_log_sd, fov, len(result.rejected), len(frames), settings)
    residual = float(np.median(result.residual_rel))
    return FocalEstimate(focal, fov, float(result.focal_log_sd), len(frames), side, not reason, reason,
                         seconds, intr, residual, turn, ratio)


def motion_spread(frames: list[FocalFrame]) -> tuple[float, float]:
    """(largest turn between two frames' orientations, degrees; ratio of the largest to the
    smallest image size) of kept frames."""
    import torch

    from core.rotations import axis_angle_to_matrix

    rot = axis_angle_to_matrix(torch.as_tensor(np.stack([f.pose[:3] for f in frames]), dtype=torch.float64)).numpy()
    cos = (np.einsum("iab,jab->ij", rot, rot) - 1.0) / 2.0  # trace(R_i^T R_j) = sum of products
    turn = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)).max()))
    sizes = np.array([np.linalg.norm(np.ptp(f.keypoints_2d, axis=0)) for f in frames])
    return turn, float(sizes.max() / max(sizes.min(), 1e-9))


def _degenerate(turn: float, ratio: float, st: FocalSettings) -> str:
    """Why kept frames of this motion spread (:func:`motion_spread`) cannot pin a focal length
    ("" when they can)."""
    if turn < st.min_turn_deg and ratio < st.min_size_ratio:
        return (f"degenerate motion (the hand turned {turn:.0f} degrees < {st.min_turn_deg:.0f} and its size changed "
                f"{ratio:.2f}x < {st.min_size_ratio:.2f}x: it needs to turn or change depth)")
    return ""


def _rejection(log_sd: float, fov: float, rejected: int, frames: int, st: FocalSettings) -> str:
    """Why an estimate is not used ("" when it is)."""
    if not math.isfinite(fov):
        return "the optimization diverged"
    if not (log_sd <= st.max_log_sd):
        return (f"poorly constrained (standard deviation {100 * log_sd:.1f}% > {100 * st.max_log_sd:.1f}%: "
                "the hand needs to turn and change depth)")
    lo, hi = st.fov_range_deg
    if not lo <= fov <= hi:
        return f"a field of view of {fov:.0f} degrees is outside {lo:.0f}-{hi:.0f}"
    if rejected > frames // 2:
        return f"{rejected} of {frames} frames disagreed with the shared hand"
    return ""


class FocalEstimator:
    """A stream's focal-length estimation state (one per stream; :meth:`reset` for a new one).

    The engine calls :meth:`observe` with each frame's hands and image while the stream's
    frames come in the assumed camera, and asks :meth:`camera` for the camera to use: None
    until an estimate is accepted. Two cues: the hand's perspective (this module; kept frames,
    a bundle adjustment) and, when the camera moves, the background's motion
    (:mod:`core.scene_focal`, :attr:`FocalSettings.scene`). An accepted scene estimate takes
    precedence (it is independent of MediaPipe's keypoints, whose perspective is biased) and
    ends the hand's collection; before it, an accepted hand estimate is used.

    Args:
        models: the hand model per side ("right", "left").
        settings: see :class:`FocalSettings`.
    """

    def __init__(self, models: dict[str, HandModelData], settings: FocalSettings = FocalSettings()) -> None:
        self.models = models
        self.settings = settings
        self._lock = threading.Lock()
        self._generation = 0
        self.reset()

    def reset(self) -> None:
        """Forget the stream: kept frames, estimates, the camera (a running estimate is
        cancelled at its next iteration)."""
        with self._lock:
            self._kept: dict[str, tuple[float, list[FocalFrame]]] = {}  # side: (last kept time, frames)
            self._needed = self.settings.frames
            self._estimates: list[FocalEstimate] = []
            self._accepted: FocalEstimate | None = None
            self._stopped = ""  # why no further estimate is tried ("" while one may be)
            self._thread: threading.Thread | None = None
            self._generation += 1
            scene = self.settings.scene
            self._scene = SceneFocal(scene) if scene is not None else None
            self._scene_estimate: FocalEstimate | None = None
            self._scene_accepted: FocalEstimate | None = None

    @property
    def estimates(self) -> tuple[FocalEstimate, ...]:
        """Every estimate of the hand's cue made in this stream, in order (accepted or not)."""
        with self._lock:
            return tuple(self._estimates)

    @property
    def scene_estimate(self) -> FocalEstimate | None:
        """The background-motion cue's latest pooled estimate (``cue`` "scene"; accepted or
        not), or None while no pair of frames was measured."""
        with self._lock:
            return self._scene_estimate

    @property
    def scene(self) -> SceneFocal | None:
        """The background-motion collector (its pairs, wall time), or None when it is off."""
        return self._scene

    @property
    def accepted(self) -> FocalEstimate | None:
        """The estimate the stream uses (a scene estimate before a hand one), or None."""
        with self._lock:
            return self._scene_accepted if self._scene_accepted is not None else self._accepted

    @property
    def stopped(self) -> str:
        """Why estimation stopped before its attempts were used ("" when it did not): a
        rejected estimate that more frames would not rescue (see :attr:`FocalSettings.attempts`)."""
        with self._lock:
            return self._stopped

    @property
    def done(self) -> bool:
        """The hand's cue has nothing more to do: an estimate (of either cue) was accepted,
        every attempt was used, or a rejected one showed that more frames would not help
        (:attr:`stopped`). The scene's cue may go on (:attr:`scene_done`)."""
        with self._lock:
            return (self._accepted is not None or self._scene_accepted is not None or bool(self._stopped)
                    or len(self._estimates) >= self.settings.attempts)

    @property
    def scene_done(self) -> bool:
        """The background-motion cue has nothing more to do (off, accepted or given up)."""
        return self._scene is None or self._scene.done

    def camera(self, assumed: Intrinsics) -> Intrinsics | None:
        """The estimated camera for frames whose assumed camera is ``assumed`` (scaled to its
        size when that differs), or None while there is none."""
        found = self.camera_and_cue(assumed)
        return None if found is None else found[0]

    def camera_and_cue(self, assumed: Intrinsics) -> tuple[Intrinsics, str] | None:
        """:meth:`camera` and the cue of the estimate it comes from ("hand" or "scene",
        :attr:`FocalEstimate.cue`), read together (a background estimate may land between two
        reads), or None while there is none."""
        est = self.accepted
        if est is None:
            return None
        intr = est.intrinsics
        if assumed.size is not None and intr.size is not None and assumed.size != intr.size:
            intr = intr.scaled(assumed.size[0] / intr.size[0], assumed.size[1] / intr.size[1])
        return intr, est.cue

    def observe(self, t: float, camera: Intrinsics,
                hands: list[tuple[int, str, np.ndarray, np.ndarray, float]],
                image: np.ndarray | None = None) -> None:
        """Keep this frame's hands (track id, side, keypoints (21, 2), fit pose (48,) in
        ``camera``, score) where due, and start an estimate when a side has enough frames;
        give the frame's ``image`` ((H, W, 3) RGB uint8, None: none) to the background-motion
        cue with the hands' keypoint boxes masked out. ``camera`` is the assumed camera.

        Frames are pooled per side, not per track: a hand lost for a few frames and found
        again (a new track) goes on adding to its side's frames. A frame with two hands of one
        side adds neither (which one continues the set is unknown); the bundle adjustment's
        robust frame weights reject the odd frame of another hand.
        """
        if image is not None and not self.scene_done:
            self._observe_scene(t, camera, hands, image)
        if self.done or self._thread is not None:
            return
        st = self.settings
        confident = [h for h in hands if h[4] >= st.min_score]
        ready: tuple[str, list[FocalFrame]] | None = None
        for _track_id, side, keypoints, pose, score in confident:
            if sum(h[1] == side for h in confident) != 1:
                continue
            last, frames = self._kept.get(side, (-math.inf, []))
            if t - last < st.interval_s:
                continue
            frames.append(FocalFrame(np.array(keypoints, np.float64), np.array(pose, np.float64), float(score)))
            self._kept[side] = (t, frames)
            if len(frames) >= self._needed and ready is None:
                ready = (side, list(frames))
        if ready is None or self._scene_pending():
            return
        side, frames = ready
        stop = self._no_retry(frames)
        if stop:
            with self._lock:
                self._stopped = stop
            log.info("kept the assumed camera: no further focal length estimate (%s)", stop)
            return
        if st.background:
            gen = self._generation
            self._thread = threading.Thread(target=self._run, args=(side, frames, camera, gen, False),
                                            name="handtwin-focal", daemon=True)
            self._thread.start()
        else:
            self._run(side, frames, camera, self._generation, True)

    def _observe_scene(self, t: float, camera: Intrinsics,
                       hands: list[tuple[int, str, np.ndarray, np.ndarray, float]], image: np.ndarray) -> None:
        assert self._scene is not None
        boxes = []
        for hand in hands:
            kp = np.asarray(hand[2], np.float64)
            boxes.append((*kp.min(axis=0), *kp.max(axis=0)))
        est = self._scene.observe(t, image, camera, boxes)
        if est is None:
            return
        found = scene_estimate(est, camera, self._scene.seconds)
        with self._lock:
            self._scene_estimate = found
            if found.accepted:
                self._scene_accepted = found
                log.info("estimated the camera from the background's motion: focal length %.1f px (%.1f degree "
                         "field of view, +-%.1f%%) from %d pairs of frames", found.focal_px, found.fov_deg,
                         100 * found.log_sd, found.frames)

    def _scene_pending(self) -> bool:
        """The background's motion is about to give the focal length: its cue has measured an
        informative pair and fewer than twice the pairs it needs. The hand's bundle adjustment
        (1-4 s of a core, in line for a recording) waits for its verdict, keeping its frames."""
        scene = self._scene
        if scene is None or scene.done:
            return False
        return any(p.informative for p in scene.pairs) and len(scene.pairs) < 2 * scene.settings.min_pairs

    def _no_retry(self, frames: list[FocalFrame]) -> str:
        """Why a retry with these frames is not worth its bundle adjustment ("" when it is):
        the last estimate's standard deviation was far above the gate (over
        :attr:`FocalSettings.retry_log_sd`) and the motion has not spread since."""
        st = self.settings
        last = self._estimates[-1] if self._estimates else None
        if last is None or not (last.log_sd > st.retry_log_sd) or not math.isfinite(last.focal_px):
            return ""
        turn, ratio = motion_spread(frames)
        if turn >= last.turn_deg + st.min_turn_deg or ratio >= last.size_ratio * st.min_size_ratio:
            return ""
        return (f"the last estimate's standard deviation {100 * last.log_sd:.1f}% is over "
                f"{100 * st.retry_log_sd:.1f}% and the hand's motion has not spread since (turned {turn:.0f} "
                f"degrees, was {last.turn_deg:.0f}; size changed {ratio:.2f}x, was {last.size_ratio:.2f}x)")

    def close(self, timeout: float = 10.0) -> None:
        """Cancel a running estimate and wait for its thread to stop (it checks between
        iterations): a thread still inside PyTorch when the interpreter exits aborts it."""
        thread = self._thread
        self.reset()
        if thread is not None:
            thread.join(timeout)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a running background estimate (tests, benchmarks, the end of a stream)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self, side: str, frames: list[FocalFrame], camera: Intrinsics, generation: int,
             limit_threads: bool) -> None:
        try:
            est = estimate_focal(self.models[side], frames, camera, side, self.settings, limit_threads,
                                 cancel=lambda: generation != self._generation)
        except Cancelled:  # the stream was reset or the engine closed
            return
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:  # numerical failure: keep the assumed camera
            est = FocalEstimate(float("nan"), float("nan"), float("inf"), len(frames), side, False,
                                f"the optimization failed ({exc})", 0.0, camera)
        with self._lock:
            if generation != self._generation:  # the stream was reset meanwhile
                return
            self._estimates.append(est)
            if est.accepted:
                self._accepted = est
                log.info("estimated the camera: focal length %.1f px (%.1f degree field of view, +-%.1f%%) "
                         "from %d frames", est.focal_px, est.fov_deg, 100 * est.log_sd, est.frames)
            else:
                self._needed += self.settings.frames
                log.info("kept the assumed camera: the focal length estimate (%.1f px) is %s",
                         est.focal_px, est.reason)
                if est.residual > self.settings.retry_max_residual:  # more frames keep the misfit: stop
                    self._stopped = (f"the keypoints' misfit {100 * est.residual:.2f}% of the hand's size is over "
                                     f"{100 * self.settings.retry_max_residual:.2f}%: they show no consistent "
                                     "perspective")
            self._thread = None
