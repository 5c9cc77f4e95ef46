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
    separate_hands(masks, keypoints) -> [mask | None]   (no pixel in two distinct hands' masks)
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
    "separate_hands",
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
    be segmented (e.g. keypoints outside the image; logged at debug level). Each hand is
    segmented on its own: where two hands touch, both masks may hold the same pixels (the
    engine separates them with :func:`separate_hands` once duplicate detections of one hand are
    merged)."""
    masks: list[HandMask | None] = []
    for kp in keypoints:
        try:
            masks.append(segment_hand(image, kp, method))
        except HandTwinError as exc:
            log.debug("no mask for a hand: %s", exc)
            masks.append(None)
    return masks


def separate_hands(masks: Sequence[np.ndarray | None], keypoints: Sequence[np.ndarray]) -> list[np.ndarray | None]:
    """Distinct hands' masks with every pixel claimed by several of them given to one: the hand
    with a bone nearest to it (the segments between its keypoints), in its own palm lengths. A
    finger seen over another hand's palm is in front of it, and its pixels lie on its bones:
    with the signed distance to each hand's capsule model instead, the palm, deep inside its
    polygon, took the other hand's fingers on real EgoHands frames.

    Each hand segmented on its own takes in a touching hand's skin where their boxes meet, and
    one hand's texture was then painted with the other's. On 30 seeded pairs of rendered hands,
    one partly over the other (``python -m core.tools.evaluate_segment``), the other hand's
    pixels fell from 12% of the masks to 4%, and the hands kept 96% of their own pixels (the hand
    in front loses up to 16% where it lies nearer the other's bones: the image alone does not
    say which hand is in front). The hands must be distinct: two detections of one hand would
    split it.

    Args:
        masks: (H, W) bool, one per hand (None: not segmented). keypoints: (21, 2) pixels, one
            per hand.

    Returns:
        The masks, in order; those that lost pixels are new arrays (the inputs are not changed).
    """
    import cv2

    out = list(masks)
    boxes = []
    for m in out:
        if m is None:
            boxes.append(None)
            continue
        x, y, w, h = cv2.boundingRect(np.ascontiguousarray(m).view(np.uint8))
        boxes.append((x, y, x + w, y + h) if w and h else None)
    for i in range(len(out)):
        for j in range(i + 1, len(out)):
            a, b = boxes[i], boxes[j]
            if a is None or b is None:
                continue
            x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
            if x0 >= x1 or y0 >= y1:
                continue
            both = out[i][y0:y1, x0:x1] & out[j][y0:y1, x0:x1]
            if not both.any():
                continue
            # only the shared pixels are measured (a box of two large touching hands holds
            # some 10^5 pixels; measuring them all cost 20 ms a frame at 960 x 540)
            ys, xs = np.nonzero(both)
            pixels = np.stack([xs + x0, ys + y0], axis=-1)
            nearer_j = _bone_distance(keypoints[j], pixels) < _bone_distance(keypoints[i], pixels)
            to_j = np.zeros_like(both)
            to_j[ys[nearer_j], xs[nearer_j]] = True
            mi, mj = out[i].copy(), out[j].copy()
            mi[y0:y1, x0:x1] &= ~to_j
            mj[y0:y1, x0:x1] &= ~(both & ~to_j)
            out[i], out[j] = mi, mj
    return out


def _bone_distance(keypoints_2d: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """(N,) float64 distance of ``pixels`` ((N, 2) x, y) to the hand's nearest bone (the
    segments between the keypoints, wrist to each finger's base included), in palm lengths."""
    from core.keypoints import BONES

    kp = np.asarray(keypoints_2d, dtype=np.float64)
    p = np.asarray(pixels, dtype=np.float64)[:, None, :]  # (N, 1, 2)
    a = kp[[b[0] for b in BONES]][None]  # (1, 20, 2)
    ab = kp[[b[1] for b in BONES]][None] - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-9), 0.0, 1.0)
    d = np.sqrt((((p - a) - t[..., None] * ab) ** 2).sum(-1)).min(1)
    return d / hand_scale(kp)
