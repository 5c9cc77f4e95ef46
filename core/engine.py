"""The per-frame engine: detect hands, fit the model, keep per-hand state across frames.

``Engine.process(frame) -> FrameResult`` is what ``track``, the benchmark and the GUI's
worker all call. The engine keeps the last fit of each hand (by side) to warm-start the next
frame and feed the tailor's temporal term; with a profile loaded the shape is fixed
(identity-aware tracking), so the hand's size cannot change from frame to frame.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.capture.frame import Frame
from core.detect import Detection, HandDetector
from core.fit import FitSettings, HandFit, HandObservation, TailorFitter
from core.model import load_model_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs.

    Attributes:
        max_hands: hands to detect per frame.
        detector_mode: "video" for streams (tracking between frames), "static" for photos.
        fit: the tailor's weights and iterations.
        device: "cpu", "cuda" or "auto".
        model: hand model path (None: $HANDTWIN_MODEL or the open hand).
        reset_after_s: forget a hand's previous fit when it was last seen this long ago.
    """

    max_hands: int = 2
    detector_mode: str = "video"
    fit: FitSettings = field(default_factory=FitSettings)
    device: str = "auto"
    model: str | None = None
    reset_after_s: float = 0.5


@dataclass(frozen=True)
class HandResult:
    """One tracked hand in one frame: what was detected and the fitted model."""

    detection: Detection
    fit: HandFit

    def to_json(self) -> dict[str, Any]:
        """The hand entry of a ``track`` line (DESIGN.md)."""
        f = self.fit
        return {
            "handedness": self.detection.handedness,
            "score": round(float(self.detection.score), 4),
            "keypoints_2d": np.round(self.detection.keypoints_2d, 2).tolist(),
            "joints_3d": np.round(f.keypoints_3d, 5).tolist(),
            "pose": np.round(f.pose, 5).tolist(),
            "shape": np.round(f.betas, 5).tolist(),
            "translation": np.round(f.transl, 5).tolist(),
            "reprojection_error_px": round(f.reprojection_error_px, 3),
            "silhouette_iou": None,
            "projection": f.projection,
        }


@dataclass(frozen=True)
class FrameResult:
    """The engine's output for one frame.

    Attributes:
        frame: index in the source. timestamp_s: seconds. source: the SRC string.
        hands: the tracked hands (possibly none).
        time_ms: per-stage wall time in milliseconds ("detect", "fit", "total").
    """

    frame: int
    timestamp_s: float
    source: str
    hands: tuple[HandResult, ...]
    time_ms: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """One line of ``track``'s JSONL output (DESIGN.md contract)."""
        return {
            "frame": self.frame,
            "timestamp_s": round(self.timestamp_s, 4),
            "source": self.source,
            "time_ms": {k: round(v, 3) for k, v in self.time_ms.items()},
            "hands": [h.to_json() for h in self.hands],
        }


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


class Engine:
    """Detect and fit hands frame by frame. Use as a context manager (closes MediaPipe).

    Args:
        settings: see :class:`EngineSettings`.
        shape: (S,) a fixed hand shape from a profile (identity-aware), or None.
    """

    def __init__(self, settings: EngineSettings = EngineSettings(), shape: np.ndarray | None = None) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        right = load_model_data(settings.model, "right")
        left = load_model_data(settings.model, "left")
        self.fitter = TailorFitter(right, left, settings.fit, self.device)
        if shape is not None and len(shape) != right.num_betas:
            from core.errors import InputError

            raise InputError(f"the profile's shape has {len(shape)} values, the model needs {right.num_betas}")
        self.shape = None if shape is None else np.asarray(shape, dtype=np.float32)
        self.detector = HandDetector(max_hands=settings.max_hands, mode=settings.detector_mode)
        self._last: dict[str, tuple[float, HandFit]] = {}
        # Belief that a lone tracked hand is a right hand (MediaPipe's label flickers).
        self._right_belief: float | None = None
        self._belief_time = -1e9

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.detector.close()

    def reset(self) -> None:
        """Forget the previous frames (a new stream starts)."""
        self._last.clear()
        self._right_belief = None
        self.detector.reset()

    def process(self, frame: Frame) -> FrameResult:
        """Detect and fit the hands of one frame."""
        t0 = time.perf_counter()
        detections = self.detector.detect(frame.image, frame.timestamp_s)
        return self._fit_frame(frame, detections, (time.perf_counter() - t0) * 1000)

    def process_stream(self, frames: Iterable[Frame]) -> Iterator[FrameResult]:
        """Process a stream with detection running one frame ahead in a second thread.

        MediaPipe and PyTorch both release the GIL, so on two cores detecting frame n+1
        overlaps fitting frame n. The queue is bounded (two frames), nothing piles up; an
        error in the reader or the detector is raised here, in the caller's thread.
        """
        q: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                for frame in frames:
                    if stop.is_set():
                        return
                    t0 = time.perf_counter()
                    dets = self.detector.detect(frame.image, frame.timestamp_s)
                    q.put((frame, dets, (time.perf_counter() - t0) * 1000))
                q.put(done)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
                q.put(exc)

        worker = threading.Thread(target=produce, name="handtwin-detect", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                frame, dets, detect_ms = item
                yield self._fit_frame(frame, dets, detect_ms)
        finally:
            stop.set()
            while worker.is_alive():
                try:
                    q.get(timeout=0.05)
                except queue.Empty:
                    pass
            worker.join()

    def _steady_handedness(self, detections: tuple[Detection, ...], t: float) -> tuple[Detection, ...]:
        """Smooth the handedness of a lone hand over time.

        MediaPipe's left/right label flips now and then on a single hand (even at 0.8
        confidence), which would swap the fitted model mid-stream. While exactly one hand is in
        view, the label follows an exponential average of P(right); with two hands MediaPipe's
        labels are kept (they are decided jointly).
        """
        if len(detections) != 1:
            if len(detections) > 1:
                self._right_belief = None
            return detections
        d = detections[0]
        p_right = d.score if d.handedness == "right" else 1.0 - d.score
        if self._right_belief is None or t - self._belief_time > self.settings.reset_after_s:
            self._right_belief = p_right
        else:
            self._right_belief = 0.8 * self._right_belief + 0.2 * p_right
        self._belief_time = t
        side = "right" if self._right_belief >= 0.5 else "left"
        if side == d.handedness:
            return detections
        return (dataclasses.replace(d, handedness=side, score=abs(2 * self._right_belief - 1) * 0.5 + 0.5),)

    def _fit_frame(self, frame: Frame, detections: tuple[Detection, ...], detect_ms: float) -> FrameResult:
        t1 = time.perf_counter()
        detections = self._steady_handedness(detections, frame.timestamp_s)
        # One hand per side: keep the most confident detection of each.
        by_side: dict[str, Detection] = {}
        for d in detections:
            if d.handedness not in by_side or d.score > by_side[d.handedness].score:
                by_side[d.handedness] = d
        dets = list(by_side.values())
        K = None if frame.intrinsics is None else frame.intrinsics.K.astype(np.float32)
        h, w = frame.image.shape[:2]
        observations = [
            HandObservation(d.handedness, d.keypoints_2d, d.world_landmarks, K, (w, h), d.score) for d in dets
        ]
        previous = []
        for d in dets:
            last = self._last.get(d.handedness)
            fresh = last is not None and abs(frame.timestamp_s - last[0]) <= self.settings.reset_after_s
            previous.append(last[1] if fresh else None)
        fits = self.fitter.fit(observations, self.shape, previous) if observations else []
        t2 = time.perf_counter()
        for d, f in zip(dets, fits):
            self._last[d.handedness] = (frame.timestamp_s, f)
        hands = tuple(HandResult(d, f) for d, f in zip(dets, fits))
        fit_ms = (t2 - t1) * 1000
        times = {"detect": detect_ms, "fit": fit_ms, "total": detect_ms + fit_ms}
        return FrameResult(frame.index, frame.timestamp_s, frame.source, hands, times)
