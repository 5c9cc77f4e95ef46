"""Benchmarks of the renderer, as plain functions returning dicts (``main.py bench`` calls them).

Timings are wall-clock medians over repeats after warm-up, in milliseconds, on the current
device and torch thread count. Shared machines are noisy: compare medians, not single runs.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from typing import Callable

import torch
from torch import Tensor

from core.errors import HandTwinError
from core.render import _native
from core.render._span_kernels import compiled_backend_failed
from core.render.projection import project_points, resize_intrinsics
from core.render.settings import SoftRasterSettings
from core.render.soft import make_spans, rasterize_silhouette, rasterize_silhouette_dense
from core.render.synthetic import frame_in_camera, synthetic_hand_scene

__all__ = ["benchmark_softras", "open_hand_scene", "time_ms"]

log = logging.getLogger(__name__)


def time_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    """Wall-clock times of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _step(verts: Tensor, faces: Tensor, K: Tensor, target: Tensor,
          render: Callable[..., Tensor], settings: SoftRasterSettings) -> Callable[[], None]:
    """One silhouette refinement step: render, 1 - soft IoU, backward to the vertices."""

    def run() -> None:
        v = verts.detach().requires_grad_(True)
        sil = render(v, faces, K, settings)
        inter = (sil * target).sum()
        loss = 1.0 - inter / (sil.sum() + target.sum() - inter)
        loss.backward()

    return run


def open_hand_scene(
    image_size: tuple[int, int] = (128, 128),
    fill: float = 0.9,
    depth: float = 0.5,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor, Tensor]:
    """The bundled open hand model (mean shape, flat rest pose) filling a camera's image.

    The palm faces the camera (the template's direction of least extent is the optical axis),
    fingers up, tilted by 0.35 rad about the vertical like :func:`synthetic_hand_scene`.

    Returns:
        verts (1, V, 3) metres, camera frame; faces (F, 3) int64 (3,216); K (1, 3, 3) pixels.
    """
    from core.model import load_model_data  # the renderer itself does not need the model

    data = load_model_data()
    verts = torch.as_tensor(data.v_template, dtype=torch.float64)
    faces = torch.as_tensor(data.faces, dtype=torch.int64)
    centred = verts - verts.mean(0)
    axes = torch.linalg.svd(centred, full_matrices=False).Vh  # rows: most to least extent
    # Image y along the fingers (longest extent), z along the palm normal, right-handed.
    rot = torch.stack((torch.linalg.cross(axes[2], axes[0]), axes[0], axes[2]))
    local = centred @ rot.T
    if float(axes[0, 0]) > 0:  # the template's fingers point along +x: put them up (-y)
        local = local * torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64)
    return frame_in_camera(local, faces, image_size, fill, depth, dtype)


def benchmark_scene(
    mesh: str, image_size: tuple[int, int]
) -> tuple[tuple[Tensor, Tensor, Tensor], str]:
    """The benchmark mesh: ``"open_hand"`` (:func:`open_hand_scene`, falling back to the
    synthetic hand where the model cannot be loaded) or ``"synthetic"``; returns it and its
    name."""
    if mesh == "open_hand":
        try:
            return open_hand_scene(image_size), "open_hand"
        except HandTwinError as exc:
            log.warning("softras benchmark: open hand unavailable (%s); using the synthetic "
                        "hand", exc)
    elif mesh != "synthetic":
        raise ValueError(f"mesh must be 'open_hand' or 'synthetic', got {mesh!r}")
    return synthetic_hand_scene(image_size), "synthetic"


def benchmark_softras(
    repeats: int = 30,
    image_size: int = 128,
    settings: SoftRasterSettings | None = None,
    mesh: tuple[Tensor, Tensor, Tensor] | str = "open_hand",
    dense_face_subset: int | None = 400,
    device: str | torch.device = "cpu",
) -> dict[str, float | int | str | bool]:
    """Time the soft silhouette (forward + backward) and compare with the dense reference.

    Args:
        repeats: timed repeats (the median is reported).
        image_size: side of the square crop, pixels (the budget is set at 128).
        settings: soft rasterizer settings (image size is overridden); default settings if
            None.
        mesh: (verts (1, V, 3) m, faces (F, 3), K (1, 3, 3)) framed for ``image_size``, or
            ``"open_hand"`` (default: the bundled hand model, 3,216 faces filling the crop)
            or ``"synthetic"`` (:func:`synthetic_hand_scene`, 3,220 faces).
        dense_face_subset: the dense reference costs F x H x W pairs (tens of seconds at
            128 x 128); it is timed on this many faces and scaled by F / subset (its cost is
            linear in F: every face is an independent chunk of work). None times all faces.
        device: where to run.

    Returns:
        ``softras_ms`` (median, image_size^2, forward + backward of 1 - soft IoU with the
        given settings), ``softras_min_ms``, ``softras_saturated_ms`` (the same with
        ``saturate_interior``, as the refinement uses it), ``softras_eager_ms`` (the same
        with ``backend="eager"``: plain PyTorch ops), ``softras_64_ms`` (the crop rendered at
        half resolution with sigma / 4, the same blur in crop units), ``softras_dense_ms``,
        ``softras_dense_speedup`` (= dense / softras), ``softras_pairs`` (face-pixel pairs
        of the eager path's spans), ``softras_faces``, ``softras_mesh``,
        ``softras_backend`` (native, eager or compiled), ``softras_threads``,
        ``softras_dense_extrapolated``.
    """
    settings = settings or SoftRasterSettings()
    size = (image_size, image_size)
    settings = dataclasses.replace(settings, image_size=size)
    if isinstance(mesh, str):
        (verts, faces, K), mesh_name = benchmark_scene(mesh, size)
    else:
        (verts, faces, K), mesh_name = mesh, "given"
    verts, faces, K = verts.to(device), faces.to(device), K.to(device)
    with torch.no_grad():
        target = (rasterize_silhouette(verts, faces, K, settings) > 0.5).to(verts.dtype)
        target = torch.roll(target, shifts=(2, -1), dims=(1, 2))  # a slightly offset mask

    def timed(s: SoftRasterSettings, n: int = repeats, k: Tensor = K,
              tgt: Tensor = target) -> list[float]:
        return time_ms(_step(verts, faces, k, tgt, rasterize_silhouette, s), n)

    fast = timed(settings)
    backend = settings.backend
    if backend == "auto":
        native = _native.native_supported(verts) and _native.library() is not None
        backend = "native" if native else "eager"
    elif backend == "compiled" and compiled_backend_failed():
        backend = "eager"
    saturated = timed(dataclasses.replace(settings, saturate_interior=True))
    eager = timed(dataclasses.replace(settings, backend="eager"), max(3, repeats // 3))

    half = dataclasses.replace(settings, image_size=(image_size // 2, image_size // 2),
                               sigma=settings.sigma / 4)
    K_half = resize_intrinsics(K, 0.5)
    with torch.no_grad():
        target_half = (rasterize_silhouette(verts, faces, K_half, half) > 0.5).to(verts.dtype)
    fast_half = timed(half, k=K_half, tgt=target_half)

    num_faces = faces.shape[0]
    subset = num_faces if dense_face_subset is None else min(dense_face_subset, num_faces)
    dense = time_ms(
        _step(verts, faces[:subset], K, target, rasterize_silhouette_dense, settings),
        repeats=1, warmup=0,
    )
    dense_ms = dense[0] * num_faces / subset

    with torch.no_grad():
        tri = project_points(verts, K)[:, faces].reshape(-1, 3, 2)
        spans = make_spans(tri, torch.ones(tri.shape[0], dtype=torch.bool, device=tri.device),
                           settings.cull_radius, 1, num_faces, image_size, image_size)
    softras_ms = statistics.median(fast)
    return {
        "softras_ms": softras_ms,
        "softras_min_ms": min(fast),
        "softras_saturated_ms": statistics.median(saturated),
        "softras_eager_ms": statistics.median(eager),
        "softras_64_ms": statistics.median(fast_half),
        "softras_dense_ms": dense_ms,
        "softras_dense_speedup": dense_ms / softras_ms,
        "softras_dense_extrapolated": subset < num_faces,
        "softras_pairs": spans.num_pairs,
        "softras_faces": num_faces,
        "softras_mesh": mesh_name,
        "softras_backend": backend,
        "softras_threads": torch.get_num_threads(),
    }
