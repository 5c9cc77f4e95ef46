"""``track``: per-frame results of a source, one JSON line per frame (docs/ARCHITECTURE.md contract)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from core.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackSummary:
    """What a ``track`` run did: frames, frames with a hand, mean times and the final hands' mean
    reprojection error (when refining also the fits' mean error, the mean silhouette IoU after
    refinement and how many refined hands the keypoint guard replaced by their fit). ``ended_early``:
    why the source stopped before its end (a damaged or truncated file), or None."""

    frames: int
    frames_with_hands: int
    hands: int
    mean_time_ms: dict[str, float]
    fps: float
    mean_reprojection_error_px: float | None
    out: str
    mean_silhouette_iou: float | None = None
    mean_fit_reprojection_error_px: float | None = None
    refinements_fell_back: int = 0
    camera: str = ""
    ended_early: str | None = None

    def format(self) -> str:
        pct = 100.0 * self.frames_with_hands / max(self.frames, 1)
        times = ", ".join(f"{k} {v:.1f} ms" for k, v in self.mean_time_ms.items())
        err = "n/a" if self.mean_reprojection_error_px is None else f"{self.mean_reprojection_error_px:.2f} px"
        if self.mean_silhouette_iou is not None and self.mean_fit_reprojection_error_px is not None:
            err += (f" (fit {self.mean_fit_reprojection_error_px:.2f} px; refinement undone in "
                    f"{_count(self.refinements_fell_back, 'hand')} whose keypoints it made worse)")
        iou = "" if self.mean_silhouette_iou is None else f"mean silhouette IoU {self.mean_silhouette_iou:.3f}; "
        early = "" if self.ended_early is None else f"\nwarning: {self.ended_early}; the frames after it are missing"
        return (
            f"tracked {_count(self.frames, 'frame')} ({self.frames_with_hands} with a hand, {pct:.0f}%), "
            f"{_count(self.hands, 'hand')}; {self.fps:.1f} fps; per frame: {times}; "
            f"mean reprojection error {err}; {iou}{self.camera}wrote {self.out}{early}"
        )


def _count(n: int, noun: str) -> str:
    """'1 frame', '3 frames'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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
    weak_perspective: bool = False,
    depth: str | None = None,
    depth_camera: str | None = None,
    stereo: str | None = None,
    stereo_calib: str | None = None,
) -> TrackSummary:
    """Track every frame of ``source`` and write ``out`` (JSONL) atomically.

    Without ``intrinsics`` or ``fov_deg`` the camera is assumed (a photo's EXIF focal length,
    else :data:`~core.camera.DEFAULT_FOV_DEG`; every line reports it), unless
    ``weak_perspective`` asks for HandTailor's weak-perspective fit. ``depth`` and
    ``depth_camera`` make SRC an RGB-D source (:mod:`core.capture.rgbd`): the fits are placed
    at the measured depth and the refinement gets its depth term. ``stereo`` and
    ``stereo_calib`` add a second calibrated camera (:mod:`core.stereo`): each hand seen by
    both is fused into SRC's camera and refined against both views' silhouettes.

    Raises:
        InputError: unreadable source, intrinsics or profile, an argument out of range, no
            frame, no hand in any frame (then ``out`` is left as it was).
        ExportError: ``out`` is a folder, an input, in a missing or read-only folder, or the
            disk filled up (``out`` is left as it was).
    """
    from core.inputs import MAX_HANDS, MAX_REFINE, check_int
    from core.outputs import StreamingOutput, check_output
    from core.tools.cli_source import SourceOptions

    options = SourceOptions(source, intrinsics, fov_deg, weak_perspective, depth, depth_camera, stereo, stereo_calib)
    # the output first, then every argument and input file: all before any frame is read
    out = check_output(out, [*options.inputs, profile, model])
    options.check()
    check_int(refine, "--refine", 0, MAX_REFINE)
    check_int(max_hands, "--max-hands", 1, MAX_HANDS)
    from core.camera import DEFAULT_FOV_DEG

    shape = None
    if profile is not None:
        from core.profile_io import check_profile_model, load_profile

        loaded = load_profile(profile)
        check_profile_model(loaded, model)
        shape = loaded.identity  # shape, personal skeleton and surface: the personal model
    from core.progress import ProgressBar

    # running sums, not per-frame lists: a camera can be tracked for hours
    times: dict[str, _Mean] = {}
    error = _Mean()
    fit_error = _Mean()
    iou = _Mean()
    fell_back = 0
    frames = with_hands = hands = 0
    cameras = _Cameras()
    import time

    start = time.perf_counter()
    output = StreamingOutput(out)
    with output.open() as f, options.open() as src:
        if stereo is None and not src.camera_known and not weak_perspective:
            if _image_files(src) is not None:
                log.info("no camera given for %s: assuming each photo's EXIF focal length, else a %.0f degree "
                         "field of view (give --intrinsics or --fov for better depth)", source, DEFAULT_FOV_DEG)
            else:
                log.info("no camera given for %s: assuming a %.0f degree field of view until the stream gives its "
                         "focal length (the background's motion when the camera moves, else the hand's "
                         "perspective; give --intrinsics or --fov for better depth)", source, DEFAULT_FOV_DEG)
        # the engine (torch, MediaPipe) loads once the arguments and inputs are known to be good
        from core.engine import EngineSettings

        settings = EngineSettings(max_hands=max_hands, device=device, model=model, refine_iterations=refine)
        total = getattr(src, "frame_count", None)
        engine_cm = options.engine(settings, src, shape, stream=True)
        files = _image_files(src)
        with engine_cm as engine, ProgressBar(total, "track", progress) as bar:
            for result in engine.process_stream(src):
                line = result.to_json()
                if files is not None:  # which photo this line is (an unreadable one leaves a gap)
                    line["file"] = str(files[result.frame])
                f.write(json.dumps(line) + "\n")
                frames += 1
                hands += len(result.hands)
                with_hands += bool(result.hands)
                for h in result.hands:
                    error.add(h.reprojection_error_px)
                    fit_error.add(h.fit_reprojection_error_px)
                    if h.refined is not None:
                        iou.add(h.refined.iou_after)
                        fell_back += bool(h.refined.fell_back)
                for k, v in result.time_ms.items():
                    times.setdefault(k, _Mean()).add(v)
                cameras.add(result)
                bar.update(1, f"{len(result.hands)} hand(s)")
        ended_early = getattr(src, "ended_early", None)
    elapsed = time.perf_counter() - start
    # a failed run leaves the previous output as it was
    if frames == 0:
        output.discard()
        raise InputError(f"{source} gave no frames")
    if with_hands == 0:
        output.discard()
        raise InputError(f"no hand was found in any of the {frames} frames of {source}; {out} was not written")
    output.commit()
    summary = TrackSummary(
        frames=frames,
        frames_with_hands=with_hands,
        hands=hands,
        mean_time_ms={k: m.mean for k, m in times.items()},
        fps=frames / max(elapsed, 1e-9),
        mean_reprojection_error_px=error.mean,
        out=str(out),
        mean_silhouette_iou=iou.mean,
        mean_fit_reprojection_error_px=fit_error.mean,
        refinements_fell_back=fell_back,
        camera=cameras.note(),
        ended_early=ended_early,
    )
    return summary


def _image_files(src) -> tuple[Path, ...] | None:
    """The image files of a folder or glob source (frame i is file i), or None for other sources."""
    for s in (src, getattr(src, "colour", None)):  # an RGB-D source's colour frames
        paths = getattr(s, "paths", None)
        if isinstance(paths, tuple) and len(paths) == getattr(s, "frame_count", None):
            return paths
    return None


def camera_origin(source: str, cue: str | None) -> str:
    """Where a frame's camera came from, in words: its ``camera_source``, and for an estimated
    one the cue ("estimated from the hand", "estimated from the background's motion")."""
    if source == "estimated" and cue is not None:
        return {"hand": "estimated from the hand", "scene": "estimated from the background's motion"}.get(
            cue, f"estimated ({cue})")
    return source


class _Cameras:
    """The summary's camera: one focal length and its field of view when every frame had the same,
    else the range over the frames (photos of several sizes, per-frame intrinsics, a stream that
    switched to its estimate), with where they came from."""

    def __init__(self) -> None:
        self.lo = self.hi = None
        self.sources: dict[str, None] = {}  # in order of first appearance
        self.last = None

    def add(self, result) -> None:
        cam = result.camera
        if cam is None:
            return
        self.lo = cam.fx if self.lo is None else min(self.lo, cam.fx)
        self.hi = cam.fx if self.hi is None else max(self.hi, cam.fx)
        self.sources[camera_origin(result.camera_source, getattr(result, "camera_cue", None))] = None
        self.last = cam

    def note(self) -> str:
        if self.last is None:
            return ""
        sources = ", ".join(self.sources)
        if self.hi - self.lo > 0.05:
            return f"camera f {self.lo:.1f}-{self.hi:.1f} px over the frames ({sources}); "
        fov = "" if self.last.fov_x_deg is None else f", {self.last.fov_x_deg:.0f} degrees"
        return f"camera f {self.last.fx:.1f} px{fov} ({sources}); "


class _Mean:
    """A running mean (count and sum): constant memory however long the stream."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += float(value)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None
