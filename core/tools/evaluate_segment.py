"""Accuracy and cost of every segmenter, on real masks and on synthetic hands.

* Real: ``../shared/data/unipd_handseg30`` (30 images, one merged hand mask per image and one
  box per hand). MediaPipe (static, up to 4 hands) gives the keypoints; each detection is
  matched to a ground-truth box, segmented, and scored by IoU inside that box.
* Synthetic: hands rendered by :mod:`core.synth` (exact masks), keypoints from MediaPipe; and
  30 pairs of rendered hands, one partly over the other (:func:`two_hand_case`): how much of
  the other hand each hand's mask takes in, segmented alone and together.

Run ``python -m core.tools.evaluate_segment`` for a table. The real data are research samples that
are never shipped: everything real skips cleanly when the folder is absent.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.metrics import box_iou
from core.segment import SEGMENTERS, segment_hand

log = logging.getLogger(__name__)

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
UNIPD = "unipd_handseg30"


@dataclass(frozen=True)
class HandCase:
    """One hand to segment with its ground truth.

    Attributes:
        image: (H, W, 3) uint8 RGB. keypoints: (21, 2) float px from MediaPipe.
        truth: (H, W) bool ground-truth hand mask (may hold other hands too).
        region: (x0, y0, x1, y1) int box the IoU is computed in (x1, y1 exclusive), or None for
            the whole image.
        name: where it came from.
    """

    image: np.ndarray
    keypoints: np.ndarray
    truth: np.ndarray
    region: tuple[int, int, int, int] | None
    name: str


def iou(pred: np.ndarray, truth: np.ndarray, region: tuple[int, int, int, int] | None = None) -> float:
    """Intersection over union of two (H, W) bool masks, inside ``region`` if given (1 if both empty)."""
    if region is not None:
        x0, y0, x1, y1 = region
        pred, truth = pred[y0:y1, x0:x1], truth[y0:y1, x0:x1]
    union = np.logical_or(pred, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, truth).sum() / union)


def _read_boxes(path: Path, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    w, h = size
    boxes = []
    for line in path.read_text().split("\n"):
        vals = line.split()
        if len(vals) < 4:
            continue
        x, y, bw, bh = (int(round(float(v))) for v in vals[:4])
        boxes.append((max(0, x), max(0, y), min(w, x + bw), min(h, y + bh)))
    return boxes


def box_score(keypoints: np.ndarray, box: tuple[int, int, int, int]) -> float | None:
    """How well a hand's (21, 2) keypoints fit a box: the fraction of them inside it plus the IoU
    of their bounding box with it; None when under half of them are inside."""
    x0, y0, x1, y1 = box
    kp = keypoints
    inside = float(np.mean((kp[:, 0] >= x0) & (kp[:, 0] < x1) & (kp[:, 1] >= y0) & (kp[:, 1] < y1)))
    if inside < 0.5:
        return None
    return inside + box_iou(box, (*kp.min(0), *kp.max(0)))


def match_to_boxes(keypoints: Sequence[np.ndarray],
                   boxes: Sequence[tuple[int, int, int, int]]) -> list[tuple[int, int]]:
    """Pair detections with ground-truth boxes, one to one, greedily by fit (:func:`box_score`:
    at least half the keypoints inside, then the keypoint box's IoU with the box).

    Returns:
        (box index, detection index) pairs.
    """
    scores = []
    for bi, box in enumerate(boxes):
        for di, kp in enumerate(keypoints):
            score = box_score(kp, box)
            if score is not None:
                scores.append((score, bi, di))
    pairs, used_b, used_d = [], set(), set()
    for _, bi, di in sorted(scores, reverse=True):
        if bi not in used_b and di not in used_d:
            pairs.append((bi, di))
            used_b.add(bi)
            used_d.add(di)
    return sorted(pairs)


def real_cases(data_dir: Path = DEFAULT_DATA) -> tuple[list[HandCase], dict[str, int]] | None:
    """The unipd hands MediaPipe finds, each with its box; None when the data are absent.

    Returns:
        (cases, counts) with counts ``{"images", "boxes", "detections", "matched"}``.
    """
    import cv2

    from core.camera import bgr_to_rgb
    from core.detect import HandDetector

    folder = Path(data_dir) / UNIPD
    if not (folder / "rgb").is_dir():
        return None
    cases: list[HandCase] = []
    counts = {"images": 0, "boxes": 0, "detections": 0, "matched": 0}
    with HandDetector(max_hands=4, mode="static") as det:
        for path in sorted((folder / "rgb").glob("*.jpg")):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            gt = cv2.imread(str(folder / "mask" / f"{path.stem}.png"), cv2.IMREAD_GRAYSCALE)
            if bgr is None or gt is None:
                log.warning("segment eval: cannot read %s or its mask", path.name)
                continue
            image = bgr_to_rgb(bgr)
            truth = gt > 0
            boxes = _read_boxes(folder / "det" / f"{path.stem}.txt", (image.shape[1], image.shape[0]))
            kps = [d.keypoints_2d.astype(np.float64) for d in det.detect(image)]
            pairs = match_to_boxes(kps, boxes)
            counts["images"] += 1
            counts["boxes"] += len(boxes)
            counts["detections"] += len(kps)
            counts["matched"] += len(pairs)
            for bi, di in pairs:
                cases.append(HandCase(image, kps[di], truth, boxes[bi], f"{path.stem}/{bi}"))
    return cases, counts


def synthetic_cases(n: int = 40, seed: int = 0) -> tuple[list[HandCase], dict[str, int]]:
    """Rendered hands (exact masks) with MediaPipe's keypoints; the IoU is over the whole image."""
    from core.detect import HandDetector
    from core.synth import SynthSettings, default_layers, render_hand_sample

    rng = np.random.default_rng(seed)
    layers = default_layers()
    cases = []
    with HandDetector(max_hands=1, mode="static") as det:
        for i in range(n):
            s = render_hand_sample(rng, layers, SynthSettings(left_probability=0.3))
            dets = det.detect(s.image)
            if dets:
                kp = dets[0].keypoints_2d.astype(np.float64)
                cases.append(HandCase(s.image, kp, s.mask, None, f"synth/{i}"))
    return cases, {"samples": n, "matched": len(cases)}


@dataclass(frozen=True)
class TwoHandCase:
    """Two rendered hands, the second partly over the first, with each hand's visible pixels.

    Attributes:
        image: (H, W, 3) uint8 RGB. keypoints: two (21, 2) float64 pixel arrays (the renders'
            ground truth). truth: two (H, W) bool masks, each hand's visible pixels.
    """

    image: np.ndarray
    keypoints: tuple[np.ndarray, np.ndarray]
    truth: tuple[np.ndarray, np.ndarray]


def two_hand_case(seed: int, layers: dict | None = None) -> TwoHandCase:
    """A right hand and a left hand rendered 60-110 px apart (centres) on a 384 x 256 image,
    the left one drawn over the right (:func:`core.synth.render_hand_sample`, no forearm)."""
    from core.synth import SynthSettings, default_layers, render_hand_sample

    layers = default_layers() if layers is None else layers
    rng = np.random.default_rng(seed)
    gap = rng.uniform(60.0, 110.0)
    size = (384, 256)
    a = render_hand_sample(rng, layers, SynthSettings(image_size=size, fill=(0.45, 0.6), forearm=False),
                           centre_px=(192.0 - gap / 2, 128.0))
    b = render_hand_sample(rng, layers, SynthSettings(image_size=size, fill=(0.45, 0.6), forearm=False,
                                                      left_probability=1.0),
                           centre_px=(192.0 + gap / 2, 128.0), background=a.image)
    image = a.image.copy()
    image[b.mask] = b.image[b.mask]
    kps = (a.keypoints_2d.astype(np.float64), b.keypoints_2d.astype(np.float64))
    return TwoHandCase(image, kps, (a.mask & ~b.mask, b.mask.copy()))


def score_two_hands(cases: Sequence[TwoHandCase], method: str | None = None) -> dict[str, float]:
    """How far each hand's mask takes in the other hand: every hand segmented on its own
    (:func:`segment_hand`), and then the two separated (:func:`core.segment.separate_hands`, as
    the engine does).

    Returns:
        {"wrong_alone", "wrong_together": pixels of the other hand in a hand's mask, as a share
        of all mask pixels; "own_kept": a hand's own pixels in its mask together, as a share of
        those alone; "pairs": n}.
    """
    from core.segment import separate_hands

    wrong = [0, 0]
    total = [0, 0]
    own = [0, 0]
    for case in cases:
        alone = [segment_hand(case.image, kp, method).mask for kp in case.keypoints]
        together = separate_hands(alone, case.keypoints)
        for k, masks in enumerate((alone, together)):
            wrong[k] += sum(int((masks[i] & case.truth[1 - i]).sum()) for i in range(2))
            own[k] += sum(int((masks[i] & case.truth[i]).sum()) for i in range(2))
            total[k] += sum(int(m.sum()) for m in masks)
    return {"wrong_alone": round(wrong[0] / max(total[0], 1), 4),
            "wrong_together": round(wrong[1] / max(total[1], 1), 4),
            "own_kept": round(own[1] / max(own[0], 1), 4), "pairs": len(cases)}


def score_methods(cases: Sequence[HandCase], methods: Sequence[str] | None = None,
                  repeats: int = 1) -> dict[str, dict[str, float]]:
    """Mean IoU and median milliseconds per hand of each method over ``cases``.

    Args:
        repeats: segment each hand this many times; the time is the median over all runs.

    Returns:
        {method: {"iou": mean IoU, "iou_median": ..., "ms": median wall ms per hand,
        "cpu_ms": median process CPU ms per hand (all threads; steadier than wall time on a
        shared machine), "hands": n}}.
    """
    out = {}
    for name in methods or list(SEGMENTERS):
        ious, times, cpu = [], [], []
        for case in cases:
            for _ in range(max(1, repeats)):
                start = time.process_time()
                hm = segment_hand(case.image, case.keypoints, name)
                cpu.append((time.process_time() - start) * 1e3)
                times.append(hm.ms)
            ious.append(iou(hm.mask, case.truth, case.region))
        nan = float("nan")
        out[name] = {
            "iou": round(float(np.mean(ious)), 4) if ious else nan,
            "iou_median": round(float(np.median(ious)), 4) if ious else nan,
            "ms": round(statistics.median(times), 3) if times else nan,
            "cpu_ms": round(statistics.median(cpu), 3) if cpu else nan,
            "hands": len(ious),
        }
    return out


def evaluate(methods: Sequence[str] | None = None, data_dir: Path = DEFAULT_DATA,
             synthetic: int = 60, seed: int = 0, repeats: int = 3) -> dict[str, Any]:
    """Score every method on the real masks (if present) and on ``synthetic`` rendered hands."""
    from core.tools.bench import bench_baseline

    result: dict[str, Any] = dict(bench_baseline())
    real = real_cases(data_dir)
    if real is None:
        log.info("segment eval: %s not found, real data skipped", Path(data_dir) / UNIPD)
    else:
        cases, counts = real
        result["real"] = {"counts": counts, "methods": score_methods(cases, methods, repeats)}
    if synthetic > 0:
        cases, counts = synthetic_cases(synthetic, seed)
        result["synthetic"] = {"counts": counts, "methods": score_methods(cases, methods, repeats)}
        from core.synth import default_layers

        layers = default_layers()
        result["two_hands"] = score_two_hands([two_hand_case(seed + i, layers) for i in range(30)])
    return result


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table: one row per method; mean and median IoU, median wall and CPU ms per
    hand for each data set."""
    sets = [k for k in ("real", "synthetic") if k in result]
    names: list[str] = []
    for k in sets:
        names += [m for m in result[k]["methods"] if m not in names]
    head = f"{'method':<14}" + "".join(
        f"{k[:5] + ' IoU':>11}{'median':>8}{'ms':>8}{'cpu ms':>8}" for k in sets)
    lines = [head, "-" * len(head)]
    for name in names:
        row = f"{name:<14}"
        for k in sets:
            m = result[k]["methods"].get(name)
            row += (f"{m['iou']:>11.3f}{m['iou_median']:>8.3f}{m['ms']:>8.2f}{m['cpu_ms']:>8.2f}"
                    if m else " " * 35)
        lines.append(row)
    for k in sets:
        lines.append(f"{k}: {result[k]['counts']}")
    if "two_hands" in result:
        lines.append(f"two rendered hands, one over the other (default method): {result['two_hands']}")
    if "baseline_ms" in result:
        lines.append(f"baseline_ms (core.tools.bench fixed CPU workload, same process): {result['baseline_ms']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Segmentation accuracy and cost per method.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--synthetic", type=int, default=60, help="rendered hands (0 = none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats per hand")
    parser.add_argument("--methods", nargs="*", default=None, help="default: all registered")
    args = parser.parse_args(argv)
    result = evaluate(args.methods, args.data, args.synthetic, args.seed, args.repeats)
    if not any(k in result for k in ("real", "synthetic")):
        print("no data: nothing to evaluate")
        return 0
    print(format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
