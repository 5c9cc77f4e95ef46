"""The whole engine on real in-the-wild frames: hands kept, dropped, duplicated, fit plausibility
and the texture's segmentation, per labelled hand box.

Data: ``../shared/data/unipd_handseg30`` (20 EgoHands frames, 1280x720, two to four hands of two
people, and 10 hand-over-face photos; one merged hand mask per image, one box per hand). The
images are read as ``python main.py track <folder>`` reads an image folder (photos: static
detection, the assumed camera, :func:`core.tools.cli_source.engine_settings_for`) and run
through :class:`core.engine.Engine` with its default settings and the segmentation on (the mask
the GUI's texture uses, ``HandResult.mask``). For each image and in total:

* ``boxes``: labelled hands; ``detections``: MediaPipe's hands (the engine's own detector);
  ``hands``: the engine's output; ``matched``: boxes matched one to one by an output hand
  (:func:`core.tools.evaluate_segment.match_to_boxes`: at least half the keypoints in the box,
  then the keypoint box's IoU with it);
* ``dropped``: detections the engine's output lacks (a hand MediaPipe found and the engine left
  out); ``duplicates``: output hands beyond the first whose best box (same criterion) is one
  box;
* fit plausibility of every output hand: hand length in mm (wrist to middle tip of the fitted
  shape at rest), shape coefficients at their bound (|beta| >= ``BETA_AT_BOUND``), the fit's
  reprojection error in px under the assumed camera, the depth of the wrist in m;
* sides: the fitted side and, as evidence of a wrong side where no label exists, the ratio of the
  mirrored model's reprojection error to the chosen side's (< 1: the other side fits better);
* ``seg_iou``, ``seg_precision``: per matched hand, IoU of its mask with the real mask inside the
  box, and the share of its whole mask that is hand in the real mask (the rest, a sleeve, the
  table or an object beside the hand, would bleed into the texture); ``seg_mesh_precision``: the
  same of the mask where the fitted mesh covers it (what the texture can sample; its skin-colour
  gate then rejects what is far from the skin's colour).

Run ``python -m core.tools.evaluate_wild`` (``--max-hands 2 4``, ``--overlays DIR`` to draw every
image's boxes, keypoints, fitted mesh and masks); ``python main.py bench --only wild`` gives the
totals. Everything skips cleanly when the data are absent.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.tools.evaluate_segment import DEFAULT_DATA, UNIPD, _read_boxes, box_score, iou, match_to_boxes

log = logging.getLogger(__name__)

__all__ = ["BENCHMARKS", "BETA_AT_BOUND", "ImageReport", "bench_wild", "best_boxes", "evaluate_wild", "format_report",
           "precision", "summarize"]

#: A shape coefficient this large is at the fit's bound (the tailor clips them to +-3).
BETA_AT_BOUND = 2.95


@dataclass
class ImageReport:
    """What the engine did on one image (lists: one entry per output hand, in output order)."""

    name: str
    boxes: int
    detections: int
    hands: int
    matched: int
    dropped: int
    duplicates: int
    sides: list[str] = field(default_factory=list)
    hand_length_mm: list[float] = field(default_factory=list)
    betas_at_bound: list[int] = field(default_factory=list)
    fit_error_px: list[float] = field(default_factory=list)
    other_side_ratio: list[float] = field(default_factory=list)
    depth_m: list[float] = field(default_factory=list)
    seg_iou: list[float] = field(default_factory=list)
    seg_precision: list[float] = field(default_factory=list)
    seg_mesh_precision: list[float] = field(default_factory=list)


def best_boxes(keypoints: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int]]) -> list[int | None]:
    """For each hand (21 x 2 px) the box it fits best (:func:`~core.tools.evaluate_segment.box_score`,
    each hand on its own), or None where none holds half its keypoints."""
    out: list[int | None] = []
    for kp in keypoints:
        pairs = [(bi, s) for bi, s in ((bi, box_score(kp, b)) for bi, b in enumerate(boxes)) if s is not None]
        out.append(max(pairs, key=lambda p: p[1])[0] if pairs else None)
    return out


def precision(pred: np.ndarray, truth: np.ndarray, region: tuple[int, int, int, int] | None = None) -> float:
    """Share of the (H, W) bool mask ``pred`` (inside ``region`` if given, else anywhere) that is
    hand in ``truth`` (1 when ``pred`` is empty): what the texture may paint from, so 1 - precision
    is background (a sleeve, an object, a face) that would bleed into the skin."""
    if region is not None:
        x0, y0, x1, y1 = region
        pred, truth = pred[y0:y1, x0:x1], truth[y0:y1, x0:x1]
    n = int(pred.sum())
    return 1.0 if n == 0 else float(np.logical_and(pred, truth).sum() / n)


def mesh_silhouette(hand: Any, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool the pixels a hand's final mesh covers, in its own camera (``HandResult.camera``
    in pinhole form): with the mask, the pixels its texture can sample."""
    import torch

    from core.render import RasterSettings, rasterize

    verts, K = hand.camera.pinhole(hand.vertices)
    frags = rasterize(torch.as_tensor(verts, dtype=torch.float32)[None], torch.as_tensor(hand.faces),
                      torch.as_tensor(K, dtype=torch.float32)[None], RasterSettings(image_size=tuple(size)))
    return frags.mask[0].numpy()


def _hand_length_mm(engine: Any, side: str, betas: np.ndarray) -> float:
    from core.personalize.scale import measures

    return 1000.0 * measures(engine._layers[side], betas)[0]


def _other_side_ratio(engine: Any, hand: Any, frame: Any) -> float:
    """The mirrored model's fit error over the chosen side's, both fitted from scratch."""
    from core.detect import swap_handedness
    from core.fit import HandObservation

    d = hand.detection
    K = None if frame.intrinsics is None else frame.intrinsics.K.astype(np.float32)
    size = (frame.width, frame.height)
    obs = [HandObservation(side, d.keypoints_2d, d.world_landmarks, K, size, d.score)
           for side in (hand.side, swap_handedness(hand.side))]
    same, other = engine.fitter.fit(obs, engine.shape, [None, None])
    return float(other.reprojection_error_px / max(same.reprojection_error_px, 1e-9))


def evaluate_image(engine: Any, frame: Any, truth: np.ndarray, boxes: list[tuple[int, int, int, int]],
                   name: str) -> tuple[ImageReport, Any, tuple]:
    """Run ``engine`` on one photo (as ``process`` does: its detector, then tracking and fitting)
    and score it. Returns (report, the FrameResult, MediaPipe's detections)."""
    dets = engine.detector.detect(frame.image, frame.timestamp_s)
    result = engine.process_detections(frame, dets)
    hands = result.hands
    out_kps = [np.asarray(h.detection.keypoints_2d, np.float64) for h in hands]
    kept = sum(any(np.array_equal(d.keypoints_2d, h.detection.keypoints_2d) for h in hands) for d in dets)
    pairs = match_to_boxes(out_kps, boxes)
    best = [b for b in best_boxes(out_kps, boxes) if b is not None]
    dup = sum(max(0, best.count(b) - 1) for b in set(best))
    rep = ImageReport(name, len(boxes), len(dets), len(hands), len(pairs), len(dets) - kept, dup)
    for h in hands:
        f = h.fit
        rep.sides.append(h.side)
        rep.hand_length_mm.append(round(_hand_length_mm(engine, h.side, f.betas), 1))
        rep.betas_at_bound.append(int(np.sum(np.abs(f.betas) >= BETA_AT_BOUND)))
        rep.fit_error_px.append(round(float(h.fit_reprojection_error_px), 2))
        rep.other_side_ratio.append(round(_other_side_ratio(engine, h, frame), 3))
        rep.depth_m.append(round(float(f.keypoints_3d[0][2]), 3))
    for bi, hi in pairs:
        m = hands[hi].mask
        m = np.zeros_like(truth) if m is None else m
        rep.seg_iou.append(round(iou(m, truth, boxes[bi]), 4))
        rep.seg_precision.append(round(precision(m, truth), 4))
        rep.seg_mesh_precision.append(round(precision(m & mesh_silhouette(hands[hi], truth.shape), truth), 4))
    return rep, result, dets


def summarize(reports: Sequence[ImageReport]) -> dict[str, Any]:
    """Totals over ``reports``: counts, and medians / shares of the per-hand figures."""
    def flat(attr: str) -> list[float]:
        return [v for r in reports for v in getattr(r, attr)]

    def med(values: list[float]) -> float | None:
        return round(float(statistics.median(values)), 3) if values else None

    lengths, errors, ratios = flat("hand_length_mm"), flat("fit_error_px"), flat("other_side_ratio")
    ious, prec, mesh_prec = flat("seg_iou"), flat("seg_precision"), flat("seg_mesh_precision")
    out: dict[str, Any] = {k: sum(getattr(r, k) for r in reports)
                           for k in ("boxes", "detections", "hands", "matched", "dropped", "duplicates")}
    out.update({
        "images": len(reports),
        "hand_length_mm_median": med(lengths),
        "hand_length_mm_range": [min(lengths), max(lengths)] if lengths else None,
        "hands_length_outside_150_230mm": sum(not 150.0 <= v <= 230.0 for v in lengths),
        "hands_with_beta_at_bound": sum(v > 0 for v in flat("betas_at_bound")),
        "fit_error_px_median": med(errors),
        "hands_fit_error_over_10px": sum(v > 10.0 for v in errors),
        "hands_other_side_fits_better": sum(v < 0.8 for v in ratios),
        "seg_iou_mean": round(float(np.mean(ious)), 4) if ious else None,
        "seg_iou_median": med(ious),
        "seg_precision_mean": round(float(np.mean(prec)), 4) if prec else None,
        "seg_mesh_precision_mean": round(float(np.mean(mesh_prec)), 4) if mesh_prec else None,
    })
    return out


def evaluate_wild(max_hands: Sequence[int] = (2, 4), data_dir: Path = DEFAULT_DATA,
                  overlays: Path | None = None, subsets: dict[str, slice] | None = None) -> dict[str, Any] | None:
    """Run the engine over the unipd images for each ``max_hands``; None when the data are absent.

    Returns:
        {"max_hands_<n>": {"images": [ImageReport as dict, ...], "total": summarize(...),
        "<subset>": summarize(subset)}}; subsets default to EgoHands (images 1-20) and
        hand-over-face (21-30).
    """
    import dataclasses

    import cv2

    from core.capture.open import open_spec
    from core.engine import Engine, EngineSettings
    from core.tools.cli_source import engine_settings_for

    folder = Path(data_dir) / UNIPD
    if not (folder / "rgb").is_dir():
        return None
    subsets = subsets if subsets is not None else {"egohands": slice(0, 20), "hand_over_face": slice(20, 30)}
    out: dict[str, Any] = {}
    for n in max_hands:
        reports: list[ImageReport] = []
        with open_spec(str(folder / "rgb")) as src:
            paths = src.paths
            settings = engine_settings_for(EngineSettings(max_hands=n, segment=True), src)
            with Engine(settings) as engine:
                for frame in src:
                    path = paths[frame.index]
                    gt = cv2.imread(str(folder / "mask" / f"{path.stem}.png"), cv2.IMREAD_GRAYSCALE)
                    if gt is None:
                        log.warning("wild eval: no mask for %s", path.name)
                        continue
                    boxes = _read_boxes(folder / "det" / f"{path.stem}.txt", (frame.width, frame.height))
                    rep, result, dets = evaluate_image(engine, frame, gt > 0, boxes, path.stem)
                    reports.append(rep)
                    if overlays is not None:
                        draw_overlay(Path(overlays) / f"{path.stem}_m{n}.png", frame.image, gt > 0, boxes, result,
                                     dets)
        entry: dict[str, Any] = {"images": [dataclasses.asdict(r) for r in reports], "total": summarize(reports)}
        for key, sl in subsets.items():
            entry[key] = summarize(reports[sl])
        out[f"max_hands_{n}"] = entry
    return out


def draw_overlay(path: Path, image: np.ndarray, truth: np.ndarray, boxes: Sequence[tuple[int, int, int, int]],
                 result: Any, detections: Sequence[Any]) -> None:
    """One PNG: the real mask's outline (white), the boxes (yellow), MediaPipe's keypoints (grey
    dots), each output hand's mask (tinted: right red, left blue), its fitted keypoints and id."""
    import cv2

    from core.camera import bgr_to_rgb

    canvas = image.copy()
    colours = {"right": (230, 60, 60), "left": (60, 90, 230)}
    for h in result.hands:
        if h.mask is not None:
            c = np.array(colours[h.side], np.float32)
            canvas[h.mask] = (0.55 * canvas[h.mask] + 0.45 * c).astype(np.uint8)
    contours, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, (255, 255, 255), 1)
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), (240, 220, 0), 2)
    for d in detections:
        for x, y in np.asarray(d.keypoints_2d):
            cv2.circle(canvas, (int(round(x)), int(round(y))), 3, (160, 160, 160), -1)
    from core.keypoints import BONES

    for h in result.hands:
        kp = np.asarray(h.final_keypoints_2d, np.float64)
        c = colours[h.side]
        for a, b in BONES:
            cv2.line(canvas, tuple(int(v) for v in kp[a]), tuple(int(v) for v in kp[b]), c, 2)
        cv2.putText(canvas, f"{h.track_id}{h.side[0].upper()} {h.fit_reprojection_error_px:.0f}px",
                    tuple(int(v) for v in kp[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.6, c, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), bgr_to_rgb(canvas))


def format_report(result: dict[str, Any]) -> str:
    """A plain-text table per ``max_hands``: one row per image, then the totals."""
    lines = []
    for key, entry in result.items():
        lines.append(f"== {key}")
        lines.append(f"{'img':<5}{'box':>4}{'det':>4}{'out':>4}{'mat':>4}{'drop':>5}{'dup':>4}  "
                     "sides  length mm / beta@bound / fit px / other-side ratio / depth m ; seg IoU/precision")
        for r in entry["images"]:
            hands = "; ".join(f"{s[0]} {L:.0f}/{b}/{e:.1f}/{o:.2f}/{z:.2f}" for s, L, b, e, o, z in zip(
                r["sides"], r["hand_length_mm"], r["betas_at_bound"], r["fit_error_px"], r["other_side_ratio"],
                r["depth_m"]))
            seg = " ".join(f"{v:.2f}/{p:.2f}" for v, p in zip(r["seg_iou"], r["seg_precision"]))
            lines.append(f"{r['name']:<5}{r['boxes']:>4}{r['detections']:>4}{r['hands']:>4}{r['matched']:>4}"
                         f"{r['dropped']:>5}{r['duplicates']:>4}  {hands} ; {seg}")
        for sub in [k for k in entry if k != "images"]:
            lines.append(f"{sub}: {entry[sub]}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The engine on real in-the-wild frames (unipd_handseg30).")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--max-hands", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--overlays", type=Path, default=None, help="write one PNG per image here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    result = evaluate_wild(args.max_hands, args.data, args.overlays)
    if result is None:
        print(f"no data: {Path(args.data) / UNIPD} not found")
        return 0
    if args.json:
        import json

        print(json.dumps(result, indent=1))
    else:
        print(format_report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def bench_wild(data_dir: Path = DEFAULT_DATA) -> dict[str, Any]:
    """``python main.py bench --only wild``: the totals of :func:`evaluate_wild` (max_hands 2 and
    4, EgoHands and hand-over-face apart), or ``{"wild": "absent"}`` without the data."""
    result = evaluate_wild(data_dir=data_dir)
    if result is None:
        return {"wild": "absent"}
    return {"wild": {key: {k: v for k, v in entry.items() if k != "images"} for key, entry in result.items()}}


BENCHMARKS = {"wild": bench_wild}
