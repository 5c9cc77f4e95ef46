"""Benchmarks of the renderer, as plain functions returning dicts (``main.py bench`` calls them).

Timings are wall-clock medians over repeats after warm-up, in milliseconds, on the current
device and torch thread count. Shared machines are noisy: compare medians, not single runs.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

import torch
from torch import Tensor

from core.render._span_kernels import compiled_backend_failed
from core.render.projection import project_points, resize_intrinsics
from core.render.settings import SoftRasterSettings
from core.render.soft import make_spans, rasterize_silhouette, rasterize_silhouette_dense
from core.render.synthetic import synthetic_hand_scene

__all__ = ["benchmark_softras", "time_ms"]


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


def benchmark_softras(
    repeats: int = 30,
    image_size: int = 128,
    settings: SoftRasterSettings | None = None,
    mesh: tuple[Tensor, Tensor, Tensor] | None = None,
    dense_face_subset: int | None = 400,
    device: str | torch.device = "cpu",
) -> dict[str, float | int | str | bool]:
    """Time the soft silhouette (forward + backward) and compare with the dense reference.

    Args:
        repeats: timed repeats (the median is reported).
        image_size: side of the square crop, pixels (the budget is set at 128).
        settings: soft rasterizer settings (image size is overridden); default settings if
            None.
        mesh: (verts (1, V, 3) m, faces (F, 3), K (1, 3, 3)) framed for ``image_size``;
            default: :func:`synthetic_hand_scene` (3,220 faces filling the crop).
        dense_face_subset: the dense reference costs F x H x W pairs (tens of seconds at
            128 x 128); it is timed on this many faces and scaled by F / subset (its cost is
            linear in F: every face is an independent chunk of work). None times all faces.
        device: where to run.

    Returns:
        ``softras_ms`` (median, image_size^2, forward + backward of 1 - soft IoU),
        ``softras_min_ms``, ``softras_64_ms`` (the same crop rendered at half resolution with
        sigma / 4, the same blur in crop units), ``softras_dense_ms``,
        ``softras_dense_speedup`` (= dense / softras), ``softras_pairs`` (face-pixel pairs
        evaluated), ``softras_faces``, ``softras_backend`` (eager or compiled),
        ``softras_threads``, ``softras_dense_extrapolated``.
    """
    settings = settings or SoftRasterSettings()
    size = (image_size, image_size)
    settings = dataclasses.replace(settings, image_size=size)
    if mesh is None:
        verts, faces, K = synthetic_hand_scene(size)
    else:
        verts, faces, K = mesh
    verts, faces, K = verts.to(device), faces.to(device), K.to(device)
    with torch.no_grad():
        target = (rasterize_silhouette(verts, faces, K, settings) > 0.5).to(verts.dtype)
        target = torch.roll(target, shifts=(2, -1), dims=(1, 2))  # a slightly offset mask

    fast = time_ms(_step(verts, faces, K, target, rasterize_silhouette, settings), repeats)
    backend = settings.backend
    if backend == "auto":
        backend = "eager" if compiled_backend_failed() else "compiled"

    half = dataclasses.replace(settings, image_size=(image_size // 2, image_size // 2),
                               sigma=settings.sigma / 4)
    K_half = resize_intrinsics(K, 0.5)
    with torch.no_grad():
        target_half = (rasterize_silhouette(verts, faces, K_half, half) > 0.5).to(verts.dtype)
    fast_half = time_ms(_step(verts, faces, K_half, target_half, rasterize_silhouette, half),
                        repeats)

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
        "softras_64_ms": statistics.median(fast_half),
        "softras_dense_ms": dense_ms,
        "softras_dense_speedup": dense_ms / softras_ms,
        "softras_dense_extrapolated": subset < num_faces,
        "softras_pairs": spans.num_pairs,
        "softras_faces": num_faces,
        "softras_backend": backend,
        "softras_threads": torch.get_num_threads(),
    }
