"""Tests of core.camera: conventions, intrinsics files, projection, calibration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.camera import (
    CharucoPattern,
    CheckerboardPattern,
    Intrinsics,
    bgr_to_rgb,
    calibrate_camera,
    calibrate_camera_images,
    intrinsics_from_fov,
    intrinsics_from_matrix,
    load_intrinsics,
    project,
    rgb_to_bgr,
    save_intrinsics,
)
from core.errors import InputError

# ---------------------------------------------------------------------------------------------
# Colour order
# ---------------------------------------------------------------------------------------------


def test_bgr_rgb_swap_channels_without_touching_input() -> None:
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    original = bgr.copy()
    rgb = bgr_to_rgb(bgr)
    np.testing.assert_array_equal(rgb[..., 0], bgr[..., 2])
    np.testing.assert_array_equal(rgb[..., 2], bgr[..., 0])
    assert rgb.flags.c_contiguous
    np.testing.assert_array_equal(bgr, original)
    np.testing.assert_array_equal(rgb_to_bgr(rgb), bgr)


def test_colour_conversion_rejects_non_colour_images() -> None:
    with pytest.raises(ValueError):
        bgr_to_rgb(np.zeros((4, 5), np.uint8))


def test_bgr_to_rgb_agrees_with_opencv() -> None:
    bgr = np.random.default_rng(1).integers(0, 256, (3, 3, 3), dtype=np.uint8)
    np.testing.assert_array_equal(bgr_to_rgb(bgr), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


# ---------------------------------------------------------------------------------------------
# Intrinsics
# ---------------------------------------------------------------------------------------------


def test_intrinsics_matrix_and_frozen() -> None:
    intr = Intrinsics(500.0, 510.0, 320.0, 240.0, 640, 480)
    K = intr.K
    assert K.dtype == np.float64 and K.shape == (3, 3)
    np.testing.assert_array_equal(K, [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
    K[0, 0] = 1.0  # a copy: the dataclass is unchanged
    assert intr.fx == 500.0
    with pytest.raises(AttributeError):
        intr.fx = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fx": -1.0, "fy": 1.0, "cx": 0.0, "cy": 0.0},
        {"fx": 1.0, "fy": 0.0, "cx": 0.0, "cy": 0.0},
        {"fx": float("nan"), "fy": 1.0, "cx": 0.0, "cy": 0.0},
        {"fx": 1.0, "fy": 1.0, "cx": 0.0, "cy": 0.0, "width": 10},
    ],
)
def test_intrinsics_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Intrinsics(**kwargs)


def test_scaled_keeps_pixel_centre_convention() -> None:
    intr = intrinsics_from_fov(60.0, 640, 480)
    half = intr.scaled(0.5)
    assert (half.width, half.height) == (320, 240)
    assert half.fx == pytest.approx(intr.fx / 2)
    # an ideal centred camera stays centred: c = (W - 1) / 2 at both sizes
    assert half.cx == pytest.approx((320 - 1) / 2)
    assert half.cy == pytest.approx((240 - 1) / 2)
    # the same 3D point lands on the same relative image position
    p = np.array([0.05, -0.02, 0.5])
    uv, uv_half = project(p, intr.K), project(p, half.K)
    np.testing.assert_allclose((uv_half + 0.5), (uv + 0.5) * 0.5, atol=1e-9)


def test_with_size_fills_rescales_or_refuses() -> None:
    bare = Intrinsics(500.0, 500.0, 320.0, 240.0)
    assert bare.size is None
    assert bare.with_size(640, 480).size == (640, 480)
    full = Intrinsics(500.0, 500.0, 319.5, 239.5, 640, 480)
    assert full.with_size(640, 480) is full
    assert full.with_size(1280, 960).fx == pytest.approx(1000.0)
    with pytest.raises(InputError, match="aspect ratio"):
        full.with_size(640, 640)


def test_intrinsics_from_fov() -> None:
    intr = intrinsics_from_fov(90.0, 640, 480)
    assert intr.fx == pytest.approx(320.0) and intr.fy == pytest.approx(320.0)
    assert (intr.cx, intr.cy) == (319.5, 239.5)
    assert intr.fov_x_deg == pytest.approx(90.0)
    with pytest.raises(InputError):
        intrinsics_from_fov(0.0, 640, 480)
    with pytest.raises(InputError):
        intrinsics_from_fov(180.0, 640, 480)


def test_json_round_trip_is_atomic(tmp_path: Path) -> None:
    intr = Intrinsics(612.5, 611.0, 318.2, 241.7, 640, 480)
    path = tmp_path / "cam.json"
    path.write_text("old content")
    save_intrinsics(path, intr)
    assert load_intrinsics(path) == intr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.json"]  # no temp file left


def test_load_json_variants(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"fx": 500, "fy": 501, "cx": 320, "cy": 240}))
    assert load_intrinsics(a) == Intrinsics(500.0, 501.0, 320.0, 240.0)
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"K": [[500, 0, 320], [0, 501, 240], [0, 0, 1]], "width": 640,
                             "height": 480}))
    assert load_intrinsics(b) == Intrinsics(500.0, 501.0, 320.0, 240.0, 640, 480)


def test_load_npy_single_and_per_frame(tmp_path: Path) -> None:
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    np.save(tmp_path / "one.npy", K)
    assert isinstance(load_intrinsics(tmp_path / "one.npy"), Intrinsics)
    Ks = np.stack([K, K * [[1.1], [1.1], [1]]])
    np.save(tmp_path / "many.npy", Ks)
    loaded = load_intrinsics(tmp_path / "many.npy")
    assert isinstance(loaded, np.ndarray) and loaded.shape == (2, 3, 3)
    np.testing.assert_allclose(loaded, Ks)


_GOOD_K = [[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", "{fx: 1", "not valid JSON"),
        ("list.json", "[1, 2, 3]", "JSON object"),
        ("missing.json", json.dumps({"fx": 1, "fy": 1, "cx": 0}), "missing key"),
        ("string.json", json.dumps({"fx": "a", "fy": 1, "cx": 0, "cy": 0}), "numbers"),
        ("neg.json", json.dumps({"fx": -5, "fy": 1, "cx": 0, "cy": 0}), "positive"),
        ("inf.json", '{"fx": Infinity, "fy": 1, "cx": 0, "cy": 0}', "finite"),
        ("kshape.json", json.dumps({"K": [[1, 0], [0, 1]]}), "3x3"),
        ("kragged.json", json.dumps({"K": [[1, 0, 0], [0, 1], [0, 0, 1]]}), "3x3"),
        ("knan.json", '{"K": [[NaN, 0, 0], [0, 1, 0], [0, 0, 1]]}', "non-finite"),
        ("kskew.json", json.dumps({"K": [[500, 3, 0], [0, 500, 0], [0, 0, 1]]}), "skew"),
        ("krow.json", json.dumps({"K": [[500, 0, 0], [0, 500, 0], [1, 0, 1]]}), "last row"),
        ("size.json", json.dumps({"fx": 1, "fy": 1, "cx": 0, "cy": 0, "width": -3,
                                  "height": 4}), "width"),
        ("binary.json", b"\xff\xfe\x00\x81", "JSON"),
        ("cam.yaml", "fx: 1", ".json or .npy"),
    ],
)
def test_malformed_json_files_raise_input_error(
    tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        load_intrinsics(path)
    assert name in str(info.value)  # the message names the file


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 3)), "shape"),
        (np.zeros((4, 3, 4)), "shape"),
        (np.zeros((0, 3, 3)), "shape"),
        (np.array(_GOOD_K) * [[1], [1], [1]] - [[1000, 0, 0], [0, 0, 0], [0, 0, 0]], "focal"),
        (np.where(np.eye(3) > 0, np.nan, 0.0), "non-finite"),
        (np.stack([np.array(_GOOD_K), np.full((3, 3), np.inf)]), "matrix 1"),
        (np.array(["a", "b"]), "numeric"),
    ],
)
def test_malformed_npy_files_raise_input_error(tmp_path: Path, array: np.ndarray,
                                               message: str) -> None:
    path = tmp_path / "k.npy"
    np.save(path, array)
    with pytest.raises(InputError, match=message):
        load_intrinsics(path)


def test_npy_garbage_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.npy"
    path.write_bytes(np.random.default_rng(0).bytes(100))
    with pytest.raises(InputError, match="garbage.npy"):
        load_intrinsics(path)
    with pytest.raises(InputError, match="not found"):
        load_intrinsics(tmp_path / "nope.json")


def test_intrinsics_from_matrix_checks() -> None:
    intr = intrinsics_from_matrix(np.array(_GOOD_K), 640, 480)
    assert intr.size == (640, 480)
    with pytest.raises(InputError):
        intrinsics_from_matrix(np.eye(4))


# ---------------------------------------------------------------------------------------------
# Projection
# ---------------------------------------------------------------------------------------------


def test_project_matches_opencv_and_broadcasts() -> None:
    rng = np.random.default_rng(3)
    K = np.array([[600.0, 0, 310.0], [0, 590.0, 250.0], [0, 0, 1]])
    pts = rng.uniform([-0.2, -0.2, 0.3], [0.2, 0.2, 1.0], size=(2, 7, 3))
    uv = project(pts, K)
    assert uv.shape == (2, 7, 2)
    ref, _ = cv2.projectPoints(pts.reshape(-1, 3), np.zeros(3), np.zeros(3), K, None)
    np.testing.assert_allclose(uv.reshape(-1, 2), ref.reshape(-1, 2), atol=1e-9)
    # the optical axis hits the principal point; +x goes right, +y goes down
    np.testing.assert_allclose(project(np.array([0.0, 0.0, 2.0]), K), [310.0, 250.0])
    assert project(np.array([0.1, 0.0, 1.0]), K)[0] > 310.0
    assert project(np.array([0.0, 0.1, 1.0]), K)[1] > 250.0
    # one K per frame
    Ks = np.stack([K, K * [[2], [2], [1]]])
    per_frame = project(pts, Ks[:, None])
    np.testing.assert_allclose(per_frame[0], uv[0])
    assert project(pts.astype(np.float32), K.astype(np.float32)).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Calibration from synthetic boards
# ---------------------------------------------------------------------------------------------

_CALIB_K = np.array([[820.0, 0.0, 322.0], [0.0, 804.0, 236.0], [0.0, 0.0, 1.0]])
_SIZE = (640, 480)


def _random_poses(rng: np.random.Generator, board_centre: np.ndarray, corners: np.ndarray,
                  count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Board poses (rvec, tvec) that keep every ``corners`` point well inside the image."""
    poses: list[tuple[np.ndarray, np.ndarray]] = []
    while len(poses) < count:
        rvec = rng.uniform([-0.45, -0.45, -0.3], [0.45, 0.45, 0.3])
        R, _ = cv2.Rodrigues(rvec)
        centre_cam = np.array([rng.uniform(-0.04, 0.04), rng.uniform(-0.03, 0.03),
                               rng.uniform(0.75, 0.95)])
        tvec = centre_cam - R @ board_centre
        uv, _ = cv2.projectPoints(corners, rvec, tvec, _CALIB_K, None)
        uv = uv.reshape(-1, 2)
        if uv.min() > 30 and uv[:, 0].max() < _SIZE[0] - 30 and uv[:, 1].max() < _SIZE[1] - 30:
            poses.append((rvec, tvec))
    return poses


def _warp_board(texture: np.ndarray, texture_to_board: np.ndarray, rvec: np.ndarray,
                tvec: np.ndarray) -> np.ndarray:
    """Image of a planar board texture seen by ``_CALIB_K`` at pose (rvec, tvec); RGB uint8.

    ``texture_to_board`` maps texture pixel centres (homogeneous) to board-plane metres.
    """
    R, _ = cv2.Rodrigues(rvec)
    board_to_image = _CALIB_K @ np.column_stack([R[:, 0], R[:, 1], tvec])
    H = board_to_image @ texture_to_board
    gray = cv2.warpPerspective(texture, H, _SIZE, flags=cv2.INTER_AREA,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=150)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def _checkerboard_images(pattern: CheckerboardPattern, count: int, seed: int) -> list[np.ndarray]:
    px, margin = 60, 60  # texture pixels per square, white margin
    cols, rows = pattern.inner_cols + 1, pattern.inner_rows + 1
    texture = np.full((rows * px + 2 * margin, cols * px + 2 * margin), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            if (r + c) % 2 == 0:
                texture[margin + r * px : margin + (r + 1) * px,
                        margin + c * px : margin + (c + 1) * px] = 0
    # inner corner (0, 0) is the pixel *edge* at margin + px, i.e. centre coordinate - 0.5
    s = pattern.square_m / px
    origin = margin + px - 0.5
    texture_to_board = np.array([[s, 0, -origin * s], [0, s, -origin * s], [0, 0, 1.0]])
    corners = pattern.object_points().astype(np.float64)
    centre = corners.mean(axis=0)
    poses = _random_poses(np.random.default_rng(seed), centre, corners, count)
    return [_warp_board(texture, texture_to_board, r, t) for r, t in poses]


def test_calibrate_checkerboard_recovers_focal_lengths(tmp_path: Path) -> None:
    pattern = CheckerboardPattern(inner_cols=9, inner_rows=6, square_m=0.025)
    images = _checkerboard_images(pattern, count=8, seed=0)
    paths = []
    for i, image in enumerate(images):
        path = tmp_path / f"board_{i:02d}.png"
        cv2.imwrite(str(path), rgb_to_bgr(image))
        paths.append(path)
    # one image without a board is skipped, not fatal
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((_SIZE[1], _SIZE[0], 3), 128, np.uint8))
    result = calibrate_camera(paths + [blank], pattern)
    intr = result.intrinsics
    assert intr.fx == pytest.approx(_CALIB_K[0, 0], rel=0.02)
    assert intr.fy == pytest.approx(_CALIB_K[1, 1], rel=0.02)
    assert abs(intr.cx - _CALIB_K[0, 2]) < 10 and abs(intr.cy - _CALIB_K[1, 2]) < 10
    assert intr.size == _SIZE
    assert result.rms_px < 0.5
    assert result.dist_coeffs.shape == (5,)
    assert len(result.used_images) == 8 and str(blank) not in result.used_images


def test_calibrate_charuco_recovers_focal_lengths() -> None:
    pattern = CharucoPattern(squares_x=7, squares_y=5, square_m=0.04, marker_m=0.03)
    board = pattern.board()
    px, margin = 80, 60
    inner = board.generateImage((pattern.squares_x * px, pattern.squares_y * px), marginSize=0)
    texture = np.pad(inner, margin, constant_values=255)
    s = pattern.square_m / px
    origin = margin - 0.5  # the board's outer corner (board origin) is a pixel edge
    texture_to_board = np.array([[s, 0, -origin * s], [0, s, -origin * s], [0, 0, 1.0]])
    corners = np.asarray(board.getChessboardCorners(), np.float64)
    outline = np.array([[0, 0, 0], [pattern.squares_x * pattern.square_m, 0, 0],
                        [0, pattern.squares_y * pattern.square_m, 0],
                        [pattern.squares_x * pattern.square_m,
                         pattern.squares_y * pattern.square_m, 0]], np.float64)
    poses = _random_poses(np.random.default_rng(1), outline.mean(axis=0), outline, 8)
    images = [_warp_board(texture, texture_to_board, r, t) for r, t in poses]
    result = calibrate_camera_images(images, pattern)
    assert len(corners) == (pattern.squares_x - 1) * (pattern.squares_y - 1)
    assert result.intrinsics.fx == pytest.approx(_CALIB_K[0, 0], rel=0.02)
    assert result.intrinsics.fy == pytest.approx(_CALIB_K[1, 1], rel=0.02)
    assert len(result.used_images) >= 6


def test_calibrate_with_too_few_boards_says_so() -> None:
    blank = np.full((120, 160, 3), 200, np.uint8)
    with pytest.raises(InputError, match=r"only 0 of 4 images.*at least 3"):
        calibrate_camera_images([blank] * 4, CheckerboardPattern())
    with pytest.raises(InputError, match="ChArUco"):
        calibrate_camera_images([blank] * 4, CharucoPattern())


def test_calibrate_rejects_unreadable_and_mixed_sizes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read"):
        calibrate_camera([bad])
    with pytest.raises(InputError, match="same size"):
        calibrate_camera_images([np.zeros((10, 10, 3), np.uint8), np.zeros((12, 10, 3), np.uint8)])


def test_fov_of_calibrated_camera_is_consistent() -> None:
    intr = Intrinsics(_CALIB_K[0, 0], _CALIB_K[1, 1], 322.0, 236.0, *_SIZE)
    assert intr.fov_x_deg == pytest.approx(math.degrees(2 * math.atan(320 / 820)))


def test_focal_and_field_of_view_are_inverse() -> None:
    """The one place the pinhole's fov/focal relation lives: 90 degrees over 640 px is 320 px,
    and the two functions undo each other."""
    from core.camera import focal_from_fov, fov_from_focal

    assert focal_from_fov(90.0, 640) == pytest.approx(320.0)
    for fov in (30.0, 70.0, 120.0, 150.0):
        assert fov_from_focal(focal_from_fov(fov, 1280), 1280) == pytest.approx(fov)
    assert intrinsics_from_fov(70.0, 640, 480).fov_x_deg == pytest.approx(70.0)
