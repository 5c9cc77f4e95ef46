"""``bench``: stage timings on this machine, with a baseline measured in the same process.

Machines are noisy and differ, so every timing comes with ``baseline_ms``: a fixed CPU
workload (a float32 matrix product loop) timed in the same run. Ratios against it, or
against MediaPipe for the whole-frame budget, are what budgets compare.

Each benchmark is a function returning a dict of figures: the pipeline-wide ones are in
:data:`BENCHMARKS`, each stage's in ``core.<stage>.bench`` (:data:`STAGE_BENCH_MODULES`).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
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
    """A fixed workload: 20 products of 128 x 128 float32 matrices, with the run's threads and
    (``baseline_one_thread_ms``) with one, which tells a busy machine (see :func:`threads_contended`)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(128, 128, generator=g)

    def work() -> None:
        x = a
        for _ in range(20):
            x = torch.tanh(x @ a)

    out = {"baseline_ms": round(median_ms(work, repeats=50), 4)}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        out["baseline_one_thread_ms"] = round(median_ms(work, repeats=50), 4)
    finally:
        torch.set_num_threads(threads)
    return out


#: ``baseline_ms`` over ``baseline_one_thread_ms`` beyond which the run's threads are contended.
CONTENDED_RATIO = 2.0


def threads_contended(results: dict[str, Any]) -> bool:
    """Whether PyTorch's threads waited on each other during the baseline.

    Measured on this 2-core VM: while another process keeps a core busy, the baseline with two
    intra-op threads takes 13-290 ms instead of 0.6 ms (each product waits for the thread that
    lost its core), while one thread takes 0.7-0.8 ms. Timings of such a run, and ratios against
    its baseline, mean nothing.
    """
    base, one = results.get("baseline_ms"), results.get("baseline_one_thread_ms")
    return base is not None and one is not None and base > CONTENDED_RATIO * one


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


#: name -> benchmark function (the stage packages add theirs: STAGE_BENCH_MODULES).
BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "baseline": bench_baseline,
    "model": bench_model,
}


#: Where benchmarks that draw plots write their PNGs (``bench --plots DIR``); None: no plots.
_PLOTS_DIR: Path | None = None


def plots_dir() -> Path | None:
    """The folder for benchmark plots of this run, created on demand, or None when not asked."""
    if _PLOTS_DIR is not None:
        _PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    return _PLOTS_DIR


@contextmanager
def figure(path: Path, figsize: tuple[float, float] = (7.0, 3.5)) -> Iterator[Any]:
    """The axes of a new matplotlib figure (Agg backend) for a benchmark plot: laid out and
    saved to ``path`` (PNG) when the block ends, closed either way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, dpi=120)
    try:
        yield ax
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def cpu_steal_ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks since boot (Linux ``/proc/stat``; None elsewhere).

    Steal is the time the hypervisor gave this virtual machine's CPUs to other machines: on
    the shared 2-core VMs it reached 30-65% for long stretches, which slows every stage by as
    much and which no in-process baseline can cancel (it changes within a run).
    """
    try:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks)


def steal_share(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """Share of CPU time stolen between two :func:`cpu_steal_ticks` readings (None if unknown)."""
    if start is None or end is None:
        return None
    return (end[0] - start[0]) / max(1, end[1] - start[1])


#: Benchmarks that run only when named (``--only``): the GUI soak takes 20 minutes; gui_fps
#: opens the real window for a minute.
ON_REQUEST = ("soak", "gui_fps")
_SOAK_S: float | None = None


def bench_soak() -> dict[str, Any]:
    """The GUI on the demo for a long session (core.tools.bench_soak): RSS start/peak/end, survived."""
    from core.tools.bench_soak import bench_soak as run

    return run(_SOAK_S, plots_dir())


BENCHMARKS["soak"] = bench_soak


def bench_gui_fps() -> dict[str, Any]:
    """The real window on the demo, offscreen, refinement 3 and texture on (core.tools.bench_gui_fps):
    frames per second and the GUI thread's longest block."""
    from core.tools.bench_gui_fps import bench_gui_fps as run

    return run()


BENCHMARKS["gui_fps"] = bench_gui_fps


def run_benchmarks(only: list[str] | None = None, plots_dir: str | Path | None = None,
                   soak_s: float | None = None) -> dict[str, Any]:
    """Run the registered benchmarks (all but :data:`ON_REQUEST`, or the named ones) and merge their figures.

    With ``plots_dir``, benchmarks that can draw a plot write it there (see :func:`plots_dir`);
    ``soak_s`` is the soak's session length (default ``core.tools.bench_soak.DEFAULT_SOAK_S``).

    Raises:
        InputError: a name in ``only`` that no benchmark has, or a ``plots_dir`` that cannot be
            made a folder (before any benchmark runs).
    """
    global _PLOTS_DIR, _SOAK_S
    _PLOTS_DIR = Path(plots_dir) if plots_dir is not None else None
    _SOAK_S = soak_s
    torch.set_num_threads(max(1, torch.get_num_threads()))
    registered = {**BENCHMARKS, **_stage_benchmarks()}
    unknown = sorted(set(only or ()) - set(registered))
    from core.errors import InputError

    if unknown:
        raise InputError(f"no benchmark named {', '.join(unknown)}; --only takes {', '.join(registered)}")
    if plots_dir is not None:  # a folder the plots can go to, before minutes of benchmarks
        try:
            Path(plots_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--plots {plots_dir}: cannot make that folder ({exc.strerror or exc})") from exc
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    start = cpu_steal_ticks()
    for name, fn in registered.items():
        if only and name not in only and name != "baseline":
            continue
        if not only and name in ON_REQUEST:
            continue
        log.info("bench: %s", name)
        results.update(fn())
    if threads_contended(results):
        log.warning("bench: the baseline took %.1f ms with %d threads but %.2f ms with one: another process "
                    "is busy on this machine and PyTorch's threads wait for each other; this run's timings and "
                    "ratios are not comparable (run it on a quiet machine)", results["baseline_ms"],
                    results["torch_threads"], results["baseline_one_thread_ms"])
    if "model_forward_ms" in results:
        results["model_forward_ratio"] = round(results["model_forward_ms"] / results["baseline_ms"], 3)
    share = steal_share(start, cpu_steal_ticks())
    results["cpu_steal_share"] = None if share is None else round(share, 4)
    if share is not None and share > 0.1:
        log.warning("bench: other machines took %.0f%% of this VM's CPU during the run; the "
                    "timings are slower and noisier by about as much", 100 * share)
    return results


# --------------------------------------------------------------------------- the pipeline

def _bench_frames(max_frames: int = 60) -> list:
    """Frames for the pipeline benchmark: the bundled demo clip."""
    from core.capture import DEMO_CLIP_PATH, open_source
    from core.errors import InputError

    if not DEMO_CLIP_PATH.exists():
        raise InputError(f"the demo clip {DEMO_CLIP_PATH} is missing (python -m core.synth.make_demo)")
    frames = []
    with open_source("demo") as src:  # "demo" brings the clip's intrinsics (perspective fit)
        for frame in src:
            frames.append(frame)
            if len(frames) >= max_frames:
                break
    return frames


def bench_pipeline() -> dict[str, Any]:
    """mediapipe_ms, fit_ms (20 iterations, one hand), frame_ms and pipeline_ratio on the demo.

    ``stream_fit_iterations`` is the mean number of iterations the stream's warm-started fits
    ran before converging (``FitSettings.tolerance``).

    ``frame_ms`` is throughput: wall time over the clip divided by its frames, for the whole
    engine (detection + fit); ``mediapipe_ms`` the same for the detector alone, in this run.
    """
    import time

    from core.detect import HandDetector
    from core.engine import Engine, EngineSettings
    from core.fit import HandObservation

    frames = _bench_frames()

    def run_detector() -> tuple[float, list]:
        dets = []
        with HandDetector(max_hands=1, mode="video") as det:
            t0 = time.perf_counter()
            for f in frames:
                dets.append(det.detect(f.image, f.timestamp_s))
            return (time.perf_counter() - t0) * 1000 / len(frames), dets

    run_detector()  # warm-up (graph creation, caches)
    mediapipe_ms, dets = run_detector()
    with Engine(EngineSettings(max_hands=1, device="cpu")) as engine:
        engine.process(frames[0])
        for _ in engine.process_stream(frames[:2]):  # starts the stream's detector process
            pass
        engine.reset()
        t0 = time.perf_counter()
        stream_fits = [h.fit for r in engine.process_stream(frames) for h in r.hands]
        frame_ms = (time.perf_counter() - t0) * 1000 / len(frames)
        first = next((d[0] for d in dets if d), None)
        fit_ms = None
        if first is not None:
            K = frames[0].intrinsics.K.astype("float32") if frames[0].intrinsics is not None else None
            obs = HandObservation(first.handedness, first.keypoints_2d, first.world_landmarks, K, first.image_size)
            fit_ms = round(median_ms(lambda: engine.fitter.fit([obs], iterations=20, tolerance=0.0),
                                     repeats=20, warmup=3), 3)
    detected = sum(1 for d in dets if d) / len(frames)
    return {
        "bench_frames": len(frames),
        "mediapipe_ms": round(mediapipe_ms, 3),
        "fit_ms": fit_ms,
        "stream_fit_iterations": round(float(np.mean([f.iterations for f in stream_fits])), 2) if stream_fits else None,
        "frame_ms": round(frame_ms, 3),
        "pipeline_ratio": round(frame_ms / mediapipe_ms, 3),
        "demo_detection_rate": round(detected, 3),
    }


def bench_accuracy_real() -> dict[str, Any]:
    """2D and 3D accuracy on ../shared/data when present (MediaPipe vs the fit)."""
    from core.tools.evaluate_fit import DEFAULT_DATA, evaluate_2d, evaluate_interhand

    if not DEFAULT_DATA.exists():
        return {"real_data": "absent"}
    return {"accuracy_real_2d": evaluate_2d(), "accuracy_real_3d": evaluate_interhand()}


BENCHMARKS["pipeline"] = bench_pipeline
BENCHMARKS["accuracy_real"] = bench_accuracy_real


def bench_accuracy_synthetic() -> dict[str, Any]:
    """Accuracy on 60 synthetic hands through the real MediaPipe (exact ground truth)."""
    from core.tools.evaluate_fit import evaluate_synthetic

    return {"accuracy_synthetic": evaluate_synthetic(60)["synthetic"]}


def bench_softras() -> dict[str, Any]:
    """The soft silhouette rasterizer on the open hand, 128 x 128, forward + backward."""
    from core.tools.bench_render import benchmark_softras

    res = benchmark_softras(repeats=10)
    return {k: res[k] for k in ("softras_ms", "softras_dense_speedup") if k in res}


BENCHMARKS["accuracy_synthetic"] = bench_accuracy_synthetic
BENCHMARKS["softras"] = bench_softras

#: Stage packages that contribute benchmarks: each ``<module>.BENCHMARKS`` is a dict
#: name -> function returning a dict of figures, merged after the ones above.
STAGE_BENCH_MODULES = (
    "core.tools.bench_fit",
    "core.tools.bench_segment",
    "core.tools.bench_refine",
    "core.tools.bench_personalize",
    "core.tools.bench_texture",
    "core.tools.bench_tracking",
    "core.tools.evaluate_wild",
)


def _stage_benchmarks() -> dict[str, Callable[[], dict[str, Any]]]:
    import importlib

    found: dict[str, Callable[[], dict[str, Any]]] = {}
    for name in STAGE_BENCH_MODULES:
        found.update(importlib.import_module(name).BENCHMARKS)
    return found
