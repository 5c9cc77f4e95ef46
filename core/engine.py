"""The per-frame engine: detect hands, fit the model, keep per-hand state across frames.

``Engine.process(frame) -> FrameResult`` is what ``track``, the benchmark and the GUI's
worker all call. The engine keeps the last fit of each hand (by side) to warm-start the next
frame and feed the tailor's temporal term; with a profile loaded the shape is fixed
(identity-aware tracking), so the hand's size cannot change from frame to frame.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import multiprocessing.connection
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from core.camera import HandCamera, Intrinsics, weak_perspective_camera
from core.capture.frame import Frame
from core.detect import Detection, HandDetector
from core.detect.process import Detected, DetectorConfig, DetectorProcess, DetectorProcessError
from core.errors import HandTwinError
from core.fit import FitSettings, HandFit, HandObservation, TailorFitter, fit_camera
from core.fit.temporal import HandSmoother, SmoothingSettings
from core.focal import FocalEstimator, FocalSettings
from core.model import HandModel, HandModelData, load_model_data
from core.model.personal import PersonalIdentity, identity_model
from core.refine import Refiner, RefineResult, RefineSettings, RefineTarget
from core.threads import BLAS_THREADS
from core.tracking import HandTracker, TrackedHand, TrackerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs.

    Attributes:
        max_hands: hands to detect per frame.
        detector_mode: "video" for streams (tracking between frames), "static" for photos.
        detector_tiles: photos (``detector_mode`` "static"): where MediaPipe finds fewer than
            ``max_hands`` hands in a large photo, look again in four corner tiles (small hands,
            hands cut by the edge; :class:`core.detect.HandDetector`'s ``tiles``).
        fit: the tailor's weights and iterations.
        device: "cpu", "cuda" or "auto".
        model: hand model path (None: $HANDTWIN_MODEL or the open hand).
        reset_after_s: forget a hand's previous fit when it was last seen this long ago.
        refine_iterations: silhouette refinement iterations per hand and frame (0: none; live
            3, offline 15, :mod:`core.refine`); the target is the hand's segmentation.
        segment: segment every hand (``HandResult.mask``) even without refinement (the GUI's
            texture and silhouette overlay); with refinement the hands are always segmented.
        refine: the refinement's weights and rendering (its ``iterations`` is not used).
        segmentation: segmentation method for the refinement's target (None: the default of
            :func:`core.segment.segment_hand`).
        stream_threads: PyTorch's intra-op threads while :meth:`Engine.process_stream` runs
            (the detector then works in a second thread: with two cores, one PyTorch thread
            leaves the other to MediaPipe; two threads make both wait on each other, which
            doubled the refinement's time on the 2-core machine). None: leave it as it is.
        blas_threads: OpenBLAS's threads (NumPy, SciPy) while the engine is open; the engine's
            arrays are small, and idle OpenBLAS workers busy-wait, keeping a core spinning
            (:mod:`core.threads`). None: leave them as they are.
        smoothing: the causal temporal filter on each tracked hand's fit (its keypoints
            filtered, the hand refitted to them: :mod:`core.fit.temporal`); None: the fits as
            they are. Never used on photos
            (``detector_mode`` "static").
        detector_process: in :meth:`Engine.process_stream`, run MediaPipe and the
            segmentation in a child process (:mod:`core.detect.process`; it starts with the
            first stream, in a few seconds, and lives as long as the engine) instead of a
            thread of this process, where they waited on the other stages' GIL. Where the
            child cannot start, the thread is used (a warning says why).
        tracker: how hands keep their identity and side across frames (:mod:`core.tracking`);
            every detected hand is fitted, ``max_hands`` counts hands, not sides.
        focal: estimate the focal length of a stream in the assumed camera (frames whose
            ``intrinsics_source`` is "assumed") from its tracked hands and, when the camera
            moves, from the background's motion (:mod:`core.focal`, :mod:`core.scene_focal`);
            once an estimate is accepted the stream's frames use it ("estimated"). None: keep
            the assumed camera. Never used on photos (``detector_mode`` "static").
    """

    max_hands: int = 2
    detector_mode: str = "video"
    detector_tiles: bool = True
    fit: FitSettings = field(default_factory=FitSettings)
    device: str = "auto"
    model: str | None = None
    reset_after_s: float = 0.5
    refine_iterations: int = 0
    refine: RefineSettings = field(default_factory=RefineSettings)
    segmentation: str | None = None
    segment: bool = False
    stream_threads: int | None = 1
    blas_threads: int | None = 1
    detector_process: bool = True
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    smoothing: SmoothingSettings | None = field(default_factory=SmoothingSettings)
    focal: FocalSettings | None = field(default_factory=FocalSettings)


@dataclass(frozen=True)
class HandResult:
    """One tracked hand in one frame: what was detected, the fitted model and its refinement,
    and what every consumer (the view, the texture, recording, export) needs to use it as it
    is: the posed mesh, the camera it lives in, its segmentation and its side's topology.

    Attributes:
        detection: MediaPipe's hand, its ``handedness`` the hand track's side
            (:mod:`core.tracking`) and its ``score`` the confidence in that side.
        fit: the tailor's fit, temporally smoothed in streams (``EngineSettings.smoothing``).
        refined: the silhouette refinement of ``fit`` (None when refinement is off, or the hand
            could not be segmented).
        track_id: the hand's identity across the stream's frames.
        vertices: (V, 3) float32 the final mesh, camera frame, metres: the refined mesh when
            refined, else the fit posed (on the profile's own hand when one is loaded).
        camera: the camera ``vertices`` line up with the image in (:class:`core.camera.HandCamera`):
            the refinement's for a refined hand (``RefineResult.camera``: its pinhole, or a
            weak-perspective hand's weak camera), else the fit's (the frame's intrinsics, or the
            weak camera of a weak-perspective fit).
        mask: (H, W) bool the hand's segmentation (None when not segmented, or it failed).
        model: the side's hand model data (its ``faces``, ``uv``, ``uv_faces``: a left hand's
            are the right's mirrored), the profile's own hand when one is loaded.
    """

    detection: Detection
    fit: HandFit
    refined: RefineResult | None = None
    track_id: int = 0
    vertices: np.ndarray | None = None
    camera: HandCamera | None = None
    mask: np.ndarray | None = None
    model: HandModelData | None = None

    @property
    def side(self) -> str:
        return self.fit.side

    @property
    def faces(self) -> np.ndarray | None:
        """(F, 3) int64 the side's triangles (None without ``model``)."""
        return None if self.model is None else self.model.faces

    @property
    def uv(self) -> np.ndarray | None:
        """(T, 2) float32 the side's texture coordinates (None without a UV map)."""
        return None if self.model is None else self.model.uv

    @property
    def uv_faces(self) -> np.ndarray | None:
        """(F, 3) int64 the side's faces into ``uv`` (None without a UV map)."""
        return None if self.model is None else self.model.uv_faces

    @property
    def final_keypoints_2d(self) -> np.ndarray:
        """(21, 2) float32 the final hand's keypoints in the image, pixels."""
        return self.fit.keypoints_2d if self.refined is None else self.refined.keypoints_2d

    @property
    def reprojection_error_px(self) -> float:
        """The final hand's reprojection error against MediaPipe's keypoints, pixels."""
        return float((self.fit if self.refined is None else self.refined).reprojection_error_px)

    @property
    def fit_reprojection_error_px(self) -> float:
        """The fit's, measured as the final one is (the refinement's camera when refined)."""
        r = self.refined
        if r is None or not np.isfinite(r.fit_reprojection_error_px):
            return float(self.fit.reprojection_error_px)
        return float(r.fit_reprojection_error_px)

    @property
    def keypoints_3d(self) -> np.ndarray:
        """(21, 3) float32 camera-frame keypoints, metres: refined when refined, else fitted."""
        return self.fit.keypoints_3d if self.refined is None else self.refined.keypoints_3d

    def to_json(self) -> dict[str, Any]:
        """The hand entry of a ``track`` line (docs/ARCHITECTURE.md); the refined hand when refined.

        ``reprojection_error_px`` is the final hand's, ``fit_reprojection_error_px`` the fit's
        (the refinement's keypoint guard keeps the first within a small slack of the second).
        With refinement the entry also has ``silhouette_iou_before`` (the fit's IoU with the
        target), ``edge_length_error_mm`` and ``normal_error`` (paper 004's plausibility
        metrics of the refined mesh against the parametric mesh its vertex offsets deform) and
        ``refinement_fell_back`` (the guard replaced the refined hand by the fit).
        """
        f, r = self.fit, self.refined
        src = f if r is None else r
        out = {
            "track_id": self.track_id,
            "handedness": self.detection.handedness,
            "score": round(float(self.detection.score), 4),
            "keypoints_2d": np.round(self.detection.keypoints_2d, 2).tolist(),
            "joints_3d": np.round(src.keypoints_3d, 5).tolist(),
            "pose": np.round(src.pose, 5).tolist(),
            "shape": np.round(src.betas, 5).tolist(),
            "translation": np.round(src.transl, 5).tolist(),
            "reprojection_error_px": round(self.reprojection_error_px, 3),
            "fit_reprojection_error_px": round(self.fit_reprojection_error_px, 3),
            "silhouette_iou": None if r is None else round(r.iou_after, 4),
            "projection": f.projection,
        }
        if r is not None:
            out["silhouette_iou_before"] = round(r.iou_before, 4)
            out["edge_length_error_mm"] = round(r.edge_length_error * 1000.0, 4)
            out["normal_error"] = round(r.normal_error, 5)
            out["refinement_fell_back"] = bool(r.fell_back)
        return out


@dataclass(frozen=True)
class FrameResult:
    """The engine's output for one frame.

    Attributes:
        frame: index in the source. timestamp_s: seconds. source: the SRC string.
        hands: the tracked hands (possibly none).
        time_ms: per-stage wall time in milliseconds ("detect", "fit", with refinement
            "segment" and "refine", and "total").
        camera: the pinhole camera the hands are in: the frame's intrinsics, or for
            weak-perspective fits the nominal camera they are placed in.
        camera_source: ``Frame.intrinsics_source`` ("given", "exif", "assumed"), "estimated"
            (the stream's focal length estimated from its hands or from the background's
            motion, :mod:`core.focal`), or "weak".
        camera_cue: for an "estimated" camera, what gave it: "hand" (the hand's perspective
            across frames) or "scene" (the background's motion, :mod:`core.scene_focal`);
            None otherwise.
    """

    frame: int
    timestamp_s: float
    source: str
    hands: tuple[HandResult, ...]
    time_ms: dict[str, float]
    camera: Intrinsics | None = None
    camera_source: str = "given"
    camera_cue: str | None = None

    def to_json(self) -> dict[str, Any]:
        """One line of ``track``'s JSONL output (docs/ARCHITECTURE.md contract)."""
        return {
            "frame": self.frame,
            "timestamp_s": round(self.timestamp_s, 4),
            "source": self.source,
            "time_ms": {k: round(v, 3) for k, v in self.time_ms.items()},
            "camera": None if self.camera is None else {
                k: round(getattr(self.camera, k), 3) for k in ("fx", "fy", "cx", "cy")},
            "camera_source": self.camera_source,
            "camera_cue": self.camera_cue,
            "hands": [h.to_json() for h in self.hands],
        }


def _put(q: queue.Queue, item: object, stop: threading.Event) -> None:
    """Put into a bounded queue unless the consumer has stopped (then drop the item)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return
        except queue.Full:
            pass


class _SourceReader:
    """A stream's source read in a thread of its own, each frame as soon as the child can take it.

    The thread reads a frame for every permit: ``allowed`` (the child's depth) at first, one
    more per :meth:`grant` (the child answered a frame), so frames are read when the child can
    take them, as when the detector's thread read them itself. The frames, then :attr:`END`
    (or the source's error), are handed over in order through :meth:`take`; :meth:`fileno` is
    readable while one waits, so the detector's thread waits for the source and the child's
    answers at once (:func:`multiprocessing.connection.wait`) and takes each answer when it
    comes. Once ``stop`` is set the thread ends after the frame it is reading.
    """

    END = object()

    def __init__(self, frames: Iterable[Frame], stop: threading.Event, allowed: int) -> None:
        self._frames = frames
        self._stop = stop
        self._permits = threading.Semaphore(allowed)
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()  # a byte per item handed over
        self._thread = threading.Thread(target=self._run, name="handtwin-source", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def fileno(self) -> int:
        """Readable while an item waits to be taken."""
        return self._wake_r

    def grant(self) -> None:
        """Let the thread read one more frame."""
        self._permits.release()

    def take(self) -> Frame | BaseException | object:
        """The next item (a frame, the source's error or :attr:`END`); only once one waits."""
        os.read(self._wake_r, 1)
        return self._items.get_nowait()

    def close(self) -> None:
        """Wait for the thread (``stop`` set, or the source ended) and free the pipe."""
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _hand(self, item: object) -> None:
        self._items.put(item)
        os.write(self._wake_w, b"\0")

    def _run(self) -> None:
        try:
            frames = iter(self._frames)
            while True:
                while not self._permits.acquire(timeout=0.05):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                frame = next(frames, self.END)
                if self._stop.is_set():
                    return
                self._hand(frame)
                if frame is self.END:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed on, re-raised in the caller
            self._hand(exc)


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when available, else "cpu"; reject an unavailable CUDA clearly."""
    from core.errors import InputError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but this PyTorch has no CUDA device")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r} (auto, cpu or cuda)")
    return device


@dataclass(frozen=True)
class _Segmented:
    """The hand masks of one frame's detections (same order; None where segmentation failed)
    and the time it took, ms."""

    masks: tuple[np.ndarray | None, ...]
    ms: float


class Engine:
    """Detect and fit hands frame by frame. Use as a context manager (closes MediaPipe).

    Args:
        settings: see :class:`EngineSettings`.
        shape: (S,) a fixed hand shape from a profile (identity-aware), or the profile's whole
            :class:`~core.model.personal.PersonalIdentity` (shape, personal skeleton and surface:
            the fit and the refinement then run on the personal model), or None. With either,
            the refinement never moves the identity: its shape offsets are off, only pose,
            translation and the per-frame vertex offsets move.
        stream: the caller will use :meth:`process_stream`: with ``detector_process``, start
            the detector's child process now, so that it loads MediaPipe (a few seconds)
            while this engine loads its models, instead of at the first stream; MediaPipe in
            this process is then loaded only if needed. Otherwise it is loaded here.
    """

    def __init__(self, settings: EngineSettings = EngineSettings(),
                 shape: np.ndarray | PersonalIdentity | None = None, stream: bool = False) -> None:
        self.settings = settings
        self._detector: HandDetector | None = None  # made on first use (process, or the thread)
        self._worker: DetectorProcess | None = None  # process_stream's detector, once started
        self._worker_failed = False
        self._blas_saved = None
        if stream:
            self._start_worker(wait=False)
        try:
            self.device = resolve_device(settings.device)
            right = load_model_data(settings.model, "right")
            left = load_model_data(settings.model, "left")
            identity = shape if isinstance(shape, PersonalIdentity) else None
            if identity is not None:
                shape = identity.shape
            if shape is not None and len(shape) != right.num_betas:
                from core.errors import InputError

                raise InputError(f"the profile's shape has {len(shape)} values, the model needs {right.num_betas}")
            if identity is not None:  # the profile's own hand: skeleton and surface, both sides
                right, left = identity_model(right, identity), identity_model(left, identity)
            self.model_data = {"right": right, "left": left}
            self._layers = {side: HandModel(data, self.device) for side, data in self.model_data.items()}
            self.fitter = TailorFitter(right, left, settings.fit, self.device)
            self.shape = None if shape is None else np.asarray(shape, dtype=np.float32)
            self.refiner: Refiner | None = None
            if settings.refine_iterations > 0:
                refine = settings.refine
                if self.shape is not None:  # a profile's identity is fixed: refinement moves pose only
                    refine = dataclasses.replace(refine, optimize_shape=False)
                self.refiner = Refiner(right, left, refine, self.device, settings.fit.nominal_fov_deg)
        except BaseException:
            if self._worker is not None:
                self._worker.close()
            raise
        if not stream:  # frame by frame: load MediaPipe now, not inside the first frame's detection
            _ = self.detector
        if settings.blas_threads is not None:
            self._blas_saved = BLAS_THREADS.set(settings.blas_threads)
        # Hand identities across frames; each track's last fit (time, fit) by track id.
        self.tracker = HandTracker(settings.tracker)
        self._last: dict[int, tuple[float, HandFit]] = {}
        self._smoothers: dict[int, HandSmoother] = {}  # each track's temporal filter
        # The stream's focal length, estimated while its frames are in the assumed camera.
        self.focal = FocalEstimator(self.model_data, settings.focal) if settings.focal is not None else None
        self._estimated: Intrinsics | None = None  # the estimated camera the last frame used
        self._estimated_cue: str | None = None  # and the cue its estimate came from
        #: What :mod:`core.metric_depth` did to each hand of the last RGB-D frame (the order of
        #: its ``FrameResult.hands``); empty for frames without depth.
        self.depth_alignments: tuple = ()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def detector(self) -> HandDetector:
        """MediaPipe in this process (:meth:`process`, and streams without the child process)."""
        if self._detector is None:
            self._detector = HandDetector(max_hands=self.settings.max_hands, mode=self.settings.detector_mode,
                                          tiles=self.settings.detector_tiles)
        return self._detector

    def detector_cpu_s(self) -> float | None:
        """CPU time the stream's detector child has used so far, seconds (0 without a child:
        detection then runs in this process; None where unknown)."""
        return 0.0 if self._worker is None else self._worker.cpu_time_s()

    @property
    def detects_in_child(self) -> bool:
        """Whether streams detect in the child process now (:mod:`core.detect.process`)."""
        return self._worker is not None and self._worker.alive

    def close(self) -> None:
        if getattr(self, "focal", None) is not None:
            self.focal.close()  # cancels an estimate still running in the background
        if self._detector is not None:
            self._detector.close()
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        if self._blas_saved is not None:
            BLAS_THREADS.set(self._blas_saved)
            self._blas_saved = None

    def reset(self) -> None:
        """Forget the previous frames (a new stream starts)."""
        self._last.clear()
        self._smoothers.clear()
        self.tracker.reset()
        if self.focal is not None:
            self.focal.reset()
        self._estimated = None
        self._estimated_cue = None
        if self._detector is not None:
            self._detector.reset()
        if self._worker is not None:
            try:
                self._worker.reset()
            except HandTwinError as exc:  # it died: the next stream starts another
                log.warning("%s", exc)
                self._worker.close()
                self._worker = None

    def process(self, frame: Frame) -> FrameResult:
        """Detect and fit the hands of one frame."""
        t0 = time.perf_counter()
        detections = self.detector.detect(frame.image, frame.timestamp_s)
        return self._fit_frame(frame, detections, (time.perf_counter() - t0) * 1000)

    def process_detections(self, frame: Frame, detections: Sequence[Detection], detect_ms: float = 0.0) -> FrameResult:
        """Track and fit hands detected elsewhere (replayed or synthetic detections) in ``frame``."""
        return self._fit_frame(frame, tuple(detections), detect_ms)

    def _segment(self, frame: Frame, detections: Sequence[Detection]) -> _Segmented:
        """The refinement targets' masks of every detection (None where segmentation fails)."""
        from core.segment import segment_hands

        t0 = time.perf_counter()
        hands = segment_hands(frame.image, [d.keypoints_2d for d in detections], self.settings.segmentation)
        masks = [None if h is None else h.mask for h in hands]
        return _Segmented(tuple(masks), (time.perf_counter() - t0) * 1000)

    @staticmethod
    def _separate(segmented: _Segmented, detections: Sequence[Detection]) -> _Segmented:
        """The masks of distinct hands with the pixels two of them claim given to one
        (:func:`core.segment.separate_hands`; duplicate detections are merged before)."""
        from core.segment import separate_hands

        t0 = time.perf_counter()
        masks = separate_hands(segmented.masks, [d.keypoints_2d for d in detections])
        return _Segmented(tuple(masks), segmented.ms + (time.perf_counter() - t0) * 1000)

    def process_stream(self, frames: Iterable[Frame],
                       after: Callable[[Frame, FrameResult], None] | None = None) -> Iterator[FrameResult]:
        """Process a stream as a pipeline: detection runs a frame or two ahead.

        MediaPipe runs in a child process (:mod:`core.detect.process`, with
        ``detector_process``; else in a second thread), a frame or two ahead; a second thread
        hands its answers on and, with refinement, segments the hands (it needs only the image
        and the keypoints); the caller's thread fits and refines; ``after`` runs in a third
        thread. The refinement's C loop and the kernels release the GIL, so on two cores
        neighbouring frames overlap. In a thread of this process, MediaPipe waited for the
        other stages' GIL before and after every frame; in the child it runs frame after frame
        (whole live frame with texture on the demo, median of 20 alternating rounds: 1.47x
        MediaPipe alone with the detector in a thread, 1.28x in the child; shorter comparisons
        ranged from no difference to 0.08). The child runs MediaPipe only: it is the stream's
        slowest stage (on two cores the fit, refinement and texture wait for it), so the
        segmentation (about 1 ms a frame) is done here, beside the fit (6 alternating A/B runs
        of 11 rounds, demo, texture on: median ratio 1.21 with the segmentation here, 1.45 in
        the child). The fit stays in the caller's thread: in a thread of its own its NumPy work
        (which holds the GIL) and the refinement's PyTorch ops slowed each other down. The
        queues are bounded (two frames), nothing piles up; an error in the reader, the
        detector or ``after`` is raised here, in the caller's thread. With the child, the source
        is read in a thread of its own (:class:`_SourceReader`), a frame whenever the child can
        take one: each answer is taken as soon as the child gives it. (When the detector's
        thread read the source itself, frame k's answer waited until frame k+1 had come: a
        paced camera's frame period of latency. Demo paced at its 15 fps, refinement 3, quiet
        machine: median from a frame leaving the source to its result 82-83 ms before, 27 ms
        after; frames read beyond the one yielded, 0.98 before, 0 after.)

        Args:
            frames: the stream.
            after: called as ``after(frame, result)`` for every result, in order, in a thread
                of its own while the next frames are processed (e.g. blending the hands into
                a skin texture). A result is yielded as soon as it is made, before ``after``
                has run on it; when the stream ends, this waits for ``after`` to finish the
                last result.
        """
        stop = threading.Event()
        done = object()
        detected: queue.Queue = queue.Queue(maxsize=2)
        worker = self._stream_worker()
        # With the child, the source is read in a thread of its own (below): the detector's
        # thread then takes each answer as soon as the child gives it, not once the next frame
        # has come from the source (a paced camera's frame period later).
        source = _SourceReader(frames, stop, worker.depth) if worker is not None else None

        def answer(frame: Frame, d: Detected) -> None:
            segmented = self._segment(frame, d.detections) if self._segments else None
            _put(detected, (frame, d.detections, d.detect_ms, segmented), stop)

        def detect_stage() -> None:
            pending: collections.deque[Frame] = collections.deque()
            try:
                if source is None:
                    for frame in frames:
                        if stop.is_set():
                            return
                        t0 = time.perf_counter()
                        dets = self.detector.detect(frame.image, frame.timestamp_s)
                        ms = (time.perf_counter() - t0) * 1000
                        segmented = self._segment(frame, dets) if self._segments else None
                        _put(detected, (frame, dets, ms, segmented), stop)
                else:  # a frame or two ahead, in the child process
                    ended = False
                    while not stop.is_set() and not (ended and not pending):
                        waiting = [worker] if ended else [worker, source] if pending else [source]
                        ready = multiprocessing.connection.wait(waiting, timeout=0.05)
                        if worker in ready:  # an answer first: it is what the user waits for
                            answer(pending.popleft(), worker.receive())
                            source.grant()  # the source may read one more frame
                        elif source in ready:
                            item = source.take()
                            if item is _SourceReader.END:
                                ended = True
                            elif isinstance(item, BaseException):
                                raise item
                            else:
                                worker.submit(item.image, item.timestamp_s)
                                pending.append(item)
                    if stop.is_set():
                        return
                _put(detected, done, stop)
            except BaseException as exc:  # noqa: BLE001 - handed on, re-raised in the caller
                _put(detected, exc, stop)
            finally:
                if worker is not None and worker.alive:
                    try:
                        worker.drain()  # answers of frames nobody will read (an early stop)
                    except HandTwinError:  # it died: the next stream starts another
                        pass

        post_q: queue.Queue = queue.Queue(maxsize=2)
        post_error: list[BaseException] = []

        def post() -> None:
            while (item := post_q.get()) is not done:
                if post_error:
                    continue  # drain after a failure; the caller raises it
                try:
                    after(*item)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    post_error.append(exc)

        detector = threading.Thread(target=detect_stage, name="handtwin-detect", daemon=True)
        poster = threading.Thread(target=post, name="handtwin-after", daemon=True) if after else None
        threads = torch.get_num_threads()
        if self.settings.stream_threads is not None:
            torch.set_num_threads(self.settings.stream_threads)
        if source is not None:
            source.start()
        detector.start()
        if poster is not None:
            poster.start()
        finished = False
        try:
            while True:
                item = detected.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                frame, dets, detect_ms, segmented = item
                result = self._fit_frame(frame, dets, detect_ms, segmented)
                if poster is not None:
                    if post_error:
                        raise post_error[0]
                    post_q.put((frame, result))
                yield result
            finished = True
        finally:
            stop.set()  # the detector's (and the source's) thread notices within 50 ms
            detector.join()
            if source is not None:
                source.close()  # after its thread's current frame
            if poster is not None:
                post_q.put(done)  # the poster drains its queue, so this cannot block for long
                poster.join()
            torch.set_num_threads(threads)
        if finished and post_error:
            raise post_error[0]

    @property
    def _segments(self) -> bool:
        """Whether every hand is segmented (for the refinement's target or on request)."""
        return self.settings.refine_iterations > 0 or self.settings.segment

    def _stream_worker(self) -> DetectorProcess | None:
        """The child process :meth:`process_stream` detects in (started on first use), or None
        for the detector thread (switched off, or it could not start)."""
        if self._worker is not None and not self._worker.alive:  # died in an earlier stream
            self._worker.close()
            self._worker = None
        self._start_worker(wait=True)
        return self._worker

    def _start_worker(self, wait: bool) -> None:
        """Start the detector process (with ``detector_process``, unless it failed before); on
        failure, log why and leave it to the thread."""
        try:
            if self._worker is None and self.settings.detector_process and not self._worker_failed:
                # MediaPipe only: the stream segments in its own thread (see process_stream)
                config = DetectorConfig(self.settings.max_hands, self.settings.detector_mode,
                                        self.settings.detector_tiles and self.settings.detector_mode == "static")
                self._worker = DetectorProcess(config, wait=False)
            if wait and self._worker is not None:
                self._worker.wait_ready()
        except DetectorProcessError as exc:
            log.warning("hand detection stays in this process: %s", exc)
            if self._worker is not None:
                self._worker.close()
                self._worker = None
            self._worker_failed = True

    def _fit_tracked(self, tracked: Sequence[TrackedHand], K: np.ndarray | None, size: tuple[int, int],
                     t: float) -> list[HandFit]:
        """Fit every tracked hand with its track's side, warm-started from the track's last fit.

        A track still unsure of its side (:class:`core.tracking.TrackedHand`) is fitted with
        both the right and the mirrored model from scratch; the residuals go to the tracker as
        evidence, and the fit of the side the track then holds is kept.
        """
        from core.detect import swap_handedness

        observations, previous, owner = [], [], []
        for i, th in enumerate(tracked):
            d = th.detection
            last = self._last.get(th.track_id)
            fresh = (last is not None and abs(t - last[0]) <= self.settings.reset_after_s
                     and last[1].side == th.side and not th.unsure)
            sides = (th.side, swap_handedness(th.side)) if th.unsure else (th.side,)
            for side in sides:
                observations.append(HandObservation(side, d.keypoints_2d, d.world_landmarks, K, size, d.score))
                previous.append(last[1] if fresh else None)
                owner.append(i)
        fits = self.fitter.fit(observations, self.shape, previous) if observations else []
        chosen: list[HandFit | None] = [None] * len(tracked)
        by_hand: dict[int, dict[str, HandFit]] = {}
        for i, f in zip(owner, fits):
            by_hand.setdefault(i, {})[f.side] = f
        for i, th in enumerate(tracked):
            both = by_hand[i]
            if len(both) == 2:
                self.tracker.observe_fit_sides(th.track_id, both["right"].reprojection_error_px,
                                               both["left"].reprojection_error_px)
                side = self.tracker.side_of(th.track_id) or th.side
                chosen[i] = both[side]
            else:
                chosen[i] = both[th.side]
        return chosen  # type: ignore[return-value]

    def _sided(self, th: TrackedHand) -> Detection:
        """The detection labelled with its track's side after this frame's evidence."""
        side = self.tracker.side_of(th.track_id) or th.side
        return th.detection if side == th.side else dataclasses.replace(th.detection, handedness=side)

    def _fit_frame(self, frame: Frame, detections: tuple[Detection, ...], detect_ms: float,
                   segmented: _Segmented | None = None) -> FrameResult:
        t1 = time.perf_counter()
        self.depth_alignments = ()
        # Every detected hand is a hand of some track (none dropped, a duplicate detection of
        # one hand merged); its side is the track's.
        if self.settings.detector_mode == "static":
            # Photos are unrelated: no identity, side evidence or warm start carries over
            # (a hand is sided from its own geometry, both models' fits and its label).
            self.tracker.reset()
            self._last.clear()
        tracked = self.tracker.update(detections, frame.timestamp_s)
        assumed = frame.intrinsics if frame.intrinsics_source == "assumed" else None
        frame = self._camera(frame)
        K = None if frame.intrinsics is None else frame.intrinsics.K.astype(np.float32)
        h, w = frame.image.shape[:2]
        fits = self._fit_tracked(tracked, K, (w, h), frame.timestamp_s)
        dets = [self._sided(th) for th in tracked]
        # Frames in the assumed camera feed the focal length's cues (also after a hand-based
        # estimate was accepted: a scene estimate from the background's motion overrides it).
        if assumed is not None and self.focal is not None and self.settings.detector_mode != "static" \
                and not (self.focal.done and self.focal.scene_done):
            self.focal.observe(frame.timestamp_s, assumed,
                               [(th.track_id, f.side, d.keypoints_2d, f.pose, float(d.score))
                                for th, d, f in zip(tracked, dets, fits)], image=frame.image)
        for th, f in zip(tracked, fits):
            self._last[th.track_id] = (frame.timestamp_s, f)
        for gone in set(self._last) - set(self.tracker.tracks):
            del self._last[gone]
        fits = self._smooth(frame, dets, fits, K, [th.track_id for th in tracked])
        fit_ms = (time.perf_counter() - t1) * 1000
        times = {"detect": detect_ms, "fit": fit_ms}
        if segmented is not None and len(tracked) != len(detections):  # a duplicate was merged
            segmented = _Segmented(tuple(segmented.masks[th.index] for th in tracked), segmented.ms)
        if self._segments and fits and segmented is None:
            segmented = self._segment(frame, dets)
        if segmented is not None and len(segmented.masks) > 1:  # distinct hands: no pixel in two masks
            segmented = self._separate(segmented, dets)
        if frame.depth is not None and K is not None and fits:  # RGB-D: the fits at the measured depth
            fits = self._to_depth(frame, dets, fits, K, None if segmented is None else segmented.masks, times)
        refined: list[RefineResult | None] = [None] * len(fits)
        masks: tuple[np.ndarray | None, ...] = (None,) * len(fits) if segmented is None else segmented.masks
        if self.refiner is not None and fits:
            refined = self._refine(frame, dets, fits, K, segmented, times)
        elif segmented is not None and fits:
            times["segment"] = segmented.ms
        if frame.intrinsics is not None:
            camera, origin = frame.intrinsics, frame.intrinsics_source
        else:
            camera, origin = weak_perspective_camera((w, h), self.settings.fit.nominal_fov_deg), "weak"
        hands = tuple(self._hand_result(d, f, r, th.track_id, m, camera)
                      for d, f, r, th, m in zip(dets, fits, refined, tracked, masks))
        times["total"] = sum(times.values())
        cue = self._estimated_cue if origin == "estimated" else None
        return FrameResult(frame.index, frame.timestamp_s, frame.source, hands, times, camera, origin, cue)

    def _camera(self, frame: Frame) -> Frame:
        """The frame in the stream's estimated camera once there is one (frames in the assumed
        camera only); at the switch the tracks' warm starts and filters, which live in the
        assumed camera, are dropped."""
        if self.focal is None or frame.intrinsics is None or frame.intrinsics_source != "assumed" \
                or self.settings.detector_mode == "static":
            return frame
        found = self.focal.camera_and_cue(frame.intrinsics)
        if found is None:
            return frame
        camera, self._estimated_cue = found
        if camera != self._estimated:
            self._estimated = camera
            self._last.clear()
            self._smoothers.clear()
        return dataclasses.replace(frame, intrinsics=camera, intrinsics_source="estimated")

    def _hand_result(self, detection: Detection, fit: HandFit, refined: RefineResult | None, track_id: int,
                     mask: np.ndarray | None, camera: Intrinsics) -> HandResult:
        """A hand's result with its mesh, its camera, its mask and its side's topology.

        ``camera`` is the frame's (or the nominal camera of weak perspective). A refined hand
        lives in the refinement's camera (``RefineResult.camera``: the refiner's pinhole, or a
        weak-perspective hand's weak camera as the refinement moved it); an unrefined one in
        the fit's (:func:`core.fit.fit_camera`: the frame's for a perspective fit, the weak
        camera for a weak-perspective one, which the nominal pinhole only approximates).
        """
        if refined is not None:
            vertices = np.asarray(refined.vertices, np.float32)
        else:
            with torch.no_grad():
                out = self._layers[fit.side](torch.as_tensor(fit.pose, device=self.device)[None],
                                             torch.as_tensor(fit.betas, device=self.device)[None],
                                             torch.as_tensor(fit.transl, device=self.device)[None])
            vertices = out.vertices[0].cpu().numpy().astype(np.float32, copy=False)
        hand_camera = fit_camera(fit, camera) if refined is None else refined.camera
        return HandResult(detection, fit, refined, track_id, vertices, hand_camera, mask, self.model_data[fit.side])

    def _smooth(self, frame: Frame, dets: list[Detection], fits: list[HandFit], K: np.ndarray | None,
                track_ids: list[int]) -> list[HandFit]:
        """The fits through their tracks' temporal filters (streams only; the raw fits stay the
        next frame's warm start and temporal term, so the filter never feeds back into the fit)."""
        st = self.settings.smoothing
        if st is None or self.settings.detector_mode == "static" or not fits:
            return fits
        t = frame.timestamp_s
        for key in [k for k, s in self._smoothers.items()
                    if k not in self.tracker.tracks or not abs(t - s.time) <= st.max_gap_s]:
            del self._smoothers[key]  # tracks ended, or unseen for a while
        size = (frame.image.shape[1], frame.image.shape[0])
        out = []
        for d, f, key in zip(dets, fits, track_ids):
            smoother = self._smoothers.setdefault(key, HandSmoother(self.fitter, st))
            out.append(smoother(f, t, d.keypoints_2d, K, size, self.shape))
        return out

    def _to_depth(self, frame: Frame, dets: list[Detection], fits: list[HandFit], K: np.ndarray,
                  masks: Sequence[np.ndarray | None] | None, times: dict[str, float]) -> list[HandFit]:
        """Each fit moved onto the frame's registered depth map (:mod:`core.metric_depth`)."""
        from core.metric_depth import align_fit_to_depth

        t0 = time.perf_counter()
        size = (frame.width, frame.height)
        out, done = [], []
        for i, (d, f) in enumerate(zip(dets, fits)):
            mask = None if masks is None else masks[i]
            moved, info = align_fit_to_depth(self.fitter, self._layers[f.side], f, d.keypoints_2d, K, size,
                                             frame.depth, mask, fixed_shape=self.shape is not None)
            out.append(moved)
            done.append(info)
        self.depth_alignments = tuple(done)
        times["depth"] = (time.perf_counter() - t0) * 1000
        return out

    def _refine(self, frame: Frame, dets: list[Detection], fits: list[HandFit], K: np.ndarray | None,
                segmented: _Segmented, times: dict[str, float]) -> list[RefineResult | None]:
        """Refine the fits against their hands' masks (all hands at once); with an RGB-D frame the
        depth map, inside each hand's mask, is the depth term's target (paper 003, Eq. 7)."""
        def depth_of(m: np.ndarray) -> np.ndarray | None:
            if frame.depth is None:
                return None
            return np.where(np.asarray(m) > 0.5, frame.depth, np.float32(0.0)).astype(np.float32)

        targets = [None if m is None else RefineTarget(m, d.keypoints_2d, K, depth=depth_of(m))
                   for d, m in zip(dets, segmented.masks)]
        t1 = time.perf_counter()
        idx = [i for i, t in enumerate(targets) if t is not None]
        results = self.refiner.refine([fits[i] for i in idx], [targets[i] for i in idx],
                                      iterations=self.settings.refine_iterations) if idx else []
        times["segment"] = segmented.ms
        times["refine"] = (time.perf_counter() - t1) * 1000
        out: list[RefineResult | None] = [None] * len(fits)
        for i, r in zip(idx, results):
            out[i] = r
        return out
