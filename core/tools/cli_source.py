"""The source options of the commands that track (``track``, ``calibrate``, ``export``): SRC, its
camera (``--intrinsics``/``--fov``/``--weak-perspective``), a depth stream registered to it
(``--depth``/``--depth-intrinsics``: an RGB-D source, :mod:`core.capture.rgbd`) and a calibrated
second camera (``--stereo``/``--stereo-calib``: :mod:`core.capture.stereo`), checked once and
opened as one source spec (:func:`core.capture.open.open_spec`, as the GUI opens its sources),
with the engine that goes with it (:class:`core.stereo.StereoEngine` for a pair)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from core.capture.frame import Frame, FrameSet
from core.errors import InputError

__all__ = ["SourceOptions", "reference_frame"]


@dataclass(frozen=True)
class SourceOptions:
    """SRC and the options that say how to read it (paths as given on the command line).

    Attributes:
        source: the SRC. intrinsics, fov_deg, weak_perspective: its camera (one at most).
        depth, depth_camera: a depth stream of SRC and its depth camera file (both or neither).
        stereo, stereo_calib: the second camera's SRC and the pair's calibration (both or neither).
    """

    source: str
    intrinsics: str | None = None
    fov_deg: float | None = None
    weak_perspective: bool = False
    depth: str | None = None
    depth_camera: str | None = None
    stereo: str | None = None
    stereo_calib: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, source: str | None = None) -> SourceOptions:
        """The options of a parsed command line (an option the command lacks is None)."""

        def get(name: str) -> Any:
            return getattr(args, name, None)

        return cls(source if source is not None else args.source, get("intrinsics"), get("fov"),
                   bool(get("weak_perspective")), get("depth"), get("depth_intrinsics"), get("stereo"),
                   get("stereo_calib"))

    @property
    def inputs(self) -> list[str | None]:
        """Every file these options read (for :func:`core.outputs.check_output`)."""
        from core.capture.open import source_inputs

        return [*source_inputs(self.source), self.intrinsics, self.depth, self.depth_camera,
                *source_inputs(self.stereo), self.stereo_calib]

    def check(self) -> None:
        """Raise :class:`InputError` for options that do not go together (before any file is read;
        a depth stream without its camera file is :func:`core.capture.open.open_source`'s to refuse)."""
        from core.camera import check_camera_args

        if (self.stereo is None) != (self.stereo_calib is None):
            raise InputError("a stereo pair needs both the second camera (--stereo) and the pair's calibration "
                             "(--stereo-calib)")
        if self.stereo is not None and (self.intrinsics is not None or self.fov_deg is not None
                                        or self.weak_perspective or self.depth):
            raise InputError("--stereo takes both cameras from --stereo-calib: give no --intrinsics, --fov, "
                             "--weak-perspective or --depth with it")
        check_camera_args(self.intrinsics, self.fov_deg, self.weak_perspective)

    def open(self):
        """The opened source: a FrameSource (with depth when given) or, for a pair, a
        :class:`~core.capture.stereo.StereoSource` of FrameSets.

        Raises:
            InputError: what :meth:`check` raises, or an input that cannot be read.
        """
        from core.capture.open import SourceSpec, open_spec

        self.check()
        sources = (self.source,) if self.stereo is None else (self.source, self.stereo)
        spec = SourceSpec(sources, self.depth, self.depth_camera, self.stereo_calib)
        return open_spec(spec, self.intrinsics, self.fov_deg, self.weak_perspective)

    def engine(self, settings, src, shape: Any = None, stream: bool = False):
        """The engine for the opened ``src``: a StereoEngine for a pair, else an Engine, with
        settings adapted to the source (:func:`engine_settings_for`)."""
        from core.engine import Engine

        pair = getattr(src, "calibration", None) is not None
        settings = engine_settings_for(settings, src)
        if pair:
            from core.stereo import StereoEngine

            return StereoEngine(settings, src.calibration, shape, stream=stream)
        return Engine(settings, shape, stream=stream)


def engine_settings_for(settings: Any, src: Any) -> Any:
    """``settings`` (an EngineSettings) adapted to the opened ``src``.

    * Photos (an image folder or glob, also under a depth stream) are detected one by one
      (``detector_mode="static"``).
    * A recording (anything but a live camera) estimates an unknown focal length in line, in
      the frame that completes the estimate's set of frames, not in a background thread: the
      same file then gives the same output whatever the machine's load. In the background, the
      frame from which the estimate applies depended on how busy the machine was (the real
      nvgesture clip's jitter ratio read 0.775 or 0.798 on identical code).
    """
    from core.capture import CameraSource, ImageSequenceSource

    pair = getattr(src, "calibration", None) is not None
    sources = list(src.pair.sources) if pair else [src]
    sources = [getattr(s, "colour", s) for s in sources]  # an RGB-D source: its colour frames
    if isinstance(sources[0], ImageSequenceSource):
        settings = dataclasses.replace(settings, detector_mode="static")
    if settings.focal is not None and settings.focal.background and \
            not any(isinstance(s, CameraSource) for s in sources):
        settings = dataclasses.replace(settings, focal=dataclasses.replace(settings.focal, background=False))
    return settings


def reference_frame(frame: Frame | FrameSet) -> Frame:
    """The frame the results are in: a pair's reference (first) camera, else the frame itself."""
    return frame[0] if isinstance(frame, FrameSet) else frame
