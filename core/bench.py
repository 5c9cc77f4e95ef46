"""``bench``: stage timings on this machine, with a baseline measured in the same process.

Machines are noisy and differ, so every timing comes with ``baseline_ms``: a fixed CPU
workload (a float32 matrix product loop) timed in the same run. Ratios against it, or
against MediaPipe for the whole-frame budget, are what budgets compare.

Each benchmark is a function returning a dict of figures; later stages register theirs in
:data:`BENCHMARKS`.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)


def median_ms(fn: Callable[[], Any], repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def bench_baseline() -> dict[str, float]:
    """A fixed workload: 20 products of 128 x 128 float32 matrices."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(128, 128, generator=g)

    def work() -> None:
        x = a
        for _ in range(20):
            x = torch.tanh(x @ a)

    return {"baseline_ms": round(median_ms(work, repeats=50), 4)}


def bench_model() -> dict[str, float]:
    """Forward pass of the hand model layer, batch of 1, with and without backward."""
    from core.model import HandModel, load_model_data

    layer = HandModel(load_model_data())
    pose = torch.zeros(1, 48)
    betas = torch.zeros(1, layer.num_betas)

    def forward() -> None:
        with torch.no_grad():
            layer(pose, betas)

    pose_g = pose.clone().requires_grad_(True)

    def forward_backward() -> None:
        layer(pose_g, betas).keypoints.sum().backward()

    return {
        "model_forward_ms": round(median_ms(forward), 3),
        "model_forward_backward_ms": round(median_ms(forward_backward), 3),
    }


#: name -> benchmark function; later stages add theirs here.
BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "baseline": bench_baseline,
    "model": bench_model,
}

#: Figures that DESIGN.md asks for and that a later release fills in.
PENDING = ("mediapipe_ms", "fit_ms", "refine_iter_ms", "softras_ms", "softras_dense_speedup",
           "texture_ms", "frame_ms", "pipeline_ratio")


def run_benchmarks(only: list[str] | None = None) -> dict[str, Any]:
    """Run the registered benchmarks (all, or the named ones) and merge their figures."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    for name, fn in BENCHMARKS.items():
        if only and name not in only and name != "baseline":
            continue
        log.info("bench: %s", name)
        results.update(fn())
    missing = [k for k in PENDING if k not in results]
    if missing:
        results["not_yet_available"] = missing
    if "model_forward_ms" in results:
        results["model_forward_ratio"] = round(results["model_forward_ms"] / results["baseline_ms"], 3)
    return results
