"""``track``: per-frame results of a source, one JSON line per frame (DESIGN.md contract)."""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from core.capture import open_source
from core.engine import Engine, EngineSettings
from core.errors import InputError
from core.progress import ProgressBar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackSummary:
    """What a ``track`` run did: frames, frames with a hand, mean times and errors (and the mean
    silhouette IoU after refinement, when refining)."""

    frames: int
    frames_with_hands: int
    hands: int
    mean_time_ms: dict[str, float]
    fps: float
    mean_reprojection_error_px: float | None
    out: str
    mean_silhouette_iou: float | None = None

    def format(self) -> str:
        pct = 100.0 * self.frames_with_hands / max(self.frames, 1)
        times = ", ".join(f"{k} {v:.1f} ms" for k, v in self.mean_time_ms.items())
        err = "n/a" if self.mean_reprojection_error_px is None else f"{self.mean_reprojection_error_px:.2f} px"
        iou = "" if self.mean_silhouette_iou is None else f"mean silhouette IoU {self.mean_silhouette_iou:.3f}; "
        return (
            f"tracked {self.frames} frames ({self.frames_with_hands} with a hand, {pct:.0f}%), "
            f"{self.hands} hands; {self.fps:.1f} fps; per frame: {times}; "
            f"mean reprojection error {err}; {iou}wrote {self.out}"
        )


def run_track(
    source: str,
    out: str | Path,
    intrinsics: str | None = None,
    fov_deg: float | None = None,
    profile: str | None = None,
    refine: int = 0,
    max_hands: int = 2,
    device: str = "auto",
    model: str | None = None,
    progress: bool | None = None,
) -> TrackSummary:
    """Track every frame of ``source`` and write ``out`` (JSONL) atomically.

    Raises:
        InputError: unreadable source or intrinsics, unwritable output, no hand in any frame.
    """
    if refine < 0:
        raise InputError(f"--refine must be >= 0 iterations, got {refine}")
    if intrinsics is not None and fov_deg is not None:
        raise InputError("give either --intrinsics or --fov, not both")
    shape = None
    if profile is not None:
        from core.profile_io import load_profile

        shape = load_profile(profile).shape
    out = Path(out)
    if not out.parent.exists():
        raise InputError(f"the output folder {out.parent} does not exist")
    settings = EngineSettings(max_hands=max_hands, device=device, model=model, refine_iterations=refine)
    times: dict[str, list[float]] = {}
    errors: list[float] = []
    ious: list[float] = []
    frames = with_hands = hands = 0
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".part")
    except OSError as exc:
        raise InputError(f"cannot write to {out.parent}: {exc.strerror}") from exc
    import time

    start = time.perf_counter()
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f, open_source(source, intrinsics, fov_deg) as src:
            total = getattr(src, "frame_count", None)
            is_photos = type(src).__name__ == "ImageSequenceSource"
            if is_photos:
                settings = replace(settings, detector_mode="static")
            with Engine(settings, shape, stream=True) as engine, ProgressBar(total, "track", progress) as bar:
                for result in engine.process_stream(src):
                    f.write(json.dumps(result.to_json()) + "\n")
                    frames += 1
                    hands += len(result.hands)
                    with_hands += bool(result.hands)
                    errors.extend(h.fit.reprojection_error_px for h in result.hands)
                    ious.extend(h.refined.iou_after for h in result.hands if h.refined is not None)
                    for k, v in result.time_ms.items():
                        times.setdefault(k, []).append(v)
                    bar.update(1, f"{len(result.hands)} hand(s)")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    elapsed = time.perf_counter() - start
    if frames == 0:
        raise InputError(f"{source} gave no frames")
    summary = TrackSummary(
        frames=frames,
        frames_with_hands=with_hands,
        hands=hands,
        mean_time_ms={k: statistics.fmean(v) for k, v in times.items()},
        fps=frames / max(elapsed, 1e-9),
        mean_reprojection_error_px=statistics.fmean(errors) if errors else None,
        out=str(out),
        mean_silhouette_iou=statistics.fmean(ious) if ious else None,
    )
    if with_hands == 0:
        raise InputError(f"no hand was found in any of the {frames} frames of {source} (results written to {out})")
    return summary
