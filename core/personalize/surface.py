"""Surface offsets fitted in calibration: the person's finger thickness and palm shape.

After the joint optimization (:mod:`core.personalize.bundle`) has fixed the personal skeleton
and every calibration frame's pose, the rest mesh of the personal model
(:func:`core.model.personal.personal_model`) is moved along its rest vertex normals by one
displacement per vertex, **shared by all frames** (RealisticHands' free vertex offsets, paper
001 Eq. 1, but describing the person instead of one frame), so that the mesh's soft
silhouettes (:func:`core.render.rasterize_silhouette`) match the frames' hand segmentations.

Unknowns: the displacement ``d`` (V,) along the rest normals ``n`` (V, 3), a smooth field
``d = cap * tanh(B c)``: ``B`` the :attr:`SurfaceSettings.modes` smoothest eigenvectors of the
mesh's graph Laplacian (its "manifold harmonics": bumps narrower than a finger's width cannot
be expressed), bounded by :attr:`SurfaceSettings.cap_mm` (a few millimetres: fingers may get
thicker or thinner and the palm fuller, the hand cannot go grotesque), zero at the five
fingertip vertices and fading there over :data:`TIP_TAPER_M` (the tips are the skeleton's
keypoints); and, per frame, a small image
shift of the crop (the keypoint fit's misalignment, not the person's shape).

Forward model. Skinning is linear in the rest mesh, so with the joints fixed by the skeleton
the posed offset of vertex v in frame i is ``d_v (sum_j w_vj G_ij) n_v`` (``G_ij`` the
global rotation of joint j): the posed mesh is ``P_i + d * m_i`` with ``P_i`` and the posed
normal directions ``m_i`` computed once. Each iteration costs one soft render of the K frames.

Energy (per frame in its hand crop, :data:`SILHOUETTE_SIZE` pixels, nothing past the wrist
keypoint counted, :data:`WRIST_LINE`)::

    sum_i a_i |S_i(P_i + d m_i) - T_i|^2 / area(T_i)                (silhouette, 001 Eq. 2)
    + w_lap mean_v |lap(d)_v|^2 / e^2                               (Laplacian smoothness, 001 Eq. 3)
    + w_mag mean_v d_v^2 / e^2                                      (offset magnitude, 001 Eq. 2 L_v)
    + w_normal mean <e_H / |e_H|, n_M>^2                            (normal consistency, 003 Eq. 3)
    + w_shift mean |shift_i|^2                                      (crop pixels)

``e`` is the rest mesh's mean edge length; the mesh terms are :mod:`core.refine.mesh`'s.
``a_i`` are the bundle's frame weights (frames it rejected get none) times a Geman-McClure
weight of the frame's starting silhouette error against the median frame's; frames whose
segmentation disagrees with the calibrated hand (IoU below :attr:`SurfaceSettings.min_iou`)
are left out and reported, like the bundle's rejections.

Measured (``bench --only surface`` and ``--only calibration``): on synthetic people with a known
surface, exact silhouettes and 2 px keypoint noise, the calibrated rest mesh's mean distance to
the true surface goes from 0.80 to 0.65 mm and held-out silhouette IoU from 0.943 to 0.947; with
the true skeleton and poses (two people, 20 frames) the displacement's RMS error falls from
0.75 to 0.48 mm, correlation 0.86 with the truth. On the demo clip (template surface, our
colour segmentation, MediaPipe's keypoints) the fit adds about 0.1 mm: there, pose and
segmentation errors read as surface. The
magnitude prior ``w_magnitude`` trades the two (0.02: 0.62 mm on the people, +0.9 mm on the
demo; 1.0: 0.67 mm, +0.04 mm); per-frame pose refinement inside the fit did not help (0.66 mm).

The offsets are stored in the profile (``profile["surface"]``, :mod:`core.profile_io`) in the
personal rest frame and added to the personal model's template by
:func:`core.model.personal.personal_model`, so fit, refinement, texture and export all see them.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from core.errors import Cancelled
from core.model import HandModel
from core.model.data import HandModelData
from core.refine.common import wrist_weight as refine_wrist_weight
from core.refine.crop import CropBox, crop_box
from core.refine.mesh import MeshTopology, edge_normal_losses, front_faces, laplacian, vertex_normals
from core.refine.optim import Adam
from core.render import SoftRasterSettings, rasterize_silhouette
from core.rotations import axis_angle_to_matrix
from core.segment.geometry import WRIST_LINE
from core.threads import BLAS_THREADS

log = logging.getLogger(__name__)

__all__ = [
    "SILHOUETTE_SIZE",
    "HandSilhouette",
    "SurfaceFrame",
    "SurfaceResult",
    "SurfaceSettings",
    "fit_surface",
    "hand_silhouette",
    "wrist_weight",
]

#: Side of the square crop a calibration frame's silhouette is kept and rendered at, pixels.
SILHOUETTE_SIZE = 96
#: Margin of that crop around the hand's keypoints, fraction of their extent on each side (the
#: mesh reaches past the keypoints by the fingers' and palm's thickness and the wrist stub).
SILHOUETTE_MARGIN = 0.25


@dataclass(frozen=True)
class HandSilhouette:
    """One frame's hand segmentation in a square crop around its keypoints.

    Attributes:
        box: the crop (image pixels to crop pixels, ``box.size`` square).
        coverage: (size, size) uint8, 255 x the fraction of each crop pixel the mask covers
            (area resampling of the full-resolution mask, :meth:`CropBox.resample_mask`).
    """

    box: CropBox
    coverage: np.ndarray

    def target(self) -> np.ndarray:
        """(size, size) float32 in [0, 1]."""
        return self.coverage.astype(np.float32) / 255.0


def hand_silhouette(mask: np.ndarray, keypoints_2d: np.ndarray, size: int | None = None,
                    margin: float = SILHOUETTE_MARGIN) -> HandSilhouette:
    """The :class:`HandSilhouette` of a full-image hand mask ((H, W) bool or [0, 1]; the
    segmentation, cut at the wrist) around the hand's keypoints ((21, 2) pixels), ``size``
    pixels square (None: :data:`SILHOUETTE_SIZE`)."""
    size = SILHOUETTE_SIZE if size is None else int(size)
    m = np.asarray(mask)
    box = crop_box(np.asarray(keypoints_2d, dtype=np.float64), size, margin, max_side=2 * max(m.shape))
    cov = np.clip(np.rint(box.resample_mask(m.astype(np.float32)) * 255.0), 0, 255).astype(np.uint8)
    return HandSilhouette(box, cov)


@dataclass(frozen=True)
class SurfaceFrame:
    """One calibration frame as the surface fit sees it (camera frame: OpenCV axes, metres).

    Attributes:
        silhouette: the hand's segmentation (:func:`hand_silhouette`).
        keypoints_2d: (21, 2) detected keypoints, pixels (the wrist line is taken from them).
        K: (3, 3) the frame's intrinsics, pixels (the bundle's focal length when estimated).
        pose: (48,) axis-angle, radians, and transl: (3,) metres: the bundle's pose of the
            personal model in this frame.
        weight: the bundle's final frame weight (0: rejected there).
    """

    silhouette: HandSilhouette
    keypoints_2d: np.ndarray
    K: np.ndarray
    pose: np.ndarray
    transl: np.ndarray
    weight: float = 1.0


@dataclass(frozen=True)
class SurfaceSettings:
    """Bounds, weights and schedule of the surface fit (see the module docstring).

    Attributes:
        cap_mm: largest displacement along the normal, millimetres (``d = cap tanh(B c)``).
        modes: Laplacian eigenvectors in the basis ``B`` (the field's smoothness).
        w_laplacian: Laplacian smoothness of the displacement (in mean edge lengths).
        w_magnitude: magnitude of the displacement (in mean edge lengths).
        w_normal: normal consistency of the displaced rest mesh against the undisplaced one.
        w_shift: per-frame crop shift, per crop pixel squared.
        iterations: Adam iterations. lr: RMS step of ``tanh``'s argument over the vertices per
            iteration (each of the M modes, of unit RMS, steps by ``lr / sqrt(M)``).
        lr_shift: step of a frame's shift per iteration, crop pixels.
        sigma: SoftRas sharpness, px^2 at :data:`SILHOUETTE_SIZE`.
        min_iou: frames whose starting silhouette IoU with their segmentation is below this
            are left out (a failed segmentation or a frame the bundle could not pose).
        frame_scale: a frame's Geman-McClure scale is this times the median frame's starting
            silhouette error.
        min_frames: fewer usable frames than this: no surface (offsets of zero).
        max_frames: at most this many frames are fitted (the highest weights; the surface is
            shared, so a few varied views pin it, and each frame costs one render per
            iteration); the rest are reported as not used.
    """

    cap_mm: float = 4.0
    modes: int = 32
    w_laplacian: float = 1.0
    w_magnitude: float = 0.3
    w_normal: float = 0.05
    w_shift: float = 0.002
    iterations: int = 20
    lr: float = 0.1
    lr_shift: float = 0.3
    sigma: float = 0.05
    min_iou: float = 0.5
    frame_scale: float = 2.5
    min_frames: int = 3
    max_frames: int = 20


@dataclass(frozen=True)
class SurfaceResult:
    """The fitted surface and how well it explains the frames.

    Attributes:
        offsets: (V, 3) float64 rest-frame offsets, metres (``displacement * normals``), in
            the frame of the model it was fitted on; zeros when no frame was usable.
        displacement: (V,) float64 signed displacement along the rest normals, metres.
        iou_before, iou_after: (K,) silhouette IoU of each frame before and after (NaN for
            frames left out); hard (> 0.5) in the frame's crop, nothing past the wrist keypoint.
        used: (K,) bool, the frames fitted (none when fewer than ``min_frames`` were usable).
        rejected: ((frame, reason), ...) frames left out (besides those the bundle rejected).
        seconds: wall time.
    """

    offsets: np.ndarray
    displacement: np.ndarray
    iou_before: np.ndarray
    iou_after: np.ndarray
    used: np.ndarray
    rejected: tuple[tuple[int, str], ...] = field(default_factory=tuple)
    seconds: float = 0.0

    @property
    def mean_mm(self) -> float:
        """Mean offset length, millimetres."""
        return float(np.linalg.norm(self.offsets, axis=1).mean() * 1000.0)

    @property
    def max_mm(self) -> float:
        """Largest offset length, millimetres."""
        return float(np.linalg.norm(self.offsets, axis=1).max() * 1000.0)


def wrist_weight(box: CropBox, keypoints_2d: np.ndarray) -> np.ndarray:
    """(size, size) float32 of ``box``: 1 on the hand's side of the wrist line
    (:data:`WRIST_LINE`), 0 past it (:func:`core.refine.common.wrist_weight`)."""
    return refine_wrist_weight(box, keypoints_2d, WRIST_LINE)


def global_joint_rotations(pose: torch.Tensor, parents: tuple[int, ...]) -> torch.Tensor:
    """(B, 16, 3, 3) global joint rotations of axis-angle poses (B, 48)."""
    from core.personalize.bundle import global_rotations

    return global_rotations(axis_angle_to_matrix(pose.reshape(-1, 16, 3)), parents)


def posed_normal_directions(model: HandModelData, pose: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) where a unit rest-frame offset along ``normals`` (V, 3) goes in each posed
    mesh: ``(sum_j w_vj G_j) n_v`` (skinning is linear in the rest mesh; joints fixed)."""
    g = global_joint_rotations(pose, tuple(int(p) for p in model.parents)).to(normals.dtype)
    w = torch.as_tensor(model.weights, dtype=normals.dtype)
    blended = torch.einsum("vj,bjac->bvac", w, g)
    return torch.einsum("bvac,vc->bva", blended, normals)


#: Radius over which the displacement fades to zero at each fingertip vertex, metres.
TIP_TAPER_M = 0.012


def tip_taper(rest: torch.Tensor, tip_ids: np.ndarray, radius: float = TIP_TAPER_M) -> torch.Tensor:
    """(V,) smooth step from 0 at the fingertip vertices to 1 at ``radius`` from them (rest
    vertices (V, 3), metres): the tips are the skeleton's keypoints, and a displacement that
    stopped dead there would dimple them."""
    dist = torch.cdist(rest, rest[torch.as_tensor(np.asarray(tip_ids), dtype=torch.long)]).amin(1)
    t = (dist / radius).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


_MODES: dict[tuple[int, int, bytes], np.ndarray] = {}


def laplacian_modes(faces: np.ndarray, num_vertices: int, count: int) -> np.ndarray:
    """(V, count) float64 the smoothest eigenvectors of a mesh's graph Laplacian ``D - A``
    (the constant first), scaled to unit RMS over the vertices; cached per mesh."""
    import hashlib

    import scipy.sparse as sp
    import scipy.sparse.linalg as sla

    f = np.asarray(faces, dtype=np.int64)
    key = (int(num_vertices), int(count), hashlib.sha1(f.tobytes()).digest())
    if key not in _MODES:
        e = np.unique(np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1), axis=0)
        a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(num_vertices, num_vertices))
        a = (a + a.T).tocsc()
        lap = sp.diags(np.asarray(a.sum(1)).ravel()) - a
        k = min(int(count), num_vertices - 2)
        w, u = sla.eigsh(lap.tocsc(), k=k, sigma=-1e-3, which="LM")  # shift-invert: the smallest
        u = u[:, np.argsort(w)]
        _MODES[key] = u * np.sqrt(num_vertices)
    return _MODES[key]


def _iou(sil: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
    a = (sil > 0.5) & (weight > 0)
    b = (target > 0.5) & (weight > 0)
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union)).numpy()


def fit_surface(model: HandModelData, frames: list[SurfaceFrame], betas: np.ndarray | None = None,
                settings: SurfaceSettings | None = None, progress: Callable[[float, str], None] | None = None,
                cancel: Callable[[], bool] | None = None) -> SurfaceResult:
    """Fit the shared surface offsets of ``model`` (the personal model, no offsets yet) to the
    frames' silhouettes (module docstring).

    Args:
        model: the personal model of the calibrated side.
        frames: the calibration frames with the bundle's poses (at least one).
        betas: (S,) the profile's shape (the personal model's rest skeleton is at it).
        settings: bounds, weights, schedule.
        progress: called with (fraction, message) after each iteration.
        cancel: polled every iteration; once it returns True the fit stops.

    Returns:
        The :class:`SurfaceResult`, offsets in ``model``'s rest frame.

    Raises:
        Cancelled: ``cancel()`` returned True.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one small batch: threads only add overhead on a busy machine
    try:
        with BLAS_THREADS.limit(1), torch.inference_mode(False):
            return _fit_surface(model, frames, betas, settings or SurfaceSettings(), progress, cancel)
    finally:
        torch.set_num_threads(threads)


def _fit_surface(model: HandModelData, frames: list[SurfaceFrame], betas: np.ndarray | None,
                 st: SurfaceSettings, progress: Callable[[float, str], None] | None,
                 cancel: Callable[[], bool] | None) -> SurfaceResult:
    t0 = time.perf_counter()
    if not frames:
        raise ValueError("fit_surface needs at least one frame")
    k, n_v = len(frames), model.num_vertices
    f32 = torch.float32
    layer = HandModel(model)
    faces = layer.faces
    b = None if betas is None else torch.as_tensor(np.asarray(betas, np.float32)).reshape(1, -1)
    with torch.no_grad():
        rest = layer.rest(b).vertices  # (1, V, 3)
        normals = vertex_normals(rest, faces)[0]
        pose = torch.as_tensor(np.stack([f.pose for f in frames]), dtype=f32)
        transl = torch.as_tensor(np.stack([f.transl for f in frames]), dtype=f32)
        posed = layer(pose, None if b is None else b.expand(k, -1), transl).vertices  # (K, V, 3)
        dirs = posed_normal_directions(model, pose, normals)
    topo = MeshTopology.from_faces(model.faces, n_v)
    edge = float((rest[0, topo.edges[:, 1]] - rest[0, topo.edges[:, 0]]).norm(dim=-1).mean())
    size = frames[0].silhouette.box.size
    soft = SoftRasterSettings(image_size=(size, size), sigma=st.sigma)
    kc = torch.stack([f.silhouette.box.intrinsics(torch.as_tensor(np.asarray(f.K), dtype=torch.float64)).to(f32)
                      for f in frames])
    target = torch.as_tensor(np.stack([f.silhouette.target() for f in frames]))
    wrist = torch.as_tensor(np.stack([wrist_weight(f.silhouette.box, f.keypoints_2d) for f in frames]))
    area = (target * wrist).flatten(1).sum(1).clamp_min(1.0)
    free = tip_taper(rest[0], model.tip_vertex_ids)
    cap = st.cap_mm / 1000.0

    # Each frame draws only its front faces: the outline of a closed surface is theirs alone,
    # and SoftRas would otherwise add the back faces' probability there (a silhouette about half
    # a pixel too wide). The offsets are small: the faces facing the camera stay the same.
    front = [front_faces(posed[i:i + 1], faces) for i in range(k)]

    def render(verts: torch.Tensor, kmat: torch.Tensor, shift: torch.Tensor, rows: list[int]) -> torch.Tensor:
        kk = kmat.clone()
        kk[:, 0, 2] = kmat[:, 0, 2] + shift[:, 0]
        kk[:, 1, 2] = kmat[:, 1, 2] + shift[:, 1]
        return torch.cat([rasterize_silhouette(verts[j:j + 1], front[i], kk[j:j + 1], soft)
                          for j, i in enumerate(rows)])

    zero_shift = torch.zeros(k, 2, dtype=f32)
    with torch.no_grad():
        sil0 = render(posed, kc, zero_shift, list(range(k)))
        err0 = ((sil0 - target) ** 2 * wrist).flatten(1).sum(1) / area
    iou_before = _iou(sil0, target, wrist)
    weight = np.array([max(float(f.weight), 0.0) for f in frames])
    rejected: list[tuple[int, str]] = []
    for i in range(k):
        if weight[i] > 0 and iou_before[i] < st.min_iou:
            rejected.append((i, f"its segmentation disagrees with the calibrated hand (silhouette IoU "
                                f"{iou_before[i]:.2f} < {st.min_iou:.2f})"))
            weight[i] = 0.0
    used = weight > 0
    nan = np.full(k, np.nan)
    if used.sum() < st.min_frames:
        log.info("surface fit skipped: %d usable frames (at least %d needed)", int(used.sum()), st.min_frames)
        return SurfaceResult(np.zeros((n_v, 3)), np.zeros(n_v), np.where(used, iou_before, nan), nan,
                             np.zeros(k, dtype=bool), tuple(rejected), time.perf_counter() - t0)
    e0 = err0.numpy().astype(np.float64)
    c_f = st.frame_scale * float(np.median(e0[used]))
    weight = weight * (1.0 / (1.0 + (e0 / max(c_f, 1e-9)) ** 2) ** 2)
    if used.sum() > st.max_frames:  # the best-weighted frames
        weight[np.argsort(-weight)[st.max_frames:]] = 0.0
        used = weight > 0
    a = torch.as_tensor(weight / weight.sum(), dtype=f32)
    rows = [int(i) for i in np.flatnonzero(used)]
    idx = torch.as_tensor(rows)
    posed_u, dirs_u, target_u, wrist_u, area_u, a_u = (posed[idx], dirs[idx], target[idx], wrist[idx], area[idx],
                                                       a[idx])
    kc_u = kc[idx]
    rest_ref = rest.detach()
    n_rest = normals[None]

    n_u = len(rows)
    basis = torch.as_tensor(laplacian_modes(model.faces, n_v, st.modes), dtype=f32)  # (V, M)
    n_c = basis.shape[1]
    theta = torch.zeros(n_c + 2 * n_u, dtype=f32)  # mode coefficients (M,), the frames' shifts (n, 2)
    lr = torch.cat([torch.full((n_c,), st.lr / math.sqrt(n_c)), torch.full((2 * n_u,), st.lr_shift)])
    opt = Adam(theta, lr)
    best = (float("inf"), torch.zeros(n_v), torch.zeros(n_u, 2))
    for it in range(st.iterations + 1):
        x = theta.detach().clone().requires_grad_(True)
        c, shift = x[:n_c], x[n_c:].view(n_u, 2)
        d = cap * torch.tanh(basis @ c) * free
        verts = posed_u + d[None, :, None] * dirs_u
        sil = render(verts, kc_u, shift, rows)
        e_sil = (((sil - target_u) ** 2 * wrist_u).flatten(1).sum(1) / area_u * a_u).sum()
        loss = e_sil + st.w_shift * (shift ** 2).sum(1).mean()
        if st.w_laplacian > 0:
            loss = loss + st.w_laplacian * laplacian(d[None, :, None], topo).pow(2).mean() / edge**2
        if st.w_magnitude > 0:
            loss = loss + st.w_magnitude * d.pow(2).mean() / edge**2
        if st.w_normal > 0:
            _, normal = edge_normal_losses(rest_ref + d[None, :, None] * n_rest, rest_ref, topo)
            loss = loss + st.w_normal * normal.sum()
        value = float(loss.detach())
        if value < best[0]:
            best = (value, d.detach().clone(), shift.detach().clone())
        if it == st.iterations:
            break
        loss.backward()
        opt.step(x.grad)
        if cancel is not None and cancel():
            raise Cancelled("the surface fit was cancelled")
        if progress is not None:
            progress((it + 1) / st.iterations, f"fitting the surface: iteration {it + 1} of {st.iterations}")
    d_best, shift_best = best[1], best[2]
    with torch.no_grad():
        sil1 = render(posed_u + d_best[None, :, None] * dirs_u, kc_u, shift_best, rows)
    iou_after = nan.copy()
    iou_after[used] = _iou(sil1, target_u, wrist_u)
    disp = d_best.double().numpy()
    offsets = disp[:, None] * normals.double().numpy()
    return SurfaceResult(offsets, disp, np.where(used, iou_before, nan), iou_after, used, tuple(rejected),
                         time.perf_counter() - t0)
