"""Profile format version 3: the fitted surface stored compactly (``profile["surface"]``),
versions 1 and 2 still loading, malformed surfaces refused, every export carrying it exactly."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from core.errors import InputError
from core.model.personal import identity_model
from core.profile_io import PROFILE_VERSION, decode_surface, encode_surface, load_profile, save_profile
from tests.test_export import _parse_glb, _read_accessor
from tests.test_personal_export import _export, write_v2_profile
from tests.test_profile import _doc


def write_v3_profile(path: Path, base, rng: np.random.Generator, surface: bool = True) -> dict:
    """A version 3 profile of a synthetic person (off-template skeleton), with a surface of
    smooth random offsets (mm) or none."""
    doc = write_v2_profile(path, base, rng)
    offsets = None
    if surface:
        offsets = rng.normal(0.0, 0.6, (base.num_vertices, 3))
    doc.update(version=3, surface=None if offsets is None else encode_surface(offsets, frames=12, iou_before=0.9,
                                                                                iou_after=0.95))
    doc.pop("surface_offsets_mm")
    path.write_text(json.dumps(doc))
    return doc


def test_version_3_round_trip(tmp_path: Path, open_hand) -> None:
    assert PROFILE_VERSION == 3
    path = tmp_path / "p.json"
    doc = write_v3_profile(path, open_hand, np.random.default_rng(0))
    assert len(json.dumps(doc["surface"])) < 14_000  # float16 base64: 6 bytes a vertex, not a list of numbers
    save_profile(path, doc)
    p = load_profile(path)
    want = decode_surface(doc["surface"])
    np.testing.assert_array_equal(p.surface_offsets_mm, want)
    lengths = np.linalg.norm(want, axis=1)
    assert doc["surface"]["mean_mm"] == pytest.approx(lengths.mean(), abs=1e-3)
    assert doc["surface"]["max_mm"] == pytest.approx(lengths.max(), abs=1e-3)
    f32 = encode_surface(want, "float32")
    np.testing.assert_array_equal(decode_surface(f32), want.astype(np.float32))
    # the personal model carries it: its rest mesh is the surface-free one plus the offsets
    plain = identity_model(open_hand, load_profile(path).identity.__class__(p.shape, p.identity.skeleton))
    surf = identity_model(open_hand, p.identity)
    expected = want / 1000.0
    expected[open_hand.tip_vertex_ids] = 0.0
    np.testing.assert_allclose(surf.v_template - plain.v_template, expected, atol=2e-7)


def test_versions_1_and_2_still_load(tmp_path: Path, open_hand) -> None:
    (tmp_path / "v1.json").write_text(json.dumps(_doc()))
    assert load_profile(tmp_path / "v1.json").surface_offsets_mm is None
    doc = write_v2_profile(tmp_path / "v2.json", open_hand, np.random.default_rng(1), offsets=True)
    p = load_profile(tmp_path / "v2.json")
    np.testing.assert_array_equal(p.surface_offsets_mm, np.asarray(doc["surface_offsets_mm"]))


def _surface(**over) -> dict:
    s = encode_surface(np.full((10, 3), 0.5))
    s["offsets_mm"] = dict(s["offsets_mm"], **over.pop("enc", {}))
    s.update(over)
    return s


@pytest.mark.parametrize("surface", [
    "abc",
    {"mean_mm": 1.0},
    _surface(enc={"dtype": "float64"}),
    _surface(enc={"shape": [11, 3]}),
    _surface(enc={"shape": [10, 2]}),
    _surface(enc={"shape": [10 ** 7, 3]}),
    _surface(enc={"base64": "!" * 80}),
    _surface(enc={"base64": "A" * 10 ** 6}),
    _surface(enc={"base64": base64.b64encode(np.full(30, np.nan, "<f2").tobytes()).decode()}),
    _surface(enc={"base64": base64.b64encode(np.full(30, 100.0, "<f2").tobytes()).decode()}),
    _surface(mean_mm="1"),
    _surface(max_mm=-1.0),
    _surface(frames=True),
])
def test_a_malformed_surface_gets_one_clear_error(tmp_path: Path, open_hand, surface) -> None:
    doc = write_v3_profile(tmp_path / "p.json", open_hand, np.random.default_rng(2), surface=False)
    doc["surface"] = surface
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="'surface' must be null or"):
        load_profile(path)


def test_the_surface_is_given_once(tmp_path: Path, open_hand) -> None:
    doc = write_v3_profile(tmp_path / "p.json", open_hand, np.random.default_rng(3))
    doc["surface_offsets_mm"] = [[0.1, 0.0, 0.0]] * open_hand.num_vertices
    (tmp_path / "both.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="give the surface once"):
        load_profile(tmp_path / "both.json")


def _positions(path: Path, rigged: bool) -> np.ndarray:
    if path.suffix == ".glb":
        doc, binary = _parse_glb(path.read_bytes())
        prim = doc["meshes"][0]["primitives"][0]
        return _read_accessor(doc, binary, prim["attributes"]["POSITION"]).astype(np.float64)
    return np.asarray(trimesh.load(path, force="mesh", process=False).vertices, dtype=np.float64)


@pytest.mark.parametrize("suffix, rigged", [(".obj", False), (".ply", False), (".glb", False), (".glb", True)])
def test_every_export_differs_from_the_surface_free_hand_by_exactly_the_offsets(
        open_hand, tmp_path: Path, suffix: str, rigged: bool) -> None:
    rng_seed = 4
    doc = write_v3_profile(tmp_path / "with.json", open_hand, np.random.default_rng(rng_seed))
    plain_doc = dict(doc, surface=None)
    (tmp_path / "without.json").write_text(json.dumps(plain_doc))
    a = _positions(_export(tmp_path, tmp_path / "with.json", "with" + suffix, rigged=rigged), rigged)
    b = _positions(_export(tmp_path, tmp_path / "without.json", "without" + suffix, rigged=rigged), rigged)
    assert a.shape == b.shape
    # which model vertex each exported vertex is (UV seams split some): the surface-free hand's
    plain = identity_model(open_hand, load_profile(tmp_path / "without.json").identity)
    dist, idx = cKDTree(plain.v_template.astype(np.float64)).query(b)
    assert dist.max() < 1e-6  # the rest pose is the model frame
    offsets = decode_surface(doc["surface"]) / 1000.0
    offsets[open_hand.tip_vertex_ids] = 0.0
    np.testing.assert_allclose(a - b, offsets[idx], atol=1e-6)
    assert np.abs(offsets[idx]).max() > 1e-3
    if rigged:  # the rig stays on the personal skeleton: the surface moves no joint
        ja, jb = (_parse_glb((tmp_path / n).read_bytes()) for n in ("with.glb", "without.glb"))
        ia = _read_accessor(ja[0], ja[1], ja[0]["skins"][0]["inverseBindMatrices"])
        ib = _read_accessor(jb[0], jb[1], jb[0]["skins"][0]["inverseBindMatrices"])
        np.testing.assert_allclose(ia, ib, atol=1e-6)
