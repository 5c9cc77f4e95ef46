"""Benchmark of the segmentation stage (``python main.py bench --json --only segment``).

* ``segment_ms``: median wall time per hand of the default method on the demo clip's frames
  (ground-truth keypoints, so MediaPipe is not timed), next to ``segment_capsule_ms`` (the
  keypoint model alone: the floor every method pays for crop, prior, upsampling and cut).
  ``segment_cpu_ms`` is the process CPU time of the same calls: on a crowded machine a call of
  a few ms is often preempted, and the wall time then measures the crowd, not the code.
* ``segment_iou_real``: mean IoU of the default method inside each ground-truth hand box of
  ``../shared/data/unipd_handseg30`` (MediaPipe keypoints), when the data are present.
* ``segment_two_hands``: 30 pairs of rendered hands, one partly over the other: the share of
  each hand's mask that is the other hand, segmented alone and together (touching hands
  separated), and the share of its own pixels kept together
  (:func:`core.tools.evaluate_segment.score_two_hands`).
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any, Callable

import numpy as np

from core.segment import DEFAULT_METHOD, segment_hand

log = logging.getLogger(__name__)

__all__ = ["BENCHMARKS", "bench_segment"]


def _demo_hands(max_frames: int = 30) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, keypoints) of the demo clip's first frames, keypoints from its ground truth."""
    from core.capture import DEMO_CLIP_PATH, open_source

    truth = DEMO_CLIP_PATH.with_name("demo_groundtruth.npz")
    if not DEMO_CLIP_PATH.exists() or not truth.exists():
        return []
    kps = np.load(truth)["keypoints_2d"]
    hands = []
    with open_source("demo") as source:
        for frame in source:
            if frame.index >= min(max_frames, len(kps)):
                break
            hands.append((frame.image, kps[frame.index].astype(np.float64)))
    return hands


def _median_ms(hands: list[tuple[np.ndarray, np.ndarray]], method: str,
               repeats: int) -> tuple[float, float]:
    """Median (wall, process CPU) milliseconds per hand."""
    for image, kp in hands[:3]:  # warm-up
        segment_hand(image, kp, method)
    wall, cpu = [], []
    for _ in range(repeats):
        for image, kp in hands:
            start = time.process_time()
            wall.append(segment_hand(image, kp, method).ms)
            cpu.append((time.process_time() - start) * 1e3)
    return round(statistics.median(wall), 3), round(statistics.median(cpu), 3)


def bench_segment() -> dict[str, Any]:
    """Cost per hand of the default segmenter, and its accuracy on real masks if present."""
    out: dict[str, Any] = {"segment_method": DEFAULT_METHOD}
    hands = _demo_hands()
    if hands:
        out["segment_ms"], out["segment_cpu_ms"] = _median_ms(hands, DEFAULT_METHOD, repeats=5)
        out["segment_capsule_ms"], _ = _median_ms(hands, "capsule", repeats=5)
    else:
        log.warning("bench segment: the demo clip is missing; no timing")
    from core.synth import default_layers
    from core.tools.evaluate_segment import real_cases, score_methods, score_two_hands, two_hand_case

    layers = default_layers()
    out["segment_two_hands"] = score_two_hands([two_hand_case(i, layers) for i in range(30)])

    real = real_cases()
    if real is not None:
        cases, counts = real
        scores = score_methods(cases, [DEFAULT_METHOD])[DEFAULT_METHOD]
        out["segment_iou_real"] = scores["iou"]
        out["segment_real_hands"] = f"{counts['matched']}/{counts['boxes']}"
    return out


BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {"segment": bench_segment}
