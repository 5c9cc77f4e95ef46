"""RGB-D sources (core.capture.rgbd): depth files, registration, frames with depth, fits at the
measured depth (core.metric_depth), the refiner's depth term from the engine, the CLI's errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.camera import Intrinsics
from core.capture import ArraySource, open_source
from core.capture.frame import Frame
from core.capture.rgbd import (
    DepthCamera,
    DepthStream,
    RGBDSource,
    depth_to_metres,
    load_depth_camera,
    register_depth,
)
from core.errors import InputError

W, H = 64, 48
K_DEPTH = {"fx": 60.0, "fy": 60.0, "cx": 31.5, "cy": 23.5}


def write_json(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


def rgbd_files(tmp_path: Path, n: int = 3, seed: int = 0) -> tuple[Path, Path, np.ndarray]:
    """n colour PNGs and n 16-bit depth PNGs (millimetres) of a tilted plane, a hole of zeros."""
    rng = np.random.default_rng(seed)
    colour, depth = tmp_path / "colour", tmp_path / "depth"
    colour.mkdir()
    depth.mkdir()
    mm = []
    for i in range(n):
        cv2.imwrite(str(colour / f"{i:03d}.png"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        d = (400 + 10 * i + np.arange(W)[None, :] * 2 + np.zeros((H, 1))).astype(np.uint16)
        d[10:14, 20:30] = 0
        cv2.imwrite(str(depth / f"{i:03d}.png"), d)
        mm.append(d)
    return colour, depth, np.stack(mm)


def test_16bit_png_depth_reaches_frames_in_metres(tmp_path) -> None:
    colour, depth, mm = rgbd_files(tmp_path)
    cam = write_json(tmp_path / "depth.json", {**K_DEPTH, "width": W, "height": H, "depth_scale_m": 0.001})
    with open_source(str(colour), depth=str(depth), depth_camera=str(cam)) as src:
        frames = list(src)
    assert len(frames) == 3
    for f, d in zip(frames, mm):
        assert f.depth.dtype == np.float32 and f.depth.shape == (H, W)
        np.testing.assert_allclose(f.depth, d / 1000.0, atol=1e-6)  # 0 stays 0: unknown
        assert not f.depth.flags.writeable
    # a registered stream's intrinsics describe the colour camera when nothing else does
    assert frames[0].intrinsics.fx == 60.0 and frames[0].intrinsics_source == "given"


def test_eight_bit_coding_with_offset_and_range() -> None:
    cam = DepthCamera(Intrinsics(**K_DEPTH), scale_m=-0.004, offset_m=1.0, min_m=0.2, max_m=0.9)
    raw = np.array([[0, 50, 100, 250]], np.uint8)
    np.testing.assert_allclose(depth_to_metres(raw, cam), [[0.0, 0.8, 0.6, 0.0]], atol=1e-6)


def test_registration_with_extrinsics_moves_points_into_the_colour_camera() -> None:
    """A fronto-parallel plane at 0.5 m seen by a depth camera 5 cm to the colour camera's left."""
    depth_K = Intrinsics(50.0, 50.0, 31.5, 23.5, W, H)
    colour_K = Intrinsics(80.0, 80.0, 31.5, 23.5, W, H)
    cam = DepthCamera(depth_K, R=np.eye(3), T=np.array([-0.05, 0.0, 0.0]))
    d = np.full((H, W), 0.5, np.float32)
    out = register_depth(d, cam, colour_K, (W, H))
    covered = out > 0
    np.testing.assert_allclose(out[covered], 0.5, atol=1e-6)
    # x_c = x_d - 0.05 spans u = 80 * [-0.365, 0.275] / 0.5 + 31.5 = [-27, 75.5]: the whole colour image,
    # with no holes although a depth pixel spans 1.6 colour pixels
    assert covered.all()
    # one depth pixel (x_d = y_d = -0.005 m) lands at u = 80 * -0.055 / 0.5 + 31.5 = 22.7, v = 22.7,
    # spread over the 2 x 2 colour pixels around it
    single = np.zeros((H, W), np.float32)
    single[23, 31] = 0.5
    out = register_depth(single, cam, colour_K, (W, H))
    ys, xs = np.nonzero(out)
    assert sorted(zip(ys.tolist(), xs.tolist())) == [(22, 22), (22, 23), (23, 22), (23, 23)]


@pytest.mark.parametrize("doc, message", [
    ({**K_DEPTH}, "depth_scale_m"),
    ({**K_DEPTH, "depth_scale_m": 0}, "non-zero"),
    ({**K_DEPTH, "depth_scale_m": "1"}, "finite number"),
    ({"fx": 60, "depth_scale_m": 0.001}, "missing key"),
    ({**K_DEPTH, "depth_scale_m": 0.001, "R": np.eye(3).tolist()}, "both 'R' and 'T'"),
    ({**K_DEPTH, "depth_scale_m": 0.001, "R": (2 * np.eye(3)).tolist(), "T": [0, 0, 0]}, "rotation"),
    ({**K_DEPTH, "depth_scale_m": 0.001, "R": np.eye(3).tolist(), "T": [0, 0]}, "'T'"),
    ({**K_DEPTH, "depth_scale_m": 0.001, "min_depth_m": 2, "max_depth_m": 1}, "min_depth_m"),
    ([1, 2, 3], "JSON object"),
])
def test_malformed_depth_camera_files_give_one_clear_error(tmp_path, doc, message) -> None:
    path = write_json(tmp_path / "bad.json", doc)
    with pytest.raises(InputError, match=message) as info:
        load_depth_camera(path)
    assert str(path) in str(info.value)


def test_malformed_depth_streams_give_one_clear_error(tmp_path) -> None:
    colour, depth, _ = rgbd_files(tmp_path, n=2)
    cam = write_json(tmp_path / "depth.json", {**K_DEPTH, "depth_scale_m": 0.001})
    with pytest.raises(InputError, match="depth stream not found"):
        open_source(str(colour), depth=str(tmp_path / "nothing"), depth_camera=str(cam))
    rgb = tmp_path / "rgb_depth"
    rgb.mkdir()
    cv2.imwrite(str(rgb / "0.png"), np.zeros((H, W, 3), np.uint8))
    with pytest.raises(InputError, match="one channel"):
        open_source(str(colour), depth=str(rgb), depth_camera=str(cam))
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="depth video"):
        DepthStream(broken)
    with pytest.raises(InputError, match="both the depth stream"):
        open_source(str(colour), depth=str(depth))
    wide = write_json(tmp_path / "wide.json", {**K_DEPTH, "width": 100, "height": 40, "depth_scale_m": 0.001})
    with pytest.raises(InputError, match="100x40"):
        open_source(str(colour), depth=str(depth), depth_camera=str(wide))


def test_the_shorter_stream_ends_the_pass(tmp_path) -> None:
    _, depth, _ = rgbd_files(tmp_path, n=2)
    colour = ArraySource([np.zeros((H, W, 3), np.uint8)] * 4, fov_deg=60.0)
    cam = DepthCamera(Intrinsics(**K_DEPTH), scale_m=0.001)
    frames = list(RGBDSource(colour, DepthStream(depth), cam))
    assert [f.index for f in frames] == [0, 1] and all(f.depth is not None for f in frames)


def test_frame_rejects_depth_of_another_size() -> None:
    with pytest.raises(ValueError, match="Frame.depth"):
        Frame(0, 0.0, np.zeros((H, W, 3), np.uint8), None, "x", depth=np.zeros((H, W + 1), np.float32))


@pytest.mark.parametrize("command, name", [("track", "r.jsonl"), ("export", "h.glb"), ("calibrate", "p.json")])
def test_cli_reports_a_missing_depth_camera_file_in_one_line(tmp_path, capsys, command, name) -> None:
    import main

    colour, depth, _ = rgbd_files(tmp_path, n=1)
    out = tmp_path / name
    code = main.main([command, str(colour), "--out", str(out), "--depth", str(depth)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("handtwin: error:") and "--depth-intrinsics" in err[0]
    code = main.main([command, str(colour), "--out", str(out), "--depth", str(depth),
                      "--depth-intrinsics", str(tmp_path / "missing.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "missing.json" in err[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- metric depth


@pytest.fixture(scope="module")
def hand_scene():
    """A right hand 0.36 m away, its sensor depth, and a fit of a hand 0.8 times as big, nearer,
    with exactly the same image (what a monocular fit with the wrong size prior sees)."""
    from core.fit import FitSettings, TailorFitter
    from core.model import HandModel, load_model_data
    from core.personalize.scale import pin_scale
    from core.render import RasterSettings, rasterize, render_depth
    from tests.test_refine import IMAGE, K_TEST, gt_pose, place, posed, project

    right, left = load_model_data(None, "right"), load_model_data(None, "left")
    layer = HandModel(right)
    fitter = TailorFitter(right, left, FitSettings(), "cpu")
    pose = gt_pose(3)
    betas = np.zeros(10, np.float32)
    transl = place(layer, pose, betas)
    verts, kp = posed(layer, pose, betas, transl)
    frags = rasterize(torch.as_tensor(verts)[None], layer.faces, torch.as_tensor(K_TEST)[None],
                      RasterSettings(image_size=(IMAGE[1], IMAGE[0])))
    depth = render_depth(frags)[0].numpy().astype(np.float32)
    kp2 = project(kp, K_TEST)
    small = pin_scale(layer, betas, 0.8)
    root = np.array([*kp2[0], math.log(K_TEST[0, 0] / (0.8 * kp[0, 2]))])
    wrong = fitter.compose("right", pose, small, root, K_TEST, IMAGE, kp2)
    return dict(layer=layer, fitter=fitter, kp=kp, kp2=kp2, depth=depth, wrong=wrong, verts=verts)


def test_a_fit_of_the_wrong_size_is_moved_onto_the_measured_depth(hand_scene) -> None:
    from core.metric_depth import align_fit_to_depth, fit_mesh
    from core.render.depth import compare_mesh_depth
    from tests.test_refine import IMAGE, K_TEST

    s = hand_scene
    before = compare_mesh_depth(fit_mesh(s["layer"], s["wrong"]), s["layer"].data.faces, K_TEST, s["depth"])
    assert before.offset_m > 0.05  # the small hand sits 7 cm too near
    moved, info = align_fit_to_depth(s["fitter"], s["layer"], s["wrong"], s["kp2"], K_TEST, IMAGE, s["depth"])
    assert info.factor == pytest.approx(1.25, abs=0.03)
    after = compare_mesh_depth(fit_mesh(s["layer"], moved), s["layer"].data.faces, K_TEST, s["depth"])
    assert after.abs_error_m < 0.002 < before.abs_error_m
    assert np.abs(moved.keypoints_3d - s["kp"]).max() < 0.006  # metric keypoints, metres
    assert moved.reprojection_error_px < s["wrong"].reprojection_error_px + 0.5  # the image barely moves
    # a profile's size is fixed: the hand is only moved to the measured depth
    shifted, info = align_fit_to_depth(s["fitter"], s["layer"], s["wrong"], s["kp2"], K_TEST, IMAGE, s["depth"],
                                       fixed_shape=True)
    assert info.factor == 1.0 and np.allclose(shifted.betas, s["wrong"].betas)
    assert abs(info.shift_m - before.offset_m) < 1e-4
    # no depth where the hand is: left alone
    same, info = align_fit_to_depth(s["fitter"], s["layer"], s["wrong"], s["kp2"], K_TEST, IMAGE,
                                    np.zeros_like(s["depth"]))
    assert same is s["wrong"] and info.before is None


def test_engine_places_fits_at_the_frame_depth_and_refines_against_it(hand_scene) -> None:
    """Engine.process_detections with an RGB-D frame: the fit is moved, the refiner gets the depth."""
    from core.detect import Detection
    from core.engine import Engine, EngineSettings
    from core.refine import RefineSettings
    from tests.test_refine import IMAGE, K_TEST

    s = hand_scene
    image = np.zeros((IMAGE[1], IMAGE[0], 3), np.uint8)
    image[s["depth"] > 0] = (200, 150, 120)
    intr = Intrinsics(float(K_TEST[0, 0]), float(K_TEST[1, 1]), float(K_TEST[0, 2]), float(K_TEST[1, 2]), *IMAGE)
    det = Detection(handedness="right", score=0.99, keypoints_2d=s["kp2"], keypoints_z=np.zeros(21),
                    world_landmarks=s["kp"] - s["kp"].mean(0), image_size=IMAGE)
    settings = EngineSettings(max_hands=1, detector_mode="static", refine_iterations=2, smoothing=None,
                              refine=RefineSettings(image_size=48, sigma=0.5 / 7), detector_process=False)
    seen = []
    with Engine(settings) as engine:
        original = engine.refiner.refine

        def spy(fits, targets, **kw):
            seen.extend(targets)
            return original(fits, targets, **kw)

        engine.refiner.refine = spy
        plain = engine.process_detections(Frame(0, 0.0, image, intr, "t"), [det])
        rgbd = engine.process_detections(Frame(1, 0.0, image, intr, "t", depth=s["depth"]), [det])
    assert "depth" in rgbd.time_ms and "depth" not in plain.time_ms
    assert seen[0].depth is None and seen[1].depth is not None
    assert (seen[1].depth[seen[1].mask <= 0.5] == 0).all()  # the sensor only inside the hand's mask
    z_plain, z_rgbd = plain.hands[0].fit.keypoints_3d[0, 2], rgbd.hands[0].fit.keypoints_3d[0, 2]
    assert abs(z_rgbd - s["kp"][0, 2]) < abs(z_plain - s["kp"][0, 2])


# ----------------------------------------------------------------------------- the real clip (opt-in)

# ../shared/data
NVGESTURE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "nvgesture_clip"


def test_nvgesture_evaluation_skips_without_its_data(tmp_path) -> None:
    from core.tools.evaluate_rgbd import evaluate_nvgesture

    assert "skipped" in evaluate_nvgesture(tmp_path)


@pytest.mark.skipif(not (NVGESTURE / "sk_depth.avi").is_file(), reason="../shared/data not present")
def test_nvgesture_clip_opens_as_an_rgbd_source(tmp_path) -> None:
    """The real clip's 8-bit depth video, registered by a scaled depth camera: depth on the hand."""
    cam = write_json(tmp_path / "nv.json", {"fx": 192.5, "fy": 192.5, "cx": 149.5, "cy": 121.5, "width": 320,
                                            "height": 240, "depth_scale_m": -0.85 / 255, "depth_offset_m": 0.8})
    with open_source(str(NVGESTURE / "sk_color.avi"), fov_deg=63.2, depth=str(NVGESTURE / "sk_depth.avi"),
                     depth_camera=str(cam)) as src:
        frames = list(src)
    assert len(frames) == 20
    covered = [float((f.depth > 0).mean()) for f in frames]
    assert all(0.02 < c < 0.5 for c in covered)  # the hand (and arm) only: the sensor's near range
    d = frames[0].depth[frames[0].depth > 0]
    assert 0.2 < float(np.median(d)) < 0.8


# ----------------------------------------------------------------------------- export


def _rgbd_folders(tmp_path: Path, betas: np.ndarray, n: int, pose_sd: float = 0.0, seed: int = 0):
    """``n`` rendered RGB-D frames of a right hand of shape ``betas`` facing the camera, its
    finger pose flat or drawn with ``pose_sd`` radians (320 x 240, 16-bit millimetre depth
    PNGs): (colour folder, depth folder, depth camera file, the samples)."""
    from core.render import RasterSettings, rasterize, render_depth
    from core.synth.render import PALM_TO_CAMERA, SynthSettings, default_layers, render_hand_sample
    from core.tools.evaluate_texture import FLAT_LIGHTING, pattern_texture

    layers = default_layers()
    colour, depth = tmp_path / "colour", tmp_path / "depth"
    colour.mkdir()
    depth.mkdir()
    rng = np.random.default_rng(seed)
    size = (320, 240)
    K = np.array([[280.0, 0.0, 159.5], [0.0, 280.0, 119.5], [0.0, 0.0, 1.0]])
    texture = pattern_texture(np.random.default_rng(1), 256)
    samples = []
    for i in range(n):
        pose = rng.normal(0.0, pose_sd, 45).astype(np.float32) if pose_sd else np.zeros(45, np.float32)
        s = render_hand_sample(rng, layers, SynthSettings(image_size=size, fill=(0.6, 0.6), left_probability=0.0),
                               betas=betas, pose=pose, texture=texture, global_rotation=PALM_TO_CAMERA, K=K,
                               transl_jitter=0.02, lighting=FLAT_LIGHTING)
        frags = rasterize(torch.as_tensor(s.vertices, dtype=torch.float32)[None], layers["right"].faces,
                          torch.as_tensor(K, dtype=torch.float32)[None], RasterSettings(image_size=(size[1], size[0])))
        metres = render_depth(frags)[0].numpy()
        cv2.imwrite(str(colour / f"{i:03d}.png"), s.image[..., ::-1])
        cv2.imwrite(str(depth / f"{i:03d}.png"), np.rint(metres * 1000).astype(np.uint16))
        samples.append(s)
    cam = write_json(tmp_path / "dc.json", {"fx": 280.0, "fy": 280.0, "cx": 159.5, "cy": 119.5,
                                            "depth_scale_m": 0.001})
    return colour, depth, cam, samples


@pytest.mark.slow
def test_export_takes_an_rgbd_source_and_measures_the_hand(tmp_path, capsys) -> None:
    """export SRC --depth D --depth-intrinsics DC: a hand 1.15 times the mean, rendered with its
    depth; its colour alone cannot tell its size from a nearer mean hand's (the prior wins), the
    depth can: the exported hand's length is the true one."""
    import main
    from core.personalize.scale import pin_scale
    from core.synth.render import default_layers

    layer = default_layers()["right"]
    betas = pin_scale(layer, np.zeros(10, np.float32), 1.15)
    with torch.no_grad():
        true_mm = float(layer.measures(torch.as_tensor(betas)[None])[0][0]) * 1000
        mean_mm = float(layer.measures()[0][0]) * 1000
    colour, depth, cam, _ = _rgbd_folders(tmp_path, betas, 4)
    out = tmp_path / "big.obj"
    code = main.main(["export", str(colour), "--out", str(out), "--texture-size", "64", "--depth", str(depth),
                      "--depth-intrinsics", str(cam)])
    assert code == 0, capsys.readouterr().err
    measured = json.loads((tmp_path / "big.profile.json").read_text())["hand_length_mm"]
    assert abs(measured - true_mm) < 0.3 * abs(true_mm - mean_mm), (measured, true_mm, mean_mm)


@pytest.mark.slow
def test_export_refine_exports_the_refined_hand(tmp_path, capsys) -> None:
    """export SRC --depth ... --pose frame:0 --refine N: the refinement (silhouette and depth
    terms) shapes the exported mesh: its vertices lie nearer the true hand's (posed the same
    way: y up, root at rest) than the unrefined export's, and the GLB still loads."""
    import trimesh

    import main
    from core.export.api import _posed_vertices
    from core.personalize.scale import pin_scale
    from core.synth.render import default_layers

    layer = default_layers()["right"]
    betas = pin_scale(layer, np.zeros(10, np.float32), 1.15)
    colour, depth, cam, samples = _rgbd_folders(tmp_path, betas, 3, pose_sd=0.15)
    truth = _posed_vertices(layer.data, samples[0].pose, samples[0].betas)
    errors = {}
    for n in (0, 15):
        out = tmp_path / f"r{n}.ply"  # PLY keeps one vertex per model vertex (no UV seams)
        assert main.main(["export", str(colour), "--out", str(out), "--texture-size", "32", "--depth", str(depth),
                          "--depth-intrinsics", str(cam), "--pose", "frame:0", "--refine", str(n)]) == 0
        v = np.asarray(trimesh.load(str(out), process=False, force="mesh").vertices)
        errors[n] = float(np.linalg.norm(v - truth, axis=1).mean())
    assert errors[15] < 0.9 * errors[0], errors  # measured 36 mm vs 46 mm
    glb = tmp_path / "r.glb"
    assert main.main(["export", str(colour), "--out", str(glb), "--texture-size", "32", "--depth", str(depth),
                      "--depth-intrinsics", str(cam), "--pose", "frame:0", "--refine", "3", "--rigged"]) == 0
    scene = trimesh.load(str(glb))
    assert len(scene.geometry) == 1


def test_a_truncated_depth_video_is_reported_not_a_quiet_end(tmp_path) -> None:
    """A depth video that stops decoding part of the way ended the RGB-D pass with no word
    (the colour source had not ended); now ``ended_early`` names the depth stream and why."""
    rng = np.random.default_rng(3)
    video = tmp_path / "depth.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for _ in range(12):
        writer.write(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    writer.release()
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])  # the header still says 12 frames
    stream = DepthStream(cut)
    assert stream.count == 12
    colour = ArraySource([np.zeros((H, W, 3), np.uint8)] * 12, fov_deg=60.0)
    cam = DepthCamera(Intrinsics(**K_DEPTH), scale_m=0.001)
    src = RGBDSource(colour, stream, cam)
    frames = list(src)
    assert 0 < len(frames) < 12
    assert src.ended_early is not None and "depth stream" in src.ended_early
    assert f"after {len(frames)} of its 12 frames" in src.ended_early
    whole = RGBDSource(ArraySource([np.zeros((H, W, 3), np.uint8)] * 12, fov_deg=60.0), DepthStream(video), cam)
    assert len(list(whole)) == 12 and whole.ended_early is None
