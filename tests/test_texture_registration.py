"""Registration of the captured texture on synthetic frames with a known texture
(core.tools.evaluate_texture_registration): the measure itself against known shifts, the
oracle geometry (about 0), a deliberately shifted camera, and the engine's own hands for a
right and a left hand, perspective and weak perspective. Bounds were measured on seed 0
(``python -m core.tools.evaluate_texture_registration``) with some slack."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.tools.evaluate_texture_registration import (
    SIZE,
    capture_oracle,
    evaluate_registration,
    reference_grid,
    registration_error,
    registration_pattern,
    render_views,
)


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    return registration_pattern(np.random.default_rng(17), SIZE)


@pytest.fixture(scope="module")
def reference(texture) -> np.ndarray:
    return reference_grid(texture, SIZE)


@pytest.mark.parametrize("shift", [(0.0, 0.0), (3.0, 0.0), (-1.5, 2.25)])
def test_the_measure_finds_a_known_sub_texel_shift(reference, shift) -> None:
    """A texture whose content lies ``shift`` texels away in the known one reads that shift."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    moved = cv2.remap(reference, xs + np.float32(shift[0]), ys + np.float32(shift[1]), cv2.INTER_CUBIC)
    rgb = np.repeat(np.clip(moved, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    seen = np.zeros((SIZE, SIZE), bool)
    seen[100:400, 60:300] = True
    r = registration_error(rgb, seen, reference)
    assert r["patches"] > 100
    assert r["mean_shift_px"] == pytest.approx(list(shift), abs=0.1)
    assert r["p90_px"] == pytest.approx(float(np.hypot(*shift)), abs=0.15)


def test_the_true_geometry_registers_and_a_shifted_camera_does_not(texture, reference) -> None:
    views = render_views("right", texture, views=2, seed=0)
    oracle = registration_error(*capture_oracle(views), reference)
    assert oracle["patches"] > 30 and oracle["peak"] > 0.99
    assert oracle["median_px"] < 0.1 and oracle["p90_px"] < 0.2, oracle  # measured 0.05 / 0.09
    # The principal point 2 px off: the frame is sampled 2 px away, about 2 texels on this grid.
    shifted = registration_error(*capture_oracle(views, camera_shift_px=(2.0, 0.0)), reference)
    assert shifted["median_px"] > 1.2 and shifted["median_px"] > 10 * oracle["median_px"], shifted


@pytest.mark.parametrize("side", ["right", "left"])
def test_engine_hands_register_within_the_measured_bounds(side) -> None:
    """The engine's hands fitted to the true keypoints, 60 degree lens: perspective within 1
    texel (measured median 0.41 / 0.55, p90 0.65 / 0.75 right / left); weak perspective not
    (median 3.3 / 2.7, p90 6.2 / 5.2): the hand lies 25 to 35 cm from the lens, and the weak
    projection itself, fitted to the true visible mesh, misplaces it by a median 3.3-3.9 px
    (4.2 / 3.8 texels)."""
    r = evaluate_registration(sides=(side,), views=3, seed=0, refine=(0,))[side]
    assert r["oracle"]["median_px"] < 0.1, r
    persp, weak, best = r["perspective_refine0"], r["weak_refine0"], r["weak_best"]
    assert persp["patches"] > 30 and persp["median_px"] < 0.8 and persp["p90_px"] < 1.0, persp
    assert max(persp["reprojection_px"]) < 0.5 and max(persp["mesh_px"]) < 0.5, persp
    assert 1.5 < weak["median_px"] < 4.5 and weak["p90_px"] < 8.0, weak
    assert best["median_px"] > 2.0 and min(best["mesh_px"]) > 2.0, best  # the projection model, not the fit


def test_weak_perspective_registers_better_as_the_view_gets_flatter() -> None:
    """A 25 degree lens (the hand 2.5 times further away): the weak projection's own error
    drops (measured median 1.42 texels, against 4.18 at 60 degrees) and so does the weak
    fit's (1.26 against 3.33); perspective stays below 1 (0.29)."""
    r = evaluate_registration(sides=("right",), views=3, seed=0, refine=(0,), fov_deg=25.0)["right"]
    assert r["oracle"]["median_px"] < 0.1, r
    assert r["perspective_refine0"]["median_px"] < 0.6 and r["perspective_refine0"]["p90_px"] < 1.0, r
    assert r["weak_best"]["median_px"] < 2.0 and r["weak_refine0"]["median_px"] < 2.0, r


@pytest.mark.parametrize("side", ["right", "left"])
def test_weak_perspective_frames_register_within_a_texel(side) -> None:
    """Frames that are themselves weak perspective (a 2 degree lens: the hand about 10 m away,
    its depth 0.5% of its distance): the weak-perspective path, refined (3 iterations, in its
    weak camera's pinhole form, without falling back) and sampled in that same camera,
    registers as the perspective one does (measured median 0.26 / 0.31, p90 0.78 / 0.67 texels
    right / left; perspective 0.25 / 0.34), left hand included."""
    r = evaluate_registration(sides=(side,), views=3, seed=0, refine=(3,), fov_deg=2.0, projections=("weak",))[side]
    assert r["oracle"]["median_px"] < 0.1 and r["weak_best"]["median_px"] < 0.25, r  # the weak model holds
    weak = r["weak_refine3"]
    assert weak["patches"] > 30 and weak["median_px"] < 0.6 and weak["p90_px"] < 1.0, weak
    assert not any(weak["fell_back"]) and max(weak["mesh_px"]) < 0.5, weak


def test_weak_refinement_works_in_the_weak_camera_on_a_close_view() -> None:
    """The 60 degree lens, weak perspective, refinement on: the refinement works in the fit's
    own weak camera and keeps the hand (in the nominal pinhole it fell back on every view), and
    the texture stays within what the weak projection allows (measured 3.3 texels median,
    against 4.2 for the true mesh through its best weak camera)."""
    r = evaluate_registration(sides=("right",), views=3, seed=0, refine=(3,), projections=("weak",))["right"]
    weak, best = r["weak_refine3"], r["weak_best"]
    assert not any(weak["fell_back"]), weak
    assert weak["median_px"] < best["median_px"] and max(weak["mesh_px"]) < min(best["mesh_px"]), (weak, best)
