"""Exporting the personal hand: a version 2 profile's skeleton and surface reach every format."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from core.keypoints import MANO_JOINT_TO_KEYPOINT, MANO_PARENTS, bone_lengths
from core.model.personal import identity_model, model_rest_keypoints
from core.profile_io import load_profile
from core.synth.people import sample_person_skeleton
from core.tools.cli_export import run_export
from tests.test_export import _parse_glb, _read_accessor


def write_v2_profile(path: Path, base, rng: np.random.Generator, offsets: bool = False) -> dict:
    """A version 2 profile of a synthetic person (off-template skeleton, optional surface)."""
    skel = sample_person_skeleton(model_rest_keypoints(base), rng)
    doc = {
        "format": "handtwin-profile", "version": 2, "name": "synthetic person", "handedness": "right",
        "model": {"name": base.name, "sha256": base.sha256}, "shape": [0.0] * base.num_betas,
        "hand_length_mm": float(np.linalg.norm(skel[12] - skel[0]) * 1000),
        "hand_width_mm": float(np.linalg.norm(skel[13] - skel[5]) * 1000),
        "bone_lengths_mm": [float(v) for v in bone_lengths(skel) * 1000], "scale_source": "prior",
        "frames": [], "texture": None, "created": "2026-12-06T00:00:00+00:00",
        "skeleton_mm": (skel * 1000).round(4).tolist(),
        "surface_offsets_mm": (rng.normal(0, 0.3, (base.num_vertices, 3))).round(3).tolist() if offsets else None,
        "focal_px": None, "focal_image_size": None, "rejected_frames": [],
        "scale_note": "Size is the population prior.",
    }
    path.write_text(json.dumps(doc))
    return doc


def _export(tmp_path: Path, profile: Path, name: str, rigged: bool = False) -> Path:
    out = tmp_path / name
    run_export(argparse.Namespace(source=None, profile=str(profile), out=str(out), rigged=rigged, pose="rest",
                                  animate=False, texture_size=64, model=None, force=False))
    return out


def _joint_bones(joints: np.ndarray) -> np.ndarray:
    return np.array([np.linalg.norm(joints[j] - joints[MANO_PARENTS[j]]) for j in range(1, 16)])


def test_rigged_export_puts_the_rig_on_the_personal_skeleton(open_hand, tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.json"
    write_v2_profile(path, open_hand, np.random.default_rng(0))
    profile = load_profile(path)
    out = _export(tmp_path, path, "me.glb", rigged=True)
    doc, binary = _parse_glb(out.read_bytes())
    inverse_bind = _read_accessor(doc, binary, doc["skins"][0]["inverseBindMatrices"]).astype(np.float64)
    rig_joints = -inverse_bind[:, :3, 3]
    skel_joints = profile.skeleton_mm[list(MANO_JOINT_TO_KEYPOINT)] / 1000.0
    np.testing.assert_allclose(_joint_bones(rig_joints), _joint_bones(skel_joints), atol=1e-5)
    base_joints = model_rest_keypoints(open_hand)[list(MANO_JOINT_TO_KEYPOINT)]
    assert np.abs(_joint_bones(rig_joints) - _joint_bones(base_joints)).max() > 1e-3  # not the average hand
    assert (tmp_path / "me.profile.json").exists()


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".glb"])
def test_every_format_carries_the_personal_surface(open_hand, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "p.json"
    write_v2_profile(path, open_hand, np.random.default_rng(1), offsets=True)
    personal = identity_model(open_hand, load_profile(path).identity)
    out = _export(tmp_path, path, "me" + suffix)
    mesh = trimesh.load(out, force="mesh", process=False)
    # The export frame turns the model's by a half turn (y-up): compare extents as sets.
    want = np.sort(np.ptp(personal.v_template.astype(np.float64), axis=0))
    average = np.sort(np.ptp(open_hand.v_template.astype(np.float64), axis=0))
    got = np.sort(np.ptp(np.asarray(mesh.vertices, dtype=np.float64), axis=0))
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.abs(want - average).max() > 1e-3
