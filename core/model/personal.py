"""The personal hand model: a base model whose rest mesh follows a person's own skeleton.

A person's hand differs from the template in bone lengths and palm layout, which the shape
space cannot express (posed optimally onto a subject's true 3D joints, the mean open hand
leaves about 6.7 mm PA-MPJPE, 6.4 mm with free betas; a free skeleton about 2.5 mm).
:func:`personal_model` turns a base :class:`~core.model.data.HandModelData` plus a **personal
skeleton** (the 21 rest keypoints, MediaPipe order, metres, the model's rest frame) and optional
**surface offsets** (V, 3) into a new ``HandModelData`` of the same structure, so every later
stage (the fit and its C kernels, refinement, texture, rigged export) runs on it unchanged.

How the rest mesh follows the skeleton (a skinning-weight blend of per-bone transforms):

* every finger/thumb joint j owns the bone from its keypoint to its child keypoint. Its
  transform maps the base joint onto the personal joint, turns the base bone direction onto the
  personal one by the smallest rotation, stretches along the bone by the length ratio and
  scales across it by the skeleton's overall scale ``s`` (ratio of the summed bone lengths):
  ``x -> p'_j + R_j (s I + (a_j - s) d d^T) (x - p_j)``. A bone's transform and its child's
  agree at the joint between them, so the blend is smooth there;
* the wrist joint owns the palm: an affine map fitted to the palm keypoints (wrist, thumb CMC,
  the four MCPs) by ridge regression toward the scaled best rotation (the palm's points are
  nearly coplanar: the ridge keeps the thickness at ``s``), plus a Gaussian radial correction
  that makes it hit each palm keypoint exactly (so it agrees with the finger bones at the MCPs);
* each vertex moves by ``sum_j w_vj T_j(x_v)`` (its skinning weights); shape and pose blend
  shapes turn with the blended linear part ``sum_j w_vj L_j``.

Afterwards the keypoints are made exact: the fingertip residual is spread over the distal
segment by its skinning weight and the joint regressor's rows are changed by the least amount
(on their support plus the nearest vertices) that regresses the personal joints.

The skeleton is attained at the given ``betas`` (zeros by default): ``HandModel(personal)
.rest(betas).keypoints == skeleton``, so a profile's shape and skeleton stay one identity.
The skeleton's parametrization and anatomical priors live in :mod:`core.model.skeleton`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from core.errors import ModelFileError
from core.keypoints import MANO21_TO_MEDIAPIPE, MANO_JOINT_TO_KEYPOINT, NUM_JOINTS, Keypoint, bone_lengths
from core.model import anatomy
from core.model.data import HandModelData

#: Palm keypoints the wrist joint's transform is fitted to (the wrist first).
PALM_KEYPOINTS: tuple[int, ...] = (
    Keypoint.WRIST, Keypoint.THUMB_CMC, Keypoint.INDEX_MCP, Keypoint.MIDDLE_MCP,
    Keypoint.RING_MCP, Keypoint.PINKY_MCP,
)

#: Ridge strength of the palm's affine map, relative to the mean squared palm extent.
_PALM_RIDGE = 0.05
#: Width of the palm's radial correction, relative to the wrist-to-middle-MCP length.
_PALM_RBF_SIGMA = 0.2
#: Nearest vertices added to a joint regressor row's support before it is made exact.
_REGRESSOR_NEIGHBOURS = 8
#: Width of the hand-over between two bones of one finger, metres (see :func:`warp_weights`).
_JOINT_BLEND = 0.0015

#: The three MANO joints of each finger, proximal first (index, middle, pinky, ring, thumb).
_FINGER_CHAINS = ((1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12), (13, 14, 15))


def model_rest_keypoints(base: HandModelData, betas: np.ndarray | None = None) -> np.ndarray:
    """(21, 3) float64 rest keypoints of a model at ``betas`` (None: the mean shape), MediaPipe order."""
    v = _shaped(base, betas)
    joints = base.j_regressor.astype(np.float64) @ v
    return np.concatenate([joints, v[base.tip_vertex_ids]])[list(MANO21_TO_MEDIAPIPE)]


def _shaped(d: HandModelData, betas: np.ndarray | None) -> np.ndarray:
    v = d.v_template.astype(np.float64)
    if betas is None:
        return v
    b = np.asarray(betas, dtype=np.float64).reshape(-1)
    if b.shape[0] != d.num_betas:
        raise ValueError(f"betas must have {d.num_betas} values, got {b.shape[0]}")
    return v + d.shapedirs.astype(np.float64) @ b


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation turning unit vector ``a`` onto unit vector ``b`` (3, 3)."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if c < -1.0 + 1e-9:  # opposite: any half turn about an axis orthogonal to a
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def _kabsch(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rotation R (3, 3) minimizing sum ||R x_i - y_i||^2 (rows are points, centred)."""
    u, _, vt = np.linalg.svd(y.T @ x)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, d]) @ vt


@dataclasses.dataclass(frozen=True)
class SkeletonWarp:
    """The rest-space map from a base skeleton to a personal one (see the module docstring).

    Attributes:
        linear: (16, 3, 3) float64 linear part of each joint's transform (MANO joint order).
        origin: (16, 3) base point each transform is centred on, metres.
        target: (16, 3) where that point goes, metres.
        palm_points: (6, 3) base palm keypoints (:data:`PALM_KEYPOINTS`), metres.
        palm_rbf: (6, 3) Gaussian radial correction coefficients of the palm, metres.
        palm_sigma: width of those Gaussians, metres.
        scale: the overall scale ``s`` (personal / base summed bone lengths).
    """

    linear: np.ndarray
    origin: np.ndarray
    target: np.ndarray
    palm_points: np.ndarray
    palm_rbf: np.ndarray
    palm_sigma: float
    scale: float

    def _palm_correction(self, x: np.ndarray) -> np.ndarray:
        d2 = ((x[:, None, :] - self.palm_points[None]) ** 2).sum(-1)
        return np.exp(-0.5 * d2 / self.palm_sigma**2) @ self.palm_rbf

    def per_joint(self, x: np.ndarray) -> np.ndarray:
        """(N, 16, 3) each point mapped by every joint's transform. x: (N, 3) metres."""
        out = np.einsum("jab,njb->nja", self.linear, x[:, None, :] - self.origin[None]) + self.target[None]
        out[:, 0] += self._palm_correction(x)
        return out

    def apply(self, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(N, 3) points moved by the weight-blended transforms. weights: (N, 16), rows sum to 1."""
        return np.einsum("nj,nja->na", weights, self.per_joint(x))

    def blended_linear(self, weights: np.ndarray) -> np.ndarray:
        """(N, 3, 3) weight-blended linear parts (for displacement fields: blend shapes, offsets)."""
        return np.einsum("nj,jab->nab", weights, self.linear)


def skeleton_warp(base_keypoints: np.ndarray, skeleton: np.ndarray) -> SkeletonWarp:
    """The per-joint transforms taking the base rest skeleton onto a personal one.

    Args:
        base_keypoints: (21, 3) base rest keypoints, MediaPipe order, metres.
        skeleton: (21, 3) personal rest keypoints, same order and frame, metres.
    """
    src = np.asarray(base_keypoints, dtype=np.float64)
    dst = np.asarray(skeleton, dtype=np.float64)
    scale = float(bone_lengths(dst).sum() / bone_lengths(src).sum())
    linear = np.zeros((NUM_JOINTS, 3, 3))
    origin = np.zeros((NUM_JOINTS, 3))
    target = np.zeros((NUM_JOINTS, 3))
    for j in range(1, NUM_JOINTS):
        k, c = MANO_JOINT_TO_KEYPOINT[j], anatomy.CHILD_KEYPOINT[j]
        a, b = src[c] - src[k], dst[c] - dst[k]
        la, lb = np.linalg.norm(a), np.linalg.norm(b)
        d = a / la
        stretch = scale * np.eye(3) + (lb / la - scale) * np.outer(d, d)
        linear[j] = _rotation_between(d, b / lb) @ stretch
        origin[j], target[j] = src[k], dst[k]
    # The palm: ridge-regressed affine map about the wrist + exact radial correction.
    palm = list(PALM_KEYPOINTS)
    x = src[palm[1:]] - src[Keypoint.WRIST]
    y = dst[palm[1:]] - dst[Keypoint.WRIST]
    prior = scale * _kabsch(x, y)
    lam = _PALM_RIDGE * float((x**2).sum()) / 3.0
    a_palm = (y.T @ x + lam * prior) @ np.linalg.inv(x.T @ x + lam * np.eye(3))
    linear[0], origin[0], target[0] = a_palm, src[Keypoint.WRIST], dst[Keypoint.WRIST]
    residual = np.vstack([np.zeros(3), y - x @ a_palm.T])
    pts = src[palm]
    sigma = _PALM_RBF_SIGMA * float(np.linalg.norm(src[Keypoint.MIDDLE_MCP] - src[Keypoint.WRIST]))
    kern = np.exp(-0.5 * ((pts[:, None] - pts[None]) ** 2).sum(-1) / sigma**2)
    rbf = np.linalg.solve(kern, residual)
    return SkeletonWarp(linear, origin, target, pts, rbf, sigma, scale)


def warp_weights(weights: np.ndarray, vertices: np.ndarray, base_keypoints: np.ndarray) -> np.ndarray:
    """(V, 16) the weights that blend the rest warp's bone transforms.

    Skinning weights spread a finger's vertices over its bones far from the joints (12 % of a
    thumb's nail on the proximal phalanx); blending two bones stretched very differently there
    shears the skin and can flip small faces. Within each finger the finger's total weight is
    therefore handed from bone to bone by position along the finger instead: a smooth step,
    :data:`_JOINT_BLEND` wide, across the plane through each joint that halves the angle of the
    two bones. The palm's share stays the skinning weight's.

    Args:
        weights: (V, 16) skinning weights. vertices: (V, 3) rest vertices, metres.
        base_keypoints: (21, 3) the rest keypoints of those vertices, MediaPipe order.
    """
    out = np.asarray(weights, dtype=np.float64).copy()
    x = np.asarray(vertices, dtype=np.float64)
    kp = np.asarray(base_keypoints, dtype=np.float64)
    for chain in _FINGER_CHAINS:
        total = out[:, list(chain)].sum(1)
        dirs = []
        for j in chain:
            b = kp[anatomy.CHILD_KEYPOINT[j]] - kp[MANO_JOINT_TO_KEYPOINT[j]]
            dirs.append(b / np.linalg.norm(b))
        past = []  # smooth indicator of being distal to the 2nd and 3rd joints
        for i in (1, 2):
            normal = dirs[i - 1] + dirs[i]
            normal /= np.linalg.norm(normal)
            dist = (x - kp[MANO_JOINT_TO_KEYPOINT[chain[i]]]) @ normal
            past.append(1.0 / (1.0 + np.exp(-np.clip(dist / _JOINT_BLEND, -60, 60))))
        second = np.minimum(past[0], 1.0) - np.minimum(past[1], past[0])
        share = np.stack([1.0 - past[0], np.clip(second, 0.0, None), np.minimum(past[1], past[0])], 1)
        share /= share.sum(1, keepdims=True)
        out[:, list(chain)] = total[:, None] * share
    return out


def _exact_regressor(reg: np.ndarray, verts: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Rows changed least (on their support + nearest vertices) so that ``reg @ verts == joints``
    and each row still sums to 1."""
    out = reg.astype(np.float64).copy()
    for j in range(reg.shape[0]):
        near = np.argsort(((verts - joints[j]) ** 2).sum(1))[:_REGRESSOR_NEIGHBOURS]
        support = np.union1d(np.flatnonzero(reg[j]), near)
        a = np.vstack([verts[support].T, np.ones(len(support))])  # (4, n)
        b = np.append(joints[j], 1.0)
        out[j, support] += np.linalg.pinv(a) @ (b - a @ out[j, support])
    return out


def personal_model(
    base: HandModelData,
    skeleton: np.ndarray,
    offsets: np.ndarray | None = None,
    betas: np.ndarray | None = None,
) -> HandModelData:
    """A personal hand model: ``base`` with its rest mesh following ``skeleton``.

    Args:
        base: the base model (open hand or MANO, either side).
        skeleton: (21, 3) personal rest keypoints (16 joints + 5 tips), MediaPipe order,
            metres, the base model's rest frame (a left model: the left hand's frame).
        offsets: (V, 3) per-vertex surface offsets in metres, in the personal rest frame, added
            after the skeleton warp, exactly (the rest mesh is the offset-free personal mesh
            plus ``offsets``), except at the five fingertip vertices, which stay on the
            skeleton's tips (their offsets are ignored); None for none.
        betas: (S,) the shape at which the personal model's rest keypoints equal ``skeleton``
            (a profile's shape); None for the mean shape.

    Returns:
        A new :class:`HandModelData` (same faces, UVs, weights, tips, limits, side) whose
        ``HandModel(...).rest(betas)`` keypoints equal ``skeleton``; the base itself for the
        base's own skeleton without offsets.

    Raises:
        ModelFileError: a skeleton or offsets of the wrong shape, non-finite, or degenerate
        (a zero-length bone).
    """
    skel = np.asarray(skeleton, dtype=np.float64)
    if skel.shape != (21, 3) or not np.isfinite(skel).all():
        raise ModelFileError(f"a personal skeleton must be 21 finite 3D keypoints, got shape {skel.shape}")
    if np.any(bone_lengths(skel) < 1e-4):
        raise ModelFileError("a personal skeleton has a zero-length bone")
    if offsets is not None:
        offsets = np.asarray(offsets, dtype=np.float64)
        if offsets.shape != (base.num_vertices, 3) or not np.isfinite(offsets).all():
            raise ModelFileError(
                f"surface offsets must be finite ({base.num_vertices}, 3) metres, got shape {offsets.shape}"
            )
    base_kp = model_rest_keypoints(base, betas)
    if offsets is None and np.allclose(skel, base_kp, rtol=0.0, atol=1e-9):
        return base
    v_shaped = _shaped(base, betas)
    weights = warp_weights(base.weights, v_shaped, base_kp)
    warp = skeleton_warp(base_kp, skel)
    lin = warp.blended_linear(weights)
    verts = warp.apply(v_shaped, weights)
    # Fingertips exact: spread each residual over its distal segment by skinning weight.
    for t, vid in enumerate(base.tip_vertex_ids):
        kp_tip = (Keypoint.THUMB_TIP, Keypoint.INDEX_TIP, Keypoint.MIDDLE_TIP, Keypoint.RING_TIP, Keypoint.PINKY_TIP)[t]
        joint = MANO21_TO_MEDIAPIPE[kp_tip - 1]  # the distal joint carrying the tip
        w = base.weights[:, joint].astype(np.float64)
        if w[vid] > 1e-6:
            verts += np.outer(np.minimum(w / w[vid], 1.0), skel[kp_tip] - verts[vid])
        verts[vid] = skel[kp_tip]
    if offsets is not None:  # the surface, exactly (the tip vertices are the skeleton's keypoints)
        offsets = offsets.copy()
        offsets[base.tip_vertex_ids] = 0.0
        verts = verts + offsets
    shapedirs = np.einsum("vab,vbs->vas", lin, base.shapedirs.astype(np.float64))
    posedirs = np.einsum("vab,vbp->vap", lin, base.posedirs.astype(np.float64))
    template = verts - (0.0 if betas is None else shapedirs @ np.asarray(betas, dtype=np.float64).reshape(-1))
    joints = skel[list(MANO_JOINT_TO_KEYPOINT)]
    reg = _exact_regressor(base.j_regressor, verts, joints)
    provenance = dict(base.provenance)
    provenance["personal"] = {
        "base_name": base.name,
        "base_sha256": base.sha256,
        "scale": round(warp.scale, 6),
        "surface_offsets": offsets is not None,
    }
    return dataclasses.replace(
        base,
        name=base.name if base.name.endswith("(personal)") else f"{base.name} (personal)",
        v_template=template.astype(np.float32),
        shapedirs=shapedirs.astype(np.float32),
        posedirs=posedirs.astype(np.float32),
        j_regressor=reg.astype(np.float32),
        rest_frames=anatomy.rest_frames(skel, is_left=base.side == "left"),
        provenance=provenance,
    )


@dataclasses.dataclass(frozen=True)
class PersonalIdentity:
    """A person's hand identity beyond the shape coefficients (what a profile carries).

    Attributes:
        shape: (S,) float32 shape coefficients.
        skeleton: (21, 3) float64 rest keypoints, metres, in the **right** hand's rest frame at
            ``shape`` (a left hand uses its mirror image), or None for the model's own.
        offsets: (V, 3) float64 surface offsets, metres, right hand's rest frame, or None.
    """

    shape: np.ndarray
    skeleton: np.ndarray | None = None
    offsets: np.ndarray | None = None

    @property
    def is_personal(self) -> bool:
        return self.skeleton is not None or self.offsets is not None


def identity_model(base: HandModelData, identity: PersonalIdentity | None) -> HandModelData:
    """``base`` (either side) made personal by ``identity`` (mirrored for a left hand); ``base``
    itself when the identity has no skeleton or offsets.

    Raises:
        ModelFileError: the identity does not fit the model (vertex count, a degenerate skeleton).
    """
    from core.mirror import mirror_points

    if identity is None or not identity.is_personal:
        return base
    skel = identity.skeleton
    offsets = identity.offsets
    if base.side == "left":
        skel = None if skel is None else mirror_points(np.asarray(skel, dtype=np.float64))
        offsets = None if offsets is None else mirror_points(np.asarray(offsets, dtype=np.float64))
    if offsets is not None and np.shape(offsets) != (base.num_vertices, 3):
        raise ModelFileError(f"the profile's surface offsets have {np.shape(offsets)[0]} vertices; the hand model "
                             f"{base.name!r} has {base.num_vertices} (a profile of another model?)")
    if skel is None:
        skel = model_rest_keypoints(base, identity.shape)
    return personal_model(base, skel, offsets, betas=np.asarray(identity.shape, dtype=np.float64))
