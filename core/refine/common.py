"""What every execution path of the refinement shares: the refiner's state and setup, the
crops, the layout of the offsets and the results (:mod:`core.refine.refiner` lists the paths)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from core.errors import InputError
from core.fit import HandFit
from core.model import HandModel
from core.model.data import HandModelData
from core.refine import _native as refine_kernels
from core.refine.contracts import RefineResult, RefineSettings, RefineTarget, nominal_intrinsics
from core.refine.crop import CropBox, crop_box
from core.refine.lbs import LeanHand
from core.refine.mesh import MeshTopology, mean_edge_length
from core.render import project_points


@dataclass
class _View:
    """One camera of a group: crop intrinsics map, target, weights (all batched over hands)."""

    affine: Tensor  # (B, 3, 3) image -> crop pixels
    K: Tensor  # (B, 3, 3) image intrinsics
    R: Tensor | None  # (B, 3, 3) primary -> this camera, or None for the primary view
    t: Tensor | None  # (B, 3)
    target: Tensor  # (B, S, S) float in [0, 1]
    weight: Tensor  # (B, S, S) float 0/1
    keypoints: Tensor | None  # (B, 21, 2) crop pixels
    boxes: list[CropBox]
    slack: Tensor | None = None  # (B, 21) crop px, the fit's keypoint distances (keypoint_slack)
    faces: Tensor | None = None  # (F', 3) faces drawn in this view, chosen at the first evaluation
    area: Tensor = dataclasses.field(init=False)  # (B,) the target's area inside the weight, px (>= 1)

    def __post_init__(self) -> None:
        self.area = (self.target * self.weight).flatten(1).sum(1).clamp_min(1.0)


@dataclass
class _Group:
    side: str
    index: list[int]  # positions of these hands in the call
    layer: HandModel
    topo: MeshTopology
    pose0: Tensor  # (B, 48)
    betas0: Tensor  # (B, S)
    transl0: Tensor  # (B, 3)
    depth0: Tensor  # (B,) the fit's wrist depth, metres
    edge0: Tensor  # (B,) length unit of the offsets: the model's mean edge length, metres
    views: list[_View]
    depth_target: Tensor | None  # (B, S, S) metres, 0 unknown
    free_focal: bool
    params: dict[str, Tensor] = dataclasses.field(default_factory=dict)  # views of the flat offsets
    layout: list[tuple[str, tuple[int, ...], int]] = dataclasses.field(default_factory=list)
    t_scale: Tensor | None = None  # (B, 3) metres per crop pixel of the translation offsets
    fused: object | None = None  # the primary view as core.refine.fused.numpy_view made it
    fused_params: tuple | None = None  # (addresses, NumPy views) of ``params``
    fused_native: object | None = None  # core.refine._fused_native.NativeEvaluation of ``fused``


class RefinerCore:
    """The refiner's state (the models, their topology and edge lengths) and the setup every
    path shares; :class:`~core.refine.refiner.Refiner` documents the arguments."""

    def __init__(self, right: HandModelData, left: HandModelData,
                 settings: RefineSettings = RefineSettings(), device: str | torch.device = "cpu",
                 nominal_fov_deg: float = 60.0) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.nominal_fov_deg = float(nominal_fov_deg)
        self.layers = {d.side: HandModel(d, self.device) for d in (right, left)}
        self._lean = {side: LeanHand(layer) for side, layer in self.layers.items()}  # fast M(p, s)
        self.topology = {side: MeshTopology.from_faces(layer.data.faces, layer.data.num_vertices,
                                                       self.device)
                         for side, layer in self.layers.items()}
        self._topology_arrays: dict = {}  # (side, NumPy dtype) -> core.refine.fused.TopologyArrays
        with torch.no_grad():  # mean edge length of the mean-shape rest mesh, metres
            self._edge_unit = {side: mean_edge_length(layer.rest().vertices, self.topology[side])
                               for side, layer in self.layers.items()}
        self._edge_unit_np = {side: float(e) for side, e in self._edge_unit.items()}

    def _by_side(self, fits: Sequence[HandFit]) -> dict[str, list[int]]:
        """The positions of the call's hands, per side (each side is one batch)."""
        by_side: dict[str, list[int]] = {}
        for i, f in enumerate(fits):
            if f.side not in self.layers:
                raise InputError(f"unknown hand side {f.side!r}")
            by_side.setdefault(f.side, []).append(i)
        return by_side

    def _image_K(self, target: RefineTarget) -> np.ndarray:
        mask = _check_image(target.mask, "mask")
        if target.K is None:
            h, w = mask.shape
            return nominal_intrinsics((w, h), self.nominal_fov_deg)
        K = np.asarray(target.K, dtype=np.float32)
        if K.shape != (3, 3):
            raise InputError(f"K must be (3, 3), got {K.shape}")
        return K

    def _topology_numpy(self, side: str, dtype=np.float32):
        """The side's :class:`core.refine.fused.TopologyArrays` (``inv_deg`` in ``dtype``), made once."""
        from core.refine.fused import TopologyArrays

        key = (side, np.dtype(dtype))
        if key not in self._topology_arrays:
            self._topology_arrays[key] = TopologyArrays.of(self.topology[side], key[1])
        return self._topology_arrays[key]

    def _start_faces(self, side: str, pose0: np.ndarray, betas0: np.ndarray, transl0: np.ndarray,
                     st: RefineSettings) -> np.ndarray:
        """(F', 3) int64 the faces the refinement draws: with ``cull_backfaces`` those facing the
        camera at the start (the fit's mesh, skinned and culled by the C kernels), else all."""
        faces = self._topology_numpy(side).faces
        if not st.cull_backfaces:
            return faces
        m = self._lean[side].arrays()
        start, _, _ = refine_kernels.lbs_forward(
            pose0 if m.pose_mean is None else pose0 + m.pose_mean, betas0, transl0, m.v_template,
            m.shapedirs_flat, m.j_template, m.j_shapedirs, m.posedirs, m.weights, m.parents_all)
        return np.ascontiguousarray(refine_kernels.front_faces(start, faces))

    @staticmethod
    def _fused_weights(st: RefineSettings) -> dict[str, float]:
        """The loss weights as :func:`core.refine.fused.loss_and_grad` takes them (0: term off)."""
        free_v = st.optimize_vertices
        return {"silhouette": st.w_silhouette, "keypoints": st.w_keypoints,
                "vertex": st.w_vertex if free_v else 0.0, "laplacian": st.w_laplacian if free_v else 0.0,
                "edge": st.w_edge if free_v else 0.0, "normal": st.w_normal if free_v else 0.0,
                "pose": st.w_pose if st.optimize_pose else 0.0,
                "shape": st.w_shape if st.optimize_shape else 0.0}


def _free_focal(st: RefineSettings, targets: Sequence[RefineTarget]) -> bool:
    """Whether a batch's focal offset is free: ``st.optimize_focal``, or where it is None, when
    no target knows its camera (the weak-perspective path's focal length is nominal)."""
    if st.optimize_focal is None:
        return all(t.K is None for t in targets)
    return bool(st.optimize_focal)


def _layout_spec(b: int, num_betas: int, num_vertices: int, free_focal: bool,
                 st: RefineSettings) -> list[tuple[str, tuple[int, ...], float, bool]]:
    """The offsets of B hands, in the order they lie in the flat parameter vector: (name, shape,
    step size, free) each. All zero at the start: pose (B, 48) radians, shape (B, S), vertices
    (B, V, 3) in mean edge lengths, translation (B, 3) crop pixels, focal (B, 1) log focal scale."""
    return [("pose", (b, 48), st.lr_pose, st.optimize_pose),
            ("shape", (b, num_betas), st.lr_shape, st.optimize_shape),
            ("vertices", (b, num_vertices, 3), st.lr_vertices, st.optimize_vertices),
            ("translation", (b, 3), st.lr_translation, st.optimize_translation),
            ("focal", (b, 1), st.lr_focal, free_focal)]


def _translation_scale(affine, K, depth0, st: RefineSettings):
    """(B, 3) metres per crop pixel of the translation offsets (tensors or NumPy arrays).

    x, y: the shift that moves the wrist by one crop pixel; z: the change of depth that grows
    the hand's image (about ``image_size / (1 + 2 margin)`` crop pixels across) by one crop
    pixel. ``affine``, ``K`` (B, 3, 3) the primary view's; ``depth0`` (B,) the fit's wrist depth.
    """
    fc = affine[:, 0, 0] * K[:, 0, 0]  # (B,) crop focal, px
    extent = st.image_size / (1.0 + 2.0 * st.crop_margin)
    stack = np.stack if isinstance(depth0, np.ndarray) else torch.stack
    return stack([depth0 / fc, depth0 / fc, -depth0 / extent], -1)


def _crop_arrays(points0: np.ndarray, K: np.ndarray, targets: Sequence[RefineTarget], st: RefineSettings):
    """The primary view's crops of B hands, as float32 NumPy arrays.

    Args:
        points0: (B, N, 3) points the crop must hold (the fit's keypoints), camera frame.
        K: (B, 3, 3) image intrinsics. targets: the hands' targets.

    Returns:
        (boxes, affine (B, 3, 3) image to crop, target (B, S, S) in [0, 1], weight (B, S, S)
        0/1 (0 past the wrist line), keypoints (B, 21, 2) MediaPipe's in crop pixels).
    """
    uv = project_points(points0, K)
    boxes, tgt, wts, kps = [], [], [], []
    for j, t in enumerate(targets):
        kp = np.asarray(t.keypoints_2d, dtype=np.float64)
        if kp.shape != (21, 2):
            raise InputError(f"keypoints_2d must be (21, 2), got {kp.shape}")
        mask = _check_image(t.mask, "mask")
        box = crop_box(np.concatenate([uv[j], kp]), st.image_size, st.crop_margin,
                       max_side=2 * max(mask.shape))
        boxes.append(box)
        tgt.append(box.resample_mask(mask))
        wts.append(wrist_weight(box, kp) if st.ignore_beyond_wrist else
                   np.ones((box.size, box.size), np.float32))
        kps.append(box.to_crop(kp))
    def c32(arrays):  # one C-contiguous float32 array (inputs may come in any memory order)
        return np.ascontiguousarray(np.stack(arrays), dtype=np.float32)

    return boxes, c32([b.affine() for b in boxes]), c32(tgt), c32(wts), c32(kps)


def _result(side: str, box: CropBox, crop_keypoints: np.ndarray, pose: np.ndarray, betas: np.ndarray,
            transl: np.ndarray, verts: np.ndarray, base: np.ndarray, keypoints: np.ndarray, K: np.ndarray,
            iou_before: float, iou_after: float, n_iter: int, best_iteration: int, edge_error: float,
            normal_error: float) -> RefineResult:
    """One hand's :class:`RefineResult` from its kept iterate (NumPy arrays: the offsets already
    added to the fit; ``crop_keypoints`` (21, 2) MediaPipe's keypoints in ``box``'s pixels)."""
    kp2 = project_points(keypoints[None], K[None])[0]
    target_kp = box.to_image(crop_keypoints)
    f32 = np.float32
    return RefineResult(
        side=side, vertices=verts.astype(f32), pose=pose.astype(f32), betas=betas.astype(f32),
        transl=transl.astype(f32), vertex_offsets=(verts - base).astype(f32), keypoints_3d=keypoints.astype(f32),
        keypoints_2d=kp2.astype(f32), K=K.astype(f32),
        reprojection_error_px=float(np.linalg.norm(kp2 - target_kp, axis=1).mean()),
        iou_before=iou_before, iou_after=iou_after, edge_length_error=edge_error, normal_error=normal_error,
        iterations=n_iter, best_iteration=best_iteration, ms=0.0,
    )


def _check_image(a: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise InputError(f"the refinement {what} must be (H, W), got shape {arr.shape}")
    return arr


def wrist_weight(box: CropBox, keypoints_2d: np.ndarray, offset: float | None = None) -> np.ndarray:
    """(size, size) float32: 1 on the hand's side of the wrist line, 0 past it (the forearm).

    The line lies ``offset`` palm lengths past the wrist keypoint
    (:func:`core.segment.geometry.wrist_halfplane`); None = the segmentation's own
    (:func:`core.segment.wrist_cut`), so the refinement ignores exactly the pixels the target
    mask was cut off at.
    """
    from core.segment.geometry import hand_scale, wrist_halfplane

    kp = np.asarray(keypoints_2d, dtype=np.float64)
    n, c = wrist_halfplane(kp, hand_scale(kp), offset)
    xs, ys = box.image_axes()  # (x, y) . n >= c, separably
    return ((xs * n[0])[None, :] + (ys * n[1])[:, None] >= c).astype(np.float32)

