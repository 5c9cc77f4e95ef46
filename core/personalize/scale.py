"""Metric scale of a calibrated hand: monocular RGB sees proportions, not absolute size.

With a known camera, a hand twice as big twice as far away projects to the same pixels, so a
free-shape fit's size comes from the model's shape prior (and the confidence-weighted
calibration inherits it). :class:`ScaleOption` says how the size is pinned and the profile
records it as ``scale_source``:

- ``"prior"``: keep the size the shape prior gives (no measurement; see the benchmark for its
  honest absolute error);
- ``"hand_length"``: a hand length the user measured with a ruler (wrist crease to the tip of
  the middle finger, hand flat);
- ``"aruco"``: the hand laid flat on a printed ArUco grid or ChArUco sheet: the sheet's pose
  from its markers (known intrinsics), keypoint rays intersected with the sheet's plane
  (:func:`sheet_pose`, :func:`keypoints_on_plane`);
- ``"stereo"``: two calibrated cameras: keypoints triangulated
  (:func:`triangulate_keypoints`);
- ``"depth"``: an RGB-D source: each fit scaled onto the measured depth map
  (:mod:`core.metric_depth`), its keypoints then metric.

ArUco and stereo give metric 3D keypoints; bone lengths are pose-independent, so the ratio of
measured to model bone lengths (:func:`scale_from_keypoints`) is the size factor. A size
factor is turned back into a shape of the model's space by :func:`pin_scale` (the uniformly
scaled hand projected onto the shape space, then the hand length matched exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.capture.stereo import StereoCalibration, load_stereo_calibration, triangulate_keypoints  # noqa: F401
from core.errors import InputError
from core.keypoints import KEYPOINT_PARENTS, Keypoint
from core.model import HandModel

SCALE_SOURCES = ("prior", "hand_length", "aruco", "stereo", "depth")

_PARENTS = np.array(KEYPOINT_PARENTS[1:])
_CHILDREN = np.arange(1, 21)
#: Bones (index into the 20 child keypoints 1..20) that lie in the sheet's plane when the hand
#: is flat on it: palm rays and the four fingers (the thumb rarely lies flat).
FLAT_BONES: tuple[int, ...] = tuple(c - 1 for c in range(5, 21))
ALL_BONES: tuple[int, ...] = tuple(range(20))


@dataclass(frozen=True)
class ScaleOption:
    """How the calibrated hand's absolute size is fixed.

    Attributes:
        source: one of :data:`SCALE_SOURCES`.
        hand_length_mm: the measured hand length ("hand_length").
        keypoints_3d: (N, 21, 3) metric keypoints measured on N frames, metres, any frame
            ("aruco", "stereo"); MediaPipe order.
        bones: which of the 20 bones (child keypoint - 1) the keypoints measure reliably.
    """

    source: str = "prior"
    hand_length_mm: float | None = None
    keypoints_3d: np.ndarray | None = None
    bones: tuple[int, ...] = ALL_BONES

    def __post_init__(self) -> None:
        if self.source not in SCALE_SOURCES:
            raise InputError(f"unknown scale source {self.source!r} (one of {', '.join(SCALE_SOURCES)})")
        if self.source == "hand_length":
            L = self.hand_length_mm
            if L is None or not np.isfinite(L) or not 80.0 <= float(L) <= 300.0:
                raise InputError(f"a hand length must be between 80 and 300 mm (got {L})")
        if self.source in ("aruco", "stereo", "depth"):
            kp = None if self.keypoints_3d is None else np.asarray(self.keypoints_3d, dtype=np.float64)
            if kp is None or kp.ndim != 3 or kp.shape[1:] != (21, 3) or kp.shape[0] == 0 or not np.isfinite(kp).all():
                raise InputError(f"the {self.source} scale needs measured keypoints (N, 21, 3); none were measured")

    @staticmethod
    def from_hand_length(length_mm: float) -> "ScaleOption":
        return ScaleOption("hand_length", hand_length_mm=float(length_mm))


# ----------------------------------------------------------------------------- shape space


def rest_keypoint_basis(layer: HandModel) -> tuple[np.ndarray, np.ndarray]:
    """Rest keypoints are affine in the shape: kp(b) = k0 + Kd @ b. Returns k0 (21, 3), Kd (63, S)."""
    s = layer.num_betas
    basis = torch.cat([torch.zeros(1, s), torch.eye(s)])
    with torch.no_grad():
        kp = layer.rest(basis).keypoints.double().numpy()
    k0 = kp[0]
    kd = (kp[1:] - k0).reshape(s, 63).T
    return k0, kd


def bone_lengths(keypoints: np.ndarray) -> np.ndarray:
    """(..., 20) bone lengths (child order 1..20 of the keypoint tree) of (..., 21, 3) keypoints."""
    kp = np.asarray(keypoints, dtype=np.float64)
    return np.linalg.norm(kp[..., _CHILDREN, :] - kp[..., _PARENTS, :], axis=-1)


def measures(layer: HandModel, betas: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(hand length m, hand width m, bone lengths (20,) m) of a shape in the flat rest pose."""
    with torch.no_grad():
        kp = layer.rest(torch.as_tensor(np.asarray(betas, dtype=np.float32))[None]).keypoints[0].double().numpy()
    length = float(np.linalg.norm(kp[Keypoint.MIDDLE_TIP] - kp[Keypoint.WRIST]))
    width = float(np.linalg.norm(kp[Keypoint.RING_MCP] - kp[Keypoint.INDEX_MCP]))
    return length, width, bone_lengths(kp)


def pin_scale(layer: HandModel, betas: np.ndarray, factor: float, max_beta: float = 4.0) -> np.ndarray:
    """The shape whose hand is ``factor`` times as big as ``betas``' one, proportions kept.

    The rest mesh scaled about its wrist is projected onto the shape space (least squares
    over vertices, with a free translation), then moved along the hand-length gradient (the
    smallest change) until the hand length is exactly ``factor`` times the original.

    Returns:
        (S,) float32.
    """
    b = np.asarray(betas, dtype=np.float64)
    v0, dirs, k0, kd, pinv = _shape_space(layer)
    verts = v0 + dirs @ b
    wrist = (k0 + (kd @ b).reshape(21, 3))[Keypoint.WRIST]
    target = wrist + factor * (verts - wrist)
    s = b.shape[0]
    sol = pinv @ (target - v0).reshape(-1)  # least squares over vertices, with a free translation
    out = np.clip(sol[:s], -max_beta, max_beta)

    def length(x: np.ndarray) -> tuple[float, np.ndarray]:
        kp = (k0.reshape(-1) + kd @ x).reshape(21, 3)
        diff = kp[Keypoint.MIDDLE_TIP] - kp[Keypoint.WRIST]
        L = float(np.linalg.norm(diff))
        dl = (diff / L) @ (kd.reshape(21, 3, s)[Keypoint.MIDDLE_TIP] - kd.reshape(21, 3, s)[Keypoint.WRIST])
        return L, dl

    goal = factor * length(b)[0]
    for _ in range(4):  # along the gradient of the components not at their bound: the length stays exact
        L, g = length(out)
        g = np.where(np.abs(out) >= max_beta, 0.0, g)
        out = np.clip(out + g * (goal - L) / max(float(g @ g), 1e-12), -max_beta, max_beta)
    return out.astype(np.float32)


_SHAPE_SPACES: dict[int, tuple] = {}


def _shape_space(layer: HandModel) -> tuple[np.ndarray, ...]:
    """(v_template, shapedirs (V, 3, S), k0, Kd, pseudo-inverse of [shapedirs | translation])
    of a layer's model, computed once per model (RGB-D and stereo scale fits every frame)."""
    d = layer.data
    cached = _SHAPE_SPACES.get(id(d))
    if cached is None or cached[0] is not d:
        v0 = d.v_template.astype(np.float64)
        dirs = d.shapedirs.astype(np.float64)
        n, s = dirs.shape[0], dirs.shape[2]
        a = np.concatenate([dirs.reshape(n * 3, s), np.tile(np.eye(3), (n, 1))], axis=1)
        k0, kd = rest_keypoint_basis(layer)
        cached = (d, (v0, dirs, k0, kd, np.linalg.pinv(a)))
        if len(_SHAPE_SPACES) > 16:
            _SHAPE_SPACES.clear()
        _SHAPE_SPACES[id(d)] = cached
    return cached[1]


def pin_hand_length(layer: HandModel, betas: np.ndarray, length_m: float) -> np.ndarray:
    """The shape with the proportions of ``betas`` and a hand length of ``length_m`` metres."""
    current = measures(layer, betas)[0]
    return pin_scale(layer, betas, float(length_m) / current)


def scale_from_keypoints(layer: HandModel, betas: np.ndarray, keypoints_3d: np.ndarray,
                         bones: tuple[int, ...] = ALL_BONES) -> float:
    """Size factor from measured metric keypoints (N, 21, 3): the median over frames of
    sum(measured bone lengths) / sum(model bone lengths) over ``bones``."""
    model = measures(layer, betas)[2][list(bones)]
    meas = bone_lengths(np.asarray(keypoints_3d, dtype=np.float64).reshape(-1, 21, 3))[:, list(bones)]
    ratios = meas.sum(1) / model.sum()
    return float(np.median(ratios))


def apply_scale(layer: HandModel, betas: np.ndarray, option: ScaleOption | None) -> np.ndarray:
    """The calibrated shape with its size pinned as ``option`` says ("prior": unchanged)."""
    if option is None or option.source == "prior":
        return np.asarray(betas, dtype=np.float32)
    if option.source == "hand_length":
        return pin_hand_length(layer, betas, float(option.hand_length_mm) / 1000.0)
    factor = scale_from_keypoints(layer, betas, option.keypoints_3d, option.bones)
    if not 0.5 < factor < 2.0:
        raise InputError(f"the {option.source} measurement makes the hand {factor:.2f} times the calibrated size; "
                         "check the sheet size or the stereo calibration")
    return pin_scale(layer, betas, factor)


def scale_note(source: str, hand_length_mm: float) -> str:
    """One plain sentence on where a calibrated hand's size comes from (profiles, GUI, CLI)."""
    if source == "prior":
        return (f"Size is the population prior ({hand_length_mm:.0f} mm hand length), not a measurement: "
                "no metric anchor (a known hand length, an ArUco sheet or a stereo pair) was given, so the "
                "proportions are this hand's but its absolute size is the average hand's.")
    how = {"hand_length": "a hand length you measured", "aruco": "the ArUco sheet under the hand",
           "stereo": "the calibrated stereo pair", "depth": "the depth camera"}.get(source, source)
    return f"Size from a measurement ({how}): {hand_length_mm:.0f} mm hand length."


# ----------------------------------------------------------------------------- ArUco / ChArUco


@dataclass(frozen=True)
class SheetSpec:
    """A printed marker sheet.

    Attributes:
        kind: "charuco" or "aruco" (a grid of markers).
        squares: (columns, rows) of the ChArUco chessboard, or of the marker grid.
        square_mm: ChArUco square side; for a marker grid, the marker side.
        marker_mm: ChArUco marker side; for a marker grid, the gap between markers.
        dictionary: OpenCV predefined dictionary name, e.g. "DICT_4X4_50".
    """

    kind: str = "charuco"
    squares: tuple[int, int] = (5, 7)
    square_mm: float = 35.0
    marker_mm: float = 26.0
    dictionary: str = "DICT_4X4_50"

    def board(self):
        import cv2

        aruco = cv2.aruco
        if not hasattr(aruco, self.dictionary):
            raise InputError(f"unknown ArUco dictionary {self.dictionary!r}")
        dic = aruco.getPredefinedDictionary(getattr(aruco, self.dictionary))
        if self.kind == "charuco":
            return aruco.CharucoBoard(tuple(self.squares), self.square_mm / 1000.0, self.marker_mm / 1000.0, dic)
        if self.kind == "aruco":
            return aruco.GridBoard(tuple(self.squares), self.square_mm / 1000.0, self.marker_mm / 1000.0, dic)
        raise InputError(f"unknown sheet kind {self.kind!r} (charuco or aruco)")


def load_sheet_spec(path: str | Path) -> SheetSpec:
    """Read a sheet description JSON: {"kind", "squares": [c, r], "square_mm", "marker_mm", "dictionary"}."""
    from core.inputs import read_json

    doc = read_json(path, "sheet description")
    try:
        spec = SheetSpec(
            kind=str(doc.get("kind", "charuco")),
            squares=tuple(int(v) for v in doc.get("squares", (5, 7))),
            square_mm=float(doc.get("square_mm", 35.0)),
            marker_mm=float(doc.get("marker_mm", 26.0)),
            dictionary=str(doc.get("dictionary", "DICT_4X4_50")),
        )
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise InputError(f"cannot read the sheet description {path}: {exc}") from exc
    if len(spec.squares) != 2 or not all(2 <= n <= 100 for n in spec.squares):
        raise InputError(f"{path}: 'squares' must be two counts from 2 to 100, got {list(spec.squares)}")
    if not (1.0 <= spec.square_mm <= 1000.0 and 0.5 <= spec.marker_mm <= spec.square_mm):
        raise InputError(f"{path}: 'square_mm' must be between 1 and 1000 and 'marker_mm' between 0.5 and square_mm, "
                         f"got {spec.square_mm:g}, {spec.marker_mm:g}")
    return spec


def sheet_pose(image: np.ndarray, K: np.ndarray, sheet: SheetSpec,
               min_points: int = 6) -> tuple[np.ndarray, np.ndarray] | None:
    """The sheet's pose in the camera frame: (R (3, 3), t (3,) metres) or None if not seen.

    Sheet coordinates: x along its columns, y along its rows, z into the sheet (OpenCV).
    """
    import cv2

    aruco = cv2.aruco
    board = sheet.board()
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if sheet.kind == "charuco":
        corners, ids, _, _ = aruco.CharucoDetector(board).detectBoard(grey)
    else:
        corners, ids, _ = aruco.ArucoDetector(board.getDictionary()).detectMarkers(grey)
    if ids is None or len(ids) == 0:
        return None
    obj, img = board.matchImagePoints(corners, ids)
    if obj is None or len(obj) < min_points:
        return None
    ok, rvec, tvec = cv2.solvePnP(obj.reshape(-1, 3), img.reshape(-1, 2), np.asarray(K, dtype=np.float64), None,
                                  flags=cv2.SOLVEPNP_IPPE if len(obj) >= 4 else cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return None
    R, _ = cv2.Rodrigues(rvec)
    return R, tvec.reshape(3)


def keypoints_on_plane(keypoints_2d: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray,
                       height_m: float = 0.01) -> np.ndarray:
    """(21, 3) camera-frame points where the keypoint rays meet the plane ``height_m`` above
    the sheet (on the camera's side: a flat hand's joint centres lie about 1 cm above it)."""
    n = np.asarray(R, dtype=np.float64)[:, 2]
    t = np.asarray(t, dtype=np.float64)
    toward = -n if n @ t > 0 else n
    p0 = t + toward * height_m
    uv1 = np.concatenate([np.asarray(keypoints_2d, dtype=np.float64), np.ones((len(keypoints_2d), 1))], 1)
    rays = uv1 @ np.linalg.inv(np.asarray(K, dtype=np.float64)).T
    lam = (p0 @ toward) / (rays @ toward)
    return rays * lam[:, None]


# ----------------------------------------------------------------------------- stereo

# The pair's calibration, its file and triangulation live with the stereo source
# (core.capture.stereo); imported above under their old names here.
