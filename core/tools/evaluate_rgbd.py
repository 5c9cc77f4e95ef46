"""Acceptance figures of the RGB-D and stereo sources (issue 16, item 4).

    python -m core.tools.evaluate_rgbd nvgesture [--data ../shared/data] [--refine 3] [--json]
    python -m core.tools.evaluate_rgbd stereo [--frames 6] [--refine 15] [--json]

**nvgesture** (needs ``../shared/data/videos/nvgesture_clip``; skipped without it): the real
clip tracked from its colour alone and again with its depth (``--depth sk_depth.avi
--depth-intrinsics``), and each run's final hand surface compared with the sensor's depth over
the hand's segmentation mask: the median over frames of the per-frame median
``|rendered depth - sensor depth|``, millimetres. The clip documents neither its depth
camera nor its depth units, so the depth camera file is estimated here and printed:

* colour camera: the SoftKinetic DS325's colour field of view (63.2 degrees horizontal);
* registration: the depth image is the colour image scaled about its centre and shifted (a
  depth camera with its own focal length and principal point, R = I, T = 0), the scale and
  shift that maximize the IoU of the sensor's hand blob with the colour segmentation masks;
* units: 8-bit values, larger nearer, spanning the DS325's 0.15-1.0 m range linearly
  (-3.33 mm per level); the offset makes the clip's median hand depth equal the colour-only
  fits' median (so the colour-only run is not charged with an offset we chose).

**stereo**: a synthetic stereo pair rendered by :mod:`core.synth` (people's hands, known
pose, shape and cameras), detected by the real MediaPipe, tracked from the reference camera
alone and from both cameras (pose and shape fused across views, paper 001 Eq. 6-7; the
multi-view silhouette term, Eq. 8): PA-MPJPE (mm) of the final hand's keypoints and the
silhouette IoU of its mesh with the true silhouette in the reference camera.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
NVGESTURE = Path("videos") / "nvgesture_clip"
#: SoftKinetic DS325 colour camera, horizontal field of view (datasheet), degrees.
DS325_COLOUR_FOV_DEG = 63.2
#: Assumed coding of the clip's 8-bit depth: the DS325's 0.15-1.0 m over 255 levels, larger nearer.
DS325_RANGE_M = (0.15, 1.0)


def _read_video(path: Path, grey: bool = False) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    try:
        while True:
            ok, img = cap.read()
            if not ok or img is None:
                return out
            out.append(img[..., 0].copy() if grey else img[..., ::-1].copy())
    finally:
        cap.release()


def _track(colour: Path, fov_deg: float, refine: int, depth: Path | None = None, depth_camera: Path | None = None):
    """(frames, results, engine model data) of one tracking run (one hand, no smoothing)."""
    from core.capture import open_source
    from core.engine import Engine, EngineSettings

    settings = EngineSettings(max_hands=1, refine_iterations=refine, device="cpu", smoothing=None,
                              detector_process=False)
    frames, results = [], []
    with open_source(str(colour), fov_deg=fov_deg, depth=None if depth is None else str(depth),
                     depth_camera=None if depth_camera is None else str(depth_camera)) as src, \
            Engine(settings, stream=True) as engine:
        kept = {}

        def remember(it):
            for f in it:
                kept[f.index] = f
                yield f

        for r in engine.process_stream(remember(src)):
            frames.append(kept.pop(r.frame))
            results.append(r)
        data = engine.model_data
    return frames, results, data


_LAYERS: dict[int, Any] = {}


def _final_mesh(hand, data) -> np.ndarray:
    """(V, 3) the final hand's vertices: refined when refined, else the fit's."""
    from core.metric_depth import fit_mesh
    from core.model import HandModel

    if hand.refined is not None:
        return np.asarray(hand.refined.vertices)
    model = data[hand.fit.side]
    if id(model) not in _LAYERS:
        _LAYERS[id(model)] = HandModel(model)
    return fit_mesh(_LAYERS[id(model)], hand.fit)


def nvgesture_depth_camera(frames, results, masks, depth_raw: list[np.ndarray], data) -> dict[str, Any]:
    """The estimated depth camera file of the clip (see the module docstring) and how it was found."""
    from core.render.depth import compare_mesh_depth

    h, w = depth_raw[0].shape
    K = frames[0].intrinsics.K
    cx, cy = K[0, 2], K[1, 2]
    best = (-1.0, 1.0, 0, 0)
    used = [i for i, m in enumerate(masks) if m is not None]
    for s in np.arange(0.60, 1.001, 0.02):
        for dx in range(-24, 25, 2):
            for dy in range(-24, 25, 2):
                inter = union = 0
                A = np.array([[s, 0, (1 - s) * cx + dx], [0, s, (1 - s) * cy + dy]])
                for i in used:
                    warped = cv2.warpAffine(masks[i].astype(np.uint8), A, (w, h), flags=cv2.INTER_NEAREST) > 0
                    blob = depth_raw[i] > 20  # the sensor's near range; MJPEG leaves faint noise below
                    inter += int((warped & blob).sum())
                    union += int((warped | blob).sum())
                iou = inter / max(union, 1)
                if iou > best[0]:
                    best = (iou, float(s), dx, dy)
    iou, s, dx, dy = best
    fx, fy = K[0, 0] * s, K[1, 1] * s
    slope = -(DS325_RANGE_M[1] - DS325_RANGE_M[0]) / 255.0
    # offset: the median sensor value over the hand matched to the colour-only fits' median depth
    sensor_vals, rendered = [], []
    for i in used:
        r = results[i]
        if not r.hands:
            continue
        A = np.array([[s, 0, (1 - s) * cx + dx], [0, s, (1 - s) * cy + dy]])
        inv = cv2.invertAffineTransform(A)
        raw = cv2.warpAffine(depth_raw[i], inv, (frames[i].width, frames[i].height), flags=cv2.INTER_NEAREST)
        vals = raw[(masks[i] > 0) & (raw > 20)]
        hand = r.hands[0]
        cmp = compare_mesh_depth(_final_mesh(hand, data), data[hand.fit.side].faces, K,
                                 np.where(raw > 20, 1.0, 0.0).astype(np.float32), masks[i])
        if vals.size and cmp is not None:
            sensor_vals.append(float(np.median(vals)))
            rendered.append(cmp.rendered_m)
    offset = float(np.median(np.array(rendered) - slope * np.array(sensor_vals)))
    doc = {"fx": fx, "fy": fy, "cx": float(cx + dx), "cy": float(cy + dy), "width": w, "height": h,
           "depth_scale_m": slope, "depth_offset_m": offset, "min_depth_m": 0.05, "max_depth_m": 2.0}
    return {"file": doc, "registration_iou": round(iou, 3), "scale": s, "shift_px": [dx, dy]}


def evaluate_nvgesture(data_dir: Path = DEFAULT_DATA, refine: int = 3, workdir: Path | None = None) -> dict[str, Any]:
    """Depth error of the fitted surface on the real clip, colour only vs colour + depth."""
    from core.render.depth import compare_mesh_depth
    from core.segment import segment_hands

    clip = Path(data_dir) / NVGESTURE
    colour, depth_video = clip / "sk_color.avi", clip / "sk_depth.avi"
    if not colour.is_file() or not depth_video.is_file():
        return {"skipped": f"{clip} not found"}
    t0 = time.perf_counter()
    depth_raw = _read_video(depth_video, grey=True)
    frames, plain, data = _track(colour, DS325_COLOUR_FOV_DEG, refine)
    masks = []
    for f, r in zip(frames, plain):
        hands = segment_hands(f.image, [r.hands[0].detection.keypoints_2d]) if r.hands else [None]
        masks.append(None if hands[0] is None else hands[0].mask)
    camera = nvgesture_depth_camera(frames, plain, masks, depth_raw, data)
    tmp = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="handtwin-rgbd-"))
    cam_path = tmp / "nvgesture_depth_camera.json"
    cam_path.write_text(json.dumps(camera["file"], indent=2))
    runs = {"colour": plain}
    runs["colour+depth, fit only"] = _track(colour, DS325_COLOUR_FOV_DEG, 0, depth_video, cam_path)[1]
    if refine:
        runs[f"colour+depth, refine {refine}"] = _track(colour, DS325_COLOUR_FOV_DEG, refine, depth_video, cam_path)[1]
    # the sensor's depth on the colour pixels, as the RGB-D source registers it
    from core.capture.rgbd import depth_to_metres, load_depth_camera, register_depth

    dc = load_depth_camera(cam_path)
    sensor = [register_depth(depth_to_metres(d, dc), dc, f.intrinsics, (f.width, f.height))
              for d, f in zip(depth_raw, frames)]
    out: dict[str, Any] = {"frames": len(frames), "refine_iterations": refine,
                           "depth_camera_estimate": camera, "runs": {}}
    for name, results in runs.items():
        errs, offs, iou, reproj = [], [], [], []
        for i, r in enumerate(results):
            if not r.hands or masks[i] is None:
                continue
            hand = r.hands[0]
            cmp = compare_mesh_depth(_final_mesh(hand, data), data[hand.fit.side].faces, frames[i].intrinsics.K,
                                     sensor[i], masks[i])
            if cmp is None:
                continue
            errs.append(cmp.abs_error_m * 1000)
            offs.append(cmp.offset_m * 1000)
            reproj.append(hand.reprojection_error_px)
            if hand.refined is not None:
                iou.append(hand.refined.iou_after)
        out["runs"][name] = {
            "hands": len(errs),
            "median_abs_depth_error_mm": round(float(np.median(errs)), 1) if errs else None,
            "mean_abs_depth_error_mm": round(float(np.mean(errs)), 1) if errs else None,
            "median_depth_offset_mm": round(float(np.median(offs)), 1) if offs else None,
            "mean_reprojection_error_px": round(float(np.mean(reproj)), 2) if reproj else None,
            "mean_silhouette_iou": round(float(np.mean(iou)), 3) if iou else None,
        }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _mesh_mask(verts: np.ndarray, faces: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import torch

    from core.render import RasterSettings, rasterize

    frags = rasterize(torch.as_tensor(np.asarray(verts, np.float32))[None], torch.as_tensor(faces).long(),
                      torch.as_tensor(np.asarray(K, np.float32))[None], RasterSettings(image_size=(size[1], size[0])))
    return (frags.pix_to_face[0] >= 0).numpy()


def evaluate_stereo(frames: int = 6, refine: int = 15, seed: int = 0, max_tries: int = 60) -> dict[str, Any]:
    """One view vs two on synthetic stereo pairs through the real MediaPipe (see the module docstring)."""
    from core.camera import intrinsics_from_fov, intrinsics_from_matrix
    from core.capture.frame import Frame, FrameSet
    from core.engine import Engine, EngineSettings
    from core.metrics import mask_iou, mpjpe, pa_mpjpe
    from core.stereo import StereoEngine
    from core.synth.render import SynthSettings, default_layers
    from core.synth.stereo import render_stereo_sample

    t0 = time.perf_counter()
    layers = default_layers()
    rng = np.random.default_rng(seed)
    synth = SynthSettings(image_size=(320, 240), back_facing=0.3)
    K = intrinsics_from_fov(60.0, *synth.image_size).K
    settings = EngineSettings(max_hands=1, detector_mode="static", refine_iterations=refine, device="cpu",
                              smoothing=None, detector_process=False)
    rows: dict[str, list[tuple[float, float, float]]] = {k: [] for k in (
        "one view, fit", f"one view, refine {refine}", "two views, fused fit", f"two views, fused + refine {refine}")}
    tries = used = 0
    cal = None
    mono = Engine(settings)
    stereo = None
    try:
        while used < frames and tries < max_tries:
            tries += 1
            s = render_stereo_sample(rng, layers, synth, K=K)
            ref = s.reference
            size = (ref.image.shape[1], ref.image.shape[0])
            if stereo is None:  # one rig: the same calibration for every pair
                cal = s.calibration
                stereo = StereoEngine(settings, cal)
            f1 = Frame(tries, 0.0, ref.image, intrinsics_from_matrix(cal.K1, *size), "stereo-ref")
            f2 = Frame(tries, 0.0, s.image2, intrinsics_from_matrix(cal.K2, *size), "stereo-2")
            r_mono = mono.process(f1)
            r_two = stereo.process(FrameSet(tries, 0.0, (f1, f2)))
            if not r_mono.hands or not r_two.hands or r_two.time_ms.get("fuse") is None:
                continue
            h1, h2 = r_mono.hands[0], r_two.hands[0]
            if h1.detection.handedness != ref.side:
                continue
            used += 1
            faces = layers[ref.side].data.faces
            for name, hand, refined in (("one view", h1, False), ("one view", h1, True),
                                        ("two views", h2, False), ("two views", h2, True)):
                if refined and hand.refined is None:
                    continue
                src = hand.refined if refined else hand.fit
                verts = hand.refined.vertices if refined else _final_mesh(dataclasses.replace(hand, refined=None),
                                                                          stereo.reference.model_data)
                kp = np.asarray(src.keypoints_3d, np.float64)
                iou = mask_iou(_mesh_mask(verts, faces, cal.K1, size), ref.mask)
                key = (f"{name}, fit" if name == "one view" else "two views, fused fit") if not refined else \
                    (f"one view, refine {refine}" if name == "one view" else f"two views, fused + refine {refine}")
                rows[key].append((pa_mpjpe(kp, ref.joints_3d) * 1000, mpjpe(kp, ref.joints_3d) * 1000, iou))
    finally:
        mono.close()
        if stereo is not None:
            stereo.close()
    out: dict[str, Any] = {"pairs": used, "rendered": tries, "refine_iterations": refine, "runs": {}}
    for key, vals in rows.items():
        a = np.array(vals) if vals else np.zeros((0, 3))
        out["runs"][key] = {
            "hands": len(vals),
            "pa_mpjpe_mm": round(float(a[:, 0].mean()), 2) if len(a) else None,
            "mpjpe_mm": round(float(a[:, 1].mean()), 1) if len(a) else None,
            "silhouette_iou": round(float(a[:, 2].mean()), 3) if len(a) else None,
        }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.tools.evaluate_rgbd", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("nvgesture", help="depth error on the real RGB-D clip, colour only vs colour + depth")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--refine", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None, help="where the estimated depth camera file is written")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("stereo", help="PA-MPJPE and IoU on synthetic stereo pairs, one view vs two")
    p.add_argument("--frames", type=int, default=6, help="stereo pairs where both views find the hand")
    p.add_argument("--refine", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.what == "nvgesture":
        result = evaluate_nvgesture(args.data, args.refine, args.workdir)
    else:
        result = evaluate_stereo(args.frames, args.refine, args.seed)
    print(json.dumps(result, indent=2) if args.json else _format(result))
    return 0


def _format(result: dict[str, Any], indent: str = "") -> str:
    lines = []
    for k, v in result.items():
        if isinstance(v, dict):
            lines.append(f"{indent}{k}:")
            lines.append(_format(v, indent + "  "))
        else:
            lines.append(f"{indent}{k}: {v}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
