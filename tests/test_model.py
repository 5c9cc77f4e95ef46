"""The hand model layer: the open hand's anatomy, smplx parity, MANO files, mirroring."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ModelFileError, UnsafePickleError
from core.keypoints import MANO_PARENTS, Keypoint
from core.mirror import mirror_axis_angle, mirror_points
from core.model import HandModel, load_model_data, mirror_model
from core.model.mano_pickle import load_mano_pickle
from tests.mano_files import write_mano_pickle


def winding_number(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Generalized winding number of points w.r.t. a closed mesh (1 inside, 0 outside)."""
    tri = vertices[faces]  # (F, 3, 3)
    out = []
    for p in points:
        a, b, c = (tri[:, i] - p for i in range(3))
        la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        num = np.einsum("ij,ij->i", a, np.cross(b, c))
        den = (la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", b, c) * la
               + np.einsum("ij,ij->i", c, a) * lb)
        out.append(np.sum(2 * np.arctan2(num, den)) / (4 * np.pi))
    return np.array(out)


def random_pose(n: int, scale: float = 0.3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 48, generator=g) * scale


# ----------------------------------------------------------------------------- open hand


def test_open_hand_counts_and_closed_surface(open_hand) -> None:
    assert open_hand.num_vertices == 1610
    assert open_hand.num_betas == 10
    assert tuple(open_hand.parents) == MANO_PARENTS
    edges = np.sort(open_hand.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all(), "the wrist must be closed: every edge shared by two faces"
    assert open_hand.uv is not None and open_hand.uv.min() >= 0 and open_hand.uv.max() <= 1


def test_mean_hand_is_a_plausible_adult_hand(hand_layer) -> None:
    length, width = hand_layer.measures()
    assert 0.170 <= length.item() <= 0.200
    assert 0.040 <= width.item() <= 0.055


def test_first_shape_component_scales_the_hand_monotonically(hand_layer) -> None:
    betas = torch.zeros(13, 10)
    betas[:, 0] = torch.linspace(-3, 3, 13)
    with torch.no_grad():
        out = hand_layer.rest(betas)
        length, width = hand_layer.measures(betas)
    extent = (out.vertices.amax(1) - out.vertices.amin(1)).norm(dim=1)
    for series in (length, width, extent):
        assert (series.diff() > 0).all()


def test_shape_components_have_unit_variance_scale(open_hand) -> None:
    # Unit-variance betas: beta_1 = 1 moves vertices by millimetres, not metres or microns.
    per_comp_rms = np.sqrt((open_hand.shapedirs**2).sum(1).mean(0))
    assert 1e-4 < per_comp_rms[0] < 0.02
    assert (np.diff(per_comp_rms[:5]) < 0).all(), "components are ordered by variance"


def test_joints_inside_and_fingertips_on_the_tip_surface(hand_layer, open_hand) -> None:
    with torch.no_grad():
        out = hand_layer.rest()
    v = out.vertices[0].numpy().astype(np.float64)
    kp = out.keypoints[0].numpy().astype(np.float64)
    joints = [k for k in range(1, 21) if k not in (4, 8, 12, 16, 20)]
    wn = winding_number(kp[joints], v, open_hand.faces)
    assert (wn > 0.5).all(), f"keypoints outside the mesh: {np.array(joints)[wn <= 0.5]}"
    # The wrist keypoint sits on the wrist's cut (MediaPipe's wrist crease): on the cap.
    cap = v[open_hand.faces[-20:]].reshape(-1, 3)
    assert np.abs(kp[0, 0] - cap[:, 0].mean()) < 0.006
    assert np.linalg.norm(kp[0, 1:] - cap[:, 1:].mean(0)) < 0.015
    # Each fingertip keypoint is the mesh point furthest along its distal phalanx.
    for tip in (4, 8, 12, 16, 20):
        direction = kp[tip] - kp[tip - 1]
        direction /= np.linalg.norm(direction)
        along = (v - kp[tip - 1]) @ direction
        near_axis = np.linalg.norm((v - kp[tip - 1]) - along[:, None] * direction, axis=1) < 0.012
        assert along[near_axis].max() <= direction @ (kp[tip] - kp[tip - 1]) + 1e-6


def test_positive_bend_is_flexion_toward_the_palm(hand_layer, open_hand) -> None:
    from core.model.anatomy import anatomical_to_axis_angle

    frames = torch.as_tensor(open_hand.rest_frames)
    angles = torch.zeros(16, 3)
    angles[1, 2] = 1.0  # index MCP bend
    pose = torch.zeros(1, 48)
    pose[0] = anatomical_to_axis_angle(angles, frames).reshape(48)
    with torch.no_grad():
        tip_rest = hand_layer.rest().keypoints[0, Keypoint.INDEX_TIP]
        tip_bent = hand_layer(pose).keypoints[0, Keypoint.INDEX_TIP]
    assert tip_bent[1] < tip_rest[1] - 0.03, "the palm faces -y: a flexed finger moves to -y"


# ----------------------------------------------------------------------------- layer


def test_batched_forward_matches_single_and_translation(hand_layer) -> None:
    pose, betas = random_pose(3), torch.randn(3, 10)
    transl = torch.tensor([[0.0, 0.0, 0.5], [0.1, 0.0, 0.4], [0.0, -0.1, 0.6]])
    with torch.no_grad():
        batch = hand_layer(pose, betas, transl)
        for i in range(3):
            one = hand_layer(pose[i : i + 1], betas[i : i + 1], transl[i : i + 1])
            torch.testing.assert_close(batch.vertices[i], one.vertices[0])
            torch.testing.assert_close(batch.keypoints[i], one.keypoints[0])
    assert batch.vertices.shape == (3, 1610, 3)
    assert batch.joints.shape == (3, 16, 3)
    assert batch.keypoints.shape == (3, 21, 3)


def test_forward_rejects_bad_shapes(hand_layer) -> None:
    with pytest.raises(ValueError, match="pose"):
        hand_layer(torch.zeros(1, 45))
    with pytest.raises(ValueError, match="betas"):
        hand_layer(torch.zeros(1, 48), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="batch"):
        hand_layer(torch.zeros(2, 48), torch.zeros(3, 10))


def test_gradients_match_finite_differences(open_hand) -> None:
    layer = HandModel(open_hand, dtype=torch.float64)
    pose = (random_pose(1, 0.2, seed=3).double()).requires_grad_(True)
    betas = torch.randn(1, 10, dtype=torch.float64).requires_grad_(True)

    def f(p: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return layer(p, b).keypoints[:, [0, 4, 8, 12, 16, 20]]

    assert torch.autograd.gradcheck(f, (pose, betas), eps=1e-6, atol=1e-5)


def test_fingertips_and_joints_follow_the_mediapipe_order(hand_layer) -> None:
    with torch.no_grad():
        out = hand_layer.rest()
    kp, joints = out.keypoints[0], out.joints[0]
    torch.testing.assert_close(kp[Keypoint.WRIST], joints[0])
    torch.testing.assert_close(kp[Keypoint.INDEX_MCP], joints[1])
    torch.testing.assert_close(kp[Keypoint.THUMB_CMC], joints[13])
    torch.testing.assert_close(kp[Keypoint.PINKY_MCP], joints[7])
    torch.testing.assert_close(kp[Keypoint.RING_MCP], joints[10])
    # Fingers point +x from the wrist; each finger's keypoints move outward.
    for base in (5, 9, 13, 17):
        assert (kp[base : base + 4, 0].diff() > 0).all()


# ----------------------------------------------------------------------------- MANO files


def test_mano_pickle_gives_identical_forward(tmp_path: Path, open_hand, hand_layer) -> None:
    path = write_mano_pickle(tmp_path / "MANO_RIGHT.pkl", open_hand)
    data = load_model_data(path)
    assert data.sha256 != open_hand.sha256 and data.side == "right"
    layer = HandModel(data)
    pose, betas = random_pose(4), torch.randn(4, 10)
    with torch.no_grad():
        a, b = hand_layer(pose, betas), layer(pose, betas)
    torch.testing.assert_close(a.vertices, b.vertices, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.joints, b.joints, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.keypoints, b.keypoints, rtol=0, atol=1e-6)


def test_model_chosen_by_environment_variable(tmp_path: Path, open_hand, monkeypatch) -> None:
    write_mano_pickle(tmp_path / "MANO_RIGHT.pkl", open_hand)
    monkeypatch.setenv("HANDTWIN_MODEL", str(tmp_path))
    assert load_model_data().source == str(tmp_path / "MANO_RIGHT.pkl")


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "MANO_RIGHT.pkl"
    bad.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(UnsafePickleError, match="system"):
        load_mano_pickle(bad)
    with pytest.raises(ModelFileError):
        load_model_data(bad)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, error",
    [
        (b"not a pickle at all", "not a readable MANO pickle"),
        (pickle.dumps([1, 2, 3], protocol=2), "expected a dict"),
        (pickle.dumps({"v_template": np.zeros((3, 3))}, protocol=2), "missing"),
    ],
)
def test_malformed_model_files_give_clear_errors(tmp_path: Path, payload: bytes, error: str) -> None:
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(payload)
    with pytest.raises(ModelFileError, match=error):
        load_model_data(path)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        load_model_data(tmp_path / "nope.pkl")


def test_left_mano_shapedirs_sign_is_fixed(tmp_path: Path, open_hand) -> None:
    # Official MANO_LEFT.pkl: the mesh is mirrored but shapedirs' x rows are not.
    left = mirror_model(open_hand)
    write_mano_pickle(tmp_path / "MANO_RIGHT.pkl", open_hand)
    write_mano_pickle(tmp_path / "MANO_LEFT.pkl", left, shapedirs=open_hand.shapedirs)
    raw = load_mano_pickle(tmp_path / "MANO_LEFT.pkl")
    assert np.allclose(raw["shapedirs"], open_hand.shapedirs)  # the bug is in the file
    right_layer = HandModel(load_model_data(tmp_path, "right"))
    left_layer = HandModel(load_model_data(tmp_path, "left"))
    betas = torch.randn(2, 10) * 2
    with torch.no_grad():
        r = right_layer.rest(betas).vertices
        lv = left_layer.rest(betas).vertices
    torch.testing.assert_close(lv, mirror_points(r), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- mirroring


def test_left_open_hand_is_the_mirror_image(open_hand, hand_layer) -> None:
    left = HandModel(load_model_data(None, "left"))
    pose, betas = random_pose(2), torch.randn(2, 10)
    with torch.no_grad():
        r = hand_layer(pose, betas)
        lo = left(mirror_axis_angle(pose), betas)
    torch.testing.assert_close(lo.vertices, mirror_points(r.vertices), rtol=0, atol=1e-5)
    torch.testing.assert_close(lo.keypoints, mirror_points(r.keypoints), rtol=0, atol=1e-5)
    # Mirrored faces keep normals pointing outward (positive signed volume).
    v = lo.vertices[0].numpy().astype(np.float64)
    f = left.data.faces
    volume = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
    assert volume > 0
