"""Surface offsets: fitted to calibration silhouettes (core.personalize.surface), applied exactly
by the personal model, carried by the calibration session into a profile."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from core.model import HandModel, mirror_model
from core.model.personal import model_rest_keypoints, personal_model
from core.personalize.people import surfaced_person
from core.personalize.surface import (
    SurfaceFrame,
    SurfaceSettings,
    fit_surface,
    global_joint_rotations,
    hand_silhouette,
)
from core.refine.mesh import MeshTopology, laplacian, vertex_normals
from core.synth.people import sample_person_skeleton

FAST = SurfaceSettings(iterations=20, max_frames=8)


@pytest.fixture(scope="module")
def surfaced(open_hand):
    return surfaced_person(open_hand, np.random.default_rng(5), 8, noise_px=0.0, fit_start=False)


def _frames(sp, masks=None) -> list[SurfaceFrame]:
    p = sp.person
    masks = sp.masks if masks is None else masks
    return [SurfaceFrame(hand_silhouette(m, f.keypoints_2d), f.keypoints_2d, p.K, pose, t)
            for m, f, pose, t in zip(masks, p.frames, p.poses, sp.transl)]


def _normal_displacement(model, offsets) -> np.ndarray:
    layer = HandModel(model, dtype=torch.float64)
    with torch.no_grad():
        n = vertex_normals(layer.rest().vertices, layer.faces)[0].numpy()
    return (offsets * n).sum(1)


def test_the_personal_model_adds_the_offsets_exactly(open_hand) -> None:
    rng = np.random.default_rng(1)
    shape = np.full(open_hand.num_betas, 0.2)
    skel = sample_person_skeleton(model_rest_keypoints(open_hand, shape), rng)
    offsets = rng.normal(0.0, 0.0005, (open_hand.num_vertices, 3))
    plain = HandModel(personal_model(open_hand, skel, betas=shape), dtype=torch.float64)
    surf = HandModel(personal_model(open_hand, skel, offsets=offsets, betas=shape), dtype=torch.float64)
    want = offsets.copy()
    want[open_hand.tip_vertex_ids] = 0.0  # the tips are the skeleton's
    b = torch.as_tensor(shape)[None]
    with torch.no_grad():
        r0, r1 = plain.rest(b), surf.rest(b)
        np.testing.assert_allclose((r1.vertices - r0.vertices)[0].numpy(), want, atol=2e-7)
        np.testing.assert_allclose(r1.keypoints[0].numpy(), skel, atol=1e-6)  # the skeleton is unchanged
        pose = torch.as_tensor(rng.normal(0.0, 0.4, (2, 48)))
        t = torch.as_tensor([[0.01, -0.02, 0.4]] * 2, dtype=torch.float64)
        d = (surf(pose, b.expand(2, -1), t).vertices - plain(pose, b.expand(2, -1), t).vertices).numpy()
        g = global_joint_rotations(pose, tuple(int(p) for p in open_hand.parents)).numpy()
    # posed through the skeleton: each vertex's offset turned by its skinning-weighted joint rotations
    posed = np.einsum("vj,bjac,vc->bva", open_hand.weights.astype(np.float64), g, want)
    np.testing.assert_allclose(d, posed, atol=2e-6)


def test_fit_recovers_a_known_thickness_change(surfaced) -> None:
    sp = surfaced
    res = fit_surface(sp.person.model, _frames(sp), settings=FAST)
    truth = _normal_displacement(sp.person.model, sp.offsets)
    before = float(np.sqrt((truth**2).mean()))
    after = float(np.sqrt(((truth - res.displacement) ** 2).mean()))
    assert after < 0.8 * before, (before, after)
    assert np.corrcoef(truth, res.displacement)[0, 1] > 0.3
    assert np.nanmean(res.iou_after) > np.nanmean(res.iou_before) + 0.004
    assert np.abs(res.displacement).max() <= FAST.cap_mm / 1000.0 + 1e-9
    assert np.all(res.displacement[sp.person.model.tip_vertex_ids] == 0.0)
    assert res.used.all() and not res.rejected


def test_bad_frames_are_left_out_with_a_reason(surfaced) -> None:
    sp = surfaced
    masks = sp.masks.copy()
    masks[2] = np.roll(masks[5], (90, -140), axis=(0, 1))  # another frame's hand, elsewhere
    frames = _frames(sp, masks)
    frames[4] = dataclasses.replace(frames[4], weight=0.0)  # the bundle rejected it
    res = fit_surface(sp.person.model, frames, settings=FAST)
    assert [i for i, _ in res.rejected] == [2] and "segmentation disagrees" in res.rejected[0][1]
    assert not res.used[2] and not res.used[4] and res.used.sum() == 6
    truth = _normal_displacement(sp.person.model, sp.offsets)
    assert np.sqrt(((truth - res.displacement) ** 2).mean()) < 0.9 * np.sqrt((truth**2).mean())


def test_a_hostile_target_cannot_make_a_grotesque_hand(surfaced) -> None:
    sp = surfaced
    # every silhouette twice as fat as the hand: the fit may only inflate it smoothly, within the cap
    import cv2

    fat = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0 for m in sp.masks])
    res = fit_surface(sp.person.model, _frames(sp, fat), settings=FAST)
    d = res.displacement
    assert d.mean() > 0.25e-3  # it did inflate (the magnitude prior holds it back)
    assert np.abs(d).max() <= FAST.cap_mm / 1000.0 + 1e-9
    topo = MeshTopology.from_faces(sp.person.model.faces, sp.person.model.num_vertices)
    lap = laplacian(torch.as_tensor(d)[None, :, None], topo)[0, :, 0].numpy()
    assert np.abs(lap).max() < 0.3 * FAST.cap_mm / 1000.0  # smooth: no spikes


@pytest.mark.parametrize("side", ["right", "left"])
def test_session_fits_the_surface_into_a_version_3_profile(open_hand, side, tmp_path) -> None:
    from core.mirror import mirror_points
    from core.personalize import CalibrationSession, ScaleOption
    from core.profile_io import load_profile, save_profile
    from tests.test_bundle import _candidates

    base = open_hand if side == "right" else mirror_model(open_hand)
    sp = surfaced_person(base, np.random.default_rng(41), 10, noise_px=1.0)
    cands = [dataclasses.replace(c, silhouette=hand_silhouette(m, c.keypoints_2d))
             for c, m in zip(_candidates(sp.person, side), sp.masks)]
    s = CalibrationSession(side=side, k=10, confidence="heuristic")
    s.convention = None
    s.add_candidates(cands)
    length = float(np.linalg.norm(sp.person.skeleton[12] - sp.person.skeleton[0]))
    result = s.calibrate(ScaleOption.from_hand_length(length * 1000.0))
    assert result.surface is not None and result.surface.used.sum() >= 8
    assert np.nanmean(result.surface.iou_after) > np.nanmean(result.surface.iou_before)
    without = s.calibrate(ScaleOption.from_hand_length(length * 1000.0), surface=False)
    assert without.surface is None
    doc = s.to_profile(result, "me")
    assert doc["version"] == 3 and doc["surface"]["frames"] == int(result.surface.used.sum())
    assert doc["surface"]["max_mm"] == pytest.approx(result.surface.max_mm, abs=0.01)
    save_profile(tmp_path / "p.json", doc)
    p = load_profile(tmp_path / "p.json")
    right_frame = result.surface.offsets if side == "right" else mirror_points(result.surface.offsets)
    np.testing.assert_allclose(p.surface_offsets_mm / 1000.0, right_frame, atol=5e-6)  # float16 storage
    assert s.to_profile(without, "me")["surface"] is None


def test_refinement_with_a_profile_never_moves_the_surface(open_hand) -> None:
    import itertools

    from core.capture import DEMO_CLIP_PATH, open_source
    from core.engine import Engine, EngineSettings
    from core.model.personal import PersonalIdentity, identity_model
    from tests.test_refine import FAST as REFINE_FAST

    if not DEMO_CLIP_PATH.exists():
        pytest.skip("demo clip not built")
    with open_source("demo") as src:
        frames = list(itertools.islice(src, 3))
    rng = np.random.default_rng(9)
    shape = np.full(open_hand.num_betas, 0.3, dtype=np.float32)
    skel = sample_person_skeleton(model_rest_keypoints(open_hand, shape), rng)
    offsets = rng.normal(0.0, 0.0008, (open_hand.num_vertices, 3))
    identity = PersonalIdentity(shape=shape, skeleton=skel, offsets=offsets)
    settings = EngineSettings(max_hands=1, device="cpu", refine_iterations=3, refine=REFINE_FAST,
                              detector_process=False)
    with Engine(settings, identity) as engine:
        right = engine.model_data["right"]
        results = [engine.process(f) for f in frames]
        np.testing.assert_array_equal(engine.model_data["right"].v_template, right.v_template)
    np.testing.assert_array_equal(right.v_template, identity_model(open_hand, identity).v_template)
    plain = HandModel(identity_model(open_hand, PersonalIdentity(shape, skel)), dtype=torch.float64)
    surf = HandModel(right, dtype=torch.float64)
    refined = [r.hands[0].refined for r in results if r.hands and r.hands[0].refined is not None]
    assert refined
    for r in refined:
        np.testing.assert_array_equal(r.betas, shape)
        args = [torch.as_tensor(np.asarray(a, dtype=np.float64))[None] for a in (r.pose, r.betas, r.transl)]
        with torch.no_grad():
            mine, without = surf(*args).vertices[0].numpy(), plain(*args).vertices[0].numpy()
        # the refined hand is the surfaced personal model plus this frame's own small offsets
        np.testing.assert_allclose(r.vertices - r.vertex_offsets, mine, atol=2e-5)
        assert np.abs(mine - without).max() > 1e-3


def test_surface_distance_is_the_distance_to_the_nearest_point_of_the_mesh(open_hand) -> None:
    from core.metrics import closest_points_on_triangles, surface_distance

    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 40, 3))
    p = rng.normal(size=(40, 3)) * 2.0
    q = closest_points_on_triangles(p, a, b, c)
    u, v = (g.ravel() for g in np.meshgrid(np.linspace(0, 1, 300), np.linspace(0, 1, 300)))
    keep = u + v <= 1.0
    for i in range(40):  # dense barycentric sampling: never closer than the exact point, nearly as close
        pts = a[i] + np.outer(u[keep], b[i] - a[i]) + np.outer(v[keep], c[i] - a[i])
        dense = np.linalg.norm(pts - p[i], axis=1).min()
        assert np.linalg.norm(q[i] - p[i]) <= dense + 1e-12
        assert np.linalg.norm(q[i] - p[i]) > (dense - 0.02 * np.linalg.norm(b[i] - a[i])
                                              - 0.02 * np.linalg.norm(c[i] - a[i]))
    verts = open_hand.v_template.astype(np.float64)
    faces = open_hand.faces
    assert surface_distance(verts, verts, faces).max() == 0.0
    n = vertex_normals(torch.as_tensor(verts)[None], torch.as_tensor(faces.astype(np.int64)))[0].numpy()
    lifted = verts + 0.0005 * n  # half a millimetre off the surface along the normals
    d = surface_distance(lifted, verts, faces)
    assert np.median(d) == pytest.approx(0.0005, rel=0.05) and d.max() <= 0.0005 + 1e-12
