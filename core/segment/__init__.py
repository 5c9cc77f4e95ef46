"""Hand segmentation: the target silhouette of each detected hand, seeded by its keypoints.

The silhouette refinement (RealisticHands, Sec. 3.2) fits the rendered mesh to a target mask of
the hand. The paper predicts that mask with a trained U-Net; HandTwin ships no segmentation
weights, so the mask is computed per hand from the image and MediaPipe's keypoints, inside the
hand's box, on a small working grid (longest side ``WORK_SIZE``), then upsampled, and cut at
the wrist line so the forearm is never part of the target.

Methods (:data:`SEGMENTERS`; accuracy and cost: ``python -m core.tools.evaluate_segment``):

* ``capsule``: the keypoints' bones drawn as capsules scaled by the palm length, palm filled.
* ``skin`` (default): an online colour model learnt per hand and per frame from the pixels on
  the bones against the pixels far from them, plus the capsule model as a spatial prior. On
  real egocentric masks it beats the capsule model by ~4 IoU points and matches GrabCut at
  ~1/15 of its cost (about 1-3 ms per hand on a 2-core CPU).
* ``skin_only``, ``grabcut``, ``skin_grabcut``, ``selfie`` (MediaPipe's person segmentation):
  measured alternatives; GrabCut is the most accurate on synthetic hands but costs 25-40 ms.

The wrist line: ``WRIST_OFFSET`` palm lengths beyond the wrist keypoint, perpendicular to the
palm's axis. A silhouette compared with this mask should be cut by the same line
(:func:`wrist_cut`), since a rendered hand mesh has a wrist stub that may reach past it.

Public API::

    segment_hand(image, keypoints_2d, method=None) -> HandMask
    segment_hands(image, keypoints, method=None) -> [HandMask | None]   (every hand of a frame)
    HandMask       frozen: mask (H, W) bool, box (x0, y0, x1, y1), method, ms
    SEGMENTERS     name -> implementation (HandCrop -> grid mask); DEFAULT_METHOD
    wrist_cut(mask, keypoints_2d, offset=None) -> (H, W) bool   (None = WRIST_OFFSET)
    WRIST_OFFSET (the segmentation's cut), WRIST_LINE (the hand's own wrist: surface fit, overlay)
    hand_box(keypoints_2d, image_size) / hand_scale(keypoints_2d) / make_crop(image, kp)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import HandTwinError, InputError
from core.segment.geometry import (
    WRIST_LINE,
    WRIST_OFFSET,
    CropFrame,
    halfplane_box,
    hand_box,
    hand_scale,
    validate_inputs,
    wrist_cut,
    wrist_halfplane,
)
from core.segment.methods import SEGMENTERS, HandCrop, Segmenter

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_METHOD",
    "HandCrop",
    "HandMask",
    "SEGMENTERS",
    "Segmenter",
    "WORK_SIZE",
    "WRIST_LINE",
    "WRIST_OFFSET",
    "hand_box",
    "hand_scale",
    "make_crop",
    "segment_hand",
    "segment_hands",
    "wrist_cut",
]

#: The method :func:`segment_hand` uses when none is named.
DEFAULT_METHOD = "skin"
#: Longest side, in cells, of the working grid the segmenters run on.
WORK_SIZE = 112


@dataclass(frozen=True)
class HandMask:
    """The segmented silhouette of one hand.

    Attributes:
        mask: (H, W) bool over the full image: the hand's pixels, cut at the wrist line.
            Nothing outside ``box`` is set.
        box: (x0, y0, x1, y1) int pixel box (x1, y1 exclusive) of the hand, from the keypoints
            with a margin, that the mask was computed in.
        method: name of the segmenter used (a key of :data:`SEGMENTERS`).
        ms: wall-clock time taken, milliseconds.
    """

    mask: np.ndarray
    box: tuple[int, int, int, int]
    method: str
    ms: float


def make_crop(image: np.ndarray, keypoints_2d: np.ndarray,
              work_size: int | None = None) -> HandCrop:
    """The :class:`HandCrop` a segmenter sees for this hand (inputs already validated).

    Args:
        work_size: longest side of the working grid; None = :data:`WORK_SIZE`.
    """
    kp = np.asarray(keypoints_2d, dtype=np.float64)
    scale = hand_scale(kp)
    box = hand_box(kp, (image.shape[1], image.shape[0]), scale=scale)
    frame = CropFrame.make(box, WORK_SIZE if work_size is None else work_size)
    return HandCrop(frame.crop(image), frame.to_grid(kp), scale * frame.scale, frame)


def segment_hand(image: np.ndarray, keypoints_2d: np.ndarray,
                 method: str | None = None) -> HandMask:
    """Segment one hand seeded by its keypoints.

    Args:
        image: (H, W, 3) uint8 RGB.
        keypoints_2d: (21, 2) float pixels, MediaPipe order (pixel centres at integers).
        method: a key of :data:`SEGMENTERS`; None = :data:`DEFAULT_METHOD`.

    Returns:
        The :class:`HandMask`.

    Raises:
        InputError: bad image or keypoints, or an unknown method.
    """
    start = time.perf_counter()
    name = DEFAULT_METHOD if method is None else method
    if name not in SEGMENTERS:
        raise InputError(f"unknown segmentation method {name!r}; known: {sorted(SEGMENTERS)}")
    kp = validate_inputs(image, keypoints_2d)
    crop = make_crop(image, kp)
    grid = SEGMENTERS[name](crop)
    frame = crop.frame
    full = frame.paste(grid, image.shape[:2])
    # the wrist cut at full resolution, inside the box only
    x0, y0, x1, y1 = frame.box
    n, c = wrist_halfplane(kp, hand_scale(kp))
    full[y0:y1, x0:x1] &= halfplane_box(n, c, frame.box)
    ms = (time.perf_counter() - start) * 1e3
    return HandMask(full, frame.box, name, ms)


def segment_hands(image: np.ndarray, keypoints: Sequence[np.ndarray],
                  method: str | None = None) -> list[HandMask | None]:
    """:func:`segment_hand` for every hand of one image, in order; None for a hand that cannot
    be segmented (e.g. keypoints outside the image; logged at debug level)."""
    masks: list[HandMask | None] = []
    for kp in keypoints:
        try:
            masks.append(segment_hand(image, kp, method))
        except HandTwinError as exc:
            log.debug("no mask for a hand: %s", exc)
            masks.append(None)
    return masks
