"""A webcam session's frame conditions (core.synth.webcam) and the quality features that see them."""

from __future__ import annotations

import numpy as np
import pytest

from core.synth import webcam


@pytest.fixture(scope="module")
def drawn() -> list[webcam.WebcamConditions]:
    rng = np.random.default_rng(0)
    return [webcam.sample_conditions(rng, (256, 256)) for _ in range(4000)]


def test_conditions_follow_the_documented_probabilities(drawn) -> None:
    def rate(pred) -> float:
        return float(np.mean([pred(c) for c in drawn]))

    tol = 0.025  # about 3.5 standard errors at n = 4000
    assert rate(lambda c: c.far) == pytest.approx(webcam.P_FAR, abs=tol)
    assert rate(lambda c: c.edge_on) == pytest.approx(webcam.P_EDGE_ON, abs=tol)
    assert rate(lambda c: c.centre_px is not None) == pytest.approx(webcam.P_CUT, abs=tol)
    assert rate(lambda c: c.motion_px > 0) == pytest.approx(webcam.P_MOTION, abs=tol)
    assert rate(lambda c: c.defocus_sigma > 0) == pytest.approx(webcam.P_DEFOCUS, abs=tol)
    assert rate(lambda c: c.gain < 0.7) == pytest.approx(webcam.P_DIM, abs=tol)
    assert rate(lambda c: c.gain > 1.3) == pytest.approx(webcam.P_BRIGHT, abs=tol)
    assert rate(lambda c: c.occluders > 0) == pytest.approx(webcam.P_OCCLUDED, abs=tol)
    far = [c.fill for c in drawn if c.far]
    near = [c.fill for c in drawn if not c.far]
    assert 0.14 <= min(far) and max(far) <= 0.3 and 0.35 <= min(near) and max(near) <= 0.75
    assert all(c.tilt_deg == ((60.0, 85.0) if c.edge_on else (0.0, 60.0)) for c in drawn)


def test_a_cut_hand_is_centred_near_a_border(drawn) -> None:
    for c in drawn:
        if c.centre_px is None:
            continue
        u, v = c.centre_px
        d = min(u, v, 255 - u, 255 - v)
        length = c.fill * 256
        assert 0.1 * length - 1e-9 <= d <= 0.45 * length + 1e-9


def test_render_settings_set_the_size_and_tilt_range(drawn) -> None:
    from core.synth.render import SynthSettings

    c = next(c for c in drawn if c.edge_on)
    s = webcam.render_settings(SynthSettings(), c)
    assert s.fill == (c.fill, c.fill) and (s.min_tilt_deg, s.max_tilt_deg) == (60.0, 85.0)


def test_edge_on_rotations_tilt_the_palm_at_least_the_minimum() -> None:
    from core.synth.render import PALM_TO_CAMERA, SynthSettings, facing_rotation

    rng = np.random.default_rng(3)
    settings = SynthSettings(min_tilt_deg=60.0, max_tilt_deg=85.0, back_facing=0.0)
    palm = PALM_TO_CAMERA @ np.array([0.0, -1.0, 0.0])  # model palm normal, facing the camera
    for _ in range(200):
        r = facing_rotation(rng, settings, "right")
        tilt = np.degrees(np.arccos(np.clip((r @ np.array([0.0, -1.0, 0.0])) @ palm, -1, 1)))
        assert 60.0 - 1e-6 <= tilt <= 85.0 + 1e-6


def _scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    img = np.full((128, 128, 3), 90, np.uint8)
    img[::8] = 200  # stripes: sharp structure
    mask = np.zeros((128, 128), bool)
    mask[30:100, 40:90] = True
    img[mask] = (200 + rng.integers(-20, 20, (int(mask.sum()), 3))).astype(np.uint8)
    return img, mask


def _clean(**kw) -> webcam.WebcamConditions:
    base = dict(fill=0.5, tilt_deg=(0.0, 60.0), centre_px=None, far=False, edge_on=False, motion_px=0.0,
                motion_deg=0.0, defocus_sigma=0.0, gain=1.0, noise_std=0.0, occluders=0, jpeg_quality=95)
    base.update(kw)
    return webcam.WebcamConditions(**base)


def test_degradations_do_what_they_say() -> None:
    import cv2

    img, mask = _scene()

    def sharpness(x: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F).var())

    clean, occ = webcam.apply_conditions(np.random.default_rng(0), img, mask, _clean())
    assert occ == 0.0 and np.abs(clean.astype(int) - img).mean() < 3.0  # JPEG 95 only
    moved, _ = webcam.apply_conditions(np.random.default_rng(0), img, mask, _clean(motion_px=12.0, motion_deg=90.0))
    assert sharpness(moved) < 0.5 * sharpness(clean)
    dim, _ = webcam.apply_conditions(np.random.default_rng(0), img, mask, _clean(gain=0.4, noise_std=10.0))
    assert dim.mean() == pytest.approx(0.4 * img.mean(), rel=0.1)
    covered, occ = webcam.apply_conditions(np.random.default_rng(0), img, mask, _clean(occluders=2))
    assert 0.0 < occ <= 1.0 and (covered != clean).any()
    again, occ2 = webcam.apply_conditions(np.random.default_rng(0), img, mask, _clean(occluders=2))
    assert occ2 == occ and (again == covered).all()  # seeded


def test_motion_kernel_is_a_normalized_line() -> None:
    k = webcam.motion_kernel(9.0, 0.0)
    assert k.shape == (9, 9) and k.sum() == pytest.approx(1.0)
    assert np.count_nonzero(k[4]) == 9 and np.count_nonzero(k.sum(1)) == 1


def test_noise_feature_measures_sensor_noise_not_structure() -> None:
    from core.personalize.features import noise_sigma

    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:96, 0:96].astype(np.float32)
    smooth = 100 + 40 * np.sin(x / 9.0) + 0.5 * y
    assert noise_sigma(smooth) < 0.5
    for sigma in (3.0, 8.0):
        assert noise_sigma(smooth + rng.normal(0, sigma, smooth.shape)) == pytest.approx(sigma, rel=0.1)


def test_webcam_conditions_record_names_each_column() -> None:
    c = _clean(far=True, centre_px=(3.0, 50.0), motion_px=5.0, jpeg_quality=60)
    rec = dict(zip(webcam.CONDITION_NAMES, c.record(0.25)))
    assert rec == {"far": 1.0, "edge_on": 0.0, "cut": 1.0, "motion_px": 5.0, "defocus_sigma": 0.0, "gain": 1.0,
                   "noise_std": 0.0, "occluded_fraction": 0.25, "jpeg_quality": 60.0}


def test_quality_features_see_noise_exposure_and_world_disagreement() -> None:
    from core.personalize.features import FEATURE_NAMES, frame_features
    from core.synth.render import SynthSettings, default_layers, render_hand_sample

    rng = np.random.default_rng(4)
    sample = render_hand_sample(rng, default_layers(), SynthSettings(supersample=1, back_facing=0.0))
    kp3 = sample.joints_3d.astype(np.float64)
    pose = sample.pose

    def features(image: np.ndarray, world: np.ndarray, fit_2d: np.ndarray | None = None) -> dict[str, float]:
        f = frame_features(image, sample.keypoints_2d, None, world, 0.9, "right", pose, np.zeros(10), kp3, 1.0,
                           fit_keypoints_2d=fit_2d)
        return dict(zip(FEATURE_NAMES, f))

    world = (kp3 - kp3[0]) * 1.1  # MediaPipe's world landmarks: another scale, same shape
    clean = features(sample.image, world)
    assert clean["world_shape_residual"] < 1e-6
    bent = world.copy()
    bent[8] += 0.02  # the index tip 2 cm off
    assert features(sample.image, bent)["world_shape_residual"] > 0.002
    noisy = np.clip(sample.image + rng.normal(0, 12, sample.image.shape), 0, 255).astype(np.uint8)
    assert features(noisy, world)["log_noise"] > clean["log_noise"] + 0.5  # (the crop is downsampled)
    dark = (sample.image * 0.4).astype(np.uint8)
    assert features(dark, world)["brightness"] < 0.6 * clean["brightness"]
    burnt = np.clip(sample.image.astype(np.float32) * 2.5, 0, 255).astype(np.uint8)
    assert features(burnt, world)["clipped_fraction"] > clean["clipped_fraction"] + 0.1
    one_off = sample.keypoints_2d.copy()
    one_off[12] += 20.0  # one keypoint 28 px off: the worst keypoint's error sees it
    f = features(sample.image, world, one_off)
    assert f["reprojection_max_rel"] > 5 * clean["reprojection_max_rel"]


def test_webcam_sets_record_their_conditions_and_cache_apart(tmp_path, monkeypatch) -> None:
    from core.personalize import synthdata

    monkeypatch.setenv("HANDTWIN_CACHE", str(tmp_path))
    with pytest.raises(ValueError):
        synthdata.generate(1, 1, 0, conditions="studio")
    web = synthdata.load_or_generate("t", 1, 1, 1, people=True, conditions="webcam")
    assert web.conditions is not None and web.conditions.shape == (len(web), len(webcam.CONDITION_NAMES))
    again = synthdata.load_or_generate("t", 1, 1, 1, people=True, conditions="webcam")  # from the cache
    np.testing.assert_array_equal(again.conditions, web.conditions)
    np.testing.assert_array_equal(again.keypoints_2d, web.keypoints_2d)
    clean = synthdata.load_or_generate("t", 1, 1, 1, people=True)
    assert clean.conditions is None and len(list((tmp_path / "personalize").glob("t-*.npz"))) == 2
