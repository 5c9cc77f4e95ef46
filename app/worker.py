"""The tracking worker: paces a source into the engine's stream, off the GUI thread.

The worker runs :meth:`core.engine.Engine.process_stream`, the pipeline ``track`` runs:
MediaPipe and the hands' segmentation in the detector's child process a frame or two ahead,
the fit and refinement in the worker's thread, and the per-frame consumers in the stream's
``after`` thread. Each result carries the posed (refined) meshes, the camera they live in,
the segmentation masks and the sides' topology (:class:`core.engine.HandResult`), so nothing
here re-poses, re-segments or re-derives a camera. The worker keeps only the source's pacing,
pause and stop, and its after-frame hook: the texture update, the silhouette overlay, the
camera panel's image (scaled, with its overlays, at the panel's size), session recording and
offering frames to a calibration session.

Latest frame wins: the worker keeps only its newest update in a one-slot mailbox that the
window's draw timer takes from, so a slow GUI never makes a queue grow. Errors reach the
window as a signal carrying the message, never as an exception in the GUI thread. What is
left for the GUI thread per frame is a blit of the camera image and handing the mesh to the
3D view, which renders in its own thread (:mod:`app.hand_view`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from app.camera_view import ComposedFrame, DisplaySpec, compose_frame
from app.jobs import describe_error
from core.capture import (
    CameraSource,
    Frame,
    SessionRecorder,
    open_multi_source,
    open_source,
    open_spec,
    parse_spec,
    resolve_spec,
)
from core.engine import Engine, EngineSettings, FrameResult
from core.errors import HandTwinError
from core.export import vertex_normals
from core.segment import WRIST_LINE, hand_box, wrist_cut
from core.texture import LIVE_CAPTURE, TextureCapture

log = logging.getLogger(__name__)

#: How often the filled texture goes to the 3D view, seconds.
TEXTURE_SEND_S = 0.4


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
            target (segmentation) mask, 3 both, each hand up to its wrist line; None when
            silhouettes are off.
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
        spec: the whole source spec (:func:`core.capture.open.parse_spec`: the SRCs and their
            depth or stereo calibration options); "" means ``sources`` alone.
        settings: the engine's settings (the worker has the engine segment every hand: the
            texture and the silhouette overlay use the masks).
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
    spec: str = ""
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


def clear_past_wrist(labels: np.ndarray, keypoints_2d: np.ndarray) -> None:
    """Clear (in place) one hand's overlay ``labels`` (H, W) past its own wrist line
    (:data:`core.segment.WRIST_LINE`, where the surface fit stops counting pixels), inside the
    hand's box: there end the mask's forearm stub (kept by the refinement's target, cut square by
    the box) and the mesh's wrist stub. Outside the box a mesh shows whole, so a fit far off shows."""
    kp = np.asarray(keypoints_2d, dtype=np.float64)
    h, w = labels.shape
    x0, y0, x1, y1 = hand_box(kp, (w, h))
    box = labels[y0:y1, x0:x1]
    box[~wrist_cut(np.ones(box.shape, bool), kp - (x0, y0), WRIST_LINE)] = 0


def fill_silhouette(mask: np.ndarray, pixels: np.ndarray, faces: np.ndarray, value: int = 1) -> None:
    """Fill a mesh's silhouette (the union of its triangles ``pixels[faces]``) into ``mask``
    (in place), sub-pixel accurate.

    Each triangle is filled on its own: one ``cv2.fillPoly`` over all of them fills by parity,
    so where two triangles overlap (front and back of a finger) it left holes, about 28% of a
    hand's silhouette. Only the triangles of one winding in the image are drawn: for a closed
    surface those cover its silhouette once (the others cover it again), at half the cost.
    """
    tri = pixels[faces].astype(np.float64)
    h, w = mask.shape
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    facing = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] < 0
    inside = (tri[..., 0].max(1) >= -0.5) & (tri[..., 1].max(1) >= -0.5) & (tri[..., 0].min(1) < w) & \
        (tri[..., 1].min(1) < h)
    for t in np.round(tri[facing & inside] * 4.0).astype(np.int32):
        cv2.fillConvexPoly(mask, t, value, cv2.LINE_8, 2)


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
        self._calibration = None  # a calibrated pair's, recorded with its second camera
        self._stop_recording = False
        self.recorded_sessions: list[str] = []
        #: Called in the worker thread with (frames, result) for every tracked frame (frames: the
        #: reference camera first, then the other view of a stereo pair); a
        #: calibration session's auto-capture. Exceptions disable it with a notice.
        self.frame_hook: Callable[[tuple[Frame, ...], FrameResult], None] | None = None
        self.texture_enabled = config.texture
        self.silhouette_enabled = config.silhouette
        self.frames_done = 0
        #: Whether the engine's stream detects in its child process (else in a thread).
        self.engine_detects_in_child = False
        self.done = False
        self._texture_captures: dict[str, TextureCapture] = {}
        self._texture_sent = -TEXTURE_SEND_S  # when the texture last went to the view
        self._views: dict[int, tuple[Frame, ...]] = {}  # a frame's stereo views, by id(frame)
        self._fps, self._last_time = 0.0, None  # frames per second, in the after-frame hook
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
        if c.spec:
            return open_spec(c.spec, c.intrinsics, c.fov_deg, c.weak_perspective)
        if len(c.sources) > 1:
            intr = [c.intrinsics] * len(c.sources) if c.intrinsics else None
            return open_multi_source(list(c.sources), intrinsics=intr, fov_deg=None if intr else c.fov_deg)
        return open_source(c.sources[0], intrinsics=c.intrinsics, fov_deg=c.fov_deg,
                           weak_perspective=c.weak_perspective)

    def _run(self) -> None:
        c = self.config
        reported_damage = False
        settings = dataclasses.replace(c.settings, segment=True)  # masks for the texture and the overlay
        # stream=True: the detector's child process loads MediaPipe while the models load here.
        spec = resolve_spec(parse_spec(c.spec)) if c.spec else None  # a recorded pair replays as a pair
        stereo = spec is not None and bool(spec.stereo_calib) and len(spec.sources) == 2
        if stereo:  # a calibrated pair: each hand fused from both views (core.stereo)
            from core.capture.stereo import load_stereo_calibration
            from core.stereo import StereoEngine

            engine_cm = StereoEngine(settings, load_stereo_calibration(spec.stereo_calib), shape=c.shape, stream=True)
        else:
            engine_cm = Engine(settings, shape=c.shape, stream=True)
        with engine_cm as engine:
            self.started_tracking.emit()
            while not self._stop.is_set():
                self._views.clear()
                self._fps, self._last_time = 0.0, None
                with self._open() as src:
                    self._calibration = getattr(src, "calibration", None)
                    live_camera = isinstance(src, CameraSource) or any(
                        isinstance(s, CameraSource) for s in getattr(src, "sources", ())
                    )
                    count = 0
                    stream = engine.process_stream(self._paced(src, live_camera, sets=stereo), after=self._after)
                    try:
                        for _ in stream:
                            self.engine_detects_in_child = engine.detects_in_child
                            count += 1
                            self.frames_done += 1
                            if self._stop.is_set():
                                break
                    finally:
                        stream.close()  # stops the detector's thread, finishes the after-frame hook
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

    def _paced(self, src, live_camera: bool, sets: bool = False) -> Iterator[Frame]:
        """The source's reference frames, paced at their frame rate (files), held while paused
        and ended at stop; runs in the engine's source thread (its detector thread without the
        detector's child process). The other view of a stereo pair waits in ``_views`` for the
        after-frame hook."""
        realtime = self.config.realtime and not live_camera
        start_wall: float | None = time.perf_counter()
        first_ts: float | None = None
        for item in src:
            frames = tuple(item.frames) if hasattr(item, "frames") else (item,)
            frame = frames[0]
            while self._paused.is_set() and not self._stop.is_set():
                self._stop.wait(0.03)
                start_wall = None
            if self._stop.is_set():
                return
            if start_wall is None:  # resumed after a pause: restart the clock
                start_wall, first_ts = time.perf_counter(), None
            if realtime:
                first_ts = frame.timestamp_s if first_ts is None else first_ts
                lag = (frame.timestamp_s - first_ts) - (time.perf_counter() - start_wall)
                if lag > 0 and self._stop.wait(lag):
                    return
            self._views[id(frame)] = frames
            yield item if sets else frame  # a calibrated pair's engine takes the whole set

    def _after(self, frame: Frame, result: FrameResult) -> None:
        """The after-frame hook (the engine's third thread): the window's update, the texture,
        recording and the calibration's auto-capture, all from the engine's result."""
        frames = self._views.pop(id(frame), (frame,))
        now = time.perf_counter()
        if self._last_time is not None:
            dt = max(now - self._last_time, 1e-6)
            self._fps = 0.8 * self._fps + 0.2 / dt if self._fps else 1.0 / dt
        self._last_time = now
        update = self._make_update(frame, result, self._fps, frames[1].image if len(frames) > 1 else None)
        self._record(frames, result)
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

    def _make_update(self, frame: Frame, result: FrameResult, fps: float, second: np.ndarray | None) -> LiveUpdate:
        hands = result.hands
        meshes = tuple(h.vertices for h in hands)
        normals = tuple(vertex_normals(h.vertices, h.faces) for h in hands)
        h, w = frame.image.shape[:2]
        silhouette = None
        if self.silhouette_enabled and hands:
            silhouette = np.zeros((h, w), np.uint8)
            for hand in hands:
                labels = np.zeros((h, w), np.uint8)
                fill_silhouette(labels, hand.camera.project(hand.vertices), hand.faces, 1)
                if hand.mask is not None:
                    labels[hand.mask] |= 2
                clear_past_wrist(labels, hand.detection.keypoints_2d)
                silhouette |= labels
        texture, coverage = None, 0.0
        if self.texture_enabled and hands:
            texture, coverage = self._update_texture(frame, result)
        ious = [v for v in (_hand_iou(hd) for hd in hands) if v is not None]
        recorded = self._recorder.frame_count if self._recorder is not None else -1
        spec = self.display_spec
        composed = None
        if spec is not None:
            drawn = [(hd.side, hd.detection.keypoints_2d, hd.final_keypoints_2d) for hd in hands]
            composed = compose_frame(frame.image, drawn, silhouette, second, spec)
        return LiveUpdate(frame, result, meshes, tuple(hd.faces for hd in hands), fps, silhouette, second, texture,
                          coverage, recorded, float(np.mean(ious)) if ious else None, normals, composed,
                          uv=tuple(hd.uv for hd in hands), uv_faces=tuple(hd.uv_faces for hd in hands))

    def _update_texture(self, frame: Frame, result: FrameResult) -> tuple[np.ndarray | None, float]:
        """Blend the frame into each hand's side's texture, with the hand's own mesh, camera
        and mask (a weak-perspective hand through its weak camera)."""
        texture, coverage = None, 0.0
        try:
            for hand in result.hands:
                side = hand.side
                if hand.uv is None:  # a model without a UV map: tracked, not textured
                    continue
                cap = self._texture_captures.get(side)
                if cap is None:
                    cap = self._texture_captures[side] = TextureCapture(hand.model, size=self.config.texture_size,
                                                                         settings=LIVE_CAPTURE)
                verts, K = hand.camera.pinhole(hand.vertices)
                with self._texture_lock:
                    cap.update(frame.image, verts, K, hand.mask)
                # Send the texture to the view a few times a second, not every frame (filling it
                # costs several frames' texture updates).
                if side == result.hands[0].side:
                    coverage = float(cap.coverage)
                    now = time.perf_counter()
                    if now - self._texture_sent >= TEXTURE_SEND_S:
                        self._texture_sent = now
                        with self._texture_lock:
                            texture = cap.texture(filled=True)
        except Exception as exc:  # noqa: BLE001 - texture is optional; tracking goes on
            log.exception("texture capture failed")
            self.texture_enabled = False
            self.notice.emit(f"Texture capture stopped: {describe_error(exc)}")
        return texture, coverage

    def _record(self, frames: tuple[Frame, ...], result: FrameResult) -> None:
        """Record the reference frame (a stereo pair's second view and calibration with it) and the result."""
        if self._record_request is not None:
            folder, self._record_request = self._record_request, None
            self._close_recorder()
            try:
                self._recorder = SessionRecorder(folder, storage="png", source=self.config.label,
                                                 calibration=self._calibration)
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
            self._recorder.add_frame(frames[0], frames[1] if len(frames) > 1 else None)
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
