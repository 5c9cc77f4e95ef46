"""The tracking worker: reads frames and runs the engine off the GUI thread.

Latest frame wins: the worker emits each result once; the window keeps only the newest and
draws it on its own timer, so a slow GUI never makes a queue grow. Errors reach the window as
a signal carrying the message, never as an exception in the GUI thread.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from PySide6.QtCore import QObject, Signal, Slot

from core.capture import Frame, open_source
from core.engine import Engine, EngineSettings, FrameResult
from core.errors import HandTwinError
from core.model import HandModel, load_model_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveUpdate:
    """What the window draws for one frame: the image, the engine result and hand meshes.

    Attributes:
        frame: the captured frame (RGB image).
        result: the engine's result (keypoints, fits, timings).
        meshes: one (V, 3) float32 vertex array per hand, camera frame, metres.
        faces: per hand, its (F, 3) faces.
        fps: frames processed per second, smoothed.
    """

    frame: Frame
    result: FrameResult
    meshes: tuple[np.ndarray, ...]
    faces: tuple[np.ndarray, ...]
    fps: float


class TrackingWorker(QObject):
    """Runs a source through the engine in a QThread. Call :meth:`run` via the thread."""

    update = Signal(object)  # LiveUpdate
    failed = Signal(str)
    finished = Signal()

    def __init__(self, source: str, settings: EngineSettings, realtime: bool = True, loop: bool = False) -> None:
        super().__init__()
        self.source = source
        self.settings = settings
        self.realtime = realtime
        self.loop = loop
        self._stop = False
        self._paused = False

    def stop(self) -> None:
        self._stop = True

    def set_paused(self, paused: bool) -> None:
        self._paused = paused

    @Slot()
    def run(self) -> None:
        try:
            self._run()
        except HandTwinError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # noqa: BLE001 - any failure must reach the user, not kill the app
            log.exception("tracking failed")
            self.failed.emit(f"tracking stopped: {type(exc).__name__}: {exc}")
        finally:
            self.finished.emit()

    def _run(self) -> None:
        torch.set_num_threads(1)  # leave a core for MediaPipe and the GUI
        layers = {side: HandModel(load_model_data(self.settings.model, side)) for side in ("right", "left")}
        with Engine(self.settings) as engine:
            while not self._stop:
                with open_source(self.source) as src:
                    start_wall = time.perf_counter()
                    first_ts = None
                    fps = 0.0
                    last = time.perf_counter()
                    for frame in src:
                        while self._paused and not self._stop:
                            time.sleep(0.05)
                        if self._stop:
                            return
                        if self.realtime and frame.source != "camera":
                            first_ts = frame.timestamp_s if first_ts is None else first_ts
                            lag = (frame.timestamp_s - first_ts) - (time.perf_counter() - start_wall)
                            if lag > 0:
                                time.sleep(lag)
                        result = engine.process(frame)
                        meshes, faces = [], []
                        with torch.no_grad():
                            for hand in result.hands:
                                layer = layers[hand.fit.side]
                                out = layer(torch.as_tensor(hand.fit.pose)[None], torch.as_tensor(hand.fit.betas)[None],
                                            torch.as_tensor(hand.fit.transl)[None])
                                meshes.append(out.vertices[0].numpy())
                                faces.append(layer.data.faces)
                        now = time.perf_counter()
                        fps = 0.8 * fps + 0.2 / max(now - last, 1e-6) if fps else 1.0 / max(now - last, 1e-6)
                        last = now
                        self.update.emit(LiveUpdate(frame, result, tuple(meshes), tuple(faces), fps))
                if not self.loop:
                    return
                engine.reset()
