"""MediaPipe Hands (legacy ``mediapipe.solutions.hands`` API) behind a small typed wrapper.

Conventions of the :class:`Detection` it returns
-------------------------------------------------
* ``keypoints_2d``: (21, 2) float32 pixels in MediaPipe order (see :mod:`core.keypoints`),
  HandTwin's pixel convention (pixel centres at integer coordinates). MediaPipe gives
  coordinates normalized to the image rectangle (0 = left edge, 1 = right edge), so
  ``u = x_norm * width - 0.5``, ``v = y_norm * height - 0.5``. Points may lie outside the
  image.
* ``keypoints_z``: (21,) float32, MediaPipe's relative depth as given: 0 at the wrist,
  smaller = closer to the camera, in units of roughly the image width (same scale as
  ``x_norm``). Not metric.
* ``world_landmarks``: (21, 3) float32 metres, MediaPipe's "world" landmarks: origin at the
  hand's approximate geometric centre, axes approximately aligned with the camera's
  (x right, y down, z away from the camera, as the OpenCV camera frame), but the rotation is
  the network's own estimate, not a calibrated camera pose, and there is no translation to
  the camera. Measured on real images: fingertips to the right of the wrist in the image
  have larger x, lower ones larger y, fingers pointing at the camera smaller z.
* ``handedness``: ``"left"`` or ``"right"``, **the subject's own hand** (anatomical).
  MediaPipe's classifier assumes a *mirrored* (selfie-view) image: on an ordinary, unmirrored
  camera image it labels a right hand "Left" (checked: 6 of 6 detections on FreiHAND, which
  holds right hands only, came back "Left"). The wrapper therefore swaps MediaPipe's label
  by default (``mirrored_input=False``, an unmirrored image, what a webcam, a video file or
  a photo gives) and keeps it when ``mirrored_input=True`` (the caller flipped the image
  horizontally for a selfie view before detection).
* ``score``: MediaPipe's handedness classification confidence in [0, 1] (the legacy API
  reports no separate hand-presence score; a hand is returned only when its palm detection
  passed ``min_detection_confidence``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from core.errors import InputError
from core.keypoints import NUM_KEYPOINTS

log = logging.getLogger(__name__)

__all__ = ["Detection", "HandDetector", "detection_image", "swap_handedness"]

_MODES = ("video", "static")


def detection_image(image_rgb: np.ndarray) -> np.ndarray:
    """The image as an array, checked for what detection takes: (H, W, 3) uint8 RGB.

    Raises:
        InputError: it is not.
    """
    image = np.asarray(image_rgb)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"hand detection needs an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    return image


def swap_handedness(handedness: str) -> str:
    """``"left"`` <-> ``"right"`` (the label of the same hand in a mirrored image)."""
    if handedness == "left":
        return "right"
    if handedness == "right":
        return "left"
    raise ValueError(f"handedness must be 'left' or 'right', got {handedness!r}")


@dataclass(frozen=True)
class Detection:
    """One hand found by :class:`HandDetector` (see the module docstring for conventions).

    Attributes:
        handedness: ``"left"`` or ``"right"``, the subject's own hand.
        score: handedness confidence in [0, 1].
        keypoints_2d: (21, 2) float32 pixel coordinates, MediaPipe order.
        keypoints_z: (21,) float32 relative depth (wrist 0, smaller = closer, ~image-width units).
        world_landmarks: (21, 3) float32 metres, hand-centred, axes ~ camera axes.
        image_size: ``(width, height)`` in pixels of the image the hand was found in.
    """

    handedness: str
    score: float
    keypoints_2d: np.ndarray
    keypoints_z: np.ndarray
    world_landmarks: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        if self.handedness not in ("left", "right"):
            raise ValueError(f"handedness must be 'left' or 'right', got {self.handedness!r}")
        for name, shape in (
            ("keypoints_2d", (NUM_KEYPOINTS, 2)),
            ("keypoints_z", (NUM_KEYPOINTS,)),
            ("world_landmarks", (NUM_KEYPOINTS, 3)),
        ):
            value = np.asarray(getattr(self, name), dtype=np.float32)
            if value.shape != shape:
                raise ValueError(f"Detection.{name} must have shape {shape}, got {value.shape}")
            value = value.copy() if value is getattr(self, name) else value
            value.flags.writeable = False
            object.__setattr__(self, name, value)

    @property
    def bbox_xyxy(self) -> tuple[float, float, float, float]:
        """Tight box around the 2D keypoints ``(x0, y0, x1, y1)``, pixels."""
        x0, y0 = self.keypoints_2d.min(axis=0)
        x1, y1 = self.keypoints_2d.max(axis=0)
        return (float(x0), float(y0), float(x1), float(y1))


class HandDetector:
    """Finds up to ``max_hands`` hands in RGB images with MediaPipe Hands.

    Use it as a context manager (it owns a MediaPipe graph)::

        with HandDetector(mode="video") as detector:
            for frame in source:
                hands = detector.detect(frame.image, frame.timestamp_s)

    Args:
        max_hands: most hands returned per image (1 or more).
        mode: ``"video"`` tracks hands from frame to frame (use for cameras and videos:
            faster, steadier); ``"static"`` runs palm detection on every image (use for
            unrelated images such as an image folder).
        min_detection_confidence: palm detector threshold in [0, 1].
        min_tracking_confidence: video mode: below this landmark confidence the next frame
            re-runs palm detection, in [0, 1].
        model_complexity: 0 (lite, faster) or 1 (full, more accurate).
        mirrored_input: the images are horizontally flipped (selfie view); see the module
            docstring on handedness.

    Cost (2-core CPU, 256 x 256, model_complexity=1): static mode about 28-36 ms per image
    with a hand; video mode about 14 ms per frame while tracking with ``max_hands=1``. In
    video mode, while fewer than ``max_hands`` hands are tracked, the palm detector still
    runs on every frame (about 40 ms with ``max_hands=2`` and one hand), so ask for one
    hand when one is enough.
    """

    def __init__(
        self,
        max_hands: int = 2,
        mode: str = "video",
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        model_complexity: int = 1,
        mirrored_input: bool = False,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if max_hands < 1:
            raise ValueError(f"max_hands must be >= 1, got {max_hands}")
        for name, value in (
            ("min_detection_confidence", min_detection_confidence),
            ("min_tracking_confidence", min_tracking_confidence),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if model_complexity not in (0, 1):
            raise ValueError(f"model_complexity must be 0 or 1, got {model_complexity}")
        self.max_hands = int(max_hands)
        self.mode = mode
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.model_complexity = int(model_complexity)
        self.mirrored_input = bool(mirrored_input)
        self._last_timestamp_s: float | None = None
        self._hands: Any = None
        self._hands = self._make_graph()

    def _make_graph(self) -> Any:
        # Imported here: mediapipe is heavy and only this stage needs it.
        from mediapipe.python.solutions import hands as mp_hands

        return mp_hands.Hands(
            static_image_mode=self.mode == "static",
            max_num_hands=self.max_hands,
            model_complexity=self.model_complexity,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )

    def reset(self) -> None:
        """Forget tracked hands (video mode): the next image starts a new stream."""
        self.close()
        self._hands = self._make_graph()
        self._last_timestamp_s = None

    def detect(
        self, image_rgb: np.ndarray, timestamp_s: float | None = None
    ) -> tuple[Detection, ...]:
        """Find hands in one image.

        Args:
            image_rgb: (H, W, 3) uint8 RGB image (HandTwin's image convention).
            timestamp_s: video mode: the frame's time in seconds. The legacy MediaPipe graph
                keeps its own 30 fps clock, so the value only serves to notice a new stream:
                a timestamp not after the previous one resets the tracker. Ignored in
                static mode.

        Returns:
            The detected hands, most confident first; ``()`` when there is none.

        Raises:
            InputError: the image is not (H, W, 3) uint8.
            RuntimeError: the detector is closed.
        """
        if self._hands is None:
            raise RuntimeError("the hand detector is closed")
        image = detection_image(image_rgb)
        if self.mode == "video" and timestamp_s is not None:
            if self._last_timestamp_s is not None and timestamp_s <= self._last_timestamp_s:
                log.debug("timestamp %.3f s not after %.3f s: resetting the hand tracker",
                          timestamp_s, self._last_timestamp_s)
                self.reset()
            self._last_timestamp_s = float(timestamp_s)
        height, width = image.shape[:2]
        result = self._hands.process(np.ascontiguousarray(image))
        if not result.multi_hand_landmarks:
            return ()
        detections = []
        for landmarks, world, handed in zip(
            result.multi_hand_landmarks, result.multi_hand_world_landmarks, result.multi_handedness
        ):
            norm = np.array([(p.x, p.y, p.z) for p in landmarks.landmark], dtype=np.float32)
            world_m = np.array([(p.x, p.y, p.z) for p in world.landmark], dtype=np.float32)
            label = handed.classification[0].label.lower()  # MediaPipe: mirrored-image label
            handedness = label if self.mirrored_input else swap_handedness(label)
            keypoints_2d = np.empty((NUM_KEYPOINTS, 2), np.float32)
            keypoints_2d[:, 0] = norm[:, 0] * width - 0.5
            keypoints_2d[:, 1] = norm[:, 1] * height - 0.5
            detections.append(
                Detection(
                    handedness=handedness,
                    score=float(handed.classification[0].score),
                    keypoints_2d=keypoints_2d,
                    keypoints_z=norm[:, 2],
                    world_landmarks=world_m,
                    image_size=(width, height),
                )
            )
        detections.sort(key=lambda d: d.score, reverse=True)
        return tuple(detections)

    def close(self) -> None:
        """Release the MediaPipe graph. Idempotent."""
        if self._hands is not None:
            self._hands.close()
            self._hands = None

    def __enter__(self) -> HandDetector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A safety net only: call close() (or use ``with``) to release the graph promptly.
        if getattr(self, "_hands", None) is not None:
            try:
                self.close()
            except (RuntimeError, ValueError, AttributeError):
                pass
