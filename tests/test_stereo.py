"""Calibrated stereo pairs (core.capture.stereo, core.stereo): the calibration file, pose and
shape fusion across views (paper 001 Eq. 6-7), metric placement, the multi-view refinement
(Eq. 8) from the engine, the stream, and the CLI's errors."""

from __future__ import annotations

import dataclasses
import json
import math

import cv2
import numpy as np
import pytest
import torch

from core.camera import intrinsics_from_matrix
from core.capture.frame import Frame
from core.capture.stereo import StereoCalibration, load_stereo_calibration, open_stereo
from core.errors import InputError

IMAGE = (160, 120)
K = np.array([[150.0, 0.0, 79.5], [0.0, 150.0, 59.5], [0.0, 0.0, 1.0]])


def _rig() -> StereoCalibration:
    from core.synth.stereo import look_at

    R, T = look_at(np.array([0.12, -0.02, 0.0]), np.array([0.0, 0.0, 0.35]))
    return StereoCalibration(K, K, R, T)


@pytest.fixture(scope="module")
def pair():
    """A right hand seen by a verged pair: truth, both views' exact fits, masks and keypoints."""
    from core.fit import FitSettings, TailorFitter
    from core.model import HandModel, load_model_data
    from core.render import RasterSettings, rasterize
    from core.stereo import _aa, _rot
    from tests.test_refine import gt_pose, posed

    right, left = load_model_data(None, "right"), load_model_data(None, "left")
    layer = HandModel(right)
    fitter = TailorFitter(right, left, FitSettings(), "cpu")
    cal = _rig()
    pose = gt_pose(5)
    betas = np.zeros(10, np.float32)
    verts0, _ = posed(layer, pose, betas, np.zeros(3, np.float32))
    transl = (np.array([0.0, 0.0, 0.35]) - verts0.mean(0)).astype(np.float32)
    verts, kp = posed(layer, pose, betas, transl)

    def view(points, Kv):
        uv = np.asarray(points, np.float64) @ Kv.T
        return (uv[:, :2] / uv[:, 2:]).astype(np.float32)

    def mask(v):
        frags = rasterize(torch.as_tensor(v, dtype=torch.float32)[None], layer.faces,
                          torch.as_tensor(K, dtype=torch.float32)[None],
                          RasterSettings(image_size=(IMAGE[1], IMAGE[0])))
        return (frags.pix_to_face[0] >= 0).numpy()

    def fit(p, b, kp3, kp2):
        root = np.array([*view(kp3[:1], K)[0], math.log(K[0, 0] / kp3[0, 2])])
        return fitter.compose("right", p, b, root, K, IMAGE, kp2)

    kp2_1 = view(kp, K)
    kp3_2 = kp @ cal.R.T + cal.T
    kp2_2 = view(kp3_2, K)
    pose2 = pose.copy()
    pose2[:3] = _aa(cal.R @ _rot(pose[:3]))
    return dict(layer=layer, fitter=fitter, cal=cal, pose=pose, betas=betas, kp=kp, verts=verts,
                kp2_1=kp2_1, kp2_2=kp2_2, fit1=fit(pose, betas, kp, kp2_1), fit2=fit(pose2, betas, kp3_2, kp2_2),
                mask1=mask(verts), mask2=mask(verts @ cal.R.T + cal.T), fit_from=fit)


def test_calibration_file_round_trip_and_errors(tmp_path) -> None:
    cal = _rig()
    good = tmp_path / "s.json"
    good.write_text(json.dumps({"K1": K.tolist(), "K2": K.tolist(), "R": cal.R.tolist(), "T": cal.T.tolist()}))
    got = load_stereo_calibration(good)
    np.testing.assert_allclose(got.R, cal.R)
    np.testing.assert_allclose(got.to_reference(np.array([1.0, 2.0, 3.0]) @ cal.R.T + cal.T), [1.0, 2.0, 3.0])
    for doc, message in (({"K1": K.tolist()}, "needs K1, K2, R and T \\(metres\\); missing K2, R, T$"),
                         ({"K1": K.tolist(), "K2": K.tolist(), "R": (2 * np.eye(3)).tolist(), "T": [0, 0, 0]},
                          "rotation"),
                         ({"K1": (-K).tolist(), "K2": K.tolist(), "R": np.eye(3).tolist(), "T": [0, 0, 0]}, "positive"),
                         ({"K1": K.tolist(), "K2": K.tolist(), "R": np.eye(3).tolist(), "T": [0, 0]}, "3 values")):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(doc))
        with pytest.raises(InputError, match=message):
            load_stereo_calibration(bad)


def test_fusing_one_hands_fits_from_both_views_gives_that_hand(pair) -> None:
    """Eq. 6-7 with the other view's fit carried into the reference camera."""
    from core.stereo import fuse_fits

    p = pair
    fused = fuse_fits(p["fitter"], p["fit1"], p["fit2"], p["cal"], p["kp2_1"], IMAGE)
    np.testing.assert_allclose(fused.keypoints_3d, p["kp"], atol=1e-5)
    # two different estimates: the fused wrist lies between them, the pose between theirs
    off = p["fit2"].keypoints_3d + np.float32([0.0, 0.0, 0.04])
    pose_off = p["fit2"].pose.copy()
    pose_off[3:] += 0.2
    other = p["fit_from"](pose_off, p["betas"], off, p["kp2_2"])
    mixed = fuse_fits(p["fitter"], p["fit1"], other, p["cal"], p["kp2_1"], IMAGE)
    np.testing.assert_allclose(mixed.pose[3:], p["pose"][3:] + 0.1, atol=1e-5)
    moved = p["cal"].to_reference(other.keypoints_3d[0])
    # the mean wrist's depth, on the reference camera's ray through its own wrist
    assert mixed.keypoints_3d[0, 2] == pytest.approx(0.5 * (p["kp"][0, 2] + moved[2]), abs=1e-5)
    np.testing.assert_allclose(mixed.keypoints_2d[0], p["kp2_1"][0], atol=1e-3)


def test_a_fused_fit_of_the_wrong_size_is_placed_on_the_triangulated_hand(pair) -> None:
    from core.personalize.scale import pin_scale
    from core.stereo import place_metric, triangulated

    p = pair
    small = pin_scale(p["layer"], p["betas"], 0.8)
    kp = p["kp"]
    wrong = p["fit_from"](p["pose"], small, kp * 0.8, p["kp2_1"])  # same image, 0.8 times the size and distance
    tri = triangulated(p["kp2_1"], p["kp2_2"], p["cal"])
    np.testing.assert_allclose(tri, kp, atol=1e-4)
    placed = place_metric(p["fitter"], p["layer"], wrong, tri, p["kp2_1"], K, IMAGE)
    assert np.abs(wrong.keypoints_3d - kp).max() > 0.05
    assert np.abs(placed.keypoints_3d - kp).max() < 0.006
    fixed = place_metric(p["fitter"], p["layer"], wrong, tri, p["kp2_1"], K, IMAGE, fixed_shape=True)
    np.testing.assert_allclose(fixed.betas, wrong.betas)
    assert abs(np.median(fixed.keypoints_3d[:, 2] - kp[:, 2])) < 1e-3  # moved to the measured distance
    np.testing.assert_allclose(fixed.keypoints_2d[0], p["kp2_1"][0], atol=1e-3)  # along its wrist's ray


def _detection(kp2, kp3):
    from core.detect import Detection

    return Detection(handedness="right", score=0.99, keypoints_2d=kp2, keypoints_z=np.zeros(21),
                     world_landmarks=kp3 - kp3.mean(0), image_size=IMAGE)


def test_stereo_engine_fuses_both_views_and_refines_against_both_silhouettes(pair) -> None:
    from core.engine import EngineSettings
    from core.refine import RefineSettings
    from core.stereo import StereoEngine

    p = pair
    cal = p["cal"]
    img1 = np.zeros((IMAGE[1], IMAGE[0], 3), np.uint8)
    img1[p["mask1"]] = (200, 150, 120)
    img2 = np.zeros_like(img1)
    img2[p["mask2"]] = (200, 150, 120)
    f1 = Frame(0, 0.0, img1, intrinsics_from_matrix(K, *IMAGE), "a")
    f2 = Frame(0, 0.0, img2, intrinsics_from_matrix(K, *IMAGE), "b")
    settings = EngineSettings(max_hands=1, detector_mode="static", refine_iterations=2, smoothing=None,
                              detector_process=False, refine=RefineSettings(image_size=48, sigma=0.5 / 7))
    seen = []
    with StereoEngine(settings, cal) as engine:
        original = engine.refiner.refine

        def spy(fits, targets, **kw):
            seen.extend(targets)
            return original(fits, targets, **kw)

        engine.refiner.refine = spy
        r1 = engine.reference.process_detections(f1, [_detection(p["kp2_1"], p["kp"])])
        r2 = engine.other.process_detections(f2, [_detection(p["kp2_2"], p["kp"] @ cal.R.T)])
        fused = engine._fuse(f1, f2, r1, r2)
        alone = engine._fuse(f1, f2, r1, dataclasses.replace(r2, hands=()))
    assert "fuse" in fused.time_ms and len(fused.hands) == 1
    assert len(seen[0].views) == 1 and seen[0].views[0].keypoints_2d is not None  # Eq. 8: both silhouettes
    assert len(seen[1].views) == 0  # a hand one camera sees is refined from that camera alone
    err = lambda h: float(np.linalg.norm(h.fit.keypoints_3d - p["kp"], axis=1).mean())  # noqa: E731
    # two views place the hand in metric 3D; one view keeps the size prior's distance
    assert err(fused.hands[0]) < 0.01
    assert err(fused.hands[0]) < err(r1.hands[0])
    assert fused.hands[0].refined is not None and alone.hands[0].fit is r1.hands[0].fit


@pytest.fixture(scope="module")
def pair_folders(tmp_path_factory):
    """Six rendered stereo pairs (320 x 240) in two image folders and their calibration file."""
    from core.synth.render import SynthSettings, default_layers
    from core.synth.stereo import render_stereo_sample

    tmp = tmp_path_factory.mktemp("pair")
    layers = default_layers()
    rng = np.random.default_rng(3)
    a, b = tmp / "a", tmp / "b"
    a.mkdir()
    b.mkdir()
    for i in range(6):
        s = render_stereo_sample(rng, layers, SynthSettings(image_size=(320, 240), supersample=1, back_facing=0.0),
                                 K=np.array([[280.0, 0, 159.5], [0, 280.0, 119.5], [0, 0, 1]]))
        cv2.imwrite(str(a / f"{i}.png"), s.reference.image[..., ::-1])
        cv2.imwrite(str(b / f"{i}.png"), s.image2[..., ::-1])
    cal = tmp / "s.json"
    cal.write_text(json.dumps({k: np.asarray(getattr(s.calibration, k)).tolist() for k in ("K1", "K2", "R", "T")}))
    return a, b, cal


def test_stereo_stream_pairs_views_frame_by_frame(pair_folders) -> None:
    """open_stereo + StereoEngine.process_stream over two image folders (the real MediaPipe)."""
    from core.engine import EngineSettings
    from core.stereo import StereoEngine

    a, b, cal = pair_folders
    settings = EngineSettings(max_hands=1, detector_mode="static", smoothing=None, detector_process=False)
    fused = 0
    with open_stereo(str(a), str(b), cal) as src, StereoEngine(settings, src.calibration, stream=True) as engine:
        assert src.frame_count == 6
        results = []
        for r in engine.process_stream(src):
            results.append(r)
            fused += sum(p is not None for p in engine.partners)
    assert [r.frame for r in results] == list(range(6))
    assert all(r.camera.fx == 280.0 for r in results)  # the reference camera of the calibration
    assert fused >= 2  # hands both cameras saw, fused


def test_track_and_calibrate_take_a_calibrated_pair(pair_folders, tmp_path, capsys) -> None:
    import main

    a, b, cal = pair_folders
    out = tmp_path / "r.jsonl"
    assert main.main(["track", str(a), "--out", str(out), "--stereo", str(b), "--stereo-calib", str(cal)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 6 and all("fuse" in d["time_ms"] and d["camera"]["fx"] == 280.0 for d in lines)
    profile = tmp_path / "p.json"
    assert main.main(["calibrate", str(a), "--out", str(profile), "--frames", "2", "--stereo", str(b),
                      "--stereo-calib", str(cal)]) == 0
    assert json.loads(profile.read_text())["scale_source"] == "stereo"


def test_export_takes_a_calibrated_pair(pair_folders, tmp_path, capsys, monkeypatch) -> None:
    """export SRC --stereo SRC2 --stereo-calib S: the hands are fused from both views (as track
    fuses them) and the texture is taken from SRC's frames."""
    import main
    from core.stereo import StereoEngine

    fused = []
    fuse = StereoEngine._fuse

    def spy(self, f1, f2, r1, r2):
        result = fuse(self, f1, f2, r1, r2)
        fused.append(sum(p is not None for p in self.partners))
        return result

    monkeypatch.setattr(StereoEngine, "_fuse", spy)
    a, b, cal = pair_folders
    out = tmp_path / "pair.glb"
    assert main.main(["export", str(a), "--out", str(out), "--texture-size", "64", "--stereo", str(b),
                      "--stereo-calib", str(cal)]) == 0
    stdout = capsys.readouterr().out
    assert out.is_file() and (tmp_path / "pair.profile.json").is_file() and "/6 frames tracked" in stdout
    assert len(fused) == 6 and sum(fused) >= 2  # every pair went through the fusion; hands both saw fused


@pytest.mark.parametrize("extra, message", [
    (["--stereo", "b"], "--stereo-calib"),
    (["--stereo-calib", "s.json"], "--stereo"),
    (["--stereo", "b", "--stereo-calib", "s.json", "--fov", "60"], "--fov"),
])
@pytest.mark.parametrize("command, out", [("track", "r.jsonl"), ("export", "h.glb"), ("calibrate", "p.json")])
def test_cli_stereo_errors_are_one_line(tmp_path, capsys, extra, message, command, out) -> None:
    import main

    (tmp_path / "a").mkdir()
    cv2.imwrite(str(tmp_path / "a" / "0.png"), np.zeros((8, 8, 3), np.uint8))
    args = [str(tmp_path / a) if a in ("b", "s.json") else a for a in extra]
    code = main.main([command, str(tmp_path / "a"), "--out", str(tmp_path / out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("handtwin: error:") and message in err[0]
    assert not (tmp_path / out).exists()
