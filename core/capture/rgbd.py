"""RGB-D sources: a colour source plus a depth stream, depth registered to the colour image.

A depth stream is a video (8 bits per pixel: what video codecs keep) or 16-bit PNG/TIFF images
(a folder or a glob, one per colour frame, in the same order). Its **depth camera file**
(JSON, read with the bounds of :func:`core.inputs.read_json`) says how a depth pixel becomes
a point of the colour camera::

    {
      "fx": 212.0, "fy": 212.0, "cx": 159.5, "cy": 119.5,   # or "K": 3x3; the depth camera
      "width": 320, "height": 240,                          # optional: the depth image size
      "depth_scale_m": 0.001,      # metres per depth unit (16-bit millimetres: 0.001)
      "depth_offset_m": 0.0,       # optional: metres = offset + scale * value (8-bit codings)
      "min_depth_m": 0.1, "max_depth_m": 10.0,               # optional valid range
      "R": [[1,0,0],[0,1,0],[0,0,1]], "T": [0.025, 0, 0]     # optional: depth -> colour
    }

A value of 0 is always "no measurement". With ``R``/``T`` (``x_colour = R x_depth + T``,
metres) every depth pixel is lifted to 3D with the depth intrinsics, moved into the colour
camera and splatted into the colour image with its intrinsics (nearest depth wins); without
them the depth image is already registered to the colour image (an "aligned" stream) and is
only resized to it, and its intrinsics then describe the colour camera too (used when no
``--intrinsics``/``--fov`` is given).

Frames of an :class:`RGBDSource` carry ``Frame.depth``: (H, W) float32 metres on the colour
image's pixels, 0 where unknown.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.camera import Intrinsics
from core.capture.frame import Frame
from core.capture.sources import IMAGE_EXTENSIONS, FrameSource
from core.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "DepthCamera",
    "DepthStream",
    "RGBDSource",
    "depth_to_metres",
    "load_depth_camera",
    "register_depth",
]

#: Accepted depth range of a depth camera file, metres (a hand is centimetres to metres away).
DEPTH_RANGE_M = (1e-3, 100.0)


@dataclass(frozen=True)
class DepthCamera:
    """How a depth stream's values become metres in the colour camera.

    Attributes:
        intrinsics: the depth camera's pinhole intrinsics, pixels (size: the depth image's,
            when the file gives it).
        scale_m: metres per depth unit (non-zero; negative where larger values are nearer,
            as in some 8-bit depth videos).
        offset_m: metres added: ``depth_m = offset_m + scale_m * value``.
        min_m, max_m: measured depths outside this range are dropped (set to 0, unknown).
        R, T: (3, 3), (3,) metres, the depth camera's frame to the colour camera's
            (``x_colour = R @ x_depth + T``), or None when the stream is registered to the
            colour image already.
    """

    intrinsics: Intrinsics
    scale_m: float = 0.001
    offset_m: float = 0.0
    min_m: float = 0.05
    max_m: float = 10.0
    R: np.ndarray | None = None
    T: np.ndarray | None = None

    @property
    def registered(self) -> bool:
        """Whether the depth image is already on the colour image's pixels."""
        return self.R is None


def _number(doc: dict, key: str, path: Path, default: float | None = None) -> float:
    value = doc.get(key, default)
    if value is None:
        raise InputError(f"{path}: missing key {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise InputError(f"{path}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def _matrix(doc: dict, key: str, shape: tuple[int, ...], path: Path) -> np.ndarray:
    try:
        a = np.asarray(doc[key], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{path}: {key!r} must be numbers of shape {shape}") from None
    if a.size != math.prod(shape) or not np.isfinite(a).all():
        raise InputError(f"{path}: {key!r} must be {math.prod(shape)} finite numbers {shape}, got shape {a.shape}")
    return a.reshape(shape)


def load_depth_camera(path: str | os.PathLike[str]) -> DepthCamera:
    """Read a depth camera file (see the module docstring for its keys).

    Raises:
        InputError: missing or unreadable file, invalid or unbounded JSON, missing or
            malformed intrinsics, a zero or non-finite depth scale, a range outside
            :data:`DEPTH_RANGE_M`, ``R`` not a rotation, or only one of ``R`` and ``T``.
            The message names the file.
    """
    from core.camera import _load_intrinsics_json
    from core.inputs import read_json

    p = Path(path)
    doc = read_json(p, "depth camera file")
    if not isinstance(doc, dict):
        raise InputError(f"{p}: expected a JSON object (fx, fy, cx, cy or K, and depth_scale_m)")
    intrinsics = _load_intrinsics_json(p)  # the same keys and checks as an intrinsics file
    scale = _number(doc, "depth_scale_m", p)
    if scale == 0.0 or abs(scale) > 1.0:
        raise InputError(f"{p}: 'depth_scale_m' must be non-zero metres per unit with |scale| <= 1, got {scale}")
    offset = _number(doc, "depth_offset_m", p, 0.0)
    lo, hi = DEPTH_RANGE_M
    if not -hi <= offset <= hi:
        raise InputError(f"{p}: 'depth_offset_m' must be within +-{hi} m, got {offset}")
    min_m = _number(doc, "min_depth_m", p, 0.05)
    max_m = _number(doc, "max_depth_m", p, 10.0)
    if not lo <= min_m < max_m <= hi:
        raise InputError(f"{p}: need {lo} <= min_depth_m < max_depth_m <= {hi} metres, got {min_m}, {max_m}")
    if ("R" in doc) != ("T" in doc):
        raise InputError(f"{p}: give both 'R' and 'T' (depth camera to colour camera), or neither")
    R = T = None
    if "R" in doc:
        R, T = _matrix(doc, "R", (3, 3), p), _matrix(doc, "T", (3,), p)
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
            raise InputError(f"{p}: 'R' is not a rotation matrix")
        if np.abs(T).max() > hi:
            raise InputError(f"{p}: 'T' must be within +-{hi} m")
    return DepthCamera(intrinsics, scale, offset, min_m, max_m, R, T)


def depth_to_metres(raw: np.ndarray, camera: DepthCamera) -> np.ndarray:
    """(H, W) float32 metres of a raw depth image (0 stays 0: unknown; out of range -> 0).

    Args:
        raw: (H, W) integer or float depth values; (H, W, C) images use their first channel.
    """
    values = np.asarray(raw)
    if values.ndim == 3:
        values = values[..., 0]
    values = values.astype(np.float32)
    metres = np.float32(camera.offset_m) + np.float32(camera.scale_m) * values
    ok = (values > 0) & np.isfinite(metres) & (metres >= camera.min_m) & (metres <= camera.max_m)
    return np.where(ok, metres, np.float32(0.0)).astype(np.float32)


def register_depth(depth_m: np.ndarray, camera: DepthCamera, colour: Intrinsics | None,
                   size: tuple[int, int]) -> np.ndarray:
    """A depth map (metres, the depth camera's pixels) on the colour image's pixels.

    Registered streams are resized (nearest pixel, so no depth is blended across an edge);
    others are lifted to 3D with the depth intrinsics, moved with ``R``, ``T`` and splatted
    into the colour image, each over the colour pixels a depth pixel spans (the nearest point
    wins each pixel; pixels no point lands on stay 0).
    The depth reported is the colour camera's z.

    Args:
        depth_m: (h, w) float metres, 0 unknown. colour: the colour camera (needed unless
            registered). size: (width, height) of the colour image.

    Returns:
        (height, width) float32 metres, 0 unknown.
    """
    width, height = size
    d = np.asarray(depth_m, dtype=np.float32)
    if camera.registered:
        if d.shape == (height, width):
            return d
        return cv2.resize(d, (width, height), interpolation=cv2.INTER_NEAREST)
    if colour is None:
        raise InputError("registering a depth stream with R, T needs the colour camera's intrinsics")
    h, w = d.shape
    intr = camera.intrinsics.with_size(w, h)
    v, u = np.nonzero(d > 0)
    z = d[v, u].astype(np.float64)
    pts = np.stack([(u - intr.cx) / intr.fx * z, (v - intr.cy) / intr.fy * z, z], 1)
    pts = pts @ np.asarray(camera.R).T + np.asarray(camera.T)
    front = pts[:, 2] > 1e-6
    pts = pts[front]
    c = colour.with_size(width, height)
    # each depth pixel covers about (colour focal / depth focal) colour pixels per side
    foot = max(1, int(math.ceil(max(c.fx / intr.fx, c.fy / intr.fy) - 1e-6)))
    x0 = c.fx * pts[:, 0] / pts[:, 2] + c.cx - (foot - 1) / 2.0
    y0 = c.fy * pts[:, 1] / pts[:, 2] + c.cy - (foot - 1) / 2.0
    zc = pts[:, 2].astype(np.float32)
    out = np.full(height * width, np.inf, np.float32)
    for dy in range(foot):
        for dx in range(foot):
            x = np.rint(x0 + dx).astype(np.int64)
            y = np.rint(y0 + dy).astype(np.int64)
            inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            np.minimum.at(out, y[inside] * width + x[inside], zc[inside])  # the nearest point wins
    out[~np.isfinite(out)] = 0.0
    return out.reshape(height, width)


class DepthStream:
    """Raw depth images read in order: a video (its first channel) or image files (any bit depth).

    Re-iterable; :meth:`frames` yields (H, W) arrays as stored (uint8 or uint16).

    Raises:
        InputError: the spec names nothing readable, or its first image cannot be decoded.
    """

    def __init__(self, spec: str | os.PathLike[str]) -> None:
        from core.inputs import check_image_file, check_image_size

        text = os.fspath(spec).strip()
        path = Path(text).expanduser()
        self.name = text
        self.video: Path | None = None
        self.paths: tuple[Path, ...] = ()
        if path.is_dir():
            self.paths = tuple(sorted((p for p in path.iterdir()
                                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                                      key=lambda p: p.name))
            if not self.paths:
                raise InputError(f"the depth folder {path} holds no images")
        elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            self.paths = (path,)
        elif path.is_file():
            self.video = path
        elif glob.has_magic(text):
            self.paths = tuple(p for p in sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True))
                               if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not self.paths:
                raise InputError(f"no depth images match {text!r}")
        else:
            raise InputError(f"depth stream not found: {text} (a depth video, a folder of 16-bit PNGs or a glob)")
        if self.video is not None:
            cap = cv2.VideoCapture(str(self.video))
            try:
                ok, first = cap.read() if cap.isOpened() else (False, None)
                count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
            finally:
                cap.release()
            if not ok or first is None:
                raise InputError(f"cannot read {self.video} as a depth video (corrupt or unsupported format)")
            self.size = (int(first.shape[1]), int(first.shape[0]))
            self.count: int | None = count if count > 0 else None
            check_image_size(*self.size, f"the depth video {self.video}")
        else:
            for p in self.paths:
                check_image_file(p, "the depth image")
            first = cv2.imread(str(self.paths[0]), cv2.IMREAD_UNCHANGED)
            if first is None:
                raise InputError(f"cannot read the depth image {self.paths[0]} (corrupt or unsupported format)")
            if first.ndim == 3 or first.dtype not in (np.uint8, np.uint16, np.float32):
                raise InputError(f"{self.paths[0]}: a depth image must be one channel of 8 or 16 bits "
                                 f"(or 32-bit float), got {first.dtype} {first.shape}")
            self.size = (int(first.shape[1]), int(first.shape[0]))
            self.count = len(self.paths)

    def frames(self) -> Iterator[np.ndarray | None]:
        """One raw depth image per frame in order (None for an unreadable image file)."""
        if self.video is not None:
            cap = cv2.VideoCapture(str(self.video))
            try:
                while True:
                    ok, img = cap.read()
                    if not ok or img is None:
                        return
                    yield img[..., 0] if img.ndim == 3 else img
            finally:
                cap.release()
        for p in self.paths:
            img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if img is None or img.ndim != 2 or (img.shape[1], img.shape[0]) != self.size:
                log.warning("%s: skipping unreadable or mis-sized depth image %s", self.name, p)
                yield None
            else:
                yield img


class RGBDSource(FrameSource):
    """A colour source whose frames carry the registered depth of a depth stream.

    Frame ``i`` gets depth image ``i``; the pass ends with the shorter stream (a warning says
    so when their known lengths differ).

    Args:
        colour: the colour frames (opened; this source owns and closes it).
        depth: the raw depth images. camera: their :class:`DepthCamera`.

    Raises:
        InputError: a registered depth stream whose aspect ratio differs from the colour
            frames', or a depth image size the depth camera file contradicts.
    """

    def __init__(self, colour: FrameSource, depth: DepthStream, camera: DepthCamera,
                 name: str | None = None) -> None:
        super().__init__(name if name is not None else colour.name)
        self.colour, self.depth, self.depth_camera = colour, depth, camera
        self._intrinsics = colour._intrinsics  # the colour camera describes the frames
        w, h = depth.size
        size = camera.intrinsics.size
        if size is not None and size != depth.size:
            try:
                camera.intrinsics.with_size(w, h)
            except InputError:
                raise InputError(f"the depth camera file is for {size[0]}x{size[1]} depth images, "
                                 f"{depth.name} holds {w}x{h}") from None
        colour_size = getattr(colour, "frame_size", None)
        if (camera.registered and colour_size is not None
                and abs((w / h) / (colour_size[0] / colour_size[1]) - 1) > 0.01):
            raise InputError(f"the depth stream {depth.name} ({w}x{h}) is registered to the colour frames "
                             f"({colour_size[0]}x{colour_size[1]}) but has another aspect ratio; give R and T "
                             "in the depth camera file")
        counts = (colour.frame_count, depth.count)
        if None not in counts and counts[0] != counts[1]:
            log.warning("%s: %d colour frames but %d depth images; the shorter ends the stream",
                        self.name, *counts)

    @property
    def fps(self) -> float | None:
        return self.colour.fps

    @property
    def frame_count(self) -> int | None:
        counts = [c for c in (self.colour.frame_count, self.depth.count) if c is not None]
        return min(counts) if counts else None

    @property
    def camera_known(self) -> bool:
        return self.colour.camera_known

    def assume_camera(self, fov_deg: float | None) -> None:
        self.colour.assume_camera(fov_deg)

    def close(self) -> None:
        self.colour.close()
        super().close()

    def _frames(self) -> Iterator[Frame]:
        self.ended_early = None
        depths = self.depth.frames()
        read = 0
        for frame in self.colour:
            raw = next(depths, False)
            if raw is False:
                if self.depth.count is not None and read < self.depth.count:  # damaged, not just shorter
                    self.ended_early = (f"the depth stream {self.depth.name} stopped decoding after {read} of its "
                                        f"{self.depth.count} frames (the file is damaged or truncated)")
                    log.warning("%s", self.ended_early)
                break
            read += 1
            if raw is None:
                yield frame
                continue
            metres = depth_to_metres(raw, self.depth_camera)
            depth = register_depth(metres, self.depth_camera, frame.intrinsics, (frame.width, frame.height))
            yield dataclasses.replace(frame, depth=depth, source=self.name)
        self.ended_early = self.ended_early or self.colour.ended_early


def open_rgbd(colour: FrameSource, depth_spec: str | os.PathLike[str],
              depth_camera: str | os.PathLike[str] | DepthCamera) -> RGBDSource:
    """An :class:`RGBDSource` of an opened colour source, a depth stream and its camera file.

    A registered stream's intrinsics describe the colour camera too: they are given to the
    colour frames when nothing else describes them.

    Raises:
        InputError: an unreadable depth stream or depth camera file (the colour source is
            closed then).
    """
    try:
        camera = depth_camera if isinstance(depth_camera, DepthCamera) else load_depth_camera(depth_camera)
        stream = DepthStream(depth_spec)
        if camera.registered and not colour.camera_known:
            from core.capture.sources import _IntrinsicsAssigner

            assumed = colour._intrinsics.assumed_fov_deg
            colour._intrinsics = _IntrinsicsAssigner(camera.intrinsics, None)
            colour._intrinsics.assumed_fov_deg = assumed
        return RGBDSource(colour, stream, camera)
    except BaseException:
        colour.close()
        raise


def depth_inputs(depth_spec: str | None, depth_camera: str | None) -> Sequence[str]:
    """The files an RGB-D source reads (for :func:`core.outputs.check_output`)."""
    return [p for p in (depth_spec, depth_camera) if p]
