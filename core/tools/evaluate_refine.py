"""Does the silhouette refinement help, and what does it cost? (``python -m core.tools.evaluate_refine``)

* **Synthetic** (:mod:`core.synth`, exact masks and ground truth; real MediaPipe keypoints ->
  tailor fit -> refinement): silhouette IoU before/after (crop at 128 x 128, and the full-size
  hard silhouette against the exact mask), 3D keypoint errors (PA-MPJPE, root-relative MPJPE),
  PA-MPVPE, and paper 004's plausibility metrics (edge-length and normal error against the
  true mesh), for the exact mask as target and for the segmentation (:mod:`core.segment`).
* **Demo clip** (the live engine: segmentation target, 3 iterations): IoU against the exact
  mask rendered from the clip's ground truth, 2D and 3D keypoint errors, before/after.
* **Real** (``../shared/data``; skipped when absent): unipd_handseg30 (exact masks: IoU of the
  mesh against them inside each hand's box, on the hand's side of the wrist line, before/after,
  next to the segmentation's own IoU), FreiHAND crops (no masks: IoU against the segmentation
  the refiner optimizes, 2D error against the labels where there are labels), with
  weak perspective (mmpose crops) or the exact K (freihand_eval20_K). On the weak path the
  fit and the refined hand are seen through their own weak cameras (the refiner works in the
  fit's, :meth:`core.camera.HandCamera.pinhole_frame`), as the product shows them.
* **Timing**: ``refine_iter_ms``, where an iteration's time goes, and the live frame with 3
  iterations against MediaPipe alone (:mod:`core.tools.bench_refine`).

The real data are research samples that are never shipped: everything real skips cleanly when
the folder is absent.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from core.metrics import edge_length_error, keypoint_error_px, mask_iou, mpjpe, normal_error, pa_mpjpe
from core.tools.evaluate_fit import DEFAULT_DATA

log = logging.getLogger(__name__)

__all__ = ["evaluate", "evaluate_demo", "evaluate_freihand", "evaluate_synthetic", "evaluate_unipd", "main"]


# ----------------------------------------------------------------------------- helpers


def _hard_mask(layer, verts: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool silhouette of a mesh (camera frame, metres) seen with ``K``; size = (w, h)."""
    from core.render import RasterSettings, rasterize

    frags = rasterize(torch.as_tensor(verts, dtype=torch.float32)[None], layer.faces,
                      torch.as_tensor(np.asarray(K, np.float32))[None],
                      RasterSettings(image_size=(size[1], size[0])))
    return (frags.pix_to_face[0] >= 0).cpu().numpy()


def _fit_verts(layer, fit) -> np.ndarray:
    with torch.no_grad():
        out = layer(torch.as_tensor(fit.pose)[None], torch.as_tensor(fit.betas)[None],
                    torch.as_tensor(fit.transl)[None])
    return out.vertices[0].numpy()


def _root_relative(k: np.ndarray) -> np.ndarray:
    return k - k[:1]


def _mean(rows: list[dict[str, float]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def _summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    keys = sorted({k for r in rows for k in r})
    out: dict[str, Any] = {"hands": len(rows)}
    out.update({k: _mean(rows, k) for k in keys})
    b, a = out.get("edge_error_gt_mm_before"), out.get("edge_error_gt_mm_after")
    if b and a is not None:
        out["edge_error_gt_growth"] = round(a / b - 1.0, 4)
    return out


#: Overrides of :class:`RefineSettings` for every section (``--set name=value``).
_OVERRIDES: dict[str, Any] = {}


def _settings(iterations: int):
    import dataclasses

    from core.refine import RefineSettings

    return dataclasses.replace(RefineSettings(iterations=iterations), **_OVERRIDES)


def _refiner(layers, iterations: int, nominal_fov_deg: float = 60.0):
    from core.refine import Refiner

    return Refiner(layers["right"].data, layers["left"].data, _settings(iterations),
                   nominal_fov_deg=nominal_fov_deg)


# ----------------------------------------------------------------------------- synthetic


def evaluate_synthetic(n: int = 24, seed: int = 0, iterations: Sequence[int] = (3, 15),
                       targets: Sequence[str] = ("exact", "segmentation")) -> dict[str, Any]:
    """Synthetic hands through the real MediaPipe, fit, then refinement (see the module doc).

    Returns:
        ``{"samples", "detected", "<target>_<iterations>": {figures}}``: IoU (``iou_crop_*``
        from the refiner, ``iou_full_*`` full-size hard silhouette against the exact mask),
        ``pa_mpjpe_mm_*``, ``rr_mpjpe_mm_*`` (root-relative), ``pa_mpvpe_mm_*``,
        ``edge_error_gt_mm_*`` / ``normal_error_gt_*`` (against the true mesh) and their growth,
        ``edge_error_offsets_mm`` (refined mesh against the parametric mesh it deforms), ``ms``.
    """
    from core.detect import HandDetector
    from core.fit import HandObservation, TailorFitter
    from core.refine import RefineTarget
    from core.segment import segment_hand
    from core.synth import SynthSettings, default_layers, render_hand_sample

    iterations = sorted(set(int(i) for i in iterations))
    rng = np.random.default_rng(seed)
    layers = default_layers()
    fitter = TailorFitter(layers["right"].data, layers["left"].data)
    refiner = _refiner(layers, max(iterations))
    rows: dict[str, list[dict[str, float]]] = {f"{t}_{it}": [] for t in targets for it in iterations}
    detected = 0
    with HandDetector(max_hands=1, mode="static") as det:
        for _ in range(n):
            s = render_hand_sample(rng, layers, SynthSettings(left_probability=0.3))
            dets = det.detect(s.image)
            if not dets:
                continue
            detected += 1
            d = dets[0]
            h, w = s.image.shape[:2]
            obs = HandObservation(s.side, d.keypoints_2d, d.world_landmarks, s.K.astype(np.float32), (w, h), d.score)
            fit = fitter.fit([obs])[0]
            layer = layers[s.side]
            faces = layer.data.faces
            v_fit = _fit_verts(layer, fit)
            masks = {"exact": s.mask}
            if "segmentation" in targets:
                masks["segmentation"] = segment_hand(s.image, d.keypoints_2d).mask
            before = {
                "iou_full_before": mask_iou(_hard_mask(layer, v_fit, s.K, (w, h)), s.mask),
                "pa_mpjpe_mm_before": pa_mpjpe(fit.keypoints_3d, s.joints_3d) * 1e3,
                "rr_mpjpe_mm_before": mpjpe(_root_relative(fit.keypoints_3d), _root_relative(s.joints_3d)) * 1e3,
                "pa_mpvpe_mm_before": pa_mpjpe(v_fit, s.vertices) * 1e3,
                "edge_error_gt_mm_before": edge_length_error(v_fit, s.vertices, faces) * 1e3,
                "normal_error_gt_before": normal_error(v_fit, s.vertices, faces),
            }
            for t in targets:
                for it in iterations:
                    r = refiner.refine([fit], [RefineTarget(masks[t], d.keypoints_2d, s.K)], iterations=it)[0]
                    row = dict(before)
                    row.update({
                        "iou_target_full": mask_iou(masks[t], s.mask),
                        "iou_crop_before": r.iou_before, "iou_crop_after": r.iou_after,
                        "iou_full_after": mask_iou(_hard_mask(layer, r.vertices, r.K, (w, h)), s.mask),
                        "pa_mpjpe_mm_after": pa_mpjpe(r.keypoints_3d, s.joints_3d) * 1e3,
                        "rr_mpjpe_mm_after": mpjpe(_root_relative(r.keypoints_3d), _root_relative(s.joints_3d)) * 1e3,
                        "pa_mpvpe_mm_after": pa_mpjpe(r.vertices, s.vertices) * 1e3,
                        "edge_error_gt_mm_after": edge_length_error(r.vertices, s.vertices, faces) * 1e3,
                        "normal_error_gt_after": normal_error(r.vertices, s.vertices, faces),
                        "edge_error_offsets_mm": r.edge_length_error * 1e3,
                        "normal_error_offsets": r.normal_error,
                        "ms": r.ms,
                    })
                    rows[f"{t}_{it}"].append(row)
    out: dict[str, Any] = {"samples": n, "detected": detected}
    out.update({k: _summary(v) for k, v in rows.items()})
    return out


# ----------------------------------------------------------------------------- demo clip


def evaluate_demo(n_frames: int = 30, iterations: int = 3) -> dict[str, Any]:
    """The live engine (segmentation target) on the demo clip against its exact ground truth."""
    import itertools

    from core.capture import DEMO_CLIP_PATH, open_source
    from core.engine import Engine, EngineSettings
    from core.model import HandModel, load_model_data

    if not DEMO_CLIP_PATH.exists():
        return {"demo": "absent"}
    gt = np.load(DEMO_CLIP_PATH.with_name("demo_groundtruth.npz"))
    layer = HandModel(load_model_data(None, "right"))
    with open_source("demo") as src:
        frames = list(itertools.islice(src, n_frames))
    rows = []
    settings = EngineSettings(max_hands=1, device="cpu", refine_iterations=iterations,
                              refine=_settings(iterations))
    with Engine(settings) as engine:
        for r in engine.process_stream(frames):
            hands = [h for h in r.hands if h.refined is not None and h.fit.side == "right"]
            if not hands:
                continue
            hnd, i = hands[0], r.frame
            frame = frames[[f.index for f in frames].index(i)]
            w, h = frame.width, frame.height
            with torch.no_grad():
                true_v = layer(torch.as_tensor(gt["pose"][i])[None], torch.as_tensor(gt["betas"][i])[None],
                               torch.as_tensor(gt["transl"][i])[None]).vertices[0].numpy()
            truth = _hard_mask(layer, true_v, gt["K"][i], (w, h))
            fit, ref = hnd.fit, hnd.refined
            rows.append({
                "iou_full_before": mask_iou(_hard_mask(layer, _fit_verts(layer, fit), ref.K, (w, h)), truth),
                "iou_full_after": mask_iou(_hard_mask(layer, ref.vertices, ref.K, (w, h)), truth),
                "iou_crop_before": ref.iou_before, "iou_crop_after": ref.iou_after,
                "kp2d_px_before": keypoint_error_px(fit.keypoints_2d, gt["keypoints_2d"][i]),
                "kp2d_px_after": keypoint_error_px(ref.keypoints_2d, gt["keypoints_2d"][i]),
                "pa_mpjpe_mm_before": pa_mpjpe(fit.keypoints_3d, gt["joints_3d"][i]) * 1e3,
                "pa_mpjpe_mm_after": pa_mpjpe(ref.keypoints_3d, gt["joints_3d"][i]) * 1e3,
                "edge_error_gt_mm_before": edge_length_error(_fit_verts(layer, fit), true_v, layer.data.faces) * 1e3,
                "edge_error_gt_mm_after": edge_length_error(ref.vertices, true_v, layer.data.faces) * 1e3,
                "refine_ms": r.time_ms.get("refine"), "segment_ms": r.time_ms.get("segment"),
            })
    return {"demo": {"frames": len(frames), "iterations": iterations, **_summary(rows)}}


# ----------------------------------------------------------------------------- real data


def _read_rgb(path: Path) -> np.ndarray | None:
    import cv2

    from core.camera import bgr_to_rgb

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else bgr_to_rgb(img)


def _boxes(path: Path, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    w, h = size
    out = []
    for line in path.read_text().splitlines():
        vals = line.split()
        if len(vals) >= 4:
            x, y, bw, bh = (int(round(float(v))) for v in vals[:4])
            out.append((max(0, x), max(0, y), min(w, x + bw), min(h, y + bh)))
    return out


def evaluate_unipd(data_dir: Path = DEFAULT_DATA, iterations: int = 15) -> dict[str, Any] | None:
    """Mesh silhouette IoU against the exact unipd masks, before/after; None without the data.

    Weak perspective (no intrinsics): the fit and the refined hand are each seen through their
    own weak camera (``core.fit.fit_camera``, ``RefineResult.camera``), as the product shows
    them. The IoU region is the hand's ground-truth box on the hand's side of the wrist line
    (the mesh has no forearm).
    """
    import cv2

    from core.camera import intrinsics_from_matrix
    from core.detect import HandDetector
    from core.fit import HandObservation, TailorFitter, fit_camera
    from core.refine import RefineTarget
    from core.segment import segment_hand, wrist_cut
    from core.synth import default_layers
    from core.tools.evaluate_segment import match_to_boxes

    folder = Path(data_dir) / "unipd_handseg30"
    if not (folder / "rgb").is_dir():
        return None
    layers = default_layers()
    fitter = TailorFitter(layers["right"].data, layers["left"].data)
    refiner = _refiner(layers, iterations, fitter.settings.nominal_fov_deg)
    rows = []
    counts = {"images": 0, "boxes": 0, "matched": 0}
    with HandDetector(max_hands=4, mode="static") as det:
        for path in sorted((folder / "rgb").glob("*.jpg")):
            image = _read_rgb(path)
            gt = cv2.imread(str(folder / "mask" / f"{path.stem}.png"), cv2.IMREAD_GRAYSCALE)
            if image is None or gt is None:
                continue
            truth = gt > 0
            h, w = image.shape[:2]
            boxes = _boxes(folder / "det" / f"{path.stem}.txt", (w, h))
            dets = det.detect(image)
            pairs = match_to_boxes([d.keypoints_2d.astype(np.float64) for d in dets], boxes)
            counts["images"] += 1
            counts["boxes"] += len(boxes)
            counts["matched"] += len(pairs)
            for bi, di in pairs:
                d = dets[di]
                x0, y0, x1, y1 = boxes[bi]
                region = np.zeros((h, w), bool)
                region[y0:y1, x0:x1] = True
                region = wrist_cut(region, d.keypoints_2d)
                obs = HandObservation(d.handedness, d.keypoints_2d, d.world_landmarks, None, (w, h), d.score)
                fit = fitter.fit([obs])[0]
                seg = segment_hand(image, d.keypoints_2d).mask
                r = refiner.refine([fit], [RefineTarget(seg, d.keypoints_2d, None)], iterations=iterations)[0]
                layer = layers[fit.side]
                fitted = fit_camera(fit, intrinsics_from_matrix(r.K, w, h)).pinhole(_fit_verts(layer, fit))
                rows.append({
                    "iou_segmentation": mask_iou(seg, truth, region),
                    "iou_before": mask_iou(_hard_mask(layer, *fitted, (w, h)), truth, region),
                    "iou_after": mask_iou(_hard_mask(layer, *r.camera.pinhole(r.vertices), (w, h)), truth, region),
                    "iou_vs_segmentation_before": r.iou_before, "iou_vs_segmentation_after": r.iou_after,
                    "fell_back": float(r.fell_back), "ms": r.ms,
                })
    return {"unipd": {**counts, "iterations": iterations, **_summary(rows)}}


def evaluate_freihand(data_dir: Path = DEFAULT_DATA, iterations: int = 15) -> dict[str, Any] | None:
    """FreiHAND crops: IoU against the segmentation (no masks exist), 2D error where labelled."""
    from core.camera import intrinsics_from_matrix
    from core.detect import HandDetector
    from core.fit import HandObservation, TailorFitter, fit_camera
    from core.refine import RefineTarget, nominal_intrinsics
    from core.segment import segment_hand
    from core.synth import default_layers
    from core.tools.evaluate_fit import _coco_hands

    labelled = Path(data_dir) / "mmpose_hand_testdata" / "freihand"
    with_k = Path(data_dir) / "freihand_eval20_K"
    if not labelled.is_dir() and not with_k.is_dir():
        return None
    layers = default_layers()
    fitter = TailorFitter(layers["right"].data, layers["left"].data)
    refiner = _refiner(layers, iterations, fitter.settings.nominal_fov_deg)
    items: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
    if labelled.is_dir():
        items += [("labelled", it.image, it.keypoints, None) for it in _coco_hands(labelled)]
    if with_k.is_dir():
        for p in sorted(with_k.glob("*_img.jpg")):
            img = _read_rgb(p)
            if img is not None:
                items.append(("eval_K", img, None, np.load(p.with_name(p.name.replace("_img.jpg", "_K.npy")))))
    rows: dict[str, list[dict[str, float]]] = {"labelled": [], "eval_K": []}
    with HandDetector(max_hands=1, mode="static") as det:
        for kind, image, labels, K in items:
            dets = det.detect(image)
            if not dets:
                continue
            d = dets[0]
            h, w = image.shape[:2]
            K32 = None if K is None else np.asarray(K, np.float32)
            obs = HandObservation(d.handedness, d.keypoints_2d, d.world_landmarks, K32, (w, h), d.score)
            fit = fitter.fit([obs])[0]
            seg = segment_hand(image, d.keypoints_2d).mask
            r = refiner.refine([fit], [RefineTarget(seg, d.keypoints_2d, K32)], iterations=iterations)[0]
            row = {"iou_vs_segmentation_before": r.iou_before, "iou_vs_segmentation_after": r.iou_after,
                   "edge_error_offsets_mm": r.edge_length_error * 1e3, "ms": r.ms}
            if labels is not None:
                # "before" is the fit's 3D hand seen by the refiner's camera: the frame's, or on
                # the weak path the fit's own weak camera (its keypoints are the tailor's).
                K0 = nominal_intrinsics((w, h), fitter.settings.nominal_fov_deg) if K32 is None else K32
                before = fit_camera(fit, intrinsics_from_matrix(K0, w, h)).project(fit.keypoints_3d)
                row["kp2d_px_mediapipe"] = keypoint_error_px(d.keypoints_2d, labels)
                row["kp2d_px_fit_weak"] = keypoint_error_px(fit.keypoints_2d, labels)
                row["kp2d_px_before"] = keypoint_error_px(before, labels)
                row["kp2d_px_after"] = keypoint_error_px(r.keypoints_2d, labels)
            rows[kind].append(row)
    return {"freihand": {k: {"iterations": iterations, **_summary(v)} for k, v in rows.items() if v}}


# ----------------------------------------------------------------------------- all


def evaluate_timing() -> dict[str, Any]:
    """``refine_iter_ms``, its profile and the live frame ratio (see :mod:`core.tools.bench_refine`)."""
    from core.tools.bench_refine import bench_refine

    res = bench_refine()
    return {"timing": {k: v for k, v in res.items() if not k.startswith("refine_iou")}}


def evaluate(samples: int = 24, data_dir: Path = DEFAULT_DATA, iterations: int = 15,
             timing: bool = True, demo_frames: int = 30) -> dict[str, Any]:
    """Everything above, as one dict (real-data sections only when the data are there)."""
    start = time.perf_counter()
    out: dict[str, Any] = {"synthetic": evaluate_synthetic(samples, iterations=(3, iterations))}
    out.update(evaluate_demo(demo_frames))
    for fn in (evaluate_unipd, evaluate_freihand):
        res = fn(data_dir, iterations)
        if res is None:
            log.info("refine eval: %s skipped (no data under %s)", fn.__name__, data_dir)
        else:
            out.update(res)
    if not (Path(data_dir) / "unipd_handseg30").is_dir():
        out["real_data"] = "absent"
    if timing:
        out.update(evaluate_timing())
    out["settings_overrides"] = dict(_OVERRIDES)
    out["threads"] = torch.get_num_threads()
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.tools.evaluate_refine",
                                description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=24, help="synthetic hands (default 24)")
    p.add_argument("--iterations", type=int, default=15, help="offline iterations (default 15)")
    p.add_argument("--demo-frames", type=int, default=30)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    p.add_argument("--no-timing", action="store_true", help="skip the timing section")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a RefineSettings field, e.g. --set w_edge=1.0 (repeatable)")
    args = p.parse_args(argv)
    import ast

    for item in args.set:
        name, _, value = item.partition("=")
        _OVERRIDES[name.strip()] = ast.literal_eval(value.strip())
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = evaluate(args.samples, args.data, args.iterations, not args.no_timing, args.demo_frames)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out is not None:
        from core.export.writer import write_atomic

        write_atomic(args.out, text.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
