"""The in-the-wild audit's scoring (core.tools.evaluate_wild) on tiny fixtures; the real run needs
``../shared/data`` and is not a unit test (``python -m core.tools.evaluate_wild``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.tools.evaluate_wild import ImageReport, best_boxes, evaluate_wild, precision, summarize


def _hand_at(x: float, y: float, size: float, rng: np.random.Generator) -> np.ndarray:
    return np.array([x, y]) + rng.uniform(0.0, size, (21, 2))


def test_best_boxes_flags_two_outputs_on_one_box_and_none_outside() -> None:
    rng = np.random.default_rng(0)
    boxes = [(0, 0, 100, 100), (200, 0, 300, 100)]
    hands = [_hand_at(10, 10, 80, rng), _hand_at(15, 12, 75, rng), _hand_at(210, 10, 80, rng),
             _hand_at(500, 500, 50, rng)]
    assert best_boxes(hands, boxes) == [0, 0, 1, None]


def test_precision_counts_mask_pixels_that_are_not_hand() -> None:
    truth = np.zeros((20, 20), bool)
    truth[5:15, 5:10] = True
    pred = np.zeros_like(truth)
    pred[5:15, 5:15] = True  # half of it on the background
    assert precision(pred, truth) == 0.5
    assert precision(pred, truth, (0, 0, 10, 20)) == 1.0  # only the hand half is in the box
    assert precision(np.zeros_like(truth), truth) == 1.0


def test_summarize_totals_and_flags() -> None:
    a = ImageReport("a", boxes=3, detections=2, hands=2, matched=2, dropped=0, duplicates=0,
                    sides=["right", "left"], hand_length_mm=[180.0, 240.0], betas_at_bound=[0, 2],
                    fit_error_px=[2.0, 12.0], other_side_ratio=[3.0, 0.5], depth_m=[0.5, 0.6],
                    seg_iou=[0.8, 0.6], seg_precision=[0.9, 0.7])
    b = ImageReport("b", boxes=1, detections=1, hands=0, matched=0, dropped=1, duplicates=0)
    s = summarize([a, b])
    assert (s["boxes"], s["detections"], s["hands"], s["matched"], s["dropped"]) == (4, 3, 2, 2, 1)
    assert s["hands_length_outside_150_230mm"] == 1
    assert s["hands_with_beta_at_bound"] == 1
    assert s["hands_fit_error_over_10px"] == 1
    assert s["hands_other_side_fits_better"] == 1
    assert s["seg_iou_mean"] == 0.7 and s["seg_precision_mean"] == 0.8


def test_absent_data_gives_none(tmp_path: Path) -> None:
    assert evaluate_wild((2,), tmp_path) is None


def test_bench_skips_cleanly_without_the_data(tmp_path: Path) -> None:
    from core.tools.bench import _stage_benchmarks
    from core.tools.evaluate_wild import bench_wild

    assert _stage_benchmarks()["wild"] is bench_wild
    assert bench_wild(tmp_path) == {"wild": "absent"}
