"""MediaPipe's hand landmarker (the Tasks API's ``HandLandmarker``) behind a small typed wrapper.

The models come from the bundles in ``resources/detect/`` (built once by
``python -m core.detect.build_task_bundle`` from the MediaPipe 0.10.21 wheel's TFLite files;
provenance in ``THIRD_PARTY_NOTICES.md``): nothing is downloaded at run time, and any MediaPipe
release with the Tasks API (0.10.21 and later, Python 3.11 to 3.13) runs them.

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
  The hand landmarker's label, on these bundles, already names the subject's hand in an
  ordinary, unmirrored image (checked: FreiHAND's right hands come back "Right", CMU
  Panoptic's left and right crops as labelled; the legacy ``solutions.hands`` graph gave
  the opposite, selfie-view label for the same model). The wrapper therefore keeps the
  label by default (``mirrored_input=False``: what a webcam, a video file or a photo gives)
  and swaps it when ``mirrored_input=True`` (the caller flipped the image horizontally for
  a selfie view before detection).
* ``score``: MediaPipe's handedness classification confidence in [0, 1] (a hand is
  returned only when its palm detection passed ``min_detection_confidence`` and its
  landmark model's hand-presence score ``min_tracking_confidence``).

Tiles (static mode, ``tiles=True``): MediaPipe's palm detector sees the whole image shrunk to
192 px, so in a large photo it misses hands that are small or cut by the image's edge. When it
finds fewer than ``max_hands`` hands in an image whose longer side is at least
:data:`TILE_MIN_SIDE_PX`, it looks again in four overlapping corner tiles
(:func:`tile_boxes`, each :data:`TILE_FRACTION` of the image's width and height) and adds
the hands it had not found (:func:`same_hand`), their coordinates mapped back to the whole
image (:func:`detection_from_tile`). On the 30 real EgoHands and hand-over-face photos of
``../shared/data/unipd_handseg30`` this finds 58 of the 69 labelled hands instead of 48, with
no false hand added; an image that needs the tiles costs five detections instead of one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from core.errors import InputError, ModelFileError
from core.keypoints import NUM_KEYPOINTS
from core.metrics import box_iou

log = logging.getLogger(__name__)

__all__ = ["Detection", "HandDetector", "TILE_FRACTION", "TILE_MIN_SIDE_PX", "detection_from_tile",
           "detection_image", "same_hand", "swap_handedness", "tile_boxes"]

_MODES = ("video", "static")

#: MediaPipe's models shipped with HandTwin (see core.detect.build_task_bundle): the hand
#: landmarker's bundle of each model complexity (1: full, 0: lite). The selfie (person)
#: segmentation model beside them is core.segment's (``core.segment.methods.SELFIE_MODEL_PATH``).
BUNDLE_DIR = Path(__file__).resolve().parents[2] / "resources" / "detect"
BUNDLE_NAMES = {1: "hand_landmarker.task", 0: "hand_landmarker_lite.task"}

_NO_TIMESTAMP_STEP_MS = 33  # video mode without timestamps: a 30 fps clock of our own

#: Tiles: each covers this share of the image's width and height (four corners, overlapping).
TILE_FRACTION = 0.6
#: Tiles: only in images whose longer side is at least this. The palm detector sees the image
#: shrunk to 192 px along its longer side; a tile's longer side then holds >= 288 px, so the
#: tile shows the detector a hand at least 1.5 times larger. Smaller images gain nothing.
TILE_MIN_SIDE_PX = 480
#: Two detections are one hand when their keypoint boxes overlap this much (IoU) ...
_SAME_HAND_IOU = 0.3
#: ... or their keypoints lie this close, as a share of the larger keypoint box's side (median).
_SAME_HAND_DISTANCE = 0.2


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


def tile_boxes(width: int, height: int, fraction: float = TILE_FRACTION) -> list[tuple[int, int, int, int]]:
    """The four corner tiles of a ``width`` x ``height`` image, ``(x0, y0, w, h)`` pixels, each
    ``fraction`` of the image's width and height (they overlap where ``fraction`` > 0.5):
    top-left, top-right, bottom-left, bottom-right."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    tw, th = max(1, int(round(width * fraction))), max(1, int(round(height * fraction)))
    return [(x, y, tw, th) for y in (0, height - th) for x in (0, width - tw)]


def detection_from_tile(detection: Detection, tile: tuple[int, int, int, int],
                        image_size: tuple[int, int]) -> Detection:
    """A hand found in a tile, in the whole image's coordinates.

    Args:
        detection: found in the tile image (its ``image_size`` the tile's).
        tile: ``(x0, y0, w, h)`` of the tile in the whole image, pixels.
        image_size: the whole image's ``(width, height)``.

    The keypoints shift by the tile's corner (pixel centres stay at integer coordinates); the
    relative depth, in units of the image's width, is rescaled to the whole image's width; the
    world landmarks, in metres about the hand's centre, are unchanged.
    """
    x0, y0, tw, _ = tile
    return Detection(
        handedness=detection.handedness,
        score=detection.score,
        keypoints_2d=detection.keypoints_2d + np.array([x0, y0], np.float32),
        keypoints_z=detection.keypoints_z * np.float32(tw / image_size[0]),
        world_landmarks=detection.world_landmarks,
        image_size=(int(image_size[0]), int(image_size[1])),
    )


def same_hand(a: Detection, b: Detection) -> bool:
    """Whether two detections in one image are the same hand: their keypoint boxes overlap
    (IoU above 0.3) or their keypoints lie close (median distance under 0.2 of the larger
    box's longer side)."""
    box_a, box_b = a.bbox_xyxy, b.bbox_xyxy
    if box_iou(box_a, box_b) > _SAME_HAND_IOU:
        return True
    side = max(box_a[2] - box_a[0], box_a[3] - box_a[1], box_b[2] - box_b[0], box_b[3] - box_b[1])
    distance = float(np.median(np.linalg.norm(a.keypoints_2d - b.keypoints_2d, axis=1)))
    return distance < _SAME_HAND_DISTANCE * side


class HandDetector:
    """Finds up to ``max_hands`` hands in RGB images with MediaPipe's hand landmarker.

    Use it as a context manager (it owns a MediaPipe graph)::

        with HandDetector(mode="video") as detector:
            for frame in source:
                hands = detector.detect(frame.image, frame.timestamp_s)

    Args:
        max_hands: most hands returned per image (1 or more).
        mode: ``"video"`` tracks hands from frame to frame (the landmarker's VIDEO running
            mode; use for cameras and videos: faster, steadier); ``"static"`` runs palm
            detection on every image (IMAGE running mode; use for unrelated images such as
            an image folder).
        min_detection_confidence: palm detector threshold in [0, 1].
        min_tracking_confidence: landmark model hand-presence threshold in [0, 1]; in video
            mode, below it the next frame re-runs palm detection (also the landmarker's
            frame-to-frame tracking threshold).
        model_complexity: 0 (lite models, faster) or 1 (full models, more accurate).
        mirrored_input: the images are horizontally flipped (selfie view); see the module
            docstring on handedness.
        tiles: static mode: where fewer than ``max_hands`` hands are found in a large image,
            look again in four corner tiles (see the module docstring). Ignored in video mode.

    Raises:
        ModelFileError: the model bundle is missing or MediaPipe cannot load it.

    Cost (2-core CPU, 256 x 256, model_complexity=1): static mode about 28-36 ms per image
    with a hand (with tiles, five times that where they run); video mode about 14 ms per frame
    while tracking with ``max_hands=1``. In
    video mode, while fewer than ``max_hands`` hands are tracked, the palm detector still
    runs on every frame, so ask for one hand when one is enough.
    """

    def __init__(
        self,
        max_hands: int = 2,
        mode: str = "video",
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        model_complexity: int = 1,
        mirrored_input: bool = False,
        tiles: bool = False,
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
        if model_complexity not in BUNDLE_NAMES:
            raise ValueError(f"model_complexity must be 0 or 1, got {model_complexity}")
        self.max_hands = int(max_hands)
        self.mode = mode
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.model_complexity = int(model_complexity)
        self.mirrored_input = bool(mirrored_input)
        self.tiles = bool(tiles) and mode == "static"
        self.bundle_path = BUNDLE_DIR / BUNDLE_NAMES[self.model_complexity]
        self._last_timestamp_s: float | None = None
        self._last_timestamp_ms = -1
        self._landmarker: Any = None
        self._landmarker = self._make_landmarker()

    def _make_landmarker(self) -> Any:
        # Imported here: mediapipe is heavy and only this stage needs it.
        from mediapipe.tasks.python.core.base_options import BaseOptions
        from mediapipe.tasks.python.vision import HandLandmarker, HandLandmarkerOptions, RunningMode

        if not self.bundle_path.is_file():
            raise ModelFileError(f"the hand detector's model bundle {self.bundle_path} is missing "
                                 "(build it with: python -m core.detect.build_task_bundle)")
        options = HandLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.bundle_path), delegate=BaseOptions.Delegate.CPU),
            running_mode=RunningMode.VIDEO if self.mode == "video" else RunningMode.IMAGE,
            num_hands=self.max_hands,
            min_hand_detection_confidence=self.min_detection_confidence,
            min_hand_presence_confidence=self.min_tracking_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )
        try:
            return HandLandmarker.create_from_options(options)
        except (RuntimeError, ValueError) as exc:
            raise ModelFileError(f"MediaPipe could not load {self.bundle_path}: {exc}") from exc

    def reset(self) -> None:
        """Forget tracked hands (video mode): the next image starts a new stream."""
        self.close()
        self._landmarker = self._make_landmarker()
        self._last_timestamp_s = None
        self._last_timestamp_ms = -1

    def _video_timestamp_ms(self, timestamp_s: float | None) -> int:
        """The landmarker's timestamp for the next frame: whole milliseconds, strictly
        increasing (frames closer than 1 ms apart get the next free millisecond). A
        timestamp not after the previous one starts a new stream (:meth:`reset`)."""
        if timestamp_s is None:
            return self._last_timestamp_ms + _NO_TIMESTAMP_STEP_MS
        if self._last_timestamp_s is not None and timestamp_s <= self._last_timestamp_s:
            log.debug("timestamp %.3f s not after %.3f s: resetting the hand tracker",
                      timestamp_s, self._last_timestamp_s)
            self.reset()
        self._last_timestamp_s = float(timestamp_s)
        return max(int(round(timestamp_s * 1000.0)), self._last_timestamp_ms + 1)

    def detect(
        self, image_rgb: np.ndarray, timestamp_s: float | None = None
    ) -> tuple[Detection, ...]:
        """Find hands in one image.

        Args:
            image_rgb: (H, W, 3) uint8 RGB image (HandTwin's image convention).
            timestamp_s: video mode: the frame's time in seconds; a timestamp not after the
                previous one resets the tracker (a new stream). None: frames 1/30 s apart.
                Ignored in static mode.

        Returns:
            The detected hands, most confident first; ``()`` when there is none.

        Raises:
            InputError: the image is not (H, W, 3) uint8.
            RuntimeError: the detector is closed.
        """
        if self._landmarker is None:
            raise RuntimeError("the hand detector is closed")
        image = detection_image(image_rgb)
        detections = self._detect_once(image, timestamp_s)
        height, width = image.shape[:2]
        if self.tiles and len(detections) < self.max_hands and max(width, height) >= TILE_MIN_SIDE_PX:
            detections = detections + self._detect_in_tiles(image, detections)
        detections.sort(key=lambda d: d.score, reverse=True)
        return tuple(detections)

    def _detect_once(self, image: np.ndarray, timestamp_s: float | None) -> list[Detection]:
        """MediaPipe on one checked image, its hands in the image's coordinates."""
        import mediapipe as mp

        mp_image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        if self.mode == "video":
            timestamp_ms = self._video_timestamp_ms(timestamp_s)
            result = self._landmarker.detect_for_video(mp_image, timestamp_ms)
            self._last_timestamp_ms = timestamp_ms
        else:
            result = self._landmarker.detect(mp_image)
        height, width = image.shape[:2]
        detections = []
        for landmarks, world, handed in zip(result.hand_landmarks, result.hand_world_landmarks, result.handedness):
            norm = np.array([(p.x, p.y, p.z) for p in landmarks], dtype=np.float32)
            world_m = np.array([(p.x, p.y, p.z) for p in world], dtype=np.float32)
            label = handed[0].category_name.lower()  # the subject's hand in an unmirrored image
            handedness = swap_handedness(label) if self.mirrored_input else label
            keypoints_2d = np.empty((NUM_KEYPOINTS, 2), np.float32)
            keypoints_2d[:, 0] = norm[:, 0] * width - 0.5
            keypoints_2d[:, 1] = norm[:, 1] * height - 0.5
            detections.append(
                Detection(
                    handedness=handedness,
                    score=float(handed[0].score),
                    keypoints_2d=keypoints_2d,
                    keypoints_z=norm[:, 2],
                    world_landmarks=world_m,
                    image_size=(width, height),
                )
            )
        return detections

    def _detect_in_tiles(self, image: np.ndarray, found: list[Detection]) -> list[Detection]:
        """Hands in the corner tiles that are not in ``found``, at most ``max_hands`` in all.

        Where several tiles hold the same new hand, the tile that holds most of its keypoints
        gives it (a hand cut by a tile's edge has guessed keypoints there), then the more
        confident."""
        height, width = image.shape[:2]
        candidates = []
        for tile in tile_boxes(width, height):
            x0, y0, tw, th = tile
            for d in self._detect_once(image[y0:y0 + th, x0:x0 + tw], None):
                k = d.keypoints_2d
                inside = float(np.mean((k[:, 0] >= 0) & (k[:, 0] <= tw - 1) & (k[:, 1] >= 0) & (k[:, 1] <= th - 1)))
                candidates.append((inside, d.score, detection_from_tile(d, tile, (width, height))))
        added: list[Detection] = []
        for _, _, d in sorted(candidates, key=lambda c: (c[0], c[1]), reverse=True):
            if len(found) + len(added) >= self.max_hands:
                break
            if not any(same_hand(d, other) for other in (*found, *added)):
                added.append(d)
        if added:
            log.debug("tiles found %d more hand(s) in a %dx%d image", len(added), width, height)
        return added

    def close(self) -> None:
        """Release the MediaPipe graph. Idempotent."""
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

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
        if getattr(self, "_landmarker", None) is not None:
            try:
                self.close()
            except (RuntimeError, ValueError, AttributeError):
                pass
