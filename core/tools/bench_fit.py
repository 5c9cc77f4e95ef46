"""``bench --only temporal``: jitter and lag of the tracked fit against MediaPipe's keypoints.

Jitter is the median second difference of a keypoint track (:func:`core.metrics.jitter_px`):
of MediaPipe's detected keypoints, of the fit's reprojected keypoints without and with the
temporal filter (:mod:`core.fit.temporal`). Where the motion is known (synthetic clips), the
second difference of the *error* against the true keypoints is reported too
(``residual_jitter``): a moving hand's own acceleration adds to the plain figure, and on fast
motion dominates it: on the rendered ``moving`` and ``fast`` clips the true keypoints' own
second difference is 0.84 and 0.95x MediaPipe's, a floor no filter without lag can go under.
``acceptance_jitter_ratio`` is therefore the residual ratio where the motion is known and the
plain one elsewhere (the demo and the rendered clips have truth, the real clip has not). Lag
(:func:`core.metrics.lag_frames`) is measured against MediaPipe's keypoints (what the fit and
its filter add: ``lag_fit_frames``) and, where known, against the true keypoints
(``lag_*_truth_frames``; MediaPipe itself trails them by up to a frame);
``acceptance_lag_frames`` is the one against the truth where known. ``fit_error_px`` is the
median over frames of the fit's mean distance to MediaPipe's keypoints, with and without the
filter (what smoothing costs in reprojection).

Clips: the bundled demo (15 fps, slow), two rendered clips of a hand crossing the image
(:func:`core.synth.motion.moving_hand_clip`, 30 fps, ``moving`` about 7 and ``fast`` about 14
pixels per frame) and the real clip in ``../shared/data/videos`` when present.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import numpy as np

from core.capture.frame import Frame
from core.metrics import jitter_px, lag_frames

log = logging.getLogger(__name__)

REAL_CLIP = "videos/nvgesture_clip/sk_color.avi"


def hand_tracks(frames: Sequence[Frame], smoothing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(T, 21, 2) MediaPipe's keypoints and (T, 21, 2) the fit's reprojected keypoints of the
    first hand per frame through the engine (NaN where no hand), with or without smoothing."""
    from core.engine import Engine, EngineSettings
    from core.focal import FocalSettings

    # a recording, as `track` reads one: an unknown focal length is estimated in line (the
    # same frame on any machine load; core.tools.cli_source.engine_settings_for)
    settings = EngineSettings(max_hands=1, device="cpu", detector_process=False,
                              focal=FocalSettings(background=False))
    if not smoothing:
        settings = dataclasses.replace(settings, smoothing=None)
    det = np.full((len(frames), 21, 2), np.nan)
    fit = np.full((len(frames), 21, 2), np.nan)
    with Engine(settings) as engine:
        for i, frame in enumerate(frames):
            result = engine.process(frame)
            if result.hands:
                det[i] = result.hands[0].detection.keypoints_2d
                fit[i] = result.hands[0].fit.keypoints_2d
    return det, fit


def _median_error(track: np.ndarray, det: np.ndarray) -> float:
    """Median over frames of the mean distance between a fit's keypoints and MediaPipe's, px
    (a fit's ``reprojection_error_px``)."""
    err = np.linalg.norm(np.asarray(track, np.float64) - det, axis=-1).mean(-1)
    return float(np.median(err[np.isfinite(err)]))


def temporal_quality(frames: Sequence[Frame], truth: np.ndarray | None = None) -> dict[str, Any]:
    """Jitter (px) and lag (frames) of MediaPipe, the raw fit and the smoothed fit on a clip.

    Args:
        truth: (T, 21, 2) the true keypoints, pixels, or None.
    """
    det, smooth = hand_tracks(frames, smoothing=True)
    _, raw = hand_tracks(frames, smoothing=False)
    out: dict[str, Any] = {
        "frames": len(frames),
        "detected": int(np.isfinite(det[:, 0, 0]).sum()),
        "jitter_mediapipe_px": round(jitter_px(det), 3),
        "jitter_fit_unfiltered_px": round(jitter_px(raw), 3),
        "jitter_fit_px": round(jitter_px(smooth), 3),
        "jitter_ratio": round(jitter_px(smooth) / jitter_px(det), 3),
        "lag_fit_unfiltered_frames": round(lag_frames(raw, det), 2),
        "lag_fit_frames": round(lag_frames(smooth, det), 2),
        "fit_error_unfiltered_px": round(_median_error(raw, det), 3),
        "fit_error_px": round(_median_error(smooth, det), 3),
        "acceptance_jitter_ratio": round(jitter_px(smooth) / jitter_px(det), 3),
        "acceptance_lag_frames": round(lag_frames(smooth, det), 2),
    }
    if truth is not None:
        out.update({
            "jitter_truth_px": round(jitter_px(truth), 3),
            "residual_jitter_mediapipe_px": round(jitter_px(det - truth), 3),
            "residual_jitter_fit_px": round(jitter_px(smooth - truth), 3),
            "residual_jitter_ratio": round(jitter_px(smooth - truth) / jitter_px(det - truth), 3),
            "acceptance_jitter_ratio": round(jitter_px(smooth - truth) / jitter_px(det - truth), 3),
            "lag_mediapipe_truth_frames": round(lag_frames(det, truth), 2),
            "lag_fit_truth_frames": round(lag_frames(smooth, truth), 2),
            "acceptance_lag_frames": round(lag_frames(smooth, truth), 2),
        })
    return out


def bench_temporal() -> dict[str, Any]:
    """Temporal quality on the demo, two rendered moving-hand clips and the real clip."""
    from core.capture import DEMO_CLIP_PATH, open_source
    from core.synth.motion import moving_hand_clip
    from core.tools.bench import _bench_frames
    from core.tools.evaluate_fit import DEFAULT_DATA

    results: dict[str, Any] = {}
    demo = _bench_frames(max_frames=10_000)
    truth = np.load(DEMO_CLIP_PATH.with_name("demo_groundtruth.npz"))["keypoints_2d"][: len(demo)]
    results["demo"] = temporal_quality(demo, truth)
    for name, speed in (("moving", 1.0), ("fast", 2.0)):
        clip = moving_hand_clip(frames=40, speed=speed, supersample=1, seed=3, name=name)
        results[name] = temporal_quality(clip.frames(), clip.keypoints_2d)
    real = DEFAULT_DATA / REAL_CLIP
    if real.exists():
        with open_source(str(real)) as src:
            results["real_clip"] = temporal_quality(list(src))
    else:
        results["real_clip"] = "absent"
    return {"temporal": results}


BENCHMARKS = {"temporal": bench_temporal}
