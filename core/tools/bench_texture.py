"""Benchmark of texture capture (``python main.py bench --only texture``).

``texture_ms``: one :meth:`~core.texture.TextureCapture.update` with the defaults (1024 x 1024
texture, 512 capture grid) on a 480 x 360 synthetic frame with its hand mask, median over
repeats (the DESIGN budget is 5 ms); the fastest repeat (``texture_min_ms``) and the median
CPU time of one update (``texture_cpu_ms``, process time, single-threaded), which is what it
costs without competition for the CPU (on a shared machine the wall-clock median moves with
the load). Also
reported: the same update on a 1024 capture grid
(``texture_grid1024_ms``), one fill of the whole texture (``texture_fill_ms``: what an export
or a preview pays once), and the one-off texel map build per topology and grid size
(``texture_map_build_ms``).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

__all__ = ["BENCHMARKS", "bench_texture"]


def bench_texture(repeats: int = 30) -> dict[str, Any]:
    """Median timings of texture capture on one synthetic frame (see the module)."""
    from core.synth.render import SynthSettings, default_layers, render_hand_sample
    from core.texture.capture import TextureCapture
    from core.texture.texels import build_texel_map
    from core.tools.bench import median_ms
    from core.tools.evaluate_texture import FLAT_LIGHTING

    layers = default_layers()
    rng = np.random.default_rng(3)
    settings = SynthSettings(image_size=(480, 360), skin_detail=False)  # the texture is the rendered albedo
    sample = render_hand_sample(rng, layers, settings, lighting=FLAT_LIGHTING)
    data = layers["right"].data
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    build_texel_map(data.uv, data.uv_faces, data.faces, 512)
    results["texture_map_build_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)

    def timed(capture: TextureCapture) -> Callable[[], object]:
        return lambda: capture.update(sample.image, sample.vertices, sample.K, sample.mask)

    default = TextureCapture(data)
    update = default.update(sample.image, sample.vertices, sample.K, sample.mask)
    results["texture_ms"] = round(median_ms(timed(default), repeats=repeats), 3)
    # The fastest repeat and the median CPU time (process time: time spent running, not
    # waiting for a core): what the update costs when nothing else wants the CPU.
    run = timed(default)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        wall.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
    results["texture_min_ms"] = round(min(wall), 3)
    results["texture_cpu_ms"] = round(float(np.median(cpu)), 3)
    results["texture_texels_per_update"] = update.texels_updated
    full = TextureCapture(data, capture_size=1024)
    results["texture_grid1024_ms"] = round(median_ms(timed(full), repeats=max(5, repeats // 3)), 3)

    def fill() -> None:
        default._state.cache.clear()  # noqa: SLF001 - time the fill, not the cache
        default.texture(filled=True)

    results["texture_fill_ms"] = round(median_ms(fill, repeats=max(5, repeats // 3), warmup=1), 3)
    return results


def bench_texture_object() -> dict[str, Any]:
    """A hand holding a red bar through MediaPipe, the fit, the segmentation and the capture
    (:mod:`core.tools.evaluate_texture_held`): texels of the captured texture closer in colour to the object
    than to the skin (``texture_object_texels``; the seen ones alone: ``..._seen``)."""
    from core.tools.evaluate_texture_held import capture_held_clip, held_object_clip

    clip = held_object_clip(frames=8)
    r = capture_held_clip(clip)
    return {"texture_object": {
        "frames": r["frames"], "tracked": r["tracked"], "coverage": r.get("coverage"),
        "texture_object_texels": r.get("object_texels"), "texture_object_texels_seen": r.get("object_texels_seen"),
        "covered_texels": r.get("covered_texels"), "skin_rgb": np.round(clip.skin_rgb, 1).tolist(),
        "object_rgb": np.round(clip.object_rgb, 1).tolist(),
    }}


def bench_texture_registration() -> dict[str, Any]:
    """Registration error of the captured texture on synthetic frames with a known texture
    (:mod:`core.tools.evaluate_texture_registration`): median and 90th percentile of the patch
    shifts, texels of the 512 capture grid, per side and case (``oracle``: true mesh and
    camera; ``weak_best``: true mesh, best weak camera; the engine's hands fitted to the true
    keypoints, perspective or weak, refinement 0 or 3), with a 60, a 25 and a 2 degree lens
    (the last makes the frames themselves weak perspective, the hand about 10 m away)."""
    from core.tools.evaluate_texture_registration import evaluate_registration

    out: dict[str, Any] = {}
    for fov in (60.0, 25.0, 2.0):
        r = evaluate_registration(fov_deg=fov)
        for side in ("right", "left"):
            for case, row in r[side].items():
                out[f"fov{fov:.0f}_{side}_{case}"] = [row["median_px"], row["p90_px"]]
    return {"texture_registration": {"size": 512, "figures": "[median, p90] |shift|, texels", **out}}


#: name -> benchmark, picked up by :mod:`core.tools.bench`.
BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {"texture": bench_texture, "texture_object": bench_texture_object,
                                                       "texture_registration": bench_texture_registration}
