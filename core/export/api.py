"""One call from a personal hand (shape, texture, pose) to files on disk: :func:`export_hand`.

What the exported hand is made of:

- **Geometry**: the hand model in use (:func:`core.model.load_model_data`) with the person's
  shape ``betas``. In the **rest pose** (``pose=None``) the mesh is the flat hand in the
  model's own frame (right-handed, y up; the palm faces -y, the fingers point along +x). With
  a **tracked pose** (48 axis-angle values in the camera frame, as :class:`~core.fit.HandFit`
  gives them) the hand is posed as in that frame and turned from the camera frame (OpenCV:
  y down, z forward) to glTF's y-up frame by a half turn about x, with its root joint kept at
  its rest position: a viewer's default camera (looking down -z) sees it as the video did.
- **Texture**: the UV texture (:mod:`core.texture`), resampled to ``texture_size``.
- **Rig** (``rigged=True``, GLB only): the model's 16 joints at their rest positions for this
  shape, MANO's parents and joint names, its skinning weights; the mesh is in the bind (rest)
  pose. A tracked pose becomes a one-frame animation, a recorded session
  (:func:`session_animation`) a full one.
- **Profile JSON** (``profile_json``): written beside the mesh as ``NAME.profile.json``
  with its ``"texture"`` pointing at ``NAME.png`` (written too for GLB and PLY), so the
  export can be loaded back as a profile.

Everything is written with :func:`~core.export.writer.write_bundle`: all files or none, each
atomically, and every failure is an :class:`~core.errors.ExportError` naming the path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from core.errors import ExportError
from core.export.bundle import Animation, MeshBundle, Rig, encode_png
from core.export.gltf import build_glb, build_rigged_glb
from core.export.obj import build_obj
from core.export.ply import build_ply
from core.export.writer import _check_folder, _check_target, _companion_stem, check_export_target, write_bundle
from core.outputs import check_companions

__all__ = [
    "CAMERA_TO_Y_UP",
    "build_hand_bundle",
    "companion_files",
    "export_hand",
    "rest_geometry",
    "session_animation",
]

log = logging.getLogger(__name__)

#: Camera frame (OpenCV: x right, y down, z forward) to glTF's y-up frame (z toward the viewer).
CAMERA_TO_Y_UP = np.diag([1.0, -1.0, -1.0])

Progress = Callable[[float, str], None]


def rest_geometry(data: Any, betas: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The shaped hand in the flat rest pose: ((V, 3) vertices, (16, 3) joints), metres, model
    frame (MANO's ``v_shaped`` and ``J_regressor @ v_shaped``; numpy, no torch)."""
    vertices = data.v_template.astype(np.float64)
    if betas is not None:
        beta = np.asarray(betas, dtype=np.float64).reshape(-1)
        if beta.size != data.num_betas:
            raise ExportError(f"the shape has {beta.size} values; the hand model needs {data.num_betas}")
        vertices = vertices + np.einsum("vcs,s->vc", data.shapedirs.astype(np.float64), beta)
    joints = data.j_regressor.astype(np.float64) @ vertices
    return vertices, joints


def _y_up_pose(pose: np.ndarray) -> np.ndarray:
    """(48,) camera-frame pose -> the same articulation with the global rotation in y-up."""
    out = np.asarray(pose, dtype=np.float64).reshape(48).copy()
    root = CAMERA_TO_Y_UP @ Rotation.from_rotvec(out[:3]).as_matrix()
    out[:3] = Rotation.from_matrix(root).as_rotvec()
    return out


def _posed_vertices(data: Any, pose: np.ndarray, betas: np.ndarray | None) -> np.ndarray:
    """(V, 3) vertices posed by ``pose`` (camera frame) turned to y-up, root at rest."""
    import torch

    from core.model import HandModel

    layer = HandModel(data)
    beta = np.zeros(data.num_betas) if betas is None else np.asarray(betas, dtype=np.float64)
    with torch.no_grad():
        out = layer(
            torch.as_tensor(_y_up_pose(pose), dtype=torch.float32)[None],
            torch.as_tensor(beta, dtype=torch.float32)[None],
        )
    return out.vertices[0].numpy().astype(np.float64)


def _local_rotations(poses: np.ndarray) -> np.ndarray:
    """(N, 48) y-up poses -> (N, 16, 3, 3) local joint rotation matrices."""
    n = poses.shape[0]
    return Rotation.from_rotvec(poses.reshape(-1, 3)).as_matrix().reshape(n, 16, 3, 3)


def session_animation(
    times_s: Sequence[float],
    poses: np.ndarray,
    translations: np.ndarray,
    joints_rest: np.ndarray,
    name: str = "capture",
) -> Animation:
    """A recorded session as an :class:`Animation` of the rig (camera frame -> y-up).

    The root joint moves as it did in front of the camera, re-centred on its mean position
    over the session (so the animation plays near the origin).

    Args:
        times_s: (N,) increasing frame times, seconds (shifted to start at 0).
        poses: (N, 48) camera-frame axis-angle poses. translations: (N, 3) the fits' transl.
        joints_rest: (16, 3) rest joints of the shaped model (root first).
    """
    times = np.asarray(times_s, dtype=np.float64)
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 48)
    y_up = np.stack([_y_up_pose(p) for p in poses])
    root_rest = np.asarray(joints_rest, dtype=np.float64)[0]
    # smplx rotates about the rest root and then adds transl: the root sits at J0 + transl.
    root_world = (np.asarray(translations, dtype=np.float64) + root_rest) @ CAMERA_TO_Y_UP.T
    offsets = root_world - root_world.mean(axis=0)
    return Animation.from_matrices(times - times[0], _local_rotations(y_up), offsets, name=name)


def _pose_animation(pose: np.ndarray, name: str) -> Animation:
    """A one-frame animation holding a single tracked pose (root at its rest position)."""
    return Animation.from_matrices(np.zeros(1), _local_rotations(_y_up_pose(pose)[None]), np.zeros((1, 3)), name=name)


def _resize_texture(texture: np.ndarray, size: int) -> np.ndarray:
    import cv2

    texture = np.asarray(texture)
    if texture.ndim != 3 or texture.shape[2] != 3 or texture.dtype != np.uint8:
        raise ExportError(f"the texture must be an (H, W, 3) uint8 RGB image, got {texture.shape} {texture.dtype}")
    if texture.shape[:2] == (size, size):
        return texture
    shrink = texture.shape[0] > size or texture.shape[1] > size
    return cv2.resize(texture, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def build_hand_bundle(
    data: Any,
    shape: np.ndarray | None,
    texture: np.ndarray | None,
    pose: np.ndarray | None = None,
    rigged: bool = False,
    animation: Animation | None = None,
    texture_size: int = 1024,
    name: str = "hand",
    vertex_offsets: np.ndarray | None = None,
) -> MeshBundle:
    """The :class:`MeshBundle` of a personal hand (see the module docstring).

    Args:
        data: the hand model (:class:`~core.model.HandModelData`) of the exported side.
        shape: (S,) betas, or None for the mean shape.
        texture: (H, W, 3) uint8 UV texture (origin bottom-left), or None.
        pose: (48,) camera-frame pose, or None for the flat rest pose.
        rigged: attach the rig; the mesh is then in the bind pose and ``pose`` becomes a
            one-frame animation (unless ``animation`` is given).
        animation: an animation of the rig (:func:`session_animation`), rigged only.
        texture_size: side of the exported texture.
        name: the mesh's name in files.
        vertex_offsets: (V, 3) camera-frame offsets, metres, added to the mesh posed by
            ``pose`` (a refined hand's free offsets ``dv``, turned to y-up with it); posed,
            unrigged exports only (ignored otherwise).
    """
    rest, joints = rest_geometry(data, shape)
    if texture is not None and (data.uv is None or data.uv_faces is None):
        log.warning("the hand model %s has no UV coordinates: exporting without the texture", data.name)
        texture = None
    tex = None if texture is None else _resize_texture(texture, int(texture_size))
    rig = None
    if rigged:
        from core.keypoints import MANO_JOINT_NAMES

        rig = Rig(joints=joints, parents=np.asarray(data.parents), names=MANO_JOINT_NAMES, weights=data.weights)
        if animation is None and pose is not None:
            animation = _pose_animation(pose, "pose")
        vertices = rest
    else:
        vertices = rest if pose is None else _posed_vertices(data, pose, shape)
        if pose is not None and vertex_offsets is not None:
            # smplx: v = R (v_rest - J0) + J0 + t, exported as C R (v_rest - J0) + J0: an offset turns with C
            vertices = vertices + np.asarray(vertex_offsets, np.float64).reshape(-1, 3) @ CAMERA_TO_Y_UP.T
    return MeshBundle(
        vertices=vertices,
        faces=data.faces,
        uv=data.uv,
        uv_faces=data.uv_faces if data.uv is not None else None,
        texture=tex,
        rig=rig,
        animation=animation if rigged else None,
        name=name,
    )


def companion_files(out: str | Path, *, texture: bool, profile_json: bool) -> list[Path]:
    """The files :func:`export_hand` writes beside ``out``: ``NAME.mtl`` (OBJ), ``NAME.png``
    (OBJ, or with a profile, when there is a texture), ``NAME.profile.json`` (with a profile);
    NAME is the sanitized stem of ``out``."""
    target = Path(out)
    stem = _companion_stem(target.stem)
    names = []
    if target.suffix.lower() == ".obj":
        names.append(f"{stem}.mtl")
    if texture and (profile_json or target.suffix.lower() == ".obj"):
        names.append(f"{stem}.png")
    if profile_json:
        names.append(f"{stem}.profile.json")
    return [target.parent / n for n in names]


def export_hand(
    out: str | Path,
    *,
    shape: np.ndarray | None,
    texture: np.ndarray | None,
    pose: np.ndarray | None = None,
    side: str = "right",
    rigged: bool = False,
    model: str | None = None,
    texture_size: int = 1024,
    profile_json: dict | None = None,
    progress: Progress | None = None,
    animation: Animation | None = None,
    model_data: Any | None = None,
    force: bool = False,
    vertex_offsets: np.ndarray | None = None,
) -> list[Path]:
    """Export a personal hand to ``out``; the format comes from the suffix.

    - ``.obj``: OBJ + MTL + PNG (UVs, texture);
    - ``.glb``: binary glTF with the texture as PBR base colour; ``rigged``: skinned (joints,
      inverse bind matrices, weights) and animated when a pose or ``animation`` is given;
    - ``.ply``: binary PLY with vertex colours sampled from the texture.

    Args:
        out: destination file; its folder must exist and be writable.
        shape: (S,) personal shape (betas), or None for the mean shape.
        texture: (H, W, 3) uint8 RGB UV texture (origin bottom-left), or None.
        pose: (48,) a tracked pose (camera frame), or None for the flat rest pose.
        side: "right" or "left" (the left model is the mirrored right one).
        rigged: write a skinned GLB (``.glb`` only).
        model: hand model path (None: ``$HANDTWIN_MODEL`` or the bundled open hand).
        texture_size: side of the written texture, texels.
        profile_json: a profile document to write beside the mesh as ``NAME.profile.json``
            (its ``"texture"`` set to ``NAME.png``), or None.
        progress: ``progress(fraction, message)`` callback, fraction in [0, 1].
        animation: a recorded session for a rigged GLB (:func:`session_animation`).
        model_data: the :class:`~core.model.HandModelData` to use instead of loading
            ``model`` (it must be of ``side``).
        force: replace existing companion files (``NAME.mtl``, ``NAME.png``,
            ``NAME.profile.json``) even when ``out`` itself does not exist yet; without it
            they are replaced only together with ``out`` (see :func:`core.outputs.check_companions`).
        vertex_offsets: (V, 3) camera-frame offsets added to the posed mesh (a refined hand's
            free offsets; see :func:`build_hand_bundle`).

    Returns:
        The files written, the mesh first.

    Raises:
        ExportError: unknown suffix, rigged to a non-GLB, missing or read-only folder, a
            failed write (then no file is left behind), a bad shape or texture, or an
            existing companion file this export did not write (without ``force``).
    """
    report = progress or (lambda fraction, message: None)
    target, suffix = check_export_target(out, rigged)
    if side not in ("right", "left"):
        raise ExportError(f"side must be 'right' or 'left', got {side!r}")
    if int(texture_size) < 8:
        raise ExportError(f"texture size must be at least 8, got {texture_size}")
    _check_folder(target.parent)
    _check_target(target)
    check_companions(target,
                     companion_files(target, texture=texture is not None, profile_json=profile_json is not None),
                     force=force)

    report(0.05, "loading the hand model")
    if model_data is None:
        from core.model.data import load_model_data

        model_data = load_model_data(model, side)  # type: ignore[arg-type]
    stem = _companion_stem(target.stem)
    report(0.2, "building the mesh")
    try:
        bundle = build_hand_bundle(model_data, shape, texture, pose, rigged, animation, int(texture_size), name=stem,
                                   vertex_offsets=vertex_offsets)
        report(0.4, f"encoding {suffix[1:].upper()}")
        if suffix == ".obj":
            built = build_obj(bundle, name=stem)
            files = {(target.name if n.endswith(".obj") else n): data for n, data in built.items()}
        elif suffix == ".glb":
            data = build_rigged_glb(bundle, include_animation=True) if rigged else build_glb(bundle)
            files = {target.name: data}
        else:
            files = {target.name: build_ply(bundle)}
    except ValueError as exc:
        raise ExportError(f"Cannot export {target.name}: {exc}") from exc
    if profile_json is not None:
        report(0.8, "writing the profile")
        png_name = f"{stem}.png"
        doc = dict(profile_json)
        if bundle.texture is not None:
            doc["texture"] = png_name
            if png_name not in files:
                files[png_name] = encode_png(bundle.texture)
        else:
            doc["texture"] = None
        files[f"{stem}.profile.json"] = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    report(0.9, "writing")
    written = write_bundle(target.parent, files)
    report(1.0, f"wrote {target.name}")
    return written
