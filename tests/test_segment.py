"""Tests of the hand segmentation stage (core.segment): geometry, every method, bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.errors import InputError
from core.segment import (
    DEFAULT_METHOD,
    SEGMENTERS,
    WRIST_OFFSET,
    HandMask,
    hand_box,
    hand_scale,
    segment_hand,
    wrist_cut,
)
from core.tools.evaluate_segment import iou, match_to_boxes

#: An open right hand, palm to the camera, fingers up, in palm lengths (wrist at the origin,
#: y down). The four finger MCPs average to x = 0, so the palm's axis is straight up.
TEMPLATE = np.array([
    [0.0, 0.0],
    [-0.28, -0.15], [-0.48, -0.35], [-0.62, -0.55], [-0.74, -0.72],
    [-0.30, -0.95], [-0.33, -1.35], [-0.35, -1.60], [-0.37, -1.82],
    [-0.10, -1.00], [-0.10, -1.45], [-0.10, -1.72], [-0.10, -1.95],
    [0.10, -0.97], [0.12, -1.37], [0.13, -1.62], [0.14, -1.82],
    [0.30, -0.88], [0.36, -1.18], [0.40, -1.38], [0.43, -1.55],
])


def drawn_hand(rng: np.random.Generator, radius: float, palm_px: float = 60.0,
               size: tuple[int, int] = (220, 240)) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A skin-coloured hand of finger radius ``radius`` palm lengths on a blue background, with
    a skin-coloured forearm below the wrist line that is not part of the truth.

    Returns:
        image (H, W, 3) uint8, keypoints (21, 2) px, truth (H, W) bool, wrist line's y.
    """
    w, h = size
    kp = TEMPLATE * palm_px + np.array([w / 2, h - 50.0])
    scale = hand_scale(kp)
    line_y = kp[0, 1] + WRIST_OFFSET * scale  # axis straight up: the wrist line is horizontal
    truth = np.zeros((h, w), np.uint8)
    L = palm_px
    palm = np.array([[kp[0, 0] - 0.32 * L, line_y + 2], [kp[0, 0] + 0.32 * L, line_y + 2],
                     kp[17] + [0.08 * L, 0], kp[13], kp[9], kp[5] - [0.08 * L, 0], kp[2], kp[1]])
    cv2.fillConvexPoly(truth, cv2.convexHull(palm.astype(np.int32)), 1)
    for child in range(1, 21):
        parent = 0 if child in (1, 5, 9, 13, 17) else child - 1
        if parent == 0 and child != 1:
            continue
        a, b = np.round(kp[parent]).astype(int), np.round(kp[child]).astype(int)
        cv2.line(truth, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 1, int(round(2 * radius * L)))
    truth[int(np.floor(line_y)) + 1:] = 0  # pixel centres beyond the line are forearm
    forearm = np.zeros_like(truth)
    cv2.rectangle(forearm, (int(kp[0, 0] - 0.3 * L), int(line_y)), (int(kp[0, 0] + 0.3 * L), h), 1, -1)
    background = np.array((60, 110, 170), np.float32) + rng.normal(0, 8, (h, w, 3))
    skin = np.array((215, 160, 130), np.float32) + rng.normal(0, 6, (h, w, 3))
    image = np.where(((truth | forearm) > 0)[..., None], skin, background)
    return np.clip(image, 0, 255).astype(np.uint8), kp, truth.astype(bool), float(line_y)


# ----------------------------------------------------------------------------- geometry


def test_hand_scale_is_the_palm_length_and_equivariant() -> None:
    kp = TEMPLATE * 50.0
    # an estimate from several palm distances: within 10 % of wrist -> middle MCP here
    assert hand_scale(kp) == pytest.approx(50.0 * np.linalg.norm(TEMPLATE[9]), rel=0.1)
    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = kp @ rot.T + np.array([300.0, -20.0])
    assert hand_scale(moved) == pytest.approx(hand_scale(kp), rel=1e-9)
    assert hand_scale(kp * 2) == pytest.approx(2 * hand_scale(kp), rel=1e-9)


def test_hand_scale_survives_a_foreshortened_palm() -> None:
    # Squash the hand along its axis (palm tilted away): wrist -> middle MCP shrinks to 0.3,
    # the knuckle width does not, so the estimate stays within a factor of about 1.5.
    kp = TEMPLATE * np.array([1.0, 0.3]) * 50.0
    assert hand_scale(kp) > 0.65 * hand_scale(TEMPLATE * 50.0)


def test_wrist_cut_known_lines() -> None:
    kp = TEMPLATE * 40.0 + np.array([60.0, 100.0])  # wrist at (60, 100), axis straight up
    full = np.ones((160, 120), bool)
    scale = hand_scale(kp)
    for offset in (0.0, 0.2, 0.5):
        cut = wrist_cut(full, kp, offset=offset)
        line = 100.0 + offset * scale
        rows = np.arange(160)
        expected = rows <= line
        assert np.array_equal(cut.all(axis=1), expected)
        assert np.array_equal(cut.any(axis=1), expected)
    # Turned a quarter turn (fingers pointing +x): the forearm is on the -x side.
    turned = np.stack([-(kp[:, 1] - 100.0), kp[:, 0] - 60.0], axis=1) + np.array([60.0, 80.0])
    cut = wrist_cut(np.ones((160, 160), bool), turned, offset=0.0)
    assert np.array_equal(cut.all(axis=0), np.arange(160) >= 60)
    # Default offset and a 0/1 uint8 mask are accepted; the input is left untouched.
    mask = np.ones((160, 120), np.uint8)
    assert wrist_cut(mask, kp).dtype == bool and mask.all()
    assert np.array_equal(wrist_cut(mask, kp), wrist_cut(full, kp, offset=WRIST_OFFSET))


def test_hand_box_contains_keypoints_and_is_clipped() -> None:
    kp = TEMPLATE * 40.0 + np.array([60.0, 100.0])
    x0, y0, x1, y1 = hand_box(kp, (200, 200))
    assert x0 <= kp[:, 0].min() and kp[:, 0].max() < x1
    assert y0 <= kp[:, 1].min() and kp[:, 1].max() < y1
    near_edge = kp + np.array([-50.0, 30.0])  # partly outside the image
    box = hand_box(near_edge, (100, 120))
    assert box[0] == 0 and box[3] == 120 and box[0] < box[2] <= 100 and box[1] < box[3]


# ----------------------------------------------------------------------------- methods


@pytest.mark.parametrize("method", sorted(SEGMENTERS))
def test_every_method_returns_a_bool_mask_inside_its_box(method: str) -> None:
    image, kp, _, _ = drawn_hand(np.random.default_rng(1), radius=0.11)
    hm = segment_hand(image, kp, method)
    assert isinstance(hm, HandMask) and hm.method == method and hm.ms >= 0
    assert hm.mask.shape == image.shape[:2] and hm.mask.dtype == bool
    x0, y0, x1, y1 = hm.box
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
    outside = hm.mask.copy()
    outside[y0:y1, x0:x1] = False
    assert not outside.any()


@pytest.mark.parametrize("radius", [0.07, 0.14])
def test_skin_model_adapts_to_thin_and_thick_fingers(radius: float) -> None:
    # The capsule model assumes one finger width; the colour model follows the image.
    image, kp, truth, line_y = drawn_hand(np.random.default_rng(2), radius=radius)
    skin = segment_hand(image, kp, "skin")
    capsule = segment_hand(image, kp, "capsule")
    assert iou(skin.mask, truth) > 0.92
    assert iou(skin.mask, truth) > iou(capsule.mask, truth) + 0.05
    # The skin-coloured forearm is cut away at the wrist line.
    assert not skin.mask[int(np.floor(line_y)) + 1:].any()


def test_default_method_is_registered_and_used() -> None:
    assert DEFAULT_METHOD in SEGMENTERS
    image, kp, _, _ = drawn_hand(np.random.default_rng(3), radius=0.1)
    a = segment_hand(image, kp)
    b = segment_hand(image, kp, DEFAULT_METHOD)
    assert a.method == DEFAULT_METHOD and np.array_equal(a.mask, b.mask)  # deterministic


def test_hand_partly_outside_the_image() -> None:
    image, kp, _, _ = drawn_hand(np.random.default_rng(4), radius=0.1)
    shifted = kp + np.array([-90.0, 0.0])  # thumb and index beyond the left border
    hm = segment_hand(image, shifted)
    assert hm.mask.shape == image.shape[:2] and hm.box[0] == 0


def test_large_image_small_work_grid() -> None:
    # A hand several times the working grid: the crop is downsampled and the mask upsampled.
    image, kp, truth, _ = drawn_hand(np.random.default_rng(5), radius=0.1, palm_px=200.0, size=(700, 760))
    hm = segment_hand(image, kp, "skin")
    assert iou(hm.mask, truth) > 0.92


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_input_error() -> None:
    image, kp, _, _ = drawn_hand(np.random.default_rng(6), radius=0.1)
    bad_calls = [
        lambda: segment_hand(image.astype(np.float32), kp),
        lambda: segment_hand(image[..., 0], kp),
        lambda: segment_hand(image[..., :2], kp),
        lambda: segment_hand(image, kp[:20]),
        lambda: segment_hand(image, kp.ravel()),
        lambda: segment_hand(image, np.where(np.arange(21)[:, None] == 3, np.nan, kp)),
        lambda: segment_hand(image, kp, "no-such-method"),
        lambda: wrist_cut(np.ones((4, 4, 1), bool), kp),
        lambda: wrist_cut(np.ones((4, 4), bool), kp[:5]),
    ]
    for call in bad_calls:
        with pytest.raises(InputError):
            call()


# ----------------------------------------------------------------------------- evaluation helpers


def test_iou_and_box_matching() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert iou(a, b) == pytest.approx(1 / 3)
    assert iou(a, b, (0, 0, 4, 1)) == pytest.approx(0.0)
    assert iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
    left = TEMPLATE * 20 + np.array([30.0, 60.0])
    right = TEMPLATE * 20 + np.array([130.0, 60.0])
    boxes = [(110, 10, 160, 70), (10, 10, 60, 70), (300, 300, 320, 320)]
    assert match_to_boxes([left, right], boxes) == [(0, 1), (1, 0)]
    assert match_to_boxes([], boxes) == []


def test_degenerate_keypoints_do_not_crash() -> None:
    image = np.random.default_rng(7).integers(0, 255, (100, 120, 3), dtype=np.uint8)
    for kp in (np.full((21, 2), 50.0), np.full((21, 2), -500.0), np.full((21, 2), [119.0, 99.0])):
        for method in ("capsule", DEFAULT_METHOD):
            hm = segment_hand(image, kp, method)
            assert hm.mask.shape == (100, 120) and hm.mask.dtype == bool


@pytest.mark.parametrize("seed", [2, 3])
def test_touching_hands_are_segmented_apart(seed):
    """Two rendered hands, the left partly over the right: each hand segmented on its own takes
    in the other's skin where they meet (thousands of pixels); separated (as the engine does) no
    pixel is in both masks, at most half as many of the other hand's pixels are in a hand's
    mask, and each keeps at least 80% of its own pixels (the hand in front loses some of those
    nearer the other's bones: 2D alone cannot tell which is in front)."""
    from core.segment import separate_hands
    from core.tools.evaluate_segment import two_hand_case

    case = two_hand_case(seed)
    alone = [segment_hand(case.image, kp).mask for kp in case.keypoints]
    together = separate_hands(alone, case.keypoints)
    wrong_alone = sum(int((alone[i] & case.truth[1 - i]).sum()) for i in range(2))
    wrong_together = sum(int((together[i] & case.truth[1 - i]).sum()) for i in range(2))
    assert wrong_alone > 1000  # the case is what it is for
    assert not (together[0] & together[1]).any()
    assert wrong_together <= 0.5 * wrong_alone
    own_alone = [int((alone[i] & case.truth[i]).sum()) for i in range(2)]
    own_together = [int((together[i] & case.truth[i]).sum()) for i in range(2)]
    for i in range(2):
        assert own_together[i] >= 0.8 * own_alone[i]
        assert not (together[i] & ~alone[i]).any()  # only ever takes pixels away
