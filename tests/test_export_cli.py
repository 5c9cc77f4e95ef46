"""Tests of the ``export`` command and :func:`core.export.api.export_hand`.

A profile (shape + texture PNG) is exported to every format and loaded back with trimesh;
GLB files go through the Khronos validator (helpers shared with tests/test_export.py);
failures must give exit status 2, one line, and leave no file behind. One test tracks a
short synthetic image folder end to end (MediaPipe, fit, texture capture).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

import main
from core import outputs as outputs_module
from core.errors import ExportError
from core.export.api import export_hand, rest_geometry, session_animation
from core.model import load_model_data

TEXTURE_SIZE = 128


def _texture(size: int = 96) -> np.ndarray:
    """A recognisable texture: red grows with u, green with v (origin bottom-left)."""
    ramp = np.linspace(0, 255, size)
    red = np.tile(ramp, (size, 1))
    green = np.tile(ramp[::-1, None], (1, size))
    return np.stack([red, green, np.full_like(red, 120)], axis=2).astype(np.uint8)


def _profile_doc(shape: list[float], texture: str | None) -> dict:
    d = load_model_data()
    return {
        "format": "handtwin-profile", "version": 1, "name": "test hand", "handedness": "right",
        "model": {"name": d.name, "sha256": d.sha256}, "shape": shape,
        "hand_length_mm": 185.0, "hand_width_mm": 80.0, "bone_lengths_mm": [30.0] * 20,
        "scale_source": "prior", "frames": [], "texture": texture, "created": "2026-01-01T00:00:00+00:00",
    }


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir()
    Image.fromarray(_texture()).save(folder / "me.png")
    path = folder / "me.json"
    path.write_text(json.dumps(_profile_doc([0.8, -0.5] + [0.0] * 8, "me.png")))
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _single(loaded):
    if isinstance(loaded, trimesh.Scene):
        geometries = list(loaded.geometry.values())
        assert len(geometries) == 1
        return geometries[0]
    return loaded


def _image_size(visual) -> tuple[int, int]:
    material = visual.material
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    assert image is not None
    return image.size


# --------------------------------------------------------------------------- from a profile


@pytest.mark.parametrize("name, rigged", [("hand.obj", False), ("hand.glb", False), ("rig.glb", True)])
def test_export_profile_loads_with_uvs_and_texture(profile: Path, tmp_path: Path, capsys, name: str,
                                                   rigged: bool) -> None:
    out = tmp_path / "out" / name
    out.parent.mkdir()
    argv = ["export", "--profile", str(profile), "--out", str(out), "--texture-size", str(TEXTURE_SIZE)]
    code, stdout, _ = _run(argv + (["--rigged"] if rigged else []), capsys)
    assert code == 0 and "wrote" in stdout
    mesh = _single(trimesh.load(out, process=False))
    d = load_model_data()
    assert mesh.visual.uv is not None and len(mesh.visual.uv) >= d.num_vertices
    assert _image_size(mesh.visual) == (TEXTURE_SIZE, TEXTURE_SIZE)
    # The personal shape, in the flat rest pose (seam copies share positions).
    rest, _ = rest_geometry(d, np.array([0.8, -0.5] + [0.0] * 8))
    assert np.abs(np.asarray(mesh.vertices).min(0) - rest.min(0)).max() < 1e-5
    assert np.abs(np.asarray(mesh.vertices).max(0) - rest.max(0)).max() < 1e-5
    # The profile beside it points at a texture of the right size and loads as a profile.
    from core.profile_io import load_profile

    written = load_profile(out.with_name(out.stem + ".profile.json"))
    assert written.texture is not None and Image.open(written.texture).size == (TEXTURE_SIZE, TEXTURE_SIZE)
    np.testing.assert_allclose(written.shape[:2], [0.8, -0.5])


def test_export_profile_ply_has_vertex_colours_from_the_texture(profile: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "hand.ply"
    assert _run(["export", "--profile", str(profile), "--out", str(out)], capsys)[0] == 0
    mesh = trimesh.load(out, process=False)
    colours = np.asarray(mesh.visual.vertex_colors)[:, :3].astype(float)
    # Red follows u of each vertex's UV, as in the profile's texture.
    d = load_model_data()
    uv_of_vertex = np.zeros((d.num_vertices, 2))
    uv_of_vertex[d.faces.reshape(-1)[::-1]] = d.uv[d.uv_faces.reshape(-1)[::-1]]
    assert np.corrcoef(colours[:, 0], uv_of_vertex[:, 0])[0, 1] > 0.99
    assert np.corrcoef(colours[:, 1], uv_of_vertex[:, 1])[0, 1] > 0.99


def test_default_texture_size_is_1024(profile: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "hand.glb"
    assert _run(["export", "--profile", str(profile), "--out", str(out)], capsys)[0] == 0
    assert _image_size(_single(trimesh.load(out)).visual) == (1024, 1024)


def test_exported_glbs_pass_the_khronos_validator(profile: Path, tmp_path: Path) -> None:
    from test_export import _validate, _validator_command

    _validator_command()  # skip early when the validator is not installed
    d = load_model_data()
    shape = np.array([0.8, -0.5] + [0.0] * 8)
    rng = np.random.default_rng(0)
    poses = np.concatenate([rng.normal(0, 0.3, (6, 3)), rng.normal(0, 0.2, (6, 45))], axis=1)
    translations = rng.normal(0, 0.02, (6, 3)) + [0.0, 0.0, 0.4]
    _, joints = rest_geometry(d, shape)
    paths = {
        "static.glb": dict(),
        "posed.glb": dict(pose=poses[0]),
        "rigged.glb": dict(rigged=True),
        "rigged_pose.glb": dict(rigged=True, pose=poses[1]),
        "animated.glb": dict(rigged=True, animation=session_animation(np.arange(6) / 15, poses, translations, joints)),
        "untextured.glb": dict(texture=None),
        # a refined hand's frame: the posed model plus its free offsets (export --refine N --pose frame:N)
        "posed_offsets.glb": dict(pose=poses[2], vertex_offsets=rng.normal(0, 0.002, (d.num_vertices, 3))),
    }
    for name, kwargs in paths.items():
        kwargs = {"shape": shape, "texture": _texture(), "texture_size": 64, **kwargs}
        export_hand(tmp_path / name, **kwargs)
    reports = _validate([tmp_path / name for name in paths])
    for name, report in zip(paths, reports, strict=True):
        errors = [m for m in report["issues"]["messages"] if m["severity"] == 0]
        assert report["issues"]["numErrors"] == 0, f"{name}: {errors}"
    info = dict(zip(paths, (r["info"] for r in reports)))
    assert info["rigged.glb"]["hasSkins"] and info["animated.glb"]["animationCount"] == 1
    assert info["rigged_pose.glb"]["animationCount"] == 1


def test_posed_export_matches_the_tracked_pose(tmp_path: Path) -> None:
    """frame:N geometry: the model posed as tracked, turned to y-up, root at its rest place."""
    import torch

    from core.model import HandModel

    d = load_model_data()
    pose = np.zeros(48)
    pose[:3] = [0.3, 0.2, -0.1]
    pose[6] = 0.8  # bend a finger joint
    export_hand(tmp_path / "posed.obj", shape=None, texture=None, pose=pose)
    loaded = trimesh.load(tmp_path / "posed.obj", process=False)
    with torch.no_grad():
        cam = HandModel(d)(torch.as_tensor(pose, dtype=torch.float32)[None]).vertices[0].numpy()
    root = d.j_regressor[0] @ d.v_template
    # In the camera frame the posed hand is R (v - J0) + J0; y-up flips y and z about J0.
    expected = (cam - root) * np.array([1.0, -1.0, -1.0]) + root
    got = np.unique(np.asarray(loaded.vertices), axis=0)  # seam copies merged
    assert got.shape == (d.num_vertices, 3)
    np.testing.assert_allclose(got, np.unique(expected.astype(np.float32), axis=0), atol=1e-5)
    # a refined hand's free offsets (camera frame) turn to y-up with the hand; rigged exports leave them out
    offsets = np.random.default_rng(0).normal(0.0, 0.003, (d.num_vertices, 3))
    export_hand(tmp_path / "refined.ply", shape=None, texture=None, pose=pose, vertex_offsets=offsets)
    got = np.asarray(trimesh.load(tmp_path / "refined.ply", process=False).vertices)
    np.testing.assert_allclose(got, expected + offsets * np.array([1.0, -1.0, -1.0]), atol=1e-5)


# --------------------------------------------------------------------------- failures


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*"))


def test_missing_folder_is_a_clear_error_and_writes_nothing(profile: Path, tmp_path: Path, capsys) -> None:
    before = _files(tmp_path)
    code, _, err = _run(["export", "--profile", str(profile), "--out", str(tmp_path / "nope" / "h.glb")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "does not exist" in err
    assert _files(tmp_path) == before


def test_read_only_folder_is_a_clear_error_and_writes_nothing(
    profile: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permission bits do not stop root, so the refusal is simulated at the file system call."""
    folder = tmp_path / "locked"
    folder.mkdir()

    def refuse(*args: object, **kwargs: object):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(outputs_module.tempfile, "mkstemp", refuse)
    for name in ("h.obj", "h.glb", "h.ply"):
        code, _, err = _run(["export", "--profile", str(profile), "--out", str(folder / name)], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "read-only" in err
    assert _files(folder) == []
    with pytest.raises(ExportError, match="read-only"):
        export_hand(folder / "h.glb", shape=None, texture=None)


def test_failure_while_writing_leaves_no_partial_file(profile: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import os

    real_fsync = os.fsync
    calls: list[int] = []

    def flaky_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the second of OBJ, MTL, PNG, profile JSON
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(outputs_module.os, "fsync", flaky_fsync)
    code, _, err = _run(["export", "--profile", str(profile), "--out", str(tmp_path / "h.obj"), "--texture-size", "32"],
                        capsys)
    assert code == 2 and "No space left" in err
    assert not any(p.name.startswith("h") or p.name.startswith(".h") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "needs a source"),
        (["--pose", "frame:x"], "--pose must be"),
        (["--pose", "frame:3"], "needs a source"),
        (["--animate"], "--animate needs"),
        (["--texture-size", "4"], "--texture-size"),
        (["--texture-size", "0"], "--texture-size"),  # not taken for "the default"
        (["--refine", "3"], "--refine needs a source"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(profile: Path, tmp_path: Path, capsys, extra, message) -> None:
    argv = ["export", "--out", str(tmp_path / "h.glb")] + extra
    if extra:
        argv += ["--profile", str(profile)]
    code, _, err = _run(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "h.glb").exists()


def test_refine_out_of_range_exits_2_before_tracking(tmp_path: Path, capsys) -> None:
    import cv2

    (tmp_path / "a").mkdir()
    cv2.imwrite(str(tmp_path / "a" / "0.png"), np.zeros((8, 8, 3), np.uint8))
    code, _, err = _run(["export", str(tmp_path / "a"), "--out", str(tmp_path / "h.glb"), "--refine", "-1"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--refine" in err
    assert not (tmp_path / "h.glb").exists()


def test_unknown_suffix_and_rigged_non_glb_exit_2(profile: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _run(["export", "--profile", str(profile), "--out", str(tmp_path / "h.stl")], capsys)
    assert code == 2 and ".obj, .glb or .ply" in err
    code, _, err = _run(["export", "--profile", str(profile), "--out", str(tmp_path / "h.obj"), "--rigged"], capsys)
    assert code == 2 and "needs a .glb" in err


def test_profile_with_missing_texture_is_a_clear_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_profile_doc([0.0] * 10, "gone.png")))
    code, _, err = _run(["export", "--profile", str(path), "--out", str(tmp_path / "h.glb")], capsys)
    assert code == 2 and "gone.png" in err and "missing" in err


# --------------------------------------------------------------------------- from a source


@pytest.mark.slow
def test_export_from_a_synthetic_image_folder(tmp_path: Path, capsys) -> None:
    """Track 4 rendered frames, capture the texture, export frame 1's pose and a rigged GLB.

    (MediaPipe misses frames 0 of these flat-lit renders, deterministically; frame 1 is seen.)"""
    import cv2

    from core.camera import intrinsics_from_fov
    from core.synth.render import PALM_TO_CAMERA, SynthSettings, default_layers, palm_tint, render_hand_sample
    from core.texture import texel_map
    from core.tools.evaluate_texture import FLAT_LIGHTING, pattern_texture, reference_texels, texture_error

    layers = default_layers()
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    settings = SynthSettings(image_size=(320, 240), fill=(0.6, 0.6), skin_detail=False)  # the texture is the albedo
    texture = pattern_texture(np.random.default_rng(1), 256)
    K = intrinsics_from_fov(60.0, 320, 240).K
    for i in range(4):
        s = render_hand_sample(rng, layers, settings, betas=np.zeros(10, np.float32), pose=np.zeros(45, np.float32),
                               texture=texture, global_rotation=PALM_TO_CAMERA, K=K, transl_jitter=0.02,
                               lighting=FLAT_LIGHTING)
        cv2.imwrite(str(frames / f"{i:03d}.png"), s.image[..., ::-1])
    out = tmp_path / "scan.glb"
    code, stdout, err = _run(["export", str(frames), "--out", str(out), "--pose", "frame:1", "--texture-size", "128",
                              "--fov", "60"], capsys)
    assert code == 0, err
    import re

    tracked = re.search(r"(\d+)/4 frames tracked", stdout)
    assert tracked is not None and int(tracked.group(1)) >= 2, stdout
    mesh = _single(trimesh.load(out))
    assert _image_size(mesh.visual) == (128, 128)
    # The captured texture shows the rendered one on the palm, which faced the camera.
    d = layers["right"].data
    tmap = texel_map(d.uv, d.uv_faces, d.faces, 128)
    rest = d.v_template[d.faces]
    normals = np.cross(rest[:, 1] - rest[:, 0], rest[:, 2] - rest[:, 0])
    palm_faces = -normals[:, 1] / np.linalg.norm(normals, axis=1) > 0.8
    palm = palm_faces[tmap.face]
    image = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
    reference = reference_texels(tmap, texture, palm_tint(layers["right"]))
    result = texture_error(image, reference, tmap, palm)
    # The fitted mesh is a little off, so texels are a little off: the texture must still
    # beat the best flat colour and a mirrored copy of itself by a clear margin.
    mirrored = texture_error(image[:, ::-1], reference, tmap, palm)
    assert result["texels"] > 500 and result["error"] < 0.85 * result["constant"], result
    assert result["error"] < 0.6 * mirrored["error"], (result, mirrored)
    code, _, err = _run(["export", str(frames), "--out", str(tmp_path / "rig.glb"), "--rigged", "--animate",
                         "--texture-size", "64", "--fov", "60"], capsys)
    assert code == 0, err
    code, _, err = _run(["export", str(frames), "--out", str(tmp_path / "x.glb"), "--pose", "frame:9", "--fov", "60"],
                        capsys)
    assert code == 2 and "frame 9 has no tracked" in err


@pytest.mark.parametrize("n", [3, 15])
def test_profile_whose_shape_does_not_fit_the_model_is_one_clear_error(tmp_path: Path, capsys, n: int) -> None:
    """A hand-edited profile (its model's sha256 intact, or none) with too few or too many shape
    values: one error line naming the counts, exit 2, nothing written (it was a ValueError)."""
    for sha in (True, False):
        doc = _profile_doc([0.1] * n, None)
        if not sha:
            doc["model"]["sha256"] = ""
        path = tmp_path / "edited.json"
        path.write_text(json.dumps(doc))
        for extra in ([], ["--rigged"]):
            out = tmp_path / "h.glb"
            code, _, err = _run(["export", "--profile", str(path), "--out", str(out), *extra], capsys)
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert f"'shape' has {n} values" in err and "10 shape components" in err
            assert not out.exists() and not (tmp_path / "h.profile.json").exists()


def test_second_format_under_one_name_says_whose_companion_it_would_replace(profile: Path, tmp_path: Path,
                                                                            capsys) -> None:
    """me.obj then me.glb: both write me.png and me.profile.json. The refusal said only 'which it
    did not write' about a file HandTwin wrote a moment ago; it now names the export it belongs to."""
    code, _, _ = _run(["export", "--profile", str(profile), "--out", str(tmp_path / "me.obj")], capsys)
    assert code == 0
    before = (tmp_path / "me.profile.json").read_bytes()
    code, _, err = _run(["export", "--profile", str(profile), "--out", str(tmp_path / "me.glb")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "it belongs to me.obj" in err and "--force" in err
    assert not (tmp_path / "me.glb").exists() and (tmp_path / "me.profile.json").read_bytes() == before
    code, _, err = _run(["export", "--profile", str(profile), "--out", str(tmp_path / "me.glb"), "--force"], capsys)
    assert code == 0 and (tmp_path / "me.glb").is_file()
