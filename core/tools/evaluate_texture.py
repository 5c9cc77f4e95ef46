"""How well does texture capture recover a known texture? (``python -m core.tools.evaluate_texture``)

A synthetic sequence is rendered by :mod:`core.synth` with a known UV texture, flat lighting
(ambient 1, white light: the image shows the albedo, so the texture is recoverable) and a new
random view, finger pose and background per frame, for one hand shape. Two geometries feed
the capture:

* ``exact``: the rendered mesh and camera (a pure test of the capture);
* ``fitted``: MediaPipe on the rendered image, then the fit (``core.engine.Engine``), with the
  rendered mask as the target mask (perfect segmentation) - the realistic case, where the
  mesh is off by the fit's error; ``fitted_segmented`` with :func:`core.segment.segment_hand`
  (skin-colour method) as the target mask, ``fitted_no_mask`` with the mesh's silhouette
  alone.

After 1, 5, 10 and 30 frames used (frames where the hand was found: all of them for
``exact``, those MediaPipe detected as a right hand for ``fitted``), and after the last one,
the captured texture (``size`` x ``size``, as exported) is
compared with what the renderer draws at each texel (the known texture looked up the way
:func:`core.synth.render.shade` looks it up, with the palm-side tint it applies) on the texels
seen so far, and on all texels after filling. Errors are mean absolute differences per RGB
channel in 8-bit levels. ``constant`` is the error of the best flat colour (the reference's
mean) on the same texels, the scale of "no texture detail recovered at all".
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.texture.capture import DEFAULT_TEXTURE_SIZE, TextureCapture
from core.texture.texels import TexelMap, texel_map, texel_uv

__all__ = ["evaluate_texture", "pattern_texture", "reference_texels", "texture_error"]

log = logging.getLogger(__name__)

CHECKPOINTS = (1, 5, 10, 30)

#: The hand segmentation used for ``fitted_segmented`` (the one the export uses).
SEGMENT_METHOD = "skin"

#: Flat lighting: ambient 1 and white light, so the rendered colour is the (tinted) albedo.
FLAT_LIGHTING = (np.array([0.0, 0.0, 1.0]), 1.0, np.ones(3))


def pattern_texture(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """A skin texture whose colour tells where a texel is: a procedural skin plus a colour
    gradient across UV space (red grows with u, blue with v, +-25 levels), so a texel put in
    the wrong place shows. (A grid of dark lines would be sharper, but MediaPipe then stops
    seeing a hand.) (size, size, 3) uint8."""
    from core.synth.render import procedural_skin_texture

    tex = procedural_skin_texture(rng, size).astype(np.float32)
    ramp = np.linspace(-25.0, 25.0, size, dtype=np.float32)
    tex[..., 0] += ramp[None, :]
    tex[..., 2] += ramp[::-1, None]
    return np.clip(tex, 0, 255).astype(np.uint8)


def reference_texels(tmap: TexelMap, texture: np.ndarray, vertex_tint: np.ndarray | None) -> np.ndarray:
    """(N, 3) float32: the colour the synthetic renderer draws at each covered texel.

    Mirrors :func:`core.synth.render.shade` under flat lighting: nearest lookup at
    ``round(u (T - 1)), round((1 - v) (T - 1))``, then the palm-side tint.
    """
    u, v = texel_uv(tmap.size)
    u, v = u.reshape(-1)[tmap.flat_index], v.reshape(-1)[tmap.flat_index]
    tsz = texture.shape[0]
    tx = np.clip(np.rint(u * (tsz - 1)).astype(int), 0, tsz - 1)
    ty = np.clip(np.rint((1.0 - v) * (tsz - 1)).astype(int), 0, tsz - 1)
    albedo = texture[ty, tx].astype(np.float32)
    if vertex_tint is not None:
        tint = np.einsum("nk,nk->n", tmap.bary, vertex_tint[tmap.vertex_ids])[:, None]
        grey = albedo.mean(1, keepdims=True)
        albedo = albedo + tint * (0.35 * (grey - albedo) + 0.22 * (255.0 - albedo) * 0.5)
    return np.clip(albedo, 0, 255)


def texture_error(texture: np.ndarray, reference: np.ndarray, tmap: TexelMap, where: np.ndarray) -> dict[str, float]:
    """Mean absolute colour error (levels per channel) of ``texture`` on the texels ``where``.

    Args:
        texture: (S, S, 3) uint8, the map's size. reference: (N, 3) reference texel colours.
        tmap: the texel map of size S. where: (N,) bool, the texels to compare.
    """
    got = tmap.from_image(texture).astype(np.float32)
    if not where.any():
        return {"error": float("nan"), "constant": float("nan"), "texels": 0}
    diff = np.abs(got[where] - reference[where]).mean()
    flat = np.abs(reference[where] - reference[where].mean(axis=0)).mean()
    return {"error": round(float(diff), 2), "constant": round(float(flat), 2), "texels": int(where.sum())}


@dataclass(frozen=True)
class _Frame:
    image: np.ndarray
    mask: np.ndarray
    K: np.ndarray
    vertices: np.ndarray


def render_sequence(frames: int, texture: np.ndarray, seed: int = 0,
                    image_size: tuple[int, int] = (480, 360)) -> list[_Frame]:
    """``frames`` views of one right hand (fixed shape) turning in front of the camera, like a
    user showing both sides: a full turn about the image's vertical axis with some wobble,
    fingers moving between open natural poses, one background, flat lighting."""
    from scipy.spatial.transform import Rotation

    from core.synth.render import (
        PALM_TO_CAMERA,
        SynthSettings,
        default_layers,
        natural_pose,
        procedural_background,
        render_hand_sample,
    )

    rng = np.random.default_rng(seed)
    layers = default_layers()
    # No skin detail: the texture is then the rendered albedo exactly, the truth captures are measured on.
    settings = SynthSettings(image_size=image_size, fill=(0.6, 0.6), skin_detail=False)
    betas = np.clip(rng.normal(0, 0.8, layers["right"].num_betas), -2, 2).astype(np.float32)
    keys = [0.5 * natural_pose(rng, layers["right"]) for _ in range(4)]
    background = procedural_background(rng, *image_size)
    out = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        # Start palm-on, turn one full round (edge-on views are included, as in real use).
        turn = Rotation.from_euler("yx", [2 * np.pi * t, 0.3 * np.sin(4 * np.pi * t)]).as_matrix()
        k = t * (len(keys) - 1)
        j = min(int(k), len(keys) - 2)
        pose = (1 - (k - j)) * keys[j] + (k - j) * keys[j + 1]
        s = render_hand_sample(rng, layers, settings, betas=betas, pose=pose, texture=texture, background=background,
                               global_rotation=turn @ PALM_TO_CAMERA, transl_jitter=0.05, lighting=FLAT_LIGHTING)
        out.append(_Frame(s.image, s.mask, s.K, s.vertices))
    return out


def _fitted(frames: list[_Frame]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """(fitted vertices, detected keypoints) per frame (MediaPipe + fit, static images),
    None where no right hand was found."""
    from core.camera import intrinsics_from_matrix
    from core.capture.frame import Frame
    from core.engine import Engine, EngineSettings
    from core.texture.session import fit_vertices

    out: list[tuple[np.ndarray, np.ndarray] | None] = []
    with Engine(EngineSettings(max_hands=1, detector_mode="static", device="cpu")) as engine:
        layers = {side: _layer(side) for side in ("right", "left")}
        for i, f in enumerate(frames):
            h, w = f.image.shape[:2]
            frame = Frame(i, i / 15.0, f.image, intrinsics_from_matrix(f.K, w, h), "synthetic")
            result = engine.process(frame)
            hands = [h_ for h_ in result.hands if h_.fit.side == "right"]
            if not hands:
                out.append(None)
                continue
            fit = hands[0].fit
            out.append((fit_vertices(layers["right"], fit.pose, fit.betas, fit.transl),
                        hands[0].detection.keypoints_2d))
    return out


_LAYERS: dict[str, Any] = {}


def _layer(side: str) -> Any:
    from core.model import HandModel, load_model_data

    if side not in _LAYERS:
        _LAYERS[side] = HandModel(load_model_data(None, side))
    return _LAYERS[side]


def _run_capture(frames: list[_Frame], vertices: list[np.ndarray | None], masks: list[np.ndarray | None],
                 reference: np.ndarray, tmap: TexelMap, size: int, capture_size: int | None,
                 checkpoints: tuple[int, ...]) -> dict[str, Any]:
    capture = TextureCapture(_layer("right"), size, capture_size=capture_size)
    results: dict[str, Any] = {}
    first_seen: np.ndarray | None = None
    used = 0
    times = []
    def record(label: str) -> None:
        seen = tmap.from_image(capture.seen_mask())
        filled = capture.texture(filled=True)
        row = texture_error(filled, reference, tmap, seen)
        row["first_frame_texels"] = (
            texture_error(filled, reference, tmap, first_seen)["error"] if first_seen is not None else None
        )
        row["all_texels_filled"] = texture_error(filled, reference, tmap, np.ones_like(seen))["error"]
        row["coverage"] = round(capture.coverage, 3)
        row["frames_used"] = used
        results[label] = row

    for f, verts, mask in zip(frames, vertices, masks):
        if verts is None:
            continue
        update = capture.update(f.image, verts, f.K, mask)
        times.append(update.time_ms)
        used += 1
        if first_seen is None and update.texels_updated:
            first_seen = tmap.from_image(capture.seen_mask())
        if used in checkpoints:
            record(str(used))
    if used and str(used) not in results:
        record(f"all ({used})")
    results["median_update_ms"] = round(float(np.median(times)), 2) if times else None
    results["texture"] = capture.texture(filled=True)
    return results


def evaluate_texture(
    frames: int = 30,
    seed: int = 0,
    size: int = DEFAULT_TEXTURE_SIZE,
    capture_size: int | None = None,
    fitted: bool = True,
    kinds: tuple[str, ...] = ("skin", "pattern"),
    checkpoints: tuple[int, ...] = CHECKPOINTS,
) -> dict[str, Any]:
    """Texture error vs frames on a synthetic sequence (see the module docstring).

    Returns:
        ``{kind: {geometry: {frames used: row}}}`` (geometry: ``exact``, ``fitted``,
        ``fitted_segmented``, ``fitted_no_mask``) where a row holds
        ``error`` (seen texels so far), ``constant`` (flat-colour error on them),
        ``first_frame_texels`` (error on the texels of the first frame),
        ``all_texels_filled``, ``coverage``, ``frames_used``; plus ``median_update_ms``.
    """
    from core.synth.render import palm_tint, procedural_skin_texture

    layer = _layer("right")
    tmap = texel_map(layer.data.uv, layer.data.uv_faces, layer.data.faces, size)
    tint = palm_tint(layer)
    out: dict[str, Any] = {"frames": frames, "size": size, "seed": seed}
    for kind in kinds:
        rng = np.random.default_rng(seed + 101)
        texture = procedural_skin_texture(rng, 512) if kind == "skin" else pattern_texture(rng, 512)
        reference = reference_texels(tmap, texture, tint)
        t0 = time.perf_counter()
        sequence = render_sequence(frames, texture, seed)
        log.info("rendered %d frames in %.1f s", frames, time.perf_counter() - t0)
        entry: dict[str, Any] = {}
        gt_masks = [f.mask for f in sequence]
        runs = {"exact": ([f.vertices for f in sequence], gt_masks)}
        if fitted:
            from core.segment import segment_hand

            fits = _fitted(sequence)
            verts = [None if f is None else f[0] for f in fits]
            segmented = [None if fit is None else segment_hand(f.image, fit[1], SEGMENT_METHOD).mask
                         for f, fit in zip(sequence, fits)]
            runs["fitted"] = (verts, gt_masks)
            runs["fitted_segmented"] = (verts, segmented)
            runs["fitted_no_mask"] = (verts, [None] * len(sequence))
        for name, (vertices, masks) in runs.items():
            result = _run_capture(sequence, vertices, masks, reference, tmap, size, capture_size, checkpoints)
            entry[name] = {k: v for k, v in result.items() if k != "texture"}
        out[kind] = entry
    return out


def _format(results: dict[str, Any]) -> str:
    lines = [f"texture capture, {results['frames']} synthetic frames, {results['size']}x{results['size']} "
             "(mean abs. error, 8-bit levels per channel)"]
    for kind in ("skin", "pattern"):
        if kind not in results:
            continue
        for geometry, rows in results[kind].items():
            lines.append(f"{kind:8s} {geometry:15s} update {rows.get('median_update_ms')} ms")
            for n, row in rows.items():
                if not isinstance(row, dict):
                    continue
                lines.append(
                    f"    after {n:>7s} frames: seen {row['error']:6.2f} (flat colour {row['constant']:6.2f}, "
                    f"{row['texels']} texels), first-frame texels {row['first_frame_texels']}, "
                    f"all filled {row['all_texels_filled']}, coverage {row['coverage']:.2f}, "
                    f"frames used {row['frames_used']}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.tools.evaluate_texture", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=DEFAULT_TEXTURE_SIZE)
    parser.add_argument("--capture-size", type=int, default=None)
    parser.add_argument("--no-fit", action="store_true", help="exact geometry only (no MediaPipe)")
    parser.add_argument("--kind", choices=("skin", "pattern", "both"), default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    kinds = ("skin", "pattern") if args.kind == "both" else (args.kind,)
    results = evaluate_texture(args.frames, args.seed, args.size, args.capture_size, not args.no_fit, kinds)
    print(json.dumps(results, indent=2) if args.json else _format(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
