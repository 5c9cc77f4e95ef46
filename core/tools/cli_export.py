"""``export``: a personalized, textured (optionally rigged) hand mesh from the command line.

    python main.py export (--profile P | SRC | --profile P SRC) --out FILE.{obj,glb,ply}
                          [--pose rest|frame:N] [--rigged [--animate]] [--texture-size PX] [--refine N]
                          [--depth D --depth-intrinsics DC.json | --stereo SRC2 --stereo-calib S.json]

- ``--profile P`` alone: the profile's shape and texture (``"texture"`` next to the JSON), in
  the flat rest pose. Nothing is tracked.
- ``SRC``: the source is tracked (:class:`core.engine.Engine`) and the texture captured from
  every tracked frame (:class:`core.texture.session.SessionCapture`); the shape is the median
  of the per-frame fits, the side the one tracked most. ``--pose frame:N`` poses the hand as
  in source frame N; ``--rigged --animate`` adds the whole recorded motion. With a depth stream
  (an RGB-D source) the fits are placed at the measured depth; with a calibrated second camera
  each hand is fused from both views (as ``track`` does); the texture comes from SRC's frames.
- both: the profile's shape (tracking is identity-aware), its side and its texture as the
  base the session improves.

The profile JSON is written beside the mesh (``NAME.profile.json``, its texture ``NAME.png``),
so an export made from a video can be loaded back as a profile. Errors are
:class:`~core.errors.HandTwinError` (one line, exit status 2 in ``main.py``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ExportError, InputError
from core.tools.cli_source import SourceOptions, reference_frame

__all__ = ["ExportSummary", "capture_source", "parse_pose", "read_texture", "run_export"]

log = logging.getLogger(__name__)

#: Frames taken from a live camera when ``--max-frames`` is not given (it never ends).
CAMERA_FRAMES = 150


def parse_pose(spec: str) -> int | None:
    """``"rest"`` -> None, ``"frame:N"`` -> N. Raises :class:`InputError` otherwise."""
    text = (spec or "rest").strip().lower()
    if text == "rest":
        return None
    match = re.fullmatch(r"frame:(\d+)", text)
    if match is None:
        raise InputError(f"--pose must be 'rest' or 'frame:N' (a frame number), got {spec!r}")
    return int(match.group(1))


def read_texture(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an image file (a profile's texture). Raises InputError."""
    from PIL import Image, UnidentifiedImageError

    from core.inputs import check_image_file

    path = Path(path)
    check_image_file(path, "the profile's texture")  # its size from the header, before decoding
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise InputError(f"the profile's texture {path} is missing") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read the profile's texture {path}: {exc}") from exc


@dataclass(frozen=True)
class ExportSummary:
    """What an export did: files, frames, texture coverage, time."""

    files: tuple[Path, ...]
    side: str
    frames: int
    tracked_frames: int
    coverage: float | None
    texture_size: int | None
    texture_ms: float | None
    seconds: float

    def format(self) -> str:
        parts = [f"wrote {', '.join(str(f) for f in self.files)}", f"{self.side} hand"]
        if self.frames:
            parts.append(f"{self.tracked_frames}/{self.frames} frames tracked")
        if self.coverage is not None:
            parts.append(f"texture seen on {100 * self.coverage:.0f}% of the hand")
        if self.texture_size:
            parts.append(f"texture {self.texture_size}x{self.texture_size}")
        if self.texture_ms is not None:
            parts.append(f"{self.texture_ms:.1f} ms per texture update")
        parts.append(f"{self.seconds:.1f} s")
        return "; ".join(parts)


def capture_source(
    options: SourceOptions,
    *,
    model: str | None = None,
    shape: Any = None,
    base: np.ndarray | None = None,
    texture_size: int = 1024,
    max_frames: int | None = None,
    sides: tuple[str, ...] = ("right", "left"),
    progress: bool | None = None,
    refine: int = 0,
) -> tuple[Any, int]:
    """Track the source of ``options`` (with its depth stream or second camera when given) and
    capture the texture of every tracked hand from the (reference) camera's frames.

    ``shape``: a profile's fixed shape, or its whole :class:`~core.model.personal.PersonalIdentity`
    (tracking and texture then use the personal model), or None (free shape). ``refine``:
    refinement iterations per hand (``--refine``; 0: off): the session then records and
    textures the refined hands.

    Returns:
        (the :class:`~core.texture.session.SessionCapture`, number of frames read).

    Raises:
        InputError: conflicting options, an unreadable source, intrinsics, depth stream or
            calibration, or a source without frames.
    """
    from core.capture import CameraSource
    from core.engine import EngineSettings
    from core.model import load_model_data
    from core.progress import ProgressBar
    from core.texture.session import SessionCapture

    check_capture_arguments(options, max_frames, refine)
    from core.model.personal import PersonalIdentity, identity_model

    identity = shape if isinstance(shape, PersonalIdentity) else None  # a profile's own hand
    models = {side: identity_model(load_model_data(model, side), identity) for side in sides}  # type: ignore[arg-type]
    # the masks keep the background out of the texture (and are the refinement's target)
    settings = EngineSettings(max_hands=2, model=model, segment=True, refine_iterations=refine)
    frames_read = 0
    with options.open() as src:
        limit = max_frames
        first = src.pair.sources[0] if getattr(src, "calibration", None) is not None else src
        if limit is None and isinstance(first, CameraSource):
            limit = CAMERA_FRAMES
            log.info("capturing %d frames from the camera (use --max-frames to change)", limit)
        total = getattr(src, "frame_count", None)
        if limit is not None:
            total = limit if total is None else min(total, limit)
        session = SessionCapture(models, texture_size, base, nominal_fov_deg=settings.fit.nominal_fov_deg)
        pending: dict[int, Any] = {}

        def frames():
            for count, frame in enumerate(src):
                if limit is not None and count >= limit:
                    return
                ref = reference_frame(frame)  # a pair's results are in its reference camera
                pending[ref.index] = ref
                yield frame

        with options.engine(settings, src, shape) as engine, ProgressBar(total, "export", progress) as bar:
            for result in engine.process_stream(frames()):
                frame = pending.pop(result.frame)
                frames_read += 1
                session.add_hands(frame.image, result.frame, result.timestamp_s, result.hands)
                side = session.main_side()
                capture = None if side is None else session.capture(side)
                bar.update(1, "" if capture is None else f"texture {100 * capture.coverage:.0f}%")
    if frames_read == 0:
        raise InputError(f"{options.source} gave no frames")
    return session, frames_read


def check_capture_arguments(options: SourceOptions, max_frames: int | None, refine: int = 0) -> None:
    """Raise :class:`InputError` for source options that do not go together (camera, depth,
    stereo: :meth:`SourceOptions.check`) or a --fov, --max-frames or --refine out of range."""
    from core.inputs import MAX_REFINE, check_int

    options.check()
    if max_frames is not None:
        check_int(max_frames, "--max-frames", 1, 10_000_000)
    check_int(refine, "--refine", 0, MAX_REFINE)


def _session_profile(name: str, side: str, data: Any, shape: np.ndarray, frames: list[Any], source: str) -> dict:
    """A profile document (docs/ARCHITECTURE.md) for a hand captured without a profile."""
    import torch

    from core.keypoints import BONES, Keypoint
    from core.model import HandModel
    from core.profile_io import PROFILE_FORMAT, PROFILE_VERSION

    with torch.no_grad():
        kp = HandModel(data).rest(torch.as_tensor(shape, dtype=torch.float32)[None]).keypoints[0].double().numpy()
    bones = [float(np.linalg.norm(kp[c] - kp[p])) * 1000.0 for p, c in BONES]
    return {
        "format": PROFILE_FORMAT,
        "version": PROFILE_VERSION,
        "name": name,
        "handedness": side,
        "model": {"name": data.name, "sha256": data.sha256},
        "shape": [round(float(v), 6) for v in shape],
        "hand_length_mm": round(float(np.linalg.norm(kp[Keypoint.MIDDLE_TIP] - kp[Keypoint.WRIST])) * 1000.0, 2),
        "hand_width_mm": round(float(np.linalg.norm(kp[Keypoint.RING_MCP] - kp[Keypoint.INDEX_MCP])) * 1000.0, 2),
        "bone_lengths_mm": [round(b, 2) for b in bones],
        "scale_source": "prior",
        "frames": [{"source": source, "frame": int(t.frame), "confidence": 1.0, "weight": round(1.0 / len(frames), 5)}
                   for t in frames],
        "texture": None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _profile_side(profile: Any) -> str | None:
    return profile.handedness if profile is not None and profile.handedness in ("right", "left") else None


def run_export(args: argparse.Namespace) -> int:
    """The ``export`` command (README.md). Prints one summary line; returns 0.

    Raises:
        InputError: neither SRC nor --profile, a bad --pose, an unreadable profile, source or
            texture, a frame without a tracked hand. ExportError: the file cannot be written.
    """
    from core.export.api import companion_files, export_hand, session_animation
    from core.export.writer import check_export_target
    from core.model import load_model_data
    from core.outputs import check_companions, check_output

    t0 = time.perf_counter()
    source = getattr(args, "source", None)
    profile_path = getattr(args, "profile", None)
    if source is None and profile_path is None:
        raise InputError("export needs a source (SRC) or --profile P (or both)")
    frame_n = parse_pose(getattr(args, "pose", "rest"))
    rigged = bool(getattr(args, "rigged", False))
    refine = int(getattr(args, "refine", 0) or 0)
    animate = bool(getattr(args, "animate", False))
    texture_size = getattr(args, "texture_size", None)
    texture_size = 1024 if texture_size is None else int(texture_size)
    model = getattr(args, "model", None)
    out = Path(args.out)
    if texture_size < 8 or texture_size > 8192:
        raise InputError(f"--texture-size must be between 8 and 8192, got {texture_size}")
    if animate and not (rigged and source is not None):
        raise InputError("--animate needs --rigged and a source (SRC) to animate")
    if refine and source is None:
        raise InputError("--refine needs a source (SRC) whose hands are tracked and refined")
    if frame_n is not None and source is None:
        raise InputError("--pose frame:N needs a source (SRC) whose frame N is tracked")
    if out.suffix.lower() not in (".obj", ".glb", ".ply"):
        raise ExportError(f"Cannot export to {out.name}: use a .obj, .glb or .ply file name.")
    check_export_target(out, rigged)
    options = None if source is None else SourceOptions.from_args(args)
    if options is not None:
        check_capture_arguments(options, getattr(args, "max_frames", None), refine)
    # every file this export writes, before any work: never an input, never a stranger's file
    inputs = [*([] if options is None else options.inputs), profile_path, model]
    out = check_output(out, inputs)

    profile = None
    base = None
    if profile_path is not None:
        from core.profile_io import check_profile_model, load_profile

        profile = load_profile(profile_path)
        check_profile_model(profile, model)
        if profile.texture is not None:
            inputs.append(profile.texture)
            check_output(out, inputs)
            base = read_texture(profile.texture)
    force = bool(getattr(args, "force", False))
    check_companions(out, companion_files(out, texture=source is not None or base is not None, profile_json=True),
                     inputs, force)

    if source is None:
        from core.model.personal import identity_model

        side = _profile_side(profile) or "right"
        # the profile's own hand: its skeleton (the rig's joints) and surface
        data = identity_model(load_model_data(model, side), profile.identity)  # type: ignore[arg-type]
        files = export_hand(out, shape=profile.shape, texture=base, side=side, rigged=rigged,
                            texture_size=texture_size, profile_json=profile.raw, model_data=data, force=force)
        summary = ExportSummary(tuple(files), side, 0, 0, None, texture_size if base is not None else None,
                                None, time.perf_counter() - t0)
        print(summary.format())
        return 0

    wanted = _profile_side(profile)
    session, frames_read = capture_source(
        options, model=model, shape=None if profile is None else profile.identity, base=base,
        texture_size=texture_size, max_frames=getattr(args, "max_frames", None), refine=refine,
    )
    side = wanted or session.main_side()
    if side is None or not session.frames_of(side):
        which = "" if wanted is None else f"{wanted} "
        raise InputError(f"no {which}hand was tracked in any of the {frames_read} frames of {source}")
    data = session.models[side]
    tracked = session.frames_of(side)
    shape = profile.shape if profile is not None else session.median_shape(side)
    pose = offsets = None
    if frame_n is not None:
        hand = session.at_frame(side, frame_n)
        if hand is None:
            seen = [t.frame for t in tracked]
            raise InputError(
                f"frame {frame_n} has no tracked {side} hand (tracked frames: {_ranges(seen)})"
            )
        pose = hand.pose
        offsets = None if rigged else hand.vertex_offsets  # a refined hand's surface in that frame
    animation = None
    if animate:
        from core.export.api import rest_geometry

        _, joints = rest_geometry(data, shape)
        followed = session.main_track(side)  # one hand: never a jump to another hand of the side
        if len(followed) < 2:
            raise InputError("--animate needs at least two tracked frames")
        animation = session_animation([t.timestamp_s for t in followed], np.stack([t.pose for t in followed]),
                                      np.stack([t.transl for t in followed]), joints)
    capture = session.capture(side)
    if capture is None:
        log.warning("the hand model %s has no UV coordinates: exporting without a texture", data.name)
    texture = None if capture is None else capture.texture(filled=True)
    doc = profile.raw if profile is not None else _session_profile(out.stem or "hand", side, data, shape, tracked,
                                                                   source)
    files = export_hand(out, shape=shape, texture=texture, pose=pose, side=side, rigged=rigged,
                        texture_size=texture_size, profile_json=doc, animation=animation, model_data=data,
                        force=force, vertex_offsets=offsets)
    summary = ExportSummary(
        tuple(files), side, frames_read, len(tracked), None if capture is None else capture.coverage,
        texture_size if capture is not None else None,
        float(np.median(session.texture_ms)) if session.texture_ms else None, time.perf_counter() - t0,
    )
    print(summary.format())
    return 0


def _ranges(frames: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8' (first 8 runs)."""
    if not frames:
        return "none"
    runs: list[tuple[int, int]] = []
    for f in sorted(frames):
        if runs and f == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], f)
        else:
            runs.append((f, f))
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:8])
    return text + (", ..." if len(runs) > 8 else "")
