"""``calibrate``: a hand profile from automatically chosen frames of a source.

    python main.py calibrate SRC --out P.json [--frames K] [--intrinsics F]
        [--hand-length-mm L | --aruco-sheet SHEET.json | --stereo SRC2 --stereo-calib S.json]
        [--depth D --depth-intrinsics DC.json]
        [--name NAME] [--side auto|right|left] [--no-surface] [--model PATH]

Every frame is tracked; each hand of the calibrated side is refitted with a free shape and
offered to a :class:`~core.personalize.session.CalibrationSession`, which chooses K frames
and calibrates one shape (attention over confidences, Eq. 6-7), then the personal skeleton
and the surface offsets (fitted to the chosen frames' hand segmentations; ``--no-surface``
skips them). The size comes from the prior unless a measurement pins it (``scale_source`` in
the profile says which); an RGB-D source (``--depth``) measures it when nothing else does
(scale ``depth``: the fits scaled onto the depth map, :mod:`core.metric_depth`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from core.errors import InputError

log = logging.getLogger(__name__)

#: Largest mean finger flexion (rad) for a hand to count as lying flat on the sheet.
FLAT_FLEXION = 0.35


def _scale_arguments(args: argparse.Namespace) -> str:
    given = [n for n in ("hand_length_mm", "aruco_sheet", "stereo") if getattr(args, n, None) is not None]
    if len(given) > 1:
        raise InputError("give one scale: --hand-length-mm, --aruco-sheet or --stereo")
    if getattr(args, "stereo", None) is not None and getattr(args, "stereo_calib", None) is None:
        raise InputError("--stereo needs --stereo-calib (K1, K2, R, T of the camera pair)")
    if not given:
        return "prior"
    return {"hand_length_mm": "hand_length", "aruco_sheet": "aruco", "stereo": "stereo"}.get(given[0], "")


def run_calibrate(args: argparse.Namespace) -> int:
    """The ``calibrate`` command; returns the exit status."""
    from core.outputs import check_output
    from core.tools.cli_source import SourceOptions, reference_frame

    source_kind = _scale_arguments(args)
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise InputError(f"--out must be a .json file (got {out})")
    k = int(args.frames)
    if not 1 <= k <= 200:
        raise InputError(f"--frames must be between 1 and 200, got {k}")
    options = SourceOptions.from_args(args)
    # the output first (before any work): its folder exists and is writable, it is no input
    check_output(out, [*options.inputs, getattr(args, "aruco_sheet", None), args.model])
    options.check()
    from core.engine import EngineSettings
    from core.personalize.scale import (
        FLAT_BONES,
        ScaleOption,
        keypoints_on_plane,
        load_sheet_spec,
        sheet_pose,
        triangulate_keypoints,
    )
    from core.personalize.session import CalibrationSession
    from core.profile_io import save_profile
    from core.progress import ProgressBar

    scale = ScaleOption.from_hand_length(args.hand_length_mm) if source_kind == "hand_length" else None
    sheet = load_sheet_spec(args.aruco_sheet) if source_kind == "aruco" else None
    side_arg = getattr(args, "side", "auto") or "auto"
    sides = ("right", "left") if side_arg == "auto" else (side_arg,)
    surface = not getattr(args, "no_surface", False)
    sessions = {s: CalibrationSession(side=s, k=k, model=args.model, surface=surface) for s in sides}
    measured: dict[str, list[np.ndarray]] = {s: [] for s in sides}
    settings = EngineSettings(max_hands=2, device="cpu", model=args.model)
    frames = 0
    with options.open() as src:
        stereo = getattr(src, "calibration", None)  # a calibrated pair: each hand fused (core.stereo)
        total = getattr(src, "frame_count", None)
        engine_cm = options.engine(settings, src)
        with engine_cm as engine, ProgressBar(total, "calibrate", None) as bar:
            pending: dict[int, object] = {}

            def remember(frames_in):
                for f in frames_in:
                    ref = reference_frame(f)
                    pending[ref.index] = ref
                    yield f

            for result in engine.process_stream(remember(src)):
                frame = pending.pop(result.frame, None)
                frames += 1
                bar.update(1, f"{sum(len(s.candidates) for s in sessions.values())} candidates")
                if frame is None:
                    continue
                for s, session in sessions.items():
                    cand = session.offer(frame, result)
                    if cand is None:
                        continue
                    if sheet is not None and frame.intrinsics is not None and cand.features[10] < FLAT_FLEXION:
                        pose = sheet_pose(frame.image, frame.intrinsics.K, sheet)
                        if pose is not None:
                            measured[s].append(keypoints_on_plane(cand.keypoints_2d, frame.intrinsics.K, *pose))
                    if frame.depth is not None and source_kind == "prior":  # RGB-D: the depth-scaled fit
                        for hand, info in zip(result.hands, engine.depth_alignments):
                            if hand.detection.handedness == s and info.factor != 1.0:
                                measured[s].append(np.asarray(hand.fit.keypoints_3d, dtype=np.float64))
                                break
                    if stereo is not None:  # the hand's keypoints in both views, triangulated
                        for hand, other in zip(result.hands, engine.partners):
                            if hand.detection.handedness == s and other is not None:
                                measured[s].append(triangulate_keypoints(cand.keypoints_2d, other.keypoints_2d,
                                                                         stereo))
                                break
    if frames == 0:
        raise InputError(f"{args.source} gave no frames")
    side = max(sessions, key=lambda s: len(sessions[s].candidates))
    session = sessions[side]
    if not session.candidates:
        which = "" if side_arg == "auto" else f"{side_arg} "
        raise InputError(f"no usable {which}hand in the {frames} frames of {args.source}")
    if source_kind == "prior" and measured[side]:
        source_kind = "depth"  # an RGB-D source measured the hand's size
    elif source_kind == "prior" and getattr(args, "depth", None):
        log.warning("the depth stream never covered the %s hand: its size is the prior's", side)
    if source_kind in ("aruco", "stereo", "depth"):
        if not measured[side]:
            what = "the sheet with the hand lying flat on it" if source_kind == "aruco" else "the hand in both cameras"
            raise InputError(f"--{'aruco-sheet' if source_kind == 'aruco' else 'stereo'}: no frame shows {what}")
        scale = ScaleOption(source_kind, keypoints_3d=np.stack(measured[side]),
                            bones=FLAT_BONES if source_kind == "aruco" else tuple(range(20)))
    result = session.calibrate(scale)
    name = (getattr(args, "name", None) or "").strip() or out.stem  # a blank --name: the file name
    profile = session.to_profile(result, name)
    save_profile(out, profile)
    print(
        f"calibrated the {side} hand from {len(result.frames)} of {len(session.candidates)} candidate frames "
        f"({frames} frames read) in {result.seconds * 1000:.0f} ms: hand length {result.hand_length_mm:.1f} mm, "
        f"width {result.hand_width_mm:.1f} mm (scale: {result.scale_source}); wrote {out}"
    )
    if len(result.frames) < k:
        print(f"warning: only {len(result.frames)} of the {k} frames asked for (--frames) showed a usable {side} "
              f"hand: so few views measure the bones poorly; film the hand longer, turning it (palm, back, side, "
              f"fingers spread and bent)")
    if result.surface is not None:
        used = result.surface.used
        print(f"surface from {int(used.sum())} frames' silhouettes: offsets {result.surface.mean_mm:.2f} mm mean, "
              f"{result.surface.max_mm:.2f} mm max; "
              f"silhouette IoU {np.nanmean(result.surface.iou_before[used]):.3f} -> "
              f"{np.nanmean(result.surface.iou_after[used]):.3f}")
    if result.focal_px is not None:
        w, h = result.focal_image_size
        print(f"estimated focal length: {result.focal_px:.0f} px at {w}x{h}")
    for i, reason in result.rejected:
        c = session.candidates[i]
        print(f"rejected frame {c.frame_index} of {c.source}: {reason}")
    print(result.scale_note)
    return 0
