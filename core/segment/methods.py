"""The segmenters: each turns a hand crop (image + keypoints on a small grid) into a hand mask.

Every segmenter has the signature ``fn(crop: HandCrop) -> np.ndarray`` and returns an
(h, w) bool mask or float32 probability in [0, 1] on the crop's working grid; the caller
(:func:`core.segment.segment_hand`) upsamples it, cuts it at the wrist and pastes it into the
full image. Measured accuracy and cost of each: ``python -m core.tools.evaluate_segment``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from core.segment.geometry import CropFrame, capsule_prior, halfplane_grid

__all__ = [
    "HandCrop",
    "SEGMENTERS",
    "Segmenter",
    "segment_capsule",
    "segment_grabcut",
    "segment_selfie",
    "segment_skin",
    "segment_skin_grabcut",
    "segment_skin_only",
    "skin_log_ratio",
]


@dataclass(frozen=True)
class HandCrop:
    """What a segmenter sees.

    Attributes:
        image: (h, w, 3) uint8 RGB, the hand box resampled to the working grid.
        keypoints: (21, 2) float64 keypoints in working-grid coordinates.
        scale: palm length in grid cells.
        frame: the crop's placement in the full image.
    """

    image: np.ndarray
    keypoints: np.ndarray
    scale: float
    frame: CropFrame

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the working grid."""
        return self.frame.size

    def prior(self, radius_factor: float = 1.0, palm_shrink: float = 1.0) -> np.ndarray:
        """(h, w) uint8 capsule model of the hand (see :func:`capsule_prior`)."""
        return capsule_prior(self.keypoints, self.size, self.scale, radius_factor, palm_shrink)

    @cached_property
    def sdf(self) -> np.ndarray:
        """(h, w) float32 signed distance to the capsule model's outline in palm lengths,
        negative inside."""
        prior = self.prior()
        outside = cv2.distanceTransform(1 - prior, cv2.DIST_L2, 3)
        inside = cv2.distanceTransform(prior, cv2.DIST_L2, 3)
        # no pixel of one kind gives "infinite" distances: clip them to the grid's size
        limit = np.float32(sum(prior.shape))
        diff = np.clip(outside, 0, limit) - np.clip(inside, 0, limit)
        return diff / np.float32(max(self.scale, 1e-6))

    def hand_side(self, offset: float | None = None) -> np.ndarray:
        """(h, w) bool, the hand side of the wrist line (``offset`` palm lengths toward the
        forearm; None = the module's WRIST_OFFSET)."""
        return halfplane_grid(self.keypoints, self.size, self.scale, offset)

    def seeds(self) -> tuple[np.ndarray, np.ndarray]:
        """(hand, background) bool seeds: the capsule model's core away from the wrist, and
        the crop beyond ``SKIN_BACKGROUND`` palm lengths from the model."""
        sdf = self.sdf
        hand = (sdf < SKIN_SEED) & self.hand_side(SKIN_SEED_WRIST)
        return hand, sdf > SKIN_BACKGROUND

    def resized(self, max_side: int) -> "HandCrop":
        """The same crop on a coarser grid whose longest side is at most ``max_side`` cells."""
        w, h = self.size
        f = min(1.0, max_side / max(w, h))
        if f >= 1.0:
            return self
        size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
        image = cv2.resize(self.image, size, interpolation=cv2.INTER_AREA)
        fx, fy = size[0] / w, size[1] / h
        kp = (self.keypoints + 0.5) * np.array([fx, fy]) - 0.5
        frame = CropFrame(self.frame.box, size, self.frame.scale * fx)
        return HandCrop(image, kp, self.scale * fx, frame)


Segmenter = Callable[[HandCrop], np.ndarray]


# ----------------------------------------------------------------------------- capsule

#: Capsule radii of the "capsule" segmenter relative to the typical hand's (tuned: 0.8-0.9
#: beats 1.0 on both the real and the synthetic set; the skin model uses 1.0 as its prior).
CAPSULE_RADIUS = 0.85


def segment_capsule(crop: HandCrop) -> np.ndarray:
    """Keypoint capsule model alone: bones as capsules scaled by the palm length, palm filled."""
    return crop.prior(CAPSULE_RADIUS).astype(bool)


# ----------------------------------------------------------------------------- skin colour

#: Hand seeds: signed distance to the capsule model below this (palm lengths; the bones'
#: cores), on the finger side of a line this far from the wrist (negative: toward the
#: fingers, so that a sleeve or watch at the wrist does not teach the hand's colour).
SKIN_SEED = -0.06
SKIN_SEED_WRIST = -0.1
#: Background samples: farther than this from the capsule model (palm lengths).
SKIN_BACKGROUND = 0.10
#: Histogram cells: chroma bins per axis (Cr, Cb) and luma bins.
SKIN_BINS = 32
SKIN_LUMA_BINS = 4
#: Spatial log prior: ``SKIN_SLOPE * -sdf`` (sdf in palm lengths), nothing beyond SKIN_LIMIT.
SKIN_SLOPE = 6.0
SKIN_LIMIT = 0.06


def _colour_cells(image: np.ndarray, bins: int = SKIN_BINS, luma_bins: int = SKIN_LUMA_BINS) -> np.ndarray:
    """(h, w) int32 histogram cell of each pixel in (Y, Cr, Cb), ``luma_bins x bins x bins``."""
    ycc = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.int32)
    y = ycc[..., 0] * luma_bins >> 8
    cr = ycc[..., 1] * bins >> 8
    cb = ycc[..., 2] * bins >> 8
    return (y * bins + cr) * bins + cb


def _log_ratio_table(cells: np.ndarray, hand: np.ndarray, background: np.ndarray,
                     bins: int = SKIN_BINS, luma_bins: int = SKIN_LUMA_BINS, blur: float = 1.0) -> np.ndarray:
    """(luma_bins * bins * bins,) float32 log p(cell | hand) - log p(cell | background),
    histograms smoothed over chroma by a Gaussian of ``blur`` bins."""
    n = luma_bins * bins * bins
    tables = []
    for sel in (hand, background):
        h = np.bincount(cells[sel], minlength=n).astype(np.float32).reshape(luma_bins, bins * bins)
        if blur > 0:  # luma slices as channels (at most 4 per call): blur over chroma only
            chans = np.ascontiguousarray(h.T).reshape(bins, bins, luma_bins)
            for k in range(0, luma_bins, 4):
                part = np.ascontiguousarray(chans[..., k:k + 4])
                chans[..., k:k + 4] = cv2.GaussianBlur(part, (0, 0), blur).reshape(part.shape)
            h = chans.reshape(bins * bins, luma_bins).T
        tables.append(h / max(float(h.sum()), 1.0) + 0.5 / n)
    return np.log(tables[0] / tables[1]).astype(np.float32).ravel()


def skin_log_ratio(crop: HandCrop) -> np.ndarray:
    """Per-pixel log likelihood ratio hand / background of an online colour model.

    The hand's colour histogram is learnt from the seeds on the bones (the keypoints say
    they are hand), the background's from the crop's pixels well outside the capsule model,
    both over (luma, Cr, Cb) in ``SKIN_LUMA_BINS x SKIN_BINS x SKIN_BINS`` cells.

    Returns:
        (h, w) float32 log p(colour | hand) - log p(colour | background).
    """
    cells = _colour_cells(crop.image)
    hand, background = crop.seeds()
    return _log_ratio_table(cells, hand, background)[cells]


def segment_skin_only(crop: HandCrop) -> np.ndarray:
    """The online skin-colour model alone: hand wherever the colour is likelier hand."""
    return skin_log_ratio(crop) > 0


def segment_skin(crop: HandCrop) -> np.ndarray:
    """Online skin-colour model with the capsule model as a spatial prior.

    Log odds of hand = colour log likelihood ratio + ``SKIN_SLOPE * -sdf`` (the signed
    distance to the capsule model, palm lengths), zero beyond ``SKIN_LIMIT`` outside the
    model; thresholded at even odds and median-filtered (3 x 3).
    """
    sdf = crop.sdf
    logit = skin_log_ratio(crop) - SKIN_SLOPE * sdf
    mask = ((logit > 0) & (sdf < SKIN_LIMIT)).astype(np.uint8)
    return cv2.medianBlur(mask, 3).astype(bool)


# ----------------------------------------------------------------------------- GrabCut


def _grabcut(crop: HandCrop, init: np.ndarray, iterations: int) -> np.ndarray:
    """Run cv2.grabCut from a GC_* label image; falls back to the labels when it cannot."""
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    labels = init.copy()
    try:
        cv2.grabCut(np.ascontiguousarray(crop.image), labels, None, bgd, fgd, iterations,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # no sure or probable pixels of one class
        labels = init
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def segment_grabcut(crop: HandCrop, iterations: int = 2) -> np.ndarray:
    """GrabCut (cv2.grabCut) in the hand crop seeded by the keypoints.

    Sure hand: thin capsules (0.35 of the radii) and the palm's core (half the polygon);
    probable hand: the capsule model; probable background: up to 2.2 capsule radii; sure
    background: the rest of the box.
    """
    init = np.full(crop.image.shape[:2], cv2.GC_BGD, np.uint8)
    init[crop.prior(2.2).astype(bool)] = cv2.GC_PR_BGD
    init[crop.prior().astype(bool)] = cv2.GC_PR_FGD
    init[crop.prior(0.35, 0.5).astype(bool)] = cv2.GC_FGD
    return _grabcut(crop, init, iterations)


def segment_skin_grabcut(crop: HandCrop, iterations: int = 2) -> np.ndarray:
    """GrabCut initialised from the skin model: its hand probable hand, the thin capsules sure."""
    init = np.full(crop.image.shape[:2], cv2.GC_BGD, np.uint8)
    init[crop.prior(2.2).astype(bool)] = cv2.GC_PR_BGD
    init[segment_skin(crop)] = cv2.GC_PR_FGD
    init[crop.prior(0.35, 0.5).astype(bool)] = cv2.GC_FGD
    return _grabcut(crop, init, iterations)


# ----------------------------------------------------------------------------- MediaPipe selfie

#: MediaPipe's selfie (person) segmentation model that :func:`segment_selfie` runs, shipped beside
#: the hand detector's bundles (copied as it is by ``python -m core.detect.build_task_bundle``).
SELFIE_MODEL_PATH = Path(__file__).resolve().parents[2] / "resources" / "detect" / "selfie_segmentation.tflite"

_SELFIE: dict[str, Any] = {}
_SELFIE_LOCK = threading.Lock()


def segment_selfie(crop: HandCrop) -> np.ndarray:
    """MediaPipe's selfie (person) segmentation run on the hand crop.

    The model (general, 256 x 256 input; from the MediaPipe 0.10.21 wheel, shipped in
    ``resources/detect``, run by the Tasks API's ImageSegmenter) segments people, not hands;
    it is kept as a measured reference, restricted to the hand box like the others. The
    options are built once; each call opens and closes its own segmenter (about 10-15 ms):
    MediaPipe 1.x task objects still open at interpreter exit fail to close.
    """
    import mediapipe as mp
    from mediapipe.tasks.python.vision import ImageSegmenter

    with _SELFIE_LOCK:
        if "options" not in _SELFIE:
            from mediapipe.tasks.python.core.base_options import BaseOptions
            from mediapipe.tasks.python.vision import ImageSegmenterOptions, RunningMode

            _SELFIE["options"] = ImageSegmenterOptions(
                base_options=BaseOptions(model_asset_path=str(SELFIE_MODEL_PATH),
                                         delegate=BaseOptions.Delegate.CPU),
                running_mode=RunningMode.IMAGE, output_confidence_masks=True, output_category_mask=False)
        options = _SELFIE["options"]
    with ImageSegmenter.create_from_options(options) as segmenter:
        result = segmenter.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(crop.image)))
        masks = result.confidence_masks
        prob = np.array(masks[-1].numpy_view(), dtype=np.float32) if masks else None
    if prob is None:
        return np.zeros(crop.image.shape[:2], bool)
    return prob.reshape(crop.image.shape[:2])


SEGMENTERS: dict[str, Segmenter] = {
    "capsule": segment_capsule,
    "skin": segment_skin,
    "skin_only": segment_skin_only,
    "grabcut": segment_grabcut,
    "skin_grabcut": segment_skin_grabcut,
    "selfie": segment_selfie,
}
