"""Profile format version 2: the personal identity, version 1 still loading, hostile fields refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError
from core.model.personal import identity_model, model_rest_keypoints
from core.profile_io import PROFILE_VERSION, load_profile, save_profile
from tests.test_personal_export import write_v2_profile
from tests.test_profile import _doc


def test_version_1_profiles_still_load(tmp_path: Path, open_hand) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_doc()))
    p = load_profile(path)
    assert p.skeleton_mm is None and p.surface_offsets_mm is None and p.focal_px is None and p.scale_note == ""
    assert identity_model(open_hand, p.identity) is open_hand  # no skeleton: the model's own hand


def test_version_2_round_trip_and_identity(tmp_path: Path, open_hand) -> None:
    assert PROFILE_VERSION >= 2
    path = tmp_path / "p.json"
    doc = write_v2_profile(path, open_hand, np.random.default_rng(2), offsets=True)
    doc.update(focal_px=612.5, focal_image_size=[640, 480],
               rejected_frames=[{"source": "cam", "frame": 3, "reason": "wrong side"}])
    save_profile(path, doc)
    p = load_profile(path)
    assert p.focal_px == 612.5 and p.focal_image_size == (640, 480) and p.rejected_frames[0]["frame"] == 3
    assert p.surface_offsets_mm.shape == (open_hand.num_vertices, 3)
    right = identity_model(open_hand, p.identity)
    np.testing.assert_allclose(model_rest_keypoints(right), p.skeleton_mm / 1000.0, atol=1e-6)
    from core.mirror import mirror_points
    from core.model import mirror_model

    left = identity_model(mirror_model(open_hand), p.identity)  # the mirror image for the left hand
    np.testing.assert_allclose(model_rest_keypoints(left), mirror_points(p.skeleton_mm / 1000.0), atol=1e-6)


def _v2(open_hand, tmp_path: Path) -> dict:
    return write_v2_profile(tmp_path / "base.json", open_hand, np.random.default_rng(3))


@pytest.mark.parametrize("change, message", [
    ({"skeleton_mm": [[0, 0, 0]] * 20}, "skeleton_mm"),
    ({"skeleton_mm": [[0, 0, "1"]] * 21}, "skeleton_mm"),
    ({"skeleton_mm": [[1e308, 0, 0]] * 21}, "skeleton_mm"),
    ({"skeleton_mm": [[0.0, 0.0, 0.0]] * 21}, "not a hand"),
    ({"surface_offsets_mm": [[0, 0, 100]] * 10}, "surface_offsets_mm"),
    ({"surface_offsets_mm": [[0, 0]] * 10}, "surface_offsets_mm"),
    ({"surface_offsets_mm": {"a": 1}}, "surface_offsets_mm"),
    ({"focal_px": -5.0}, "focal_px"),
    ({"focal_px": 500.0, "focal_image_size": None}, "focal_image_size"),
    ({"rejected_frames": [{"frame": 1}]}, "rejected_frames"),
    ({"scale_note": ["x"]}, "scale_note"),
])
def test_hostile_version_2_fields_get_one_clear_error(tmp_path: Path, open_hand, change: dict, message: str) -> None:
    doc = dict(_v2(open_hand, tmp_path), **change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=message):
        load_profile(path)


def test_surface_offsets_for_another_model_are_refused_when_used(tmp_path: Path, open_hand) -> None:
    from core.errors import ModelFileError

    doc = _v2(open_hand, tmp_path)
    doc["surface_offsets_mm"] = [[0.1, 0.0, 0.0]] * 778  # a MANO-sized surface on the open hand
    path = tmp_path / "mano.json"
    path.write_text(json.dumps(doc))
    p = load_profile(path)
    with pytest.raises(ModelFileError, match="surface offsets have 778 vertices"):
        identity_model(open_hand, p.identity)
