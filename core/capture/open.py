"""One factory from a SRC string to a frame source (the ``SRC`` of the command line).

SRC forms, tried in this order:

============================  =====================================================
``"0"``, ``"1"``, ...         camera index (``cv2.VideoCapture(int)``)
``"demo"``                    the bundled demo clip ``resources/demo/demo.mp4``
``/dev/video0``, ``rtsp://``  camera device path or stream URL
a recorded session folder     :class:`~core.capture.session.SessionSource`
another folder                its images, sorted by file name
an image file                 a one-frame image sequence
any other existing file       a video file
a pattern with ``* ? [``      a glob of image files, sorted by path
============================  =====================================================

A **source spec** (what the GUI stores and :func:`open_spec` opens) is one SRC or two joined
by ``|`` (a stereo pair, the reference first), followed by ``|key=value`` options:
``depth=D`` and ``depth-intrinsics=DC.json`` (an RGB-D source, :mod:`core.capture.rgbd`),
``stereo-calib=S.json`` (a calibrated pair, :mod:`core.capture.stereo`). A session recorded
from a calibrated pair (its ``second/`` camera and ``stereo_calib.json``) opens as that pair
again (:func:`resolve_spec`).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.camera import DEFAULT_FOV_DEG
from core.capture.multi import SynchronizedSource
from core.capture.session import SessionSource, is_session_folder, stereo_session
from core.capture.sources import (
    IMAGE_EXTENSIONS,
    CameraSource,
    FrameSource,
    ImageSequenceSource,
    IntrinsicsSpec,
    VideoFileSource,
)
from core.errors import InputError

__all__ = ["DEMO_CLIP_PATH", "SPEC_OPTIONS", "SourceSpec", "open_demo", "open_multi_source", "open_source",
           "open_spec", "parse_spec", "resolve_spec", "source_inputs"]

#: The options a source spec may carry (``|key=value``).
SPEC_OPTIONS = ("depth", "depth-intrinsics", "stereo-calib")

#: The bundled demo clip (repository root / resources / demo / demo.mp4).
DEMO_CLIP_PATH: Path = Path(__file__).resolve().parents[2] / "resources" / "demo" / "demo.mp4"

DEMO_INTRINSICS_PATH: Path = DEMO_CLIP_PATH.with_name("demo_intrinsics.json")

_SRC_HELP = "SRC is a camera index (0), 'demo', a video file, an image folder or a glob"


def source_inputs(source: str | None) -> list[str]:
    """The paths a SRC string reads (for :func:`core.outputs.check_output`); cameras read no file."""
    if source is None:
        return []
    text = str(source).strip()
    if text == "demo":
        return [str(DEMO_CLIP_PATH)]
    if not text or text.isdigit() or text.startswith("/dev/") or "://" in text:
        return []
    return [text]


def open_demo(intrinsics: IntrinsicsSpec = None, fov_deg: float | None = None,
              own_camera: bool = True) -> VideoFileSource:
    """The bundled demo clip as a video source named ``"demo"``, in its own (exactly known)
    camera unless ``intrinsics``, ``fov_deg`` or ``own_camera=False`` (weak perspective asked
    for) say otherwise.

    Raises:
        InputError: the clip is missing from this installation.
    """
    if not DEMO_CLIP_PATH.is_file():
        raise InputError(
            f"the bundled demo clip is missing ({DEMO_CLIP_PATH}); reinstall HandTwin or "
            f"give a camera index or a video file"
        )
    if own_camera and intrinsics is None and fov_deg is None and DEMO_INTRINSICS_PATH.is_file():
        intrinsics = DEMO_INTRINSICS_PATH  # the clip is synthetic: its camera is known exactly
    return VideoFileSource(DEMO_CLIP_PATH, intrinsics, fov_deg, name="demo")


def _open(
    spec: str, intrinsics: IntrinsicsSpec, fov_deg: float | None, epoch_s: float | None
) -> FrameSource:
    text = str(spec).strip()
    if not text:
        raise InputError(f"empty source; {_SRC_HELP}")
    if text.isdigit():
        return CameraSource(int(text), intrinsics, fov_deg, epoch_s=epoch_s, name=text)
    if text == "demo":
        return open_demo(intrinsics, fov_deg)
    if text.startswith("/dev/") or "://" in text:
        return CameraSource(text, intrinsics, fov_deg, epoch_s=epoch_s, name=text)
    path = Path(text).expanduser()
    if path.is_dir():
        if is_session_folder(path):
            return SessionSource(path, intrinsics, fov_deg, name=text)
        return ImageSequenceSource.from_folder(path, intrinsics, fov_deg, name=text)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageSequenceSource([path], intrinsics, fov_deg, name=text)
        return VideoFileSource(path, intrinsics, fov_deg, name=text)
    if glob.has_magic(text):
        return ImageSequenceSource.from_glob(os.path.expanduser(text), intrinsics, fov_deg)
    if "|" in text:  # a GUI source spec given to track / calibrate / export
        raise InputError(f"no such file or folder: {text} (a 'SRC|...' source spec is for gui --source; track, "
                         f"calibrate and export take --depth/--depth-intrinsics or --stereo/--stereo-calib)")
    raise InputError(f"no such file or folder: {text} ({_SRC_HELP})")


def open_source(
    spec: str | os.PathLike[str],
    intrinsics: IntrinsicsSpec = None,
    fov_deg: float | None = None,
    weak_perspective: bool = False,
    depth: str | os.PathLike[str] | None = None,
    depth_camera: str | os.PathLike[str] | None = None,
) -> FrameSource:
    """Open a frame source from a SRC string (see the module docstring for the forms).

    Args:
        spec: the SRC string or a path.
        intrinsics: an :class:`~core.camera.Intrinsics`, a (3, 3) or per-frame (N, 3, 3)
            array, or an intrinsics file path (see :func:`core.camera.load_intrinsics`).
        fov_deg: horizontal field of view in degrees, for ideal intrinsics per frame size
            (exclusive with ``intrinsics``). With neither, frames carry ``intrinsics=None``
            (except replayed sessions, which carry what was recorded).
        depth, depth_camera: a depth stream registered to SRC and its depth camera file (both
            or neither): the frames then carry depth (:mod:`core.capture.rgbd`).

    Returns:
        An opened :class:`~core.capture.sources.FrameSource` (use it in a ``with`` block).

    Raises:
        InputError: a camera that does not open, a missing/corrupt/empty input, a glob with no
            matches, or malformed intrinsics.
    """
    if (depth is None) != (depth_camera is None):
        raise InputError("an RGB-D source needs both the depth stream (--depth) and its depth camera file "
                         "(--depth-intrinsics)")
    if weak_perspective and str(spec).strip() == "demo":  # asked for: not the clip's own camera
        source: FrameSource = open_demo(intrinsics, fov_deg, own_camera=False)
    else:
        source = _open(os.fspath(spec), intrinsics, fov_deg, epoch_s=None)
    source.assume_camera(None if weak_perspective else DEFAULT_FOV_DEG)
    if depth is not None:
        from core.capture.rgbd import open_rgbd

        return open_rgbd(source, depth, depth_camera)
    return source


def open_multi_source(
    specs: Sequence[str | os.PathLike[str]],
    tolerance_s: float | None = None,
    intrinsics: Sequence[IntrinsicsSpec] | None = None,
    fov_deg: float | None = None,
) -> SynchronizedSource:
    """Open two or more sources read together as :class:`~core.capture.frame.FrameSet`s.

    Live cameras share one clock epoch so their timestamps compare. The first spec is the
    reference camera.

    Args:
        specs: one SRC string per camera.
        tolerance_s: pairing tolerance (see :class:`SynchronizedSource`).
        intrinsics: one intrinsics spec per camera (or None).
        fov_deg: one field of view for all cameras, when ``intrinsics`` is not given.

    Raises:
        InputError: fewer than two specs, or any source fails to open (those opened already
            are closed).
    """
    if len(specs) < 2:
        raise InputError(f"synchronized capture needs two or more sources, got {len(specs)}")
    if intrinsics is not None and len(intrinsics) != len(specs):
        raise InputError(f"give one intrinsics per source: {len(intrinsics)} for {len(specs)}")
    epoch = time.monotonic()
    opened: list[FrameSource] = []
    try:
        for i, spec in enumerate(specs):
            intr = intrinsics[i] if intrinsics is not None else None
            fov = None if intr is not None else fov_deg
            opened.append(_open(os.fspath(spec), intr, fov, epoch))
    except BaseException:
        for source in opened:
            source.close()
        raise
    return SynchronizedSource(opened, tolerance_s)


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec (see the module docstring).

    Attributes:
        sources: one SRC, or two for a stereo pair (reference first).
        depth, depth_camera: an RGB-D source's depth stream and depth camera file, or None.
        stereo_calib: a calibrated pair's calibration file, or None.
    """

    sources: tuple[str, ...]
    depth: str | None = None
    depth_camera: str | None = None
    stereo_calib: str | None = None

    @property
    def text(self) -> str:
        """The spec as one string (what :func:`parse_spec` reads back)."""
        opts = (("depth", self.depth), ("depth-intrinsics", self.depth_camera), ("stereo-calib", self.stereo_calib))
        return "|".join([*self.sources, *(f"{k}={v}" for k, v in opts if v)])


def resolve_spec(spec: SourceSpec) -> SourceSpec:
    """``spec``, or for one recorded session folder of a calibrated stereo pair (without depth
    or stereo options) that pair: the session, its ``second/`` camera and its
    ``stereo_calib.json`` (:func:`core.capture.session.stereo_session`; the recorded
    calibration holds both cameras' intrinsics)."""
    if len(spec.sources) != 1 or spec.depth or spec.depth_camera or spec.stereo_calib:
        return spec
    pair = stereo_session(spec.sources[0])
    if pair is None:
        return spec
    return SourceSpec((spec.sources[0], pair[0]), stereo_calib=pair[1])


def parse_spec(spec: str) -> SourceSpec:
    """Split a source spec into its SRCs and options (an unknown ``key=`` part is a SRC: file
    names may hold ``=``)."""
    sources, opts = [], {}
    for part in str(spec).split("|"):
        key, sep, value = part.partition("=")
        if sep and key.strip() in SPEC_OPTIONS:
            opts[key.strip()] = value.strip()
        elif part.strip():
            sources.append(part.strip())
    return SourceSpec(tuple(sources), opts.get("depth") or None, opts.get("depth-intrinsics") or None,
                      opts.get("stereo-calib") or None)


def open_spec(spec: str | SourceSpec, intrinsics: IntrinsicsSpec = None, fov_deg: float | None = None,
              weak_perspective: bool = False):
    """Open a source spec: a :class:`~core.capture.sources.FrameSource` (one SRC, with depth
    when given), a :class:`~core.capture.stereo.StereoSource` (two SRCs and a calibration:
    FrameSets with the calibration's intrinsics) or a
    :class:`~core.capture.multi.SynchronizedSource` (two SRCs without one).

    Raises:
        InputError: no SRC, more than two, depth with a pair, or what the openers raise.
    """
    s = resolve_spec(spec if isinstance(spec, SourceSpec) else parse_spec(spec))
    if not s.sources:
        raise InputError(f"empty source; {_SRC_HELP}")
    if len(s.sources) > 2:
        raise InputError(f"a source spec names one SRC or a stereo pair, got {len(s.sources)}")
    if len(s.sources) == 2:
        if s.depth or s.depth_camera:
            raise InputError("depth goes with one colour source, not a stereo pair")
        if s.stereo_calib:
            from core.capture.stereo import open_stereo

            return open_stereo(s.sources[0], s.sources[1], s.stereo_calib)
        intr = [intrinsics] * 2 if intrinsics is not None else None
        return open_multi_source(list(s.sources), intrinsics=intr, fov_deg=None if intr else fov_deg)
    if s.stereo_calib:
        raise InputError("a stereo calibration needs two sources")
    return open_source(s.sources[0], intrinsics, fov_deg, weak_perspective, s.depth, s.depth_camera)
