"""The tracking worker: reads frames and runs the engine off the GUI thread.

Latest frame wins: the worker keeps only its newest result in a one-slot mailbox that the
window's draw timer takes from, so a slow GUI never makes a queue grow. Errors reach the
window as a signal carrying the message, never as an exception in the GUI thread.

The worker also does the per-frame work that is cheap next to tracking but would block the
GUI thread: posing the hand meshes and their normals, the fitted mesh's silhouette mask, the
hand's segmentation and the texture update, drawing the camera panel's image (scaled, with
its overlays, at the panel's size), session recording, and offering frames to a calibration
session. What is left for the GUI thread per frame is a blit of the camera image and
handing the mesh to the 3D view, which renders in its own thread (:mod:`app.hand_view`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from PySide6.QtCore import QObject, Signal, Slot

from app.camera_view import ComposedFrame, DisplaySpec, compose_frame
from app.jobs import describe_error
from core.capture import CameraSource, Frame, SessionRecorder, open_multi_source, open_source
from core.engine import Engine, EngineSettings, FrameResult
from core.errors import HandTwinError
from core.export import vertex_normals
from core.model import HandModel
from core.refine import nominal_intrinsics
from core.texture import TextureCapture
from core.texture.session import hand_segmenter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveUpdate:
    """What the window draws for one frame.

    Attributes:
        frame: the captured frame (RGB image) of the reference camera.
        result: the engine's result (keypoints, fits, timings).
        meshes: one (V, 3) float32 vertex array per hand, camera frame, metres.
        normals: per hand, its (V, 3) float32 unit vertex normals.
        faces: per hand, its (F, 3) faces (its side's: a left hand's are the right's mirrored).
        uv, uv_faces: per hand, its side's (T, 2) texture coordinates and (F, 3) faces into
            them (None where the model has no UV map): what the hand's texture is drawn with.
        fps: frames processed per second, smoothed.
        silhouette: (H, W) uint8 per-pixel label: 0 background, 1 the fitted mesh, 2 the
            target (segmentation) mask, 3 both; None when silhouettes are off.
        second_image: the other camera's RGB image of a stereo pair, else None.
        texture: (S, S, 3) uint8 skin texture when it changed this frame, else None.
        texture_coverage: fraction of the texture observed so far (0 without texture capture).
        recorded: frames written to the session being recorded (-1: not recording).
        iou: mean silhouette IoU of the hands, when the engine reports it.
        composed: the camera panel's image of this frame, drawn for the panel's
            :class:`~app.camera_view.DisplaySpec` at the time (None before the panel gave one).
    """

    frame: Frame
    result: FrameResult
    meshes: tuple[np.ndarray, ...]
    faces: tuple[np.ndarray, ...]
    fps: float
    silhouette: np.ndarray | None = None
    second_image: np.ndarray | None = None
    texture: np.ndarray | None = None
    texture_coverage: float = 0.0
    recorded: int = -1
    iou: float | None = None
    normals: tuple[np.ndarray, ...] = ()
    composed: ComposedFrame | None = None
    uv: tuple[np.ndarray | None, ...] = ()
    uv_faces: tuple[np.ndarray | None, ...] = ()


@dataclass(frozen=True)
class TrackingConfig:
    """How to track.

    Attributes:
        sources: one SRC, or two for a stereo pair (the first is the reference camera).
        settings: the engine's settings.
        intrinsics: an intrinsics file for the source(s), or None.
        fov_deg: a horizontal field of view instead of a file, or None.
        weak_perspective: with neither, fit with weak perspective instead of assuming a camera.
        shape: a profile's identity (:class:`~core.model.personal.PersonalIdentity`: shape,
            skeleton, surface) or its (S,) shape for identity-aware tracking, or None.
        realtime: pace files at their frame rate.
        loop: start over at the end (the demo).
        texture: capture the skin texture.
        silhouette: compute the fitted mesh's silhouette for the overlay.
        texture_size: side of the texture image, pixels.
    """

    sources: tuple[str, ...]
    settings: EngineSettings = field(default_factory=EngineSettings)
    intrinsics: str | None = None
    fov_deg: float | None = None
    weak_perspective: bool = False
    shape: Any = None
    realtime: bool = True
    loop: bool = False
    texture: bool = False
    silhouette: bool = True
    texture_size: int = 512

    @property
    def label(self) -> str:
        return " + ".join(self.sources)


def project_to_fit(points: np.ndarray, keypoints_3d: np.ndarray, keypoints_2d: np.ndarray,
                   K: np.ndarray) -> np.ndarray:  # noqa: N803
    """Project camera-frame points with K, then align the projected keypoints to the fit's
    2D keypoints (least-squares scale and shift), so weak-perspective fits overlay correctly.

    Returns:
        (N, 2) float32 pixels.
    """

    def proj(p: np.ndarray) -> np.ndarray:
        z = np.maximum(p[:, 2:3], 1e-6)
        return p[:, :2] / z * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])

    kp = proj(np.asarray(keypoints_3d, np.float64))
    pts = proj(np.asarray(points, np.float64))
    a = kp - kp.mean(0)
    b = np.asarray(keypoints_2d, np.float64) - np.mean(keypoints_2d, axis=0)
    s = float((a * b).sum() / max((a * a).sum(), 1e-9))
    return ((pts - kp.mean(0)) * s + np.mean(keypoints_2d, axis=0)).astype(np.float32)


def fill_silhouette(mask: np.ndarray, pixels: np.ndarray, faces: np.ndarray, value: int = 1) -> None:
    """Fill the triangles (pixels[faces]) into ``mask`` (in place), sub-pixel accurate."""
    tris = np.round(pixels[faces] * 4.0).astype(np.int32)
    h, w = mask.shape
    inside = ((tris[..., 0].max(1) >= 0) & (tris[..., 1].max(1) >= 0)
              & (tris[..., 0].min(1) < 4 * w) & (tris[..., 1].min(1) < 4 * h))
    if inside.any():
        cv2.fillPoly(mask, list(tris[inside]), value, lineType=cv2.LINE_8, shift=2)


def _hand_iou(hand) -> float | None:
    """The refined hand's silhouette IoU with its target, or None without refinement."""
    return None if hand.refined is None else float(hand.refined.iou_after)


class TrackingWorker(QObject):
    """Runs a source through the engine in a QThread. Call :meth:`run` via the thread.

    Signals: ``failed(message)`` (the stream stopped with an error), ``ended(message)``
    (a file or a camera ran out of frames), ``notice(message)`` (a non-fatal problem, e.g. the
    recording could not be written), ``finished()``.
    """

    failed = Signal(str)
    ended = Signal(str)
    notice = Signal(str)
    started_tracking = Signal()
    finished = Signal()

    def __init__(self, config: TrackingConfig) -> None:
        super().__init__()
        self.config = config
        self._stop = threading.Event()
        self._paused = threading.Event()
        # Two locks: the GUI thread's take_latest() must never wait for a texture update.
        self._lock = threading.Lock()  # the one-slot mailbox
        self._texture_lock = threading.Lock()  # the texture captures
        self._latest: LiveUpdate | None = None
        self._record_request: str | None = None
        self._recorder: SessionRecorder | None = None
        self._stop_recording = False
        self.recorded_sessions: list[str] = []
        #: Called in the worker thread with (frames, result) for every tracked frame (frames: the
        #: reference camera first, then the other view of a stereo pair); a
        #: calibration session's auto-capture. Exceptions disable it with a notice.
        self.frame_hook: Callable[[tuple[Frame, ...], FrameResult], None] | None = None
        self.texture_enabled = config.texture
        self.silhouette_enabled = config.silhouette
        self.frames_done = 0
        self.done = False
        self._texture_captures: dict[str, object] = {}
        self._segment = hand_segmenter()
        #: The camera panel's size and overlay toggles, set by the GUI thread (the panel's
        #: image is drawn here for it); None: the panel draws for itself.
        self.display_spec: DisplaySpec | None = None

    # -- control, from the GUI thread ---------------------------------------------------------

    @property
    def source(self) -> str:
        return self.config.label

    def stop(self) -> None:
        self._stop.set()

    def set_paused(self, paused: bool) -> None:
        if paused:
            self._paused.set()
        else:
            self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def take_latest(self) -> LiveUpdate | None:
        """The newest update not yet taken (older ones were dropped), or None."""
        with self._lock:
            update, self._latest = self._latest, None
        return update

    def start_recording(self, folder: str) -> None:
        """Record frames and results into a new session folder from the next frame."""
        self._stop_recording = False
        self._record_request = folder

    def stop_recording(self) -> None:
        self._stop_recording = True

    @property
    def recording(self) -> bool:
        return self._recorder is not None or self._record_request is not None

    def texture_image(self, side: str = "right") -> np.ndarray | None:
        """The current texture of one side (None without texture capture)."""
        cap = self._texture_captures.get(side)
        if cap is None:
            return None
        with self._texture_lock:
            return cap.texture(filled=True)

    # -- the thread ---------------------------------------------------------------------------

    @Slot()
    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 - any failure must reach the user, not kill the app
            if not isinstance(exc, HandTwinError):
                log.exception("tracking failed")
            self.failed.emit(f"Tracking {self.config.label} stopped: {describe_error(exc)}")
        finally:
            self._close_recorder()
            self.done = True
            self.finished.emit()

    def _open(self):
        c = self.config
        if len(c.sources) > 1:
            intr = [c.intrinsics] * len(c.sources) if c.intrinsics else None
            return open_multi_source(list(c.sources), intrinsics=intr, fov_deg=None if intr else c.fov_deg)
        return open_source(c.sources[0], intrinsics=c.intrinsics, fov_deg=c.fov_deg,
                           weak_perspective=c.weak_perspective)

    def _run(self) -> None:
        torch.set_num_threads(1)  # leave a core for MediaPipe and the GUI
        c = self.config
        reported_damage = False
        with Engine(c.settings, shape=c.shape) as engine:
            datas = dict(engine.model_data)  # the profile's own hand when a profile is loaded
            layers = {side: HandModel(d) for side, d in datas.items()}
            self.started_tracking.emit()
            while not self._stop.is_set():
                count = 0
                live_camera = False
                with self._open() as src:
                    live_camera = isinstance(src, CameraSource) or any(
                        isinstance(s, CameraSource) for s in getattr(src, "sources", ())
                    )
                    start_wall = time.perf_counter()
                    first_ts: float | None = None
                    fps = 0.0
                    last = time.perf_counter()
                    for item in src:
                        frames = tuple(item.frames) if hasattr(item, "frames") else (item,)
                        frame = frames[0]
                        while self._paused.is_set() and not self._stop.is_set():
                            time.sleep(0.03)
                            start_wall = None
                        if self._stop.is_set():
                            return
                        if start_wall is None:  # resumed after a pause: restart the clock
                            start_wall, first_ts = time.perf_counter(), None
                        if c.realtime and not live_camera:
                            first_ts = frame.timestamp_s if first_ts is None else first_ts
                            lag = (frame.timestamp_s - first_ts) - (time.perf_counter() - start_wall)
                            if lag > 0:
                                self._stop.wait(lag)
                        result = engine.process(frame)
                        now = time.perf_counter()
                        dt = max(now - last, 1e-6)
                        fps = 0.8 * fps + 0.2 / dt if fps else 1.0 / dt
                        last = now
                        update = self._make_update(frame, result, layers, datas, fps,
                                                   frames[1].image if len(frames) > 1 else None)
                        self._record(frame, result)
                        hook = self.frame_hook
                        if hook is not None:
                            try:
                                hook(frames, result)
                            except Exception as exc:  # noqa: BLE001 - reported, tracking goes on
                                log.exception("the frame hook failed")
                                self.frame_hook = None
                                self.notice.emit(f"Auto-capture stopped: {describe_error(exc)}")
                        with self._lock:
                            self._latest = update
                        count += 1
                        self.frames_done += 1
                if self._stop.is_set():
                    return
                if live_camera:
                    self.failed.emit(
                        f"The camera {c.label} stopped delivering frames after {count} frames "
                        f"(unplugged, or taken by another app?). Choose a source to go on."
                    )
                    return
                if count == 0:
                    self.failed.emit(f"{c.label} delivered no frames.")
                    return
                damaged = getattr(src, "ended_early", None)
                if damaged and not reported_damage:
                    # Said once (a looping source would say it on every pass), tracking what was read.
                    reported_damage = True
                    self.failed.emit(f"Tracking ended early: {damaged}; tracked {count} frames.")
                    if not c.loop:
                        return
                if not c.loop:
                    self.ended.emit(f"End of {c.label} ({count} frames).")
                    return
                engine.reset()

    def _make_update(self, frame: Frame, result: FrameResult, layers, datas, fps: float,
                     second: np.ndarray | None) -> LiveUpdate:
        meshes, faces, normals = [], [], []
        with torch.no_grad():
            for hand in result.hands:
                layer = layers[hand.fit.side]
                if hand.refined is not None:  # the engine has the refined mesh already
                    meshes.append(hand.refined.vertices)
                else:
                    out = layer(torch.as_tensor(hand.fit.pose)[None], torch.as_tensor(hand.fit.betas)[None],
                                torch.as_tensor(hand.fit.transl)[None])
                    meshes.append(out.vertices[0].numpy())
                faces.append(layer.data.faces)
                normals.append(vertex_normals(meshes[-1], layer.data.faces))
        h, w = frame.image.shape[:2]
        # The camera the meshes are in: the frame's, or the nominal one of weak-perspective fits.
        if frame.intrinsics is not None:
            K = frame.intrinsics.K.astype(np.float32)
        else:
            K = nominal_intrinsics((w, h), self.config.settings.fit.nominal_fov_deg)
        texture_on = self.texture_enabled
        # The hands' segmentation keeps the background out of the texture (and shows in the
        # silhouette overlay); only computed when the texture is captured.
        masks = self._masks(frame, result) if texture_on else [None] * len(result.hands)
        silhouette = None
        if self.silhouette_enabled and result.hands:
            silhouette = np.zeros((h, w), np.uint8)
            for hand, verts, f, mask in zip(result.hands, meshes, faces, masks):
                px = project_to_fit(verts, hand.fit.keypoints_3d, hand.fit.keypoints_2d, K)
                fill_silhouette(silhouette, px, f, 1)
                if mask is not None:
                    silhouette[mask] |= 2
        texture, coverage = None, 0.0
        if texture_on and result.hands:
            texture, coverage = self._update_texture(frame, result, meshes, masks, datas, K)
        ious = [v for v in (_hand_iou(h) for h in result.hands) if v is not None]
        recorded = self._recorder.frame_count if self._recorder is not None else -1
        spec = self.display_spec
        composed = None
        if spec is not None:
            hands = [(hd.fit.side, hd.detection.keypoints_2d, hd.fit.keypoints_2d) for hd in result.hands]
            composed = compose_frame(frame.image, hands, silhouette, second, spec)
        sides = [datas[hand.fit.side] for hand in result.hands]
        return LiveUpdate(frame, result, tuple(meshes), tuple(faces), fps, silhouette, second, texture,
                          coverage, recorded, float(np.mean(ious)) if ious else None, tuple(normals), composed,
                          uv=tuple(d.uv for d in sides), uv_faces=tuple(d.uv_faces for d in sides))

    def _masks(self, frame: Frame, result: FrameResult) -> list[np.ndarray | None]:
        """Per hand, its (H, W) bool segmentation from the detected keypoints, or None."""
        masks: list[np.ndarray | None] = []
        for hand in result.hands:
            mask = None
            if self._segment is not None:
                try:
                    mask = self._segment(frame.image, hand.detection.keypoints_2d)
                except HandTwinError as exc:  # e.g. keypoints off the image: none this frame
                    log.debug("no segmentation: %s", exc)
                except Exception:  # noqa: BLE001 - optional: the texture falls back to the mesh's silhouette
                    log.exception("hand segmentation failed; the texture goes on without it")
                    self._segment = None
            masks.append(mask)
        return masks

    def _update_texture(self, frame: Frame, result: FrameResult, meshes, masks, datas,
                        K) -> tuple[np.ndarray | None, float]:
        texture, coverage = None, 0.0
        try:
            for hand, verts, mask in zip(result.hands, meshes, masks):
                side = hand.fit.side
                cap = self._texture_captures.get(side)
                if cap is None:
                    cap = self._texture_captures[side] = TextureCapture(datas[side], size=self.config.texture_size)
                with self._texture_lock:
                    cap.update(frame.image, verts, K, mask)
                # Send the texture to the view a few times a second, not every frame.
                if side == result.hands[0].fit.side:
                    coverage = float(cap.coverage)
                    if self.frames_done % 8 == 0:
                        with self._texture_lock:
                            texture = cap.texture(filled=True)
        except Exception as exc:  # noqa: BLE001 - texture is optional; tracking goes on
            log.exception("texture capture failed")
            self.texture_enabled = False
            self.notice.emit(f"Texture capture stopped: {describe_error(exc)}")
        return texture, coverage

    def _record(self, frame: Frame, result: FrameResult) -> None:
        if self._record_request is not None:
            folder, self._record_request = self._record_request, None
            self._close_recorder()
            try:
                self._recorder = SessionRecorder(folder, storage="png", source=self.config.label)
            except Exception as exc:  # noqa: BLE001
                self.notice.emit(f"Cannot record into {folder}: {describe_error(exc)}")
                return
        if self._stop_recording:
            self._stop_recording = False
            self._close_recorder()
            return
        if self._recorder is None:
            return
        try:
            self._recorder.add_frame(frame)
            self._recorder.add_result(result.to_json())
        except Exception as exc:  # noqa: BLE001 - a full disk stops the recording, not tracking
            self.notice.emit(f"Recording stopped: {describe_error(exc)}")
            self._close_recorder()

    def _close_recorder(self) -> None:
        rec, self._recorder = self._recorder, None
        if rec is not None:
            try:
                rec.close()
                self.recorded_sessions.append(str(rec.folder))
                self.notice.emit(f"Recorded {rec.frame_count} frames to {rec.folder}")
            except Exception as exc:  # noqa: BLE001
                self.notice.emit(f"Closing the recording failed: {describe_error(exc)}")
