"""What an export is made of: the mesh, its optional rig and an optional animation.

The exporters take plain numpy arrays wrapped in three frozen dataclasses:

- :class:`MeshBundle`: geometry, UVs (with their own faces), texture, vertex colours, and
  optionally a :class:`Rig` and an :class:`Animation`.
- :class:`Rig`: a joint tree in its rest pose and dense skinning weights.
- :class:`Animation`: per-frame local joint rotations and root translations.

Every array is validated and copied (read-only) in ``__post_init__``, so a bundle can never
alias or mutate the caller's arrays, and every exporter can trust the shapes written below.

Frames and units
----------------
All 3D positions are in **metres** in the hand model's frame, which is right-handed. The
exporters write coordinates **as given**, with no axis conversion: glTF defines +y up, +z
towards the viewer and metres, so pass y-up coordinates (the model frame already is). Points
in the OpenCV camera frame (y down, z forward) must be converted by the caller first.

UVs follow the OBJ convention: ``(u, v)`` in [0, 1] with the origin at the **bottom-left** of
the texture image (``v = 0`` is the image's last row). The texture image itself is stored
top row first, as every image in ``core`` is. The glTF writer flips ``v`` because glTF puts
the origin at the top-left.

This module also holds the small geometry helpers the writers share: splitting vertices at
UV seams, smooth vertex normals, the top-4 skinning weights, and rotation-matrix to
quaternion conversion.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

__all__ = [
    "Animation",
    "MeshBundle",
    "Rig",
    "SeamSplit",
    "check_name",
    "encode_png",
    "matrices_to_quaternions",
    "quaternions_to_matrices",
    "split_uv_seams",
    "top_k_weights",
    "vertex_normals",
]

#: Written into every file's header as the generating tool.
GENERATOR = "HandTwin"

#: Skin-like base colour (linear RGBA) used when a mesh has neither texture nor vertex colours.
DEFAULT_BASE_COLOR: tuple[float, float, float, float] = (0.80, 0.62, 0.52, 1.0)

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


def _frozen_array(value: object, dtype: type, name: str) -> np.ndarray:
    """Return a C-contiguous, read-only copy of ``value`` as ``dtype``.

    Raises:
        ValueError: the values contain NaN or infinity (floating dtypes only).
    """
    array = np.array(value, dtype=dtype, copy=True, order="C")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    array.flags.writeable = False
    return array


def _check_shape(array: np.ndarray, shape: tuple[int | None, ...], name: str) -> None:
    """Raise ``ValueError`` unless ``array.shape`` matches ``shape`` (``None`` = any size)."""
    ok = array.ndim == len(shape) and all(
        want is None or have == want for have, want in zip(array.shape, shape, strict=True)
    )
    if not ok:
        wanted = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {wanted}, got {tuple(array.shape)}")


def _check_indices(indices: np.ndarray, count: int, name: str, target: str) -> None:
    """Raise ``ValueError`` unless every entry of ``indices`` lies in ``[0, count)``."""
    if indices.size and (indices.min() < 0 or indices.max() >= count):
        raise ValueError(
            f"{name} must index {target} in [0, {count}), got values in "
            f"[{int(indices.min())}, {int(indices.max())}]"
        )


# --------------------------------------------------------------------------- rig


@dataclass(frozen=True)
class Rig:
    """A joint tree in its rest pose with dense linear-blend skinning weights.

    Attributes:
        joints: (J, 3) float32, metres, model frame: rest position of every joint. Rest
            rotations are the identity, so a joint's local rest transform is a pure
            translation from its parent.
        parents: (J,) int64: index of each joint's parent, ``-1`` for the single root.
        names: J unique joint names (for example ``"wrist"``, ``"index1"``).
        weights: (V, J) float32, non-negative: skinning weight of every vertex for every
            joint. Rows need not sum to 1; exporters keep the 4 largest per vertex and
            renormalize (:func:`top_k_weights`).
    """

    joints: np.ndarray
    parents: np.ndarray
    names: tuple[str, ...]
    weights: np.ndarray

    def __post_init__(self) -> None:
        joints = _frozen_array(self.joints, np.float32, "Rig.joints")
        _check_shape(joints, (None, 3), "Rig.joints")
        count = joints.shape[0]
        if count == 0:
            raise ValueError("Rig.joints must hold at least one joint")
        parents = _frozen_array(self.parents, np.int64, "Rig.parents")
        _check_shape(parents, (count,), "Rig.parents")
        names = tuple(str(n) for n in self.names)
        if len(names) != count:
            raise ValueError(f"Rig.names must have {count} entries, got {len(names)}")
        if len(set(names)) != count:
            raise ValueError("Rig.names must be unique")
        weights = _frozen_array(self.weights, np.float32, "Rig.weights")
        _check_shape(weights, (None, count), "Rig.weights")
        if weights.size and weights.min() < 0:
            raise ValueError("Rig.weights must be non-negative")
        roots = np.flatnonzero(parents == -1)
        if roots.size != 1:
            raise ValueError(f"Rig.parents must have exactly one root (-1), got {roots.size}")
        bad = (parents < -1) | (parents >= count) | (parents == np.arange(count))
        if bad.any():
            raise ValueError(f"Rig.parents has invalid entries at joints {np.flatnonzero(bad)}")
        # Every joint must reach the root within J steps, otherwise there is a cycle.
        for start in range(count):
            node, steps = start, 0
            while node != -1:
                node = int(parents[node])
                steps += 1
                if steps > count:
                    raise ValueError(f"Rig.parents contains a cycle through joint {start}")
        object.__setattr__(self, "joints", joints)
        object.__setattr__(self, "parents", parents)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "weights", weights)

    @property
    def num_joints(self) -> int:
        """Number of joints J."""
        return int(self.joints.shape[0])

    @property
    def root(self) -> int:
        """Index of the root joint (the one whose parent is -1)."""
        return int(np.flatnonzero(self.parents == -1)[0])

    def local_rest_translations(self) -> np.ndarray:
        """(J, 3) float32, metres: each joint's rest position relative to its parent.

        The root's entry is its absolute rest position in the model frame.
        """
        parent_positions = np.where(
            (self.parents >= 0)[:, None], self.joints[np.maximum(self.parents, 0)], 0.0
        )
        return (self.joints - parent_positions).astype(np.float32)


# --------------------------------------------------------------------------- animation


@dataclass(frozen=True)
class Animation:
    """Per-frame local joint rotations and the root's translation.

    Attributes:
        times: (N,) float32, seconds, non-negative and strictly increasing.
        rotations: (N, J, 4) float32 unit quaternions in glTF order ``(x, y, z, w)``: each
            joint's rotation relative to its parent, on top of the (identity) rest rotation.
            Use :meth:`from_matrices` to build one from (N, J, 3, 3) rotation matrices.
        root_translations: (N, 3) float32, metres, model frame, or ``None``: the offset of
            the root joint from its rest position in each frame (MANO's ``transl``).
            ``None`` keeps the root at its rest position.
        name: the animation's name in the exported file.
    """

    times: np.ndarray
    rotations: np.ndarray
    root_translations: np.ndarray | None = None
    name: str = "capture"

    def __post_init__(self) -> None:
        times = _frozen_array(self.times, np.float32, "Animation.times")
        _check_shape(times, (None,), "Animation.times")
        frames = times.shape[0]
        if frames == 0:
            raise ValueError("Animation.times must hold at least one frame")
        if times[0] < 0 or np.any(np.diff(times) <= 0):
            raise ValueError("Animation.times must be non-negative and strictly increasing")
        rotations = np.array(self.rotations, dtype=np.float64, copy=True)
        _check_shape(rotations, (frames, None, 4), "Animation.rotations")
        norms = np.linalg.norm(rotations, axis=-1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(np.abs(norms - 1.0) > 1e-3):
            raise ValueError("Animation.rotations must be unit quaternions (x, y, z, w)")
        rotations = _continuous_quaternions(rotations / norms)
        rotations = _frozen_array(rotations, np.float32, "Animation.rotations")
        translations = None
        if self.root_translations is not None:
            translations = _frozen_array(
                self.root_translations, np.float32, "Animation.root_translations"
            )
            _check_shape(translations, (frames, 3), "Animation.root_translations")
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "rotations", rotations)
        object.__setattr__(self, "root_translations", translations)

    @classmethod
    def from_matrices(
        cls,
        times: np.ndarray,
        rotation_matrices: np.ndarray,
        root_translations: np.ndarray | None = None,
        name: str = "capture",
    ) -> Animation:
        """Build an animation from (N, J, 3, 3) local rotation matrices (see the class)."""
        return cls(
            times=times,
            rotations=matrices_to_quaternions(rotation_matrices),
            root_translations=root_translations,
            name=name,
        )

    @property
    def num_frames(self) -> int:
        """Number of frames N."""
        return int(self.times.shape[0])

    @property
    def num_joints(self) -> int:
        """Number of joints J the rotations are given for."""
        return int(self.rotations.shape[1])


def _continuous_quaternions(quaternions: np.ndarray) -> np.ndarray:
    """Flip signs along the frame axis so consecutive quaternions lie in one hemisphere.

    ``q`` and ``-q`` are the same rotation, but linear interpolation between frames takes the
    short way round only when their dot product is non-negative.

    Args:
        quaternions: (N, J, 4) unit quaternions.

    Returns:
        (N, J, 4) quaternions, each equal to the input up to sign.
    """
    out = quaternions.copy()
    for frame in range(1, out.shape[0]):
        dots = np.sum(out[frame] * out[frame - 1], axis=-1)
        out[frame][dots < 0] *= -1.0
    return out


def matrices_to_quaternions(matrices: np.ndarray) -> np.ndarray:
    """Convert rotation matrices to unit quaternions in glTF order ``(x, y, z, w)``.

    Uses Shepperd's method (branch on the largest of trace and diagonal), which is stable
    for every rotation including 180-degree turns.

    Args:
        matrices: (..., 3, 3) rotation matrices (orthonormal, determinant +1, within 1e-3).

    Returns:
        (..., 4) float64 unit quaternions with ``w >= 0``.

    Raises:
        ValueError: a matrix is not a rotation.
    """
    m = np.asarray(matrices, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must have shape (..., 3, 3), got {m.shape}")
    identity_error = np.abs(np.einsum("...ji,...jk->...ik", m, m) - np.eye(3)).max(initial=0.0)
    if not np.isfinite(identity_error) or identity_error > 1e-3 or np.any(np.linalg.det(m) <= 0):
        raise ValueError("rotation matrices must be orthonormal with determinant +1")
    flat = m.reshape(-1, 3, 3)
    q = np.empty((flat.shape[0], 4))
    trace = np.trace(flat, axis1=1, axis2=2)
    diag = np.diagonal(flat, axis1=1, axis2=2)
    case = np.argmax(np.concatenate([diag, trace[:, None]], axis=1), axis=1)
    for axis in range(4):
        rows = case == axis
        r = flat[rows]
        if axis == 3:  # trace largest: w is the best-conditioned component
            w = np.sqrt(1.0 + trace[rows]) / 2.0
            q[rows] = np.stack(
                [
                    (r[:, 2, 1] - r[:, 1, 2]),
                    (r[:, 0, 2] - r[:, 2, 0]),
                    (r[:, 1, 0] - r[:, 0, 1]),
                    4.0 * w * w,
                ],
                axis=1,
            ) / (4.0 * w[:, None])
        else:
            i, j, k = axis, (axis + 1) % 3, (axis + 2) % 3
            s = np.sqrt(1.0 + r[:, i, i] - r[:, j, j] - r[:, k, k]) * 2.0  # s = 4 |q_i|
            q_rows = np.empty((r.shape[0], 4))
            q_rows[:, i] = s / 4.0
            q_rows[:, j] = (r[:, j, i] + r[:, i, j]) / s
            q_rows[:, k] = (r[:, k, i] + r[:, i, k]) / s
            q_rows[:, 3] = (r[:, k, j] - r[:, j, k]) / s
            q[rows] = q_rows
    q *= np.where(q[:, 3:] < 0, -1.0, 1.0)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.reshape(m.shape[:-2] + (4,))


def quaternions_to_matrices(quaternions: np.ndarray) -> np.ndarray:
    """Convert quaternions ``(x, y, z, w)`` (normalized first) to (..., 3, 3) float64 matrices."""
    q = np.asarray(quaternions, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


# --------------------------------------------------------------------------- mesh


@dataclass(frozen=True)
class MeshBundle:
    """Everything an exporter needs to write one hand mesh.

    Attributes:
        vertices: (V, 3) float32, metres, model frame (right-handed, y up; see the module).
        faces: (F, 3) int64 triangles indexing ``vertices``, counter-clockwise seen from
            outside.
        normals: (V, 3) float32 unit vectors, or ``None`` to compute smooth area-weighted
            normals (:func:`vertex_normals`) where a format stores them.
        uv: (T, 2) float32 texture coordinates in [0, 1], origin bottom-left (OBJ
            convention), or ``None``.
        uv_faces: (F, 3) int64 triangles indexing ``uv``. UVs have their own topology, so
            a vertex on a seam has several UVs and T may differ from V. ``None`` with ``uv``
            given means ``uv`` is per vertex (T == V, ``uv_faces = faces``).
        texture: (H, W, 3) uint8 RGB image, top row first, or ``None``. Needs ``uv``.
        vertex_colors: (V, 3) uint8 RGB, or ``None``.
        rig: the joint tree and skinning weights for a rigged export, or ``None``.
        animation: an animation of ``rig``'s joints, or ``None``. Needs ``rig``.
        name: base name of the mesh inside files and of the OBJ's companion files; letters,
            digits, ``_``, ``-`` and ``.`` only.
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    uv: np.ndarray | None = None
    uv_faces: np.ndarray | None = None
    texture: np.ndarray | None = None
    vertex_colors: np.ndarray | None = None
    rig: Rig | None = None
    animation: Animation | None = None
    name: str = field(default="hand")

    def __post_init__(self) -> None:
        vertices = _frozen_array(self.vertices, np.float32, "vertices")
        _check_shape(vertices, (None, 3), "vertices")
        count = vertices.shape[0]
        faces = _frozen_array(self.faces, np.int64, "faces")
        _check_shape(faces, (None, 3), "faces")
        if faces.shape[0] == 0:
            raise ValueError("faces must hold at least one triangle")
        _check_indices(faces, count, "faces", "vertices")
        object.__setattr__(self, "vertices", vertices)
        object.__setattr__(self, "faces", faces)

        if self.normals is not None:
            normals = _frozen_array(self.normals, np.float32, "normals")
            _check_shape(normals, (count, 3), "normals")
            object.__setattr__(self, "normals", normals)

        if self.uv is None:
            if self.uv_faces is not None:
                raise ValueError("uv_faces given without uv")
            if self.texture is not None:
                raise ValueError("a texture needs uv coordinates")
        else:
            uv = _frozen_array(self.uv, np.float32, "uv")
            _check_shape(uv, (None, 2), "uv")
            if self.uv_faces is None:
                if uv.shape[0] != count:
                    raise ValueError(
                        f"uv has {uv.shape[0]} rows but there are {count} vertices: "
                        "pass uv_faces when UVs have their own topology"
                    )
                uv_faces = faces
            else:
                uv_faces = _frozen_array(self.uv_faces, np.int64, "uv_faces")
                _check_shape(uv_faces, faces.shape, "uv_faces")
                _check_indices(uv_faces, uv.shape[0], "uv_faces", "uv")
            object.__setattr__(self, "uv", uv)
            object.__setattr__(self, "uv_faces", uv_faces)

        if self.texture is not None:
            texture = _frozen_array(self.texture, np.uint8, "texture")
            _check_shape(texture, (None, None, 3), "texture")
            if texture.shape[0] == 0 or texture.shape[1] == 0:
                raise ValueError("texture must not be empty")
            object.__setattr__(self, "texture", texture)

        if self.vertex_colors is not None:
            colors = _frozen_array(self.vertex_colors, np.uint8, "vertex_colors")
            _check_shape(colors, (count, 3), "vertex_colors")
            object.__setattr__(self, "vertex_colors", colors)

        if self.rig is not None:
            if not isinstance(self.rig, Rig):
                raise TypeError(f"rig must be a Rig, got {type(self.rig).__name__}")
            if self.rig.weights.shape[0] != count:
                raise ValueError(
                    f"rig.weights has {self.rig.weights.shape[0]} rows for {count} vertices"
                )
        if self.animation is not None:
            if self.rig is None:
                raise ValueError("an animation needs a rig")
            if not isinstance(self.animation, Animation):
                raise TypeError(f"animation must be an Animation, got {type(self.animation)}")
            if self.animation.num_joints != self.rig.num_joints:
                raise ValueError(
                    f"animation has {self.animation.num_joints} joints, rig has "
                    f"{self.rig.num_joints}"
                )
        check_name(self.name)

    @property
    def num_vertices(self) -> int:
        """Number of vertices V."""
        return int(self.vertices.shape[0])

    def vertex_normals(self) -> np.ndarray:
        """(V, 3) float32 unit normals: the given ones, or smooth ones computed from faces."""
        if self.normals is not None:
            return _normalized(self.normals)
        return vertex_normals(self.vertices, self.faces)


# --------------------------------------------------------------------------- helpers


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe base name for files and in-file references.

    OBJ's ``mtllib``/``map_Kd`` lines and PLY headers break on spaces and path separators,
    so only letters, digits, ``_``, ``-`` and ``.`` are allowed.

    Raises:
        ValueError: ``name`` is empty or holds another character.
    """
    if not _NAME_PATTERN.match(name):
        raise ValueError(f"name {name!r} may hold only letters, digits, '_', '-' and '.'")
    return name


def _normalized(
    vectors: np.ndarray, fallback: tuple[float, float, float] = (0.0, 1.0, 0.0)
) -> np.ndarray:
    """(N, 3) float32 unit vectors; zero-length rows become ``fallback``."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    out = np.where(norms > 1e-12, v / np.maximum(norms, 1e-12), np.asarray(fallback))
    return out.astype(np.float32)


def encode_png(image: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 RGB image (top row first) as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smooth per-vertex normals: the area-weighted sum of adjacent face normals.

    Args:
        vertices: (V, 3) float, metres.
        faces: (F, 3) int, counter-clockwise seen from outside.

    Returns:
        (V, 3) float32 unit vectors; a vertex in no face (or only degenerate ones) gets +y.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    # The cross product's length is twice the triangle's area: that is the weighting.
    face_normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    sums = np.zeros_like(v)
    for corner in range(3):
        np.add.at(sums, f[:, corner], face_normals)
    return _normalized(sums)


@dataclass(frozen=True)
class SeamSplit:
    """Vertices split so that each has exactly one UV (what glTF needs).

    Attributes:
        vertex_index: (K,) int64: the original vertex of every split vertex.
        uv_index: (K,) int64: the UV of every split vertex.
        faces: (F, 3) int64 triangles indexing the K split vertices, in the input order.
    """

    vertex_index: np.ndarray
    uv_index: np.ndarray
    faces: np.ndarray


def split_uv_seams(faces: np.ndarray, uv_faces: np.ndarray) -> SeamSplit:
    """Split vertices wherever one vertex is used with different UVs.

    Each distinct (vertex, uv) pair used by a face corner becomes one output vertex. The
    pairs are sorted by vertex, then UV, so a mesh without seams keeps its vertex order
    (vertices in no face are dropped).

    Args:
        faces: (F, 3) int triangles indexing vertices.
        uv_faces: (F, 3) int triangles indexing UVs, corner for corner with ``faces``.

    Returns:
        The :class:`SeamSplit`.
    """
    f = np.asarray(faces, dtype=np.int64)
    t = np.asarray(uv_faces, dtype=np.int64)
    pairs = np.stack([f.reshape(-1), t.reshape(-1)], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return SeamSplit(
        vertex_index=unique[:, 0].copy(),
        uv_index=unique[:, 1].copy(),
        faces=inverse.reshape(f.shape).astype(np.int64),
    )


def top_k_weights(weights: np.ndarray, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Keep the ``k`` largest skinning weights of every vertex and renormalize them.

    Args:
        weights: (V, J) non-negative float weights (dense).
        k: influences kept per vertex (glTF's JOINTS_0/WEIGHTS_0 hold 4).

    Returns:
        ``(joint_ids, kept)``: (V, k) int64 joint indices sorted by decreasing weight and
        (V, k) float32 weights summing to 1 in float32 (the largest absorbs the rounding).
        Slots beyond J or with zero weight get joint 0 and weight 0.

    Raises:
        ValueError: a vertex has no positive weight.
    """
    w = np.asarray(weights, dtype=np.float64)
    count, joints = w.shape
    order = np.argsort(-w, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(w, order, axis=1)
    if joints < k:  # pad to k slots
        order = np.concatenate([order, np.zeros((count, k - joints), np.int64)], axis=1)
        kept = np.concatenate([kept, np.zeros((count, k - joints))], axis=1)
    totals = kept.sum(axis=1, keepdims=True)
    empty = np.flatnonzero(totals[:, 0] <= 0)
    if empty.size:
        raise ValueError(
            f"{empty.size} vertices have no positive skinning weight (first: {empty[0]})"
        )
    kept32 = (kept / totals).astype(np.float32)
    order = np.where(kept32 > 0, order, 0)
    kept32[:, 0] = np.float32(1.0) - kept32[:, 1:].sum(axis=1, dtype=np.float32)
    return order.astype(np.int64), kept32
