"""Benchmarks of the silhouette refinement (``python main.py bench --only refine``).

Figures (milliseconds are wall-clock medians on the current device and thread count; shared
machines are noisy, so ratios against a baseline measured in the same run are what count):

* ``refine_iter_ms``: one refinement iteration of one hand at 128 x 128 (model forward, soft
  silhouette, regularizers, keypoint term, backward, Adam step), from the difference of runs
  with 6 and 1 iterations;
* ``refine_profile_ms``: where an iteration's time goes (each part timed on its own);
* ``refine_iou_before`` / ``refine_iou_after``: mean silhouette IoU (crop, 128 x 128) of
  synthetic hands (exact masks) before and after 15 iterations, starting from the tailor's
  fit to noisy keypoints (no MediaPipe needed: deterministic and fast);
* ``refine_two_hands_ratio``: the live refinement (3 iterations) of two hands 15 cm apart in one
  call over twice that of one of them alone, same run (``refine_two_hands_ms``,
  ``refine_one_hand_ms``): about 1 where two hands that do not touch take the live path (they
  took the general path before, about 2.7 times slower per hand);
* ``pipeline_refine3_ratio``: throughput of the whole engine (detection, fit, segmentation,
  3 refinement iterations) on the demo clip over MediaPipe alone on the same frames, in the
  same run: the median over eleven alternations of the two (``..._ratio_rounds``); with
  ``refine3_frame_ms`` and ``refine3_mediapipe_ms``; ``pipeline_refine3_cpu_ratio`` is the
  same for CPU time (all threads): the work per frame, which two cores can at best halve;
* ``pipeline_refine3_texture_ratio``: the same with every refined hand blended into a skin
  texture, as live tracking does (:data:`core.texture.LIVE_CAPTURE`: a frame that shows the
  hand as the last blended one did is skipped, at most every other frame): the budget's whole
  frame (docs/ARCHITECTURE.md, <= 1.3); ``refine3_texture_coverage`` the right hand's texture
  coverage at the end (one capture per side across all rounds).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from core.tools.bench import median_ms

__all__ = ["BENCHMARKS", "bench_refine", "synthetic_refine_cases", "two_hands_apart"]


def synthetic_refine_cases(n: int, seed: int = 0, keypoint_noise_px: float = 3.0):
    """``n`` synthetic hands with exact masks and a tailor fit to noisy keypoints.

    The fit gets the true keypoints plus Gaussian noise and the true joints (centred, with 5 mm
    noise) as world landmarks, standing in for MediaPipe.

    Returns:
        (refiner inputs ``[(fit, target, sample)]``, the hand layers).
    """
    from core.fit import HandObservation, TailorFitter
    from core.refine import RefineTarget
    from core.synth import SynthSettings, default_layers, render_hand_sample

    rng = np.random.default_rng(seed)
    layers = default_layers()
    fitter = TailorFitter(layers["right"].data, layers["left"].data)
    cases = []
    for _ in range(n):
        s = render_hand_sample(rng, layers, SynthSettings(left_probability=0.3))
        h, w = s.image.shape[:2]
        kp = (s.keypoints_2d + rng.normal(0.0, keypoint_noise_px, s.keypoints_2d.shape)).astype(np.float32)
        world = s.joints_3d - s.joints_3d.mean(0) + rng.normal(0.0, 0.005, s.joints_3d.shape)
        obs = HandObservation(s.side, kp, world.astype(np.float32), s.K.astype(np.float32), (w, h))
        fit = fitter.fit([obs])[0]
        cases.append((fit, RefineTarget(s.mask, kp, s.K), s))
    return cases, layers


def two_hands_apart(fit, target, sample, layers, offset_m: float = 0.15):
    """A second hand ``offset_m`` to the right of a synthetic case's, in an image twice as wide:
    its target the moved true hand's exact silhouette and noisy keypoints (same camera, same
    noise), its fit the case's fit moved as far in the image.

    Returns:
        (fit, target) of the second hand.
    """
    import dataclasses

    from core.refine import RefineTarget
    from core.render import RasterSettings, project_points, rasterize

    shift = np.array([offset_m, 0.0, 0.0], np.float32)
    K = np.asarray(target.K, np.float32)
    h, w = np.shape(target.mask)[:2]
    verts = torch.as_tensor(sample.vertices + shift)[None]
    frags = rasterize(verts, layers[sample.side].faces, torch.as_tensor(K)[None], RasterSettings(image_size=(h, 2 * w)))
    mask = (frags.pix_to_face[0] >= 0).numpy()
    true_kp = project_points((sample.joints_3d + shift)[None], K[None])[0]
    noise = np.asarray(target.keypoints_2d, np.float32) - sample.keypoints_2d  # the case's keypoint noise
    # the fit's hand lies at its own depth: moved so that its image moves as the true hand's does
    fit_shift = shift * np.float32(fit.keypoints_3d[0, 2] / sample.joints_3d[0, 2])
    moved_kp3 = fit.keypoints_3d + fit_shift
    fit2 = dataclasses.replace(fit, transl=fit.transl + fit_shift, keypoints_3d=moved_kp3,
                               keypoints_2d=project_points(moved_kp3[None], K[None])[0].astype(np.float32))
    return fit2, RefineTarget(mask, (true_kp + noise).astype(np.float32), K)


def two_hands_ratio(refiner, fit, target, sample, layers, repeats: int = 7) -> dict[str, float]:
    """``refine_two_hands_ratio`` and its two times (see the module docstring)."""
    fit2, target2 = two_hands_apart(fit, target, sample, layers)
    one = median_ms(lambda: refiner.refine([fit], [target], iterations=3), repeats, warmup=1)
    two = median_ms(lambda: refiner.refine([fit, fit2], [target, target2], iterations=3), repeats, warmup=1)
    return {"refine_one_hand_ms": round(one, 3), "refine_two_hands_ms": round(two, 3),
            "refine_two_hands_ratio": round(two / (2.0 * one), 3)}


def profile_iteration(refiner, fit, target, repeats: int = 5) -> dict[str, float]:
    """Time the parts of one refinement iteration on their own (one hand, the refiner's settings).

    Returns:
        ms per part: ``model`` (hand model forward + backward), ``silhouette_forward``,
        ``silhouette_backward`` (the soft rasterizer), ``regularizers``
        (forward + backward), ``iteration`` (everything, from :func:`bench_refine`'s method)
        and ``other`` (iteration minus the parts: keypoints, losses, Adam, bookkeeping).
    """
    from core.refine.crop import crop_box
    from core.refine.mesh import edge_normal_losses, front_faces, offset_losses
    from core.render import project_points, rasterize_silhouette

    st = refiner.settings
    dev = refiner.device
    layer, topo = refiner.layers[fit.side], refiner.topology[fit.side]
    pose = torch.as_tensor(fit.pose, device=dev)[None]
    betas = torch.as_tensor(fit.betas, device=dev)[None]
    transl = torch.as_tensor(fit.transl, device=dev)[None]
    with torch.no_grad():
        v0 = layer(pose, betas, transl).vertices
    K = torch.as_tensor(np.asarray(target.K, np.float32), device=dev)[None]
    box = crop_box(project_points(v0, K)[0].cpu().numpy(), st.image_size, st.crop_margin)
    Kc = torch.as_tensor(box.affine(), dtype=torch.float32, device=dev)[None] @ K
    mask = torch.as_tensor(box.resample_mask(target.mask), device=dev)[None]
    faces = front_faces(v0, topo.faces) if st.cull_backfaces else topo.faces
    soft = st.soft

    lean = refiner._lean[fit.side]  # the refiner's own forward pass (core.refine.lbs)

    def model() -> None:
        p = pose.clone().requires_grad_(True)
        lean(p, betas, transl).vertices.sum().backward()

    def sil_forward() -> None:
        with torch.no_grad():
            rasterize_silhouette(v0, faces, Kc, soft)

    def sil_both() -> None:
        v = v0.clone().requires_grad_(True)
        ((rasterize_silhouette(v, faces, Kc, soft) - mask) ** 2).sum().backward()

    def regs() -> None:
        u = torch.zeros_like(v0, requires_grad=True)
        v = v0 + u * 0.003
        edge, normal = edge_normal_losses(v, v0, topo)
        vertex, lap = offset_losses(u, topo)
        (vertex + lap + 0.1 * edge + normal).sum().backward()

    for fn in (model, sil_forward, sil_both, regs):
        fn()  # warm-up
    out = {
        "model": median_ms(model, repeats, warmup=0),
        "silhouette_forward": median_ms(sil_forward, repeats, warmup=0),
        "silhouette_forward_backward": median_ms(sil_both, repeats, warmup=0),
        "regularizers": median_ms(regs, repeats, warmup=0),
    }
    out["silhouette_backward"] = out.pop("silhouette_forward_backward") - out["silhouette_forward"]
    return {k: round(v, 3) for k, v in out.items()}


def iteration_ms(refiner, fit, target, repeats: int = 5) -> float:
    """Median ms of one iteration: (time with 6 iterations - time with 1) / 5."""
    refiner.refine([fit], [target], iterations=1)  # warm-up
    one = median_ms(lambda: refiner.refine([fit], [target], iterations=1), repeats, warmup=0)
    six = median_ms(lambda: refiner.refine([fit], [target], iterations=6), repeats, warmup=0)
    return (six - one) / 5.0


def pipeline_ratio(iterations: int = 3, max_frames: int = 24, settings=None,
                   texture: bool = False, rounds: int = 11) -> dict[str, Any]:
    """Whole-frame throughput with refinement over MediaPipe alone, on the demo clip.

    The two are measured in alternation, ``rounds`` times each (MediaPipe alone, then the
    engine, on the same frames), and the ratio is the median of the rounds' ratios: this VM's
    speed drifts within a run (CPU steal from other machines, changing host load), and a
    baseline taken seconds apart from what it divides can be off by tens of percent.

    Args:
        iterations: refinement iterations per frame. max_frames: demo frames used.
        settings: the :class:`~core.refine.RefineSettings` (None: the defaults).
        texture: also blend every refined hand into a skin texture, as live tracking does
            (the DESIGN budget's "whole frame": MediaPipe, 3 iterations, texture), in the
            engine's ``after`` stage; the keys then carry ``_texture``.
        rounds: alternations of baseline and engine (11: with 5 the median still moved by
            +-0.1 from run to run on this VM).
    """
    from core.detect import HandDetector
    from core.engine import Engine, EngineSettings
    from core.refine import RefineSettings
    from core.tools.bench import _bench_frames

    frames = _bench_frames(max_frames)
    engine_settings = EngineSettings(max_hands=1, device="cpu", refine_iterations=iterations,
                                     refine=settings or RefineSettings())
    captures: dict[str, Any] = {}
    if texture:
        from core.model import load_model_data
        from core.texture import LIVE_CAPTURE, TextureCapture

        captures = {side: TextureCapture(load_model_data(None, side), settings=LIVE_CAPTURE)
                    for side in ("right", "left")}
    stages: dict[str, list[float]] = {}
    ious: list[float] = []

    def blend(frame, result) -> None:  # the texture stage, in the engine's third thread
        for h in result.hands:
            if h.refined is not None:
                t = captures[h.refined.side].update(frame.image, h.refined.vertices, h.refined.K)
                stages.setdefault("texture", []).append(t.time_ms)

    mediapipe, frame, mediapipe_cpu, frame_cpu = [], [], [], []
    with HandDetector(max_hands=1, mode="video") as det, Engine(engine_settings) as engine:
        engine.process(frames[0])  # warm-up (first calls, renderer probe)
        for _ in engine.process_stream(frames[:2]):  # starts the stream's detector process
            pass

        def cpu_s() -> float:  # this process's CPU time and its detector process's
            child = None if engine._worker is None else engine._worker.cpu_time_s()
            return time.process_time() + (child or 0.0)

        for f in frames:  # warm-up of the baseline's graph
            det.detect(f.image, f.timestamp_s)
        for _ in range(rounds):
            det.reset()
            t0, c0 = time.perf_counter(), time.process_time()
            for f in frames:
                det.detect(f.image, f.timestamp_s)
            mediapipe.append((time.perf_counter() - t0) * 1000 / len(frames))
            mediapipe_cpu.append((time.process_time() - c0) * 1000 / len(frames))
            engine.reset()
            t0, c0 = time.perf_counter(), cpu_s()
            for r in engine.process_stream(frames, after=blend if texture else None):
                for k, v in r.time_ms.items():
                    stages.setdefault(k, []).append(v)
                ious += [h.refined.iou_after for h in r.hands if h.refined is not None]
            frame.append((time.perf_counter() - t0) * 1000 / len(frames))
            frame_cpu.append((cpu_s() - c0) * 1000 / len(frames))
    ratios = [f / m for f, m in zip(frame, mediapipe)]
    key = f"refine{iterations}{'_texture' if texture else ''}"
    return {
        f"{key}_frame_ms": round(statistics.median(frame), 3),
        f"{key}_mediapipe_ms": round(statistics.median(mediapipe), 3),
        f"pipeline_{key}_ratio": round(statistics.median(ratios), 3),
        f"pipeline_{key}_ratio_rounds": [round(r, 3) for r in ratios],
        # CPU time of all threads and of the detector process per frame: the work, whatever
        # the overlap (two cores can bring the wall-clock ratio down to half the CPU ratio at best)
        f"{key}_cpu_ms": round(statistics.median(frame_cpu), 3),
        f"{key}_mediapipe_cpu_ms": round(statistics.median(mediapipe_cpu), 3),
        f"pipeline_{key}_cpu_ratio": round(statistics.median(
            [f / m for f, m in zip(frame_cpu, mediapipe_cpu)]), 3),
        f"{key}_stage_ms": {k: round(statistics.median(v), 3) for k, v in stages.items()},
        f"{key}_demo_iou": round(float(np.mean(ious)), 4) if ious else None,
        **({f"{key}_coverage": round(captures["right"].coverage, 4)} if texture else {}),
        f"{key}_frames": len(frames),
    }


def bench_refine() -> dict[str, Any]:
    """``refine_iter_ms``, the profile, synthetic IoU before/after 15 iterations, pipeline ratio."""
    from core.refine import Refiner, RefineSettings

    cases, layers = synthetic_refine_cases(4)
    refiner = Refiner(layers["right"].data, layers["left"].data, RefineSettings())
    fit, target, sample = cases[0]
    iter_ms = iteration_ms(refiner, fit, target)
    profile = profile_iteration(refiner, fit, target)
    profile["iteration"] = round(iter_ms, 3)
    profile["other"] = round(iter_ms - sum(v for k, v in profile.items() if k != "iteration"), 3)
    results = [refiner.refine([c[0]], [c[1]], iterations=15)[0] for c in cases]  # separate images
    out: dict[str, Any] = {
        "refine_iter_ms": round(iter_ms, 3),
        "refine_profile_ms": profile,
        "refine_iou_before": round(float(np.mean([r.iou_before for r in results])), 4),
        "refine_iou_after": round(float(np.mean([r.iou_after for r in results])), 4),
        "refine_threads": torch.get_num_threads(),
        **two_hands_ratio(refiner, fit, target, sample, layers),
    }
    for texture in (False, True):
        try:
            out.update(pipeline_ratio(3, texture=texture))
        except Exception as exc:  # noqa: BLE001 - the demo clip may be missing; report, don't fail
            key = f"pipeline_refine3{'_texture' if texture else ''}"
            out[f"{key}_ratio"] = None
            out[f"{key}_error"] = f"{type(exc).__name__}: {exc}"
    return out


BENCHMARKS = {"refine": bench_refine}
