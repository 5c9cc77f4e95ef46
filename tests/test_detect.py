"""Tests of core.detect: the MediaPipe hand landmarker wrapper and its model bundles.

The real-hand tests are opt-in: they use ``../shared/data`` (real images that must not be
copied into the repository) and skip cleanly in a fresh clone without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.camera import bgr_to_rgb
from core.detect import Detection, HandDetector, swap_handedness
from core.detect.mediapipe_hands import detection_from_tile, same_hand, tile_boxes
from core.errors import InputError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FREIHAND = SHARED_DATA / "mmpose_hand_testdata" / "freihand"


@pytest.fixture(scope="module")
def static_detector() -> Iterator[HandDetector]:
    with HandDetector(mode="static", max_hands=2) as detector:
        yield detector


def _no_hand_image() -> np.ndarray:
    """Smooth coloured noise: nothing hand-like in it."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return cv2.resize(small, (256, 256), interpolation=cv2.INTER_CUBIC)


def test_no_hand_gives_empty_tuple(static_detector: HandDetector) -> None:
    assert static_detector.detect(_no_hand_image()) == ()
    assert static_detector.detect(np.zeros((120, 160, 3), np.uint8)) == ()


def test_video_mode_on_no_hand_frames() -> None:
    with HandDetector(mode="video", max_hands=1, model_complexity=0) as detector:
        for i in range(3):
            assert detector.detect(_no_hand_image(), timestamp_s=i / 30) == ()
        # time going backwards starts a new stream instead of failing
        assert detector.detect(_no_hand_image(), timestamp_s=0.0) == ()


def test_bad_input_and_closed_detector() -> None:
    detector = HandDetector(mode="static", max_hands=1, model_complexity=0)
    with pytest.raises(InputError, match="uint8"):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(InputError):
        detector.detect(np.zeros((64, 64), np.uint8))
    detector.close()
    detector.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        detector.detect(np.zeros((64, 64, 3), np.uint8))


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "live"}, {"max_hands": 0}, {"min_detection_confidence": 1.5},
     {"model_complexity": 2}],
)
def test_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        HandDetector(**kwargs)


def test_detection_record_checks_shapes_and_is_read_only() -> None:
    kp = np.zeros((21, 2), np.float32)
    det = Detection("right", 0.9, kp, np.zeros(21), np.zeros((21, 3)), (64, 48))
    assert det.keypoints_z.dtype == np.float32 and det.world_landmarks.dtype == np.float32
    with pytest.raises(ValueError):
        det.keypoints_2d[0, 0] = 1.0
    kp[0, 0] = 2.0  # the caller's array is not frozen
    with pytest.raises(ValueError, match="keypoints_2d"):
        Detection("right", 0.9, np.zeros((20, 2)), np.zeros(21), np.zeros((21, 3)), (64, 48))
    with pytest.raises(ValueError, match="handedness"):
        Detection("Right", 0.9, kp, np.zeros(21), np.zeros((21, 3)), (64, 48))


def test_swap_handedness() -> None:
    assert swap_handedness("left") == "right" and swap_handedness("right") == "left"
    with pytest.raises(ValueError):
        swap_handedness("Left")


# ---------------------------------------------------------------------------------------------
# Opt-in: real FreiHAND crops (right hands, unmirrored) from ../shared/data
# ---------------------------------------------------------------------------------------------


def _freihand_samples() -> list[tuple[np.ndarray, np.ndarray]]:
    if not (FREIHAND / "test_freihand.json").is_file():
        pytest.skip(f"real hand samples not present ({FREIHAND})")
    labels = json.loads((FREIHAND / "test_freihand.json").read_text())
    names = {im["id"]: im["file_name"] for im in labels["images"]}
    samples = []
    for ann in labels["annotations"]:
        image = bgr_to_rgb(cv2.imread(str(FREIHAND / names[ann["image_id"]])))
        samples.append((image, np.array(ann["keypoints"], np.float64).reshape(21, 3)[:, :2]))
    return samples


def test_freihand_keypoints_and_handedness(static_detector: HandDetector) -> None:
    samples = _freihand_samples()
    errors = []
    for image, label in samples:
        hands = static_detector.detect(image)
        if not hands:
            continue
        hand = hands[0]
        assert hand.handedness == "right"  # FreiHAND holds right hands only
        assert hand.keypoints_2d.shape == (21, 2) and hand.keypoints_2d.dtype == np.float32
        assert hand.image_size == (224, 224)
        # world landmarks: metres, hand-sized, centred on the hand
        span = np.ptp(hand.world_landmarks, axis=0).max()
        assert 0.05 < span < 0.3
        assert np.abs(hand.world_landmarks.mean(axis=0)).max() < 0.05
        errors.append(np.linalg.norm(hand.keypoints_2d - label, axis=1).mean())
    assert len(errors) >= len(samples) // 2
    # MediaPipe vs FreiHAND's (MANO joint centre) labels: about 11 px on 224 px crops
    assert float(np.mean(errors)) < 20.0


def test_mirrored_input_swaps_handedness(static_detector: HandDetector) -> None:
    image, _ = _freihand_samples()[0]
    mirrored = np.ascontiguousarray(image[:, ::-1])  # a selfie-view image of the right hand
    assert static_detector.detect(mirrored)[0].handedness == "left"  # taken as unmirrored
    with HandDetector(mode="static", mirrored_input=True) as selfie:
        assert selfie.detect(mirrored)[0].handedness == "right"


# ---------------------------------------------------------------------------------------------
# The shipped model bundles (resources/detect, built by core.detect.build_task_bundle)
# ---------------------------------------------------------------------------------------------


def test_shipped_bundles_hold_the_recorded_models() -> None:
    """Each bundle holds exactly the two models the Tasks API reads; the full one byte for byte
    the 0.10.21 wheel's files (SHA-256 as recorded), the lite one those files plus metadata."""
    import hashlib
    import zipfile

    from core.detect.build_task_bundle import BUNDLE_DIR, BUNDLES, METADATA_FROM, SELFIE_SOURCE, SOURCES
    from core.segment.methods import SELFIE_MODEL_PATH

    for name, members in BUNDLES.values():
        with zipfile.ZipFile(BUNDLE_DIR / name) as bundle:
            assert sorted(bundle.namelist()) == ["hand_detector.tflite", "hand_landmarks_detector.tflite"]
            for member, source in members.items():
                data = bundle.read(member)
                assert data[4:8] == b"TFL3"  # a TFLite flatbuffer
                assert b"TFLITE_METADATA" in data  # the Tasks API refuses float models without it
                if source in METADATA_FROM:
                    assert hashlib.sha256(data).hexdigest() != SOURCES[source].sha256
                else:
                    assert hashlib.sha256(data).hexdigest() == SOURCES[source].sha256
    selfie = (BUNDLE_DIR / SELFIE_MODEL_PATH.name).read_bytes()  # core.segment's "selfie" method
    assert hashlib.sha256(selfie).hexdigest() == SOURCES[SELFIE_SOURCE].sha256


def test_bundle_archives_are_reproducible() -> None:
    from core.detect.build_task_bundle import bundle_bytes

    a = bundle_bytes({"b.tflite": b"2", "a.tflite": b"1"})
    assert a == bundle_bytes({"a.tflite": b"1", "b.tflite": b"2"})
    assert a != bundle_bytes({"a.tflite": b"1", "b.tflite": b"3"})


def test_the_build_script_rebuilds_the_shipped_bundles(tmp_path: Path) -> None:
    """Where this MediaPipe holds the 0.10.21 models, the documented script gives the shipped
    bundles byte for byte."""
    from core.detect import build_task_bundle
    from core.detect.build_task_bundle import BUNDLE_DIR, build_bundle

    try:
        from mediapipe.tasks.python.metadata import metadata  # noqa: F401
    except ImportError:
        pytest.skip("this MediaPipe has no metadata tools")
    sources = build_task_bundle._read_installed()  # noqa: SLF001 - no download in a test
    if sources is None:
        pytest.skip("the installed MediaPipe does not hold the 0.10.21 hand models")
    for path in build_bundle(sources, tmp_path):
        assert path.read_bytes() == (BUNDLE_DIR / path.name).read_bytes()


def test_missing_bundle_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.detect import mediapipe_hands
    from core.errors import ModelFileError

    monkeypatch.setattr(mediapipe_hands, "BUNDLE_DIR", tmp_path)
    with pytest.raises(ModelFileError, match="build_task_bundle"):
        HandDetector(mode="static")


def test_video_timestamps_closer_than_a_millisecond_or_absent() -> None:
    """The landmarker needs strictly increasing whole milliseconds: frames < 1 ms apart, and
    frames without a timestamp, still go through; going back starts a new stream."""
    with HandDetector(mode="video", max_hands=1, model_complexity=0) as detector:
        for t in (0.0, 0.0002, 0.0004, 0.0011):
            assert detector.detect(_no_hand_image(), timestamp_s=t) == ()
        assert detector.detect(_no_hand_image()) == ()
        assert detector.detect(_no_hand_image(), timestamp_s=0.0005) == ()  # back in time: reset


# ---- tiles: a second look at large photos ---------------------------------------------------


def _detection(keypoints: np.ndarray, image_size: tuple[int, int] = (640, 480), z: float = 0.1) -> Detection:
    return Detection("right", 0.9, keypoints.astype(np.float32), np.full(21, z, np.float32),
                     np.zeros((21, 3), np.float32), image_size)


def test_tile_boxes_are_four_overlapping_corners_covering_the_image() -> None:
    tiles = tile_boxes(1280, 720)
    assert tiles == [(0, 0, 768, 432), (512, 0, 768, 432), (0, 288, 768, 432), (512, 288, 768, 432)]
    covered = np.zeros((720, 1280), int)
    for x, y, w, h in tiles:
        covered[y:y + h, x:x + w] += 1
    assert covered.min() >= 1 and covered.max() == 4  # every pixel, the centre in all four
    assert tile_boxes(100, 50, fraction=1.0) == [(0, 0, 100, 50)] * 4
    with pytest.raises(ValueError):
        tile_boxes(100, 100, fraction=0.0)


def test_a_tiles_hand_maps_back_to_the_whole_image() -> None:
    rng = np.random.default_rng(3)
    keypoints = rng.uniform(10, 200, (21, 2))
    in_tile = _detection(keypoints, image_size=(768, 432), z=0.2)
    whole = detection_from_tile(in_tile, (512, 288, 768, 432), (1280, 720))
    np.testing.assert_allclose(whole.keypoints_2d, keypoints + [512, 288], atol=1e-4)
    # relative depth is in units of the image's width: a tile 0.6 as wide reads 0.6 as deep
    np.testing.assert_allclose(whole.keypoints_z, 0.2 * 768 / 1280, rtol=1e-6)
    assert whole.image_size == (1280, 720) and whole.handedness == "right" and whole.score == 0.9
    np.testing.assert_array_equal(whole.world_landmarks, in_tile.world_landmarks)


def test_box_iou_matches_the_iou_of_the_boxes_drawn_as_masks() -> None:
    from core.metrics import box_iou, mask_iou

    rng = np.random.default_rng(5)
    for _ in range(20):  # integer boxes on a grid: the masks' IoU is exact
        a, b = (np.sort(rng.integers(0, 40, (2, 2)), axis=0).T.reshape(-1)[[0, 2, 1, 3]] for _ in range(2))
        masks = []
        for x0, y0, x1, y1 in (a, b):
            m = np.zeros((40, 40), bool)
            m[y0:y1, x0:x1] = True
            masks.append(m)
        if masks[0].any() or masks[1].any():
            assert box_iou(tuple(a), tuple(b)) == pytest.approx(mask_iou(*masks))
    assert box_iou((0, 0, 0, 5), (0, 0, 0, 5)) == 0.0  # no area


def test_same_hand_by_overlap_or_by_close_keypoints() -> None:
    rng = np.random.default_rng(4)
    hand = rng.uniform(100, 200, (21, 2))
    assert same_hand(_detection(hand), _detection(hand + 5.0))
    assert not same_hand(_detection(hand), _detection(hand + 300.0))
    # a hand seen whole and its keypoints guessed from a tile that cuts it: boxes differ, keypoints agree
    squeezed = hand.copy()
    squeezed[1:5] = hand[0]  # the thumb collapsed onto the wrist
    assert same_hand(_detection(hand), _detection(squeezed))


def small_hand_in_a_large_photo() -> tuple[np.ndarray, tuple[Detection, ...], float, tuple[int, int]]:
    """The demo clip's first frame (480x360) shrunk to 264 px wide in the corner of a grey 1280x720
    photo: too small a hand for MediaPipe's look at the whole photo, not for a tile's.
    Returns the photo, MediaPipe's hands in the unshrunk frame, the scale and the frame's corner."""
    from core.capture.open import DEMO_CLIP_PATH

    capture = cv2.VideoCapture(str(DEMO_CLIP_PATH))
    ok, frame = capture.read()
    capture.release()
    assert ok
    frame = bgr_to_rgb(frame)
    with HandDetector(mode="static", max_hands=1) as detector:
        in_frame = detector.detect(frame)
    scale = 0.55
    small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    photo = np.full((720, 1280, 3), 110, np.uint8)
    h, w = small.shape[:2]
    photo[720 - h:, 1280 - w:] = small
    return photo, in_frame, scale, (1280 - w, 720 - h)


def test_tiles_find_a_small_hand_the_whole_photo_misses(static_detector: HandDetector) -> None:
    photo, in_frame, scale, (x0, y0) = small_hand_in_a_large_photo()
    assert len(in_frame) == 1
    assert static_detector.detect(photo) == ()  # the whole photo: missed
    with HandDetector(mode="static", max_hands=2, tiles=True) as tiled:
        hands = tiled.detect(photo)
    assert len(hands) == 1  # found once, though three tiles hold it
    hand = hands[0]
    assert hand.image_size == (1280, 720)
    # where the hand in the unshrunk frame says it is, shrunk and moved into the corner
    expected = (in_frame[0].keypoints_2d + 0.5) * scale - 0.5 + np.array([x0, y0])
    size = float(np.ptp(expected, axis=0).max())
    assert float(np.median(np.linalg.norm(hand.keypoints_2d - expected, axis=1))) < 0.1 * size


def test_tiles_only_in_static_mode_large_images_and_for_missing_hands(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.detect.mediapipe_hands as mediapipe_hands

    with HandDetector(mode="video", tiles=True) as video:
        assert not video.tiles
    photo, _, _, _ = small_hand_in_a_large_photo()
    with HandDetector(mode="static", max_hands=1, tiles=True) as tiled:
        assert tiled.tiles
        looks = []
        original = tiled._detect_in_tiles  # noqa: SLF001 - counting the second looks
        monkeypatch.setattr(tiled, "_detect_in_tiles", lambda *a: looks.append(1) or original(*a))
        assert len(tiled.detect(photo)) == 1 and len(looks) == 1
        assert tiled.detect(_no_hand_image()) == () and len(looks) == 1  # 256 px: not tiled
        monkeypatch.setattr(mediapipe_hands, "TILE_MIN_SIDE_PX", 1281)
        assert tiled.detect(photo) == () and len(looks) == 1  # below the size: not tiled
        monkeypatch.setattr(mediapipe_hands, "TILE_MIN_SIDE_PX", 480)
        found = tiled.detect(photo[:, 640:])  # the hand found at once: max_hands reached, no tiles
        assert len(found) == 1 and len(looks) == 1
