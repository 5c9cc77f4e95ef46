"""Silhouette refinement (core.refine): regularizers, crop, penetration, the optimization, engine."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.camera import HandCamera
from core.capture import DEMO_CLIP_PATH
from core.fit import HandFit
from core.metrics import edge_length_error, mask_iou, normal_error
from core.refine import (
    MeshTopology,
    Refiner,
    RefineSettings,
    RefineTarget,
    RefineView,
    nominal_intrinsics,
    penetration_loss,
    penetration_stats,
)
from core.refine.crop import CropBox, crop_box
from core.refine.mesh import edge_loss, laplacian, laplacian_loss, normal_loss, vertex_offset_loss
from core.render import (
    RasterSettings,
    SoftRasterSettings,
    project_points,
    rasterize,
    rasterize_silhouette,
    rasterize_silhouette_dense,
    render_depth,
)
from core.render.synthetic import geodesic_ellipsoid
from core.rotations import matrix_to_axis_angle
from core.synth.render import PALM_TO_CAMERA

IMAGE = (160, 160)  # (width, height)
K_TEST = np.array([[210.0, 0.0, 79.5], [0.0, 210.0, 79.5], [0.0, 0.0, 1.0]], dtype=np.float32)
#: Small crops and few iterations keep the file fast; the defaults are measured in evaluate.
FAST = RefineSettings(image_size=64, sigma=0.5 / 4)


@pytest.fixture(scope="module")
def models():
    from core.model import HandModel, load_model_data

    return {side: HandModel(load_model_data(None, side)) for side in ("right", "left")}


@pytest.fixture(scope="module")
def refiner(models):
    return Refiner(models["right"].data, models["left"].data, FAST)


def gt_pose(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    glob = matrix_to_axis_angle(torch.as_tensor(PALM_TO_CAMERA, dtype=torch.float64)).numpy()
    return np.concatenate([glob, rng.normal(0.0, 0.12, 45)]).astype(np.float32)


def posed(layer, pose, betas, transl) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = layer(torch.as_tensor(pose)[None], torch.as_tensor(betas)[None], torch.as_tensor(transl)[None])
    return out.vertices[0].numpy(), out.keypoints[0].numpy()


def place(layer, pose, betas, K=K_TEST, depth=0.36) -> np.ndarray:
    """The translation that centres the posed hand in the image at ``depth`` metres."""
    verts, _ = posed(layer, pose, betas, np.zeros(3, np.float32))
    c = verts.mean(0)
    w, h = IMAGE
    target = np.array([((w - 1) / 2 - K[0, 2]) / K[0, 0] * depth, ((h - 1) / 2 - K[1, 2]) / K[1, 1] * depth, depth])
    return (target - c).astype(np.float32)


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    uv = (K @ points.T).T
    return (uv[:, :2] / uv[:, 2:]).astype(np.float32)


def hard_mask(layer, verts: np.ndarray, K: np.ndarray) -> np.ndarray:
    frags = rasterize(torch.as_tensor(verts)[None], layer.faces, torch.as_tensor(K, dtype=torch.float32)[None],
                      RasterSettings(image_size=(IMAGE[1], IMAGE[0])))
    return (frags.pix_to_face[0] >= 0).numpy()


def make_fit(layer, side, pose, betas, transl, K, projection="perspective") -> HandFit:
    _, kp = posed(layer, pose, betas, transl)
    return HandFit(side=side, pose=pose, betas=betas, transl=transl, keypoints_3d=kp,
                   keypoints_2d=project(kp, K), reprojection_error_px=0.0, projection=projection,
                   scale=float(K[0, 0] / kp[0, 2]), iterations=0)


@dataclasses.dataclass
class Scene:
    truth: HandFit
    fit: HandFit
    mask: np.ndarray
    keypoints_2d: np.ndarray
    verts: np.ndarray


def scene(models, side="right", K=K_TEST, seed=0, pose_noise=0.08, shift=(0.004, -0.003, 0.0)) -> Scene:
    layer = models[side]
    rng = np.random.default_rng(seed + 100)
    pose = gt_pose(seed)
    betas = np.zeros(10, np.float32)
    transl = place(layer, pose, betas, K)
    verts, kp = posed(layer, pose, betas, transl)
    truth = make_fit(layer, side, pose, betas, transl, K)
    noisy = pose.copy()
    noisy[:3] += rng.normal(0, 0.04, 3)
    noisy[3:] += rng.normal(0, pose_noise, 45)
    fit = make_fit(layer, side, noisy.astype(np.float32), betas, (transl + np.float32(shift)).astype(np.float32), K)
    return Scene(truth, fit, hard_mask(layer, verts, K), project(kp, K), verts)


# ----------------------------------------------------------------------------- regularizers


def test_regularizers_are_zero_and_flat_on_the_undeformed_mesh(models) -> None:
    layer = models["right"]
    topo = MeshTopology.from_faces(layer.data.faces, layer.data.num_vertices)
    base = torch.as_tensor(posed(layer, gt_pose(), np.zeros(10, np.float32), np.zeros(3, np.float32))[0],
                           dtype=torch.float64)[None]
    offsets = torch.zeros_like(base, requires_grad=True)
    verts = base + offsets
    terms = [vertex_offset_loss(offsets, 0.003), laplacian_loss(offsets, topo, 0.003),
             edge_loss(verts, base, topo), normal_loss(verts, base, topo)]
    for term in terms:
        assert float(term.detach()) == pytest.approx(0.0, abs=1e-20)
    torch.stack(terms).sum().backward()
    assert offsets.grad.abs().max() < 1e-12  # a minimum, not just a zero
    # A translation is not a deformation: Laplacian, edge and normal terms stay zero.
    moved = base + torch.tensor([0.01, -0.02, 0.005], dtype=torch.float64)
    assert float(laplacian_loss(moved - base, topo)) < 1e-20
    assert float(edge_loss(moved, base, topo)) < 1e-20
    assert float(normal_loss(moved, base, topo)) < 1e-20
    # Any real bump is penalized by each of them.
    bump = torch.zeros_like(base)
    bump[0, 700] = torch.tensor([0.002, 0.001, -0.002], dtype=torch.float64)
    bumped = base + bump
    for term in (laplacian_loss(bump, topo, 0.003), edge_loss(bumped, base, topo), normal_loss(bumped, base, topo)):
        assert float(term) > 1e-6


@pytest.mark.parametrize("name", ["vertex", "laplacian", "edge", "normal"])
def test_regularizer_gradients_match_finite_differences(name: str) -> None:
    verts, faces = geodesic_ellipsoid((0.0, 0.0, 0.4), (0.02, 0.03, 0.015), 0.3, 2, torch.float64)
    topo = MeshTopology.from_faces(faces, verts.shape[0])
    base = verts[None]
    gen = torch.Generator().manual_seed(0)
    x = (0.002 * torch.randn(base.shape, generator=gen, dtype=torch.float64)).requires_grad_(True)
    fns = {
        "vertex": lambda d: vertex_offset_loss(d, 0.004),
        "laplacian": lambda d: laplacian_loss(d, topo, 0.004),
        "edge": lambda d: edge_loss(base + d, base, topo),
        "normal": lambda d: normal_loss(base + d, base, topo),
    }
    assert torch.autograd.gradcheck(lambda d: fns[name](d).sum(), (x,), eps=1e-7, atol=1e-6, rtol=1e-4)


def test_laplacian_of_a_constant_field_is_zero() -> None:
    verts, faces = geodesic_ellipsoid((0.0, 0.0, 0.4), (0.02, 0.03, 0.015), 0.0, 2, torch.float64)
    topo = MeshTopology.from_faces(faces, verts.shape[0])
    field = torch.ones(1, verts.shape[0], 3, dtype=torch.float64) * 3.0
    assert laplacian(field, topo).abs().max() < 1e-12
    assert int(topo.edges.shape[0]) == 3 * faces.shape[0] // 2  # closed mesh: E = 3F / 2


def test_fast_regularizers_match_the_reference_terms(models) -> None:
    """The float32 fast paths (sparse products) against the float64 plain ones, values and gradients."""
    from core.refine.mesh import edge_normal_losses

    layer = models["right"]
    topo = MeshTopology.from_faces(layer.data.faces, layer.data.num_vertices)
    base0 = torch.as_tensor(np.stack([posed(layer, gt_pose(s), np.zeros(10, np.float32),
                                            np.array([0.0, 0.0, 0.4], np.float32))[0] for s in (0, 1)]))
    gen = torch.Generator().manual_seed(3)
    u0 = 0.3 * torch.randn(base0.shape, generator=gen)
    out = {}
    for dtype in (torch.float32, torch.float64):
        base = base0.to(dtype).requires_grad_(True)
        u = u0.to(dtype).requires_grad_(True)
        verts = base + 0.003 * u
        if dtype == torch.float32:
            edge, normal = edge_normal_losses(verts, base, topo)
        else:
            edge, normal = edge_loss(verts, base, topo), normal_loss(verts, base, topo)
            plain = torch.stack(edge_normal_losses(verts, base, topo))  # the float64 gather path
            torch.testing.assert_close(plain, torch.stack([edge, normal]), rtol=1e-12, atol=0.0)
        lap = laplacian_loss(u, topo)
        values = torch.stack([edge, normal, lap])  # (3, B)
        grads = torch.autograd.grad((values * torch.tensor([[0.1], [1.0], [1.0]], dtype=dtype)).sum(), (u, base))
        out[dtype] = (values.detach().double(), [g.double() for g in grads])
    (v32, g32), (v64, g64) = out[torch.float32], out[torch.float64]
    assert v64.min() > 1e-4  # the terms are not trivially zero here
    torch.testing.assert_close(v32, v64, rtol=1e-4, atol=1e-9)
    for a, b in zip(g32, g64):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * float(b.abs().max()))


@pytest.mark.parametrize("pose_correctives", [False, True])
def test_lean_hand_matches_the_hand_model(models, pose_correctives: bool) -> None:
    """The refiner's lean forward pass = smplx's (with and without pose-corrective blend shapes)."""
    from core.model import HandModel
    from core.refine.lbs import LeanHand

    rng = np.random.default_rng(5)
    for side in ("right", "left"):
        layer = models[side]
        if pose_correctives:  # the open hand has none; MANO has (V, 3, 135) of them
            pd = rng.normal(0.0, 0.002, layer.data.posedirs.shape).astype(np.float32)
            layer = HandModel(dataclasses.replace(layer.data, posedirs=pd))
        lean = LeanHand(layer)
        assert (lean.posedirs is not None) == pose_correctives
        pose = torch.as_tensor(np.stack([gt_pose(1), gt_pose(2)]))
        betas = torch.as_tensor(rng.normal(0.0, 1.0, (2, layer.num_betas)).astype(np.float32))
        transl = torch.as_tensor(rng.normal(0.0, 0.1, (2, 3)).astype(np.float32))
        res = []
        for fn in (layer, lean):
            p, b, t = (x.clone().requires_grad_(True) for x in (pose, betas, transl))
            o = fn(p, b, t)
            w = torch.linspace(-1.0, 1.0, o.vertices.numel()).reshape(o.vertices.shape)
            loss = (o.vertices * w).sum() + o.keypoints.pow(2).sum() + o.joints.sum()
            res.append((o.vertices.detach(), o.joints.detach(), o.keypoints.detach(),
                        *torch.autograd.grad(loss, (p, b, t))))
        for a, b in zip(res[1], res[0]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(b.abs().max())))


def test_plausibility_metrics(models) -> None:
    layer = models["right"]
    faces = layer.data.faces
    verts = posed(layer, gt_pose(), np.zeros(10, np.float32), np.zeros(3, np.float32))[0].astype(np.float64)
    assert edge_length_error(verts, verts, faces) == 0.0
    assert normal_error(verts, verts, faces) == pytest.approx(0.0, abs=1e-9)
    e = np.linalg.norm(verts[np.roll(faces, -1, 1)] - verts[faces], axis=-1).mean()
    assert edge_length_error(2.0 * verts, verts, faces) == pytest.approx(e)  # every edge doubles
    assert normal_error(2.0 * verts + 0.1, verts, faces) == pytest.approx(0.0, abs=1e-9)  # planes kept
    rng = np.random.default_rng(0)
    noisy = verts + rng.normal(0, 0.001, verts.shape)
    assert 0.0 < normal_error(noisy, verts, faces) < 1.0
    # The refiner's torch version agrees with the numpy metrics.
    from core.refine.mesh import plausibility

    topo = MeshTopology.from_faces(faces, verts.shape[0])
    edge_t, normal_t = plausibility(torch.as_tensor(noisy)[None], torch.as_tensor(verts)[None], topo)
    assert float(edge_t) == pytest.approx(edge_length_error(noisy, verts, faces), rel=1e-9)
    assert float(normal_t) == pytest.approx(normal_error(noisy, verts, faces), rel=1e-9)
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(a, b, region=np.eye(4, dtype=bool)) == pytest.approx(1 / 3)
    assert mask_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


# ----------------------------------------------------------------------------- crop and renderer


def test_crop_intrinsics_match_crop_coordinates() -> None:
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-0.05, 0.05, (30, 2)), rng.uniform(0.3, 0.4, (30, 1))], 1)
    uv = project(points, K_TEST)
    box = crop_box(uv, size=64, margin=0.2)
    K_crop = box.intrinsics(torch.as_tensor(K_TEST, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(project(points, K_crop), box.to_crop(uv), atol=1e-4)
    np.testing.assert_allclose(box.affine() @ K_TEST, K_crop, atol=1e-9)
    np.testing.assert_allclose(box.to_image(box.to_crop(uv)), uv, atol=1e-4)
    assert (box.to_crop(uv) >= 0).all() and (box.to_crop(uv) <= 63).all()


def test_crop_resamples_masks_by_area_and_depth_by_nearest() -> None:
    box = CropBox(x0=-2, y0=3, side=8, size=4)  # 2 x 2 image pixels per crop pixel
    mask = np.zeros((20, 20), bool)
    mask[3:5, 0:2] = True  # image rows 3-4, columns 0-1: crop pixel (0, 1)
    mask[5, 2] = True  # a quarter of crop pixel (1, 2)
    out = box.resample_mask(mask)
    assert out.shape == (4, 4)
    assert out[0, 1] == pytest.approx(1.0) and out[1, 2] == pytest.approx(0.25)
    assert out.sum() == pytest.approx(1.25)
    depth = np.arange(400, dtype=np.float32).reshape(20, 20)
    d = box.resample_depth(depth)
    assert d[0, 0] == 0.0  # outside the image: unknown
    # Crop pixel (row 1, column 2) centres on image (x, y) = (2.5, 5.5): nearest picks (3, 6).
    assert d[1, 2] == depth[6, 3]


def test_silhouette_gradient_matches_dense_for_either_sign() -> None:
    """The refinement's loss has dL/dsil of both signs; the gradient must match the reference."""
    verts, faces = geodesic_ellipsoid((0.0, 0.0, 0.5), (0.02, 0.03, 0.015), 0.3, 2, torch.float64)
    K = torch.tensor([[[250.0, 0.0, 13.3], [0.0, 260.0, 11.6], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    settings = SoftRasterSettings(image_size=(24, 28), sigma=0.6, eps=1e-12)
    target = torch.zeros(1, 24, 28, dtype=torch.float64)
    target[:, 6:18, 10:20] = 1.0
    grads = []
    for render in (rasterize_silhouette, rasterize_silhouette_dense):
        v = verts[None].clone().requires_grad_(True)
        ((render(v, faces, K, settings) - target) ** 2).sum().backward()
        grads.append(v.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6 * grads[1].abs().max().item(), rtol=0)


# ----------------------------------------------------------------------------- refinement


@pytest.mark.parametrize("projection", ["perspective", "weak"])
def test_refinement_raises_iou_on_a_synthetic_silhouette(models, refiner, projection: str) -> None:
    K = K_TEST if projection == "perspective" else nominal_intrinsics(IMAGE, refiner.nominal_fov_deg)
    sc = scene(models, K=K)
    fit = dataclasses.replace(sc.fit, projection=projection)
    target = RefineTarget(sc.mask, sc.keypoints_2d, None if projection == "weak" else K)
    r = refiner.refine([fit], [target], iterations=15)[0]
    assert r.iou_after > r.iou_before + 0.04, (r.iou_before, r.iou_after)
    assert r.vertices.shape == (models["right"].data.num_vertices, 3) and r.pose.shape == (48,)
    np.testing.assert_allclose(r.K, K, rtol=0.05)  # the focal length moves only on the weak path
    assert 0.0 < r.edge_length_error < 0.001 and 0.0 < r.normal_error < 0.2
    # The result's own silhouette at full resolution agrees better with the target, too.
    assert mask_iou(hard_mask(models["right"], r.vertices, r.K), sc.mask) > \
        mask_iou(hard_mask(models["right"], posed(models["right"], fit.pose, fit.betas, fit.transl)[0], K), sc.mask)
    assert 1 <= r.best_iteration <= 15 and r.ms > 0.0


def test_zero_iterations_returns_the_fit(models, refiner) -> None:
    sc = scene(models)
    r = refiner.refine([sc.fit], [RefineTarget(sc.mask, sc.keypoints_2d, K_TEST)], iterations=0)[0]
    np.testing.assert_allclose(r.pose, sc.fit.pose, atol=1e-7)
    np.testing.assert_allclose(r.keypoints_3d, sc.fit.keypoints_3d, atol=1e-6)
    assert r.iou_before == r.iou_after and r.edge_length_error == 0.0 and r.best_iteration == 0


def test_keypoint_term_keeps_the_hand_on_its_keypoints(models, refiner) -> None:
    """A target mask shifted off the keypoints drags the hand along, unless the 2D term holds it."""
    sc = scene(models, pose_noise=0.0, shift=(0.0, 0.0, 0.0))
    shifted = np.roll(sc.mask, 12, axis=1)  # 12 px to the right of where the keypoints are
    target = RefineTarget(shifted, sc.keypoints_2d, K_TEST)
    unguarded = dataclasses.replace(FAST, keypoint_guard_px=None)  # the term alone, no guard
    free = refiner.refine([sc.fit], [target], iterations=12,
                          settings=dataclasses.replace(unguarded, w_keypoints=0.0))[0]
    held = refiner.refine([sc.fit], [target], iterations=12,
                          settings=dataclasses.replace(unguarded, w_keypoints=4.0))[0]
    assert free.reprojection_error_px > 3.0  # the silhouette alone moves the hand
    assert held.reprojection_error_px < 0.5 * free.reprojection_error_px
    assert held.reprojection_error_px < 3.0


@pytest.mark.parametrize("projection", ["perspective", "weak"])
def test_keypoint_guard_keeps_the_fit_where_the_silhouette_pulls_it_off(models, refiner, projection: str) -> None:
    """A silhouette off the keypoints (an object in the hand, a bad mask) may raise the IoU, but
    never the keypoint error by more than the guard's slack: the fit is kept instead."""
    K = K_TEST if projection == "perspective" else nominal_intrinsics(IMAGE, refiner.nominal_fov_deg)
    sc = scene(models, K=K, pose_noise=0.0, shift=(0.0, 0.0, 0.0))
    fit = dataclasses.replace(sc.fit, projection=projection)
    target = RefineTarget(np.roll(sc.mask, 12, axis=1), sc.keypoints_2d, None if projection == "weak" else K)
    loose = dataclasses.replace(FAST, w_keypoints=0.0)
    free = refiner.refine([fit], [target], iterations=12,
                          settings=dataclasses.replace(loose, keypoint_guard_px=None))[0]
    assert free.reprojection_error_px > free.fit_reprojection_error_px + 3.0  # what the guard is for
    assert free.iou_after > free.iou_before and not free.fell_back
    kept = refiner.refine([fit], [target], iterations=12, settings=loose)[0]
    assert kept.fell_back and kept.best_iteration == 0
    slack = max(loose.keypoint_guard_px, loose.keypoint_guard_fraction * kept.fit_reprojection_error_px)
    assert kept.reprojection_error_px <= kept.fit_reprojection_error_px + slack
    assert kept.fit_reprojection_error_px == pytest.approx(free.fit_reprojection_error_px)
    np.testing.assert_allclose(kept.pose, fit.pose, atol=1e-7)
    np.testing.assert_allclose(kept.keypoints_3d, fit.keypoints_3d, atol=1e-6)
    np.testing.assert_allclose(kept.vertices, posed(models["right"], fit.pose, fit.betas, fit.transl)[0], atol=1e-5)
    assert not kept.vertex_offsets.any() and kept.iou_after == kept.iou_before
    # A refinement that keeps to its keypoints passes the guard untouched.
    sc = scene(models, K=K)
    good = refiner.refine([sc.fit], [RefineTarget(sc.mask, sc.keypoints_2d, K)], iterations=15)[0]
    assert not good.fell_back and good.iou_after > good.iou_before
    assert good.reprojection_error_px <= good.fit_reprojection_error_px + 1.0


def weak_scene(models, side="right", seed=0, pose_noise=0.08, shift_px=(2.0, -1.5)) -> tuple[Scene, HandCamera]:
    """A hand seen through a weak-perspective camera (the frames themselves weak perspective:
    rendered through its pinhole form) and a weak fit of it with pose noise, placed where the
    fitter places weak fits (its wrist at depth fx / scale in the nominal camera)."""
    from core.camera import HandCamera, weak_perspective_camera, weak_perspective_origin

    sc = scene(models, side, seed=seed, pose_noise=pose_noise, shift=(0.0, 0.0, 0.0))
    layer = models[side]
    nominal = weak_perspective_camera(IMAGE, 60.0)
    scale = float(K_TEST[0, 0] / sc.truth.keypoints_3d[0, 2])
    truth_cam = HandCamera.weak(nominal, scale, sc.truth.keypoints_3d[0], project(sc.truth.keypoints_3d[:1], K_TEST)[0])
    mask = hard_mask(layer, *truth_cam.pinhole(sc.verts))
    kp2 = truth_cam.project(sc.truth.keypoints_3d)
    own = truth_cam.project(sc.fit.keypoints_3d) + np.float32(shift_px)
    wrist = weak_perspective_origin(nominal, own[0], scale) - sc.fit.keypoints_3d[0]
    fit = dataclasses.replace(sc.fit, transl=(sc.fit.transl + wrist).astype(np.float32),
                              keypoints_3d=(sc.fit.keypoints_3d + wrist).astype(np.float32), keypoints_2d=own,
                              projection="weak", scale=scale,
                              reprojection_error_px=float(np.linalg.norm(own - kp2, axis=1).mean()))
    return Scene(sc.truth, fit, mask, kp2, sc.verts), HandCamera.weak(nominal, scale, fit.keypoints_3d[0], own[0])


def test_a_weak_fit_is_refined_in_its_own_weak_camera(models) -> None:
    """A weak-perspective fit is refined in its weak camera's pinhole form (the projection the
    fit and the texture use), not in the nominal pinhole it is placed in (which puts it several
    px off, so the guard threw every refinement away): the silhouette improves, the keypoint
    guard compares like with like, and the refined hand comes back as a weak hand whose camera
    puts its keypoints where it says."""
    refiner = Refiner(models["right"].data, models["left"].data, FAST, nominal_fov_deg=60.0)
    sc, cam = weak_scene(models)
    nominal = project_points(np.asarray(sc.fit.keypoints_3d, np.float32)[None], cam.K.astype(np.float32)[None])[0]
    assert float(np.linalg.norm(nominal - sc.keypoints_2d, axis=1).mean()) > sc.fit.reprojection_error_px + 1.0
    r = refiner.refine([sc.fit], [RefineTarget(sc.mask, sc.keypoints_2d, None)], iterations=15)[0]
    assert r.fit_reprojection_error_px == pytest.approx(sc.fit.reprojection_error_px, abs=1e-4)  # its own error
    assert not r.fell_back and r.best_iteration > 0
    assert r.iou_after > r.iou_before + 0.03, (r.iou_before, r.iou_after)
    assert r.reprojection_error_px <= r.fit_reprojection_error_px + FAST.keypoint_guard_px
    assert r.camera is not None and r.camera.is_weak
    np.testing.assert_allclose(r.camera.project(r.keypoints_3d), r.keypoints_2d, atol=1e-3)
    np.testing.assert_allclose(r.K, cam.K, rtol=1e-6)  # the nominal camera it is placed in, as the fit
    assert abs(r.keypoints_3d[0, 2] - sc.fit.keypoints_3d[0, 2]) < 0.05  # still where weak hands are placed
    # At full resolution, through the refined weak camera, the silhouette matches better too.
    layer = models["right"]
    fitted = posed(layer, sc.fit.pose, sc.fit.betas, sc.fit.transl)[0]
    assert mask_iou(hard_mask(layer, *r.camera.pinhole(r.vertices)), sc.mask) > \
        mask_iou(hard_mask(layer, *cam.pinhole(fitted)), sc.mask) + 0.02
    # A silhouette that pulls it off its keypoints: the fit comes back, in its own camera.
    loose = dataclasses.replace(FAST, w_keypoints=0.0)
    kept = refiner.refine([sc.fit], [RefineTarget(np.roll(sc.mask, 12, axis=1), sc.keypoints_2d, None)],
                          iterations=12, settings=loose)[0]
    assert kept.fell_back and kept.camera.is_weak
    np.testing.assert_allclose(kept.keypoints_3d, sc.fit.keypoints_3d, atol=1e-6)
    np.testing.assert_allclose(kept.keypoints_2d, sc.fit.keypoints_2d, atol=1e-5)
    np.testing.assert_allclose(kept.camera.project(kept.keypoints_3d), kept.keypoints_2d, atol=1e-3)
    # Two weak hands have no common depth: refined together, each in its own camera.
    left, lcam = weak_scene(models, "left", seed=1)
    both = refiner.refine([sc.fit, left.fit], [RefineTarget(sc.mask, sc.keypoints_2d, None),
                                               RefineTarget(left.mask, left.keypoints_2d, None)], iterations=3)
    assert all(b.camera.is_weak and not b.fell_back for b in both)


def test_depth_term_pulls_the_hand_to_the_measured_depth(models, refiner) -> None:
    sc = scene(models, pose_noise=0.0, shift=(0.0, 0.0, 0.02))  # the fit is 2 cm too far
    layer = models["right"]
    frags = rasterize(torch.as_tensor(sc.verts)[None], layer.faces, torch.as_tensor(K_TEST)[None],
                      RasterSettings(image_size=(IMAGE[1], IMAGE[0])))
    depth = render_depth(frags)[0].numpy()
    # The depth term alone (no keypoint term, so no keypoint guard either: the hand drifts
    # sideways by 6 mm here, which the guard would refuse).
    only_depth = dataclasses.replace(FAST, w_silhouette=0.0, w_keypoints=0.0, optimize_pose=False,
                                     optimize_shape=False, optimize_vertices=False, w_depth=1.0,
                                     keypoint_guard_px=None)
    target = RefineTarget(sc.mask, sc.keypoints_2d, K_TEST, depth=depth)
    r = refiner.refine([sc.fit], [target], iterations=15, settings=only_depth)[0]
    before = abs(sc.fit.transl[2] - sc.truth.transl[2])
    after = abs(r.transl[2] - sc.truth.transl[2])
    assert after < 0.5 * before, (before, after)
    # Without a depth map the same settings leave the depth alone.
    r0 = refiner.refine([sc.fit], [dataclasses.replace(target, depth=None)], iterations=15, settings=only_depth)[0]
    assert abs(r0.transl[2] - sc.fit.transl[2]) < 1e-6


def test_second_view_averages_the_silhouette_term(models, refiner) -> None:
    """A side camera sees the depth error the front camera cannot (paper 001, Eq. 8)."""
    sc = scene(models, pose_noise=0.0, shift=(0.0, 0.0, 0.015))
    layer = models["right"]
    # The second camera looks at the hand from 60 degrees to the side, same distance.
    angle = np.radians(60.0)
    R = np.array([[np.cos(angle), 0, -np.sin(angle)], [0, 1, 0], [np.sin(angle), 0, np.cos(angle)]], np.float32)
    centre = sc.verts.mean(0)
    t = (centre - R @ centre).astype(np.float32)  # rotate about the hand's centre
    view_mask = hard_mask(layer, sc.verts @ R.T + t, K_TEST)
    _, kp_view = posed(layer, sc.truth.pose, sc.truth.betas, sc.truth.transl)
    view = RefineView(view_mask, K_TEST, R, t, project(kp_view @ R.T + t, K_TEST))
    st = dataclasses.replace(FAST, optimize_shape=False)
    mono = refiner.refine([sc.fit], [RefineTarget(sc.mask, sc.keypoints_2d, K_TEST)], iterations=10, settings=st)[0]
    stereo = refiner.refine([sc.fit], [RefineTarget(sc.mask, sc.keypoints_2d, K_TEST, views=(view,))],
                            iterations=10, settings=st)[0]

    def depth_error(r) -> float:
        return float(abs(r.keypoints_3d[:, 2].mean() - sc.truth.keypoints_3d[:, 2].mean()))

    assert depth_error(stereo) < 0.5 * depth_error(sc.fit)
    assert depth_error(stereo) < depth_error(mono)
    side_iou = [mask_iou(hard_mask(layer, v @ R.T + t, K_TEST), view_mask) for v in (mono.vertices, stereo.vertices)]
    assert side_iou[1] > side_iou[0]


def left_beside(models, pose: np.ndarray, betas: np.ndarray, right_verts: np.ndarray,
                offset: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(pose, transl) of the mirrored left hand whose centroid sits ``offset`` from the right one's."""
    from core.mirror import mirror_axis_angle

    lpose = pose.copy()
    lpose[3:] = mirror_axis_angle(pose[3:])
    v, _ = posed(models["left"], lpose, betas, np.zeros(3, np.float32))
    transl = right_verts.mean(0) + np.asarray(offset) - v.mean(0)
    return lpose, transl.astype(np.float32)


def test_penetration_is_positive_only_for_intersecting_hands(models) -> None:
    right, left = models["right"], models["left"]
    pose, zeros = gt_pose(), np.zeros(10, np.float32)
    vr_np = posed(right, pose, zeros, np.array([0.0, 0.0, 0.4], np.float32))[0]
    vr = torch.as_tensor(vr_np)

    def left_at(offset):
        lpose, lt = left_beside(models, pose, zeros, vr_np, offset)
        return torch.as_tensor(posed(left, lpose, zeros, lt)[0])

    near, far = left_at((0.01, 0.0, 0.0)), left_at((0.5, 0.0, 0.0))
    fr, fl = right.faces, left.faces
    assert float(penetration_loss(vr, fr, near, fl)) > 1e-4
    assert float(penetration_loss(vr, fr, far, fl)) == 0.0
    mean_pd, max_pd = penetration_stats(vr, fr, near, fl)
    assert 0.0 < mean_pd <= max_pd < 0.05
    assert penetration_stats(vr, fr, far, fl) == (0.0, 0.0)
    # Differentiable, and the gradient separates: two overlapping balls, the second to the right.
    va, fa = geodesic_ellipsoid((0.0, 0.0, 0.4), (0.01, 0.01, 0.01), 0.0, 3, torch.float64)
    vb, fb = geodesic_ellipsoid((0.015, 0.0, 0.4), (0.01, 0.01, 0.01), 0.0, 3, torch.float64)
    vb = vb.clone().requires_grad_(True)
    loss = penetration_loss(va, fa, vb, fb)
    loss.backward()
    assert float(loss.detach()) > 0.0
    assert float(vb.grad[:, 0].sum()) < 0.0  # moving the right ball further right lowers it


def test_penetration_term_keeps_two_refined_hands_apart(models, refiner) -> None:
    right, left = models["right"], models["left"]
    sc = scene(models, pose_noise=0.0, shift=(0.0, 0.0, 0.0))
    lpose, ltransl = left_beside(models, sc.fit.pose, sc.fit.betas, sc.verts, (0.015, 0.0, 0.0))
    lfit = make_fit(left, "left", lpose, sc.fit.betas, ltransl, K_TEST)
    lverts, lkp = posed(left, lpose, sc.fit.betas, ltransl)
    ltarget = RefineTarget(hard_mask(left, lverts, K_TEST), project(lkp, K_TEST), K_TEST)
    rtarget = RefineTarget(sc.mask, sc.keypoints_2d, K_TEST)
    before = penetration_stats(torch.as_tensor(sc.verts), right.faces, torch.as_tensor(lverts), left.faces)[0]
    depth = {}
    for w in (0.0, 10.0):
        # The term itself: the keypoints here say the hands intersect, so pushing them apart
        # costs keypoint error the guard would refuse.
        st = dataclasses.replace(FAST, w_penetration=w, keypoint_guard_px=None)
        rr, rl = refiner.refine([sc.fit, lfit], [rtarget, ltarget], iterations=8, settings=st)
        assert (rr.side, rl.side) == ("right", "left")
        depth[w] = penetration_stats(torch.as_tensor(rr.vertices), right.faces,
                                     torch.as_tensor(rl.vertices), left.faces)[0]
    assert before > 0.001  # millimetres deep
    assert depth[0.0] > 0.5 * before  # the silhouettes alone leave them intersecting
    assert depth[10.0] < 0.5 * depth[0.0]


def test_two_hands_apart_take_the_native_path_and_touching_ones_the_general(models, refiner, monkeypatch) -> None:
    """The live path has no penetration term; the refiner uses it for two hands and checks they
    do not interpenetrate: apart, the result is the one without the term (which is zero there);
    touching, the general path refines them again and keeps them apart."""
    from core.refine import path_native
    from core.render import _native as raster_native

    if raster_native.library() is None or not path_native._fused_native.available(np.float32):  # noqa: SLF001
        pytest.skip("the C kernels are not built (no C compiler)")
    general = []
    original = refiner._optimize  # noqa: SLF001 - counting the general path's runs
    monkeypatch.setattr(refiner, "_optimize", lambda *a: general.append(1) or original(*a))
    right, left = models["right"], models["left"]
    sc = scene(models, pose_noise=0.05)
    rtarget = RefineTarget(sc.mask, sc.keypoints_2d, K_TEST)
    depth = {}
    for name, offset in (("apart", (0.12, 0.0, 0.0)), ("touching", (0.015, 0.0, 0.0))):
        lpose, ltransl = left_beside(models, sc.fit.pose, sc.fit.betas, sc.verts, offset)
        lfit = make_fit(left, "left", lpose, sc.fit.betas, ltransl, K_TEST)
        lverts, lkp = posed(left, lpose, sc.fit.betas, ltransl)
        ltarget = RefineTarget(hard_mask(left, lverts, K_TEST), project(lkp, K_TEST), K_TEST)
        out = {}
        for w in (0.0, 10.0):
            st = dataclasses.replace(FAST, w_penetration=w, keypoint_guard_px=None)
            general.clear()
            out[w] = refiner.refine([sc.fit, lfit], [rtarget, ltarget], iterations=6, settings=st)
            out[w, "general"] = len(general)
        rr, rl = out[10.0]
        depth[name] = penetration_stats(torch.as_tensor(rr.vertices), right.faces,
                                        torch.as_tensor(rl.vertices), left.faces)[1]
        if name == "apart":
            assert out[0.0, "general"] == out[10.0, "general"] == 0
            for a, b in zip(out[0.0], out[10.0]):
                np.testing.assert_array_equal(a.vertices, b.vertices)
        else:
            assert out[0.0, "general"] == 0 and out[10.0, "general"] == 1
    assert depth["apart"] == 0.0


def test_bad_targets_raise_input_errors(models, refiner) -> None:
    from core.errors import InputError

    sc = scene(models)
    with pytest.raises(InputError):
        refiner.refine([sc.fit], [])
    with pytest.raises(InputError):
        refiner.refine([sc.fit], [RefineTarget(sc.mask[None], sc.keypoints_2d, K_TEST)])
    with pytest.raises(InputError):
        refiner.refine([sc.fit], [RefineTarget(sc.mask, sc.keypoints_2d[:5], K_TEST)])
    assert refiner.refine([], []) == []


# ----------------------------------------------------------------------------- engine and CLI

needs_demo = pytest.mark.skipif(not DEMO_CLIP_PATH.exists(), reason="demo clip not built")


@needs_demo
def test_engine_with_refinement_reports_silhouette_iou() -> None:
    from core.capture import open_source
    from core.engine import Engine, EngineSettings

    with open_source("demo") as src:
        frames = list(itertools.islice(src, 2))
    settings = EngineSettings(max_hands=1, device="cpu", refine_iterations=1, refine=FAST)
    with Engine(settings) as engine:
        results = [engine.process(f) for f in frames]
    hand = results[-1].to_json()["hands"][0]
    assert 0.0 < hand["silhouette_iou"] <= 1.0 and 0.0 < hand["silhouette_iou_before"] <= 1.0
    assert hand["edge_length_error_mm"] >= 0.0 and len(hand["joints_3d"]) == 21
    assert isinstance(hand["refinement_fell_back"], bool)
    fit_error = hand["fit_reprojection_error_px"]
    assert hand["reprojection_error_px"] <= fit_error + max(1.0, 0.1 * fit_error)
    assert {"segment", "refine"} <= set(results[-1].time_ms)
    json.dumps(results[-1].to_json())
    refined = results[-1].hands[0]
    np.testing.assert_array_equal(refined.keypoints_3d, refined.refined.keypoints_3d)
    plain = dataclasses.replace(refined, refined=None).to_json()  # what refine_iterations=0 gives
    assert plain["silhouette_iou"] is None and "silhouette_iou_before" not in plain
    assert plain["reprojection_error_px"] == plain["fit_reprojection_error_px"]


@needs_demo
def test_track_refine_on_a_tiny_clip(tmp_path: Path, capsys) -> None:
    import cv2

    import main as cli
    from core.capture import open_source

    with open_source("demo") as src:
        for f in itertools.islice(src, 2):
            cv2.imwrite(str(tmp_path / f"{f.index:03d}.png"), cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
    out = tmp_path / "r.jsonl"
    code = cli.main(["track", str(tmp_path), "--out", str(out), "--refine", "1", "--fov", "60", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 2
    ious = [h["silhouette_iou"] for line in lines for h in line["hands"]]
    assert ious and all(0.0 < v <= 1.0 for v in ious)
    assert "refine" in lines[0]["time_ms"]
    assert all("fit_reprojection_error_px" in h for line in lines for h in line["hands"])
    # The summary reports the final hands' error, and the fits' beside it.
    final = np.mean([h["reprojection_error_px"] for line in lines for h in line["hands"]])
    printed = capsys.readouterr()
    assert f"mean reprojection error {final:.2f} px (fit " in printed.out + printed.err


@pytest.mark.skipif(not DEMO_CLIP_PATH.exists(), reason="no demo clip")
def test_pipeline_benchmark_reports_the_whole_frame_with_texture() -> None:
    from core.tools.bench_refine import pipeline_ratio

    res = pipeline_ratio(1, max_frames=3, settings=FAST, texture=True)
    assert res["refine1_texture_frames"] == 3
    assert res["pipeline_refine1_texture_ratio"] > 0
    stages = res["refine1_texture_stage_ms"]
    assert {"detect", "fit", "segment", "refine", "texture"} <= set(stages)


def test_the_benchmarks_second_hand_lines_up_and_refines_as_alone() -> None:
    """``bench --only refine``'s two hands apart: the second hand's fit projects onto its own
    target, and refining both in one call gives each what refining it alone gives."""
    from core.refine import Refiner, RefineSettings
    from core.tools.bench_refine import synthetic_refine_cases, two_hands_apart

    cases, layers = synthetic_refine_cases(1, seed=3)
    fit, target, sample = cases[0]
    fit2, target2 = two_hands_apart(fit, target, sample, layers)
    h, w = np.shape(target.mask)
    assert target2.mask.shape == (h, 2 * w) and target2.mask.sum() > 0.5 * np.sum(target.mask)
    assert np.median(np.linalg.norm(fit2.keypoints_2d - target2.keypoints_2d, axis=1)) < 10.0
    assert np.nonzero(target2.mask)[1].mean() > np.nonzero(target.mask)[1].mean() + 50  # to the right
    refiner = Refiner(layers["right"].data, layers["left"].data, RefineSettings())
    both = refiner.refine([fit, fit2], [target, target2], iterations=3)
    alone = [refiner.refine([f], [t], iterations=3)[0] for f, t in ((fit, target), (fit2, target2))]
    for a, b in zip(both, alone):
        np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-5)
        # IoU is measured on the batch's crops: equal within the batched rasterizer's rounding
        assert a.iou_after == pytest.approx(b.iou_after, abs=0.01)
