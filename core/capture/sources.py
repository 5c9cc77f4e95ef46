"""Frame sources: cameras, video files, image folders and globs, in-memory arrays.

Every source is an iterable of :class:`~core.capture.frame.Frame` and a context manager::

    with open_source("clip.mp4", fov_deg=60) as src:
        for frame in src:
            ...

Errors that mean "this input is unusable" (a camera that does not open, a corrupt file, an
empty folder) raise :class:`~core.errors.InputError` when the source is **created**, so the
command line and the GUI can report them before any work starts. A stream that fails part of
the way through ends cleanly with the frames it had and logs a warning.

Conversions to RGB happen here, at the OpenCV boundary, with :func:`core.camera.bgr_to_rgb`.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Union

import cv2
import numpy as np

from core.camera import (
    Intrinsics,
    assumed_intrinsics,
    bgr_to_rgb,
    intrinsics_from_exif,
    intrinsics_from_fov,
    intrinsics_from_matrix,
    load_intrinsics,
)
from core.capture.frame import Frame
from core.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ArraySource",
    "CameraSource",
    "FrameSource",
    "ImageSequenceSource",
    "IntrinsicsSpec",
    "VideoFileSource",
    "opencv_image_to_rgb",
]

#: File extensions read as still images (lower case).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)
#: File extensions read as video (lower case); other files are still tried as video.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv"}
)

#: What a caller may pass as intrinsics: one camera, a per-frame (N, 3, 3) array, or a file.
IntrinsicsSpec = Union[Intrinsics, np.ndarray, str, "os.PathLike[str]", None]


class _IntrinsicsAssigner:
    """Gives each frame its intrinsics, from an explicit value, a per-frame array or a FOV.

    Intrinsics whose size is unknown get the frame's size; known intrinsics for another
    resolution of the same aspect ratio are rescaled (logged once).
    """

    def __init__(self, intrinsics: IntrinsicsSpec, fov_deg: float | None) -> None:
        if intrinsics is not None and fov_deg is not None:
            raise InputError("give intrinsics or a field of view, not both")
        if isinstance(intrinsics, (str, os.PathLike)):
            intrinsics = load_intrinsics(intrinsics)
        self.per_frame: np.ndarray | None = None
        self.single: Intrinsics | None = None
        if isinstance(intrinsics, np.ndarray):
            if intrinsics.shape == (3, 3):
                self.single = intrinsics_from_matrix(intrinsics)
            elif intrinsics.ndim == 3 and intrinsics.shape[1:] == (3, 3):
                self.per_frame = intrinsics.astype(np.float64)
            else:
                raise InputError(
                    f"intrinsics array must be (3, 3) or (N, 3, 3), got {intrinsics.shape}"
                )
        elif isinstance(intrinsics, Intrinsics):
            self.single = intrinsics
        elif intrinsics is not None:
            raise TypeError(f"unsupported intrinsics type {type(intrinsics).__name__}")
        self.fov_deg = fov_deg
        self._cache: dict[tuple[int, int], Intrinsics] = {}
        #: Field of view assumed where nothing describes the camera (None: no intrinsics,
        #: for the weak-perspective path). See :meth:`FrameSource.assume_camera`.
        self.assumed_fov_deg: float | None = None

    @property
    def known(self) -> bool:
        """Whether the caller described the camera (intrinsics or a field of view)."""
        return self.single is not None or self.per_frame is not None or self.fov_deg is not None

    def assumed(self, width: int, height: int) -> Intrinsics | None:
        """The assumed camera of an undescribed source (None when none is assumed)."""
        if self.assumed_fov_deg is None:
            return None
        return assumed_intrinsics(width, height, self.assumed_fov_deg)

    @property
    def count(self) -> int | None:
        """Number of per-frame matrices, or None when one camera applies to all frames."""
        return None if self.per_frame is None else int(self.per_frame.shape[0])

    def check_count(self, frame_count: int | None, name: str, exact: bool) -> None:
        """Raise (exact counts) or warn (estimated counts) when per-frame K do not match."""
        if self.per_frame is None or frame_count is None or frame_count == self.count:
            return
        message = f"{name}: {self.count} per-frame intrinsics for {frame_count} frame{'s' if frame_count != 1 else ''}"
        if exact:
            raise InputError(message)
        log.warning("%s (frame count is the container's estimate)", message)

    def __call__(self, index: int, width: int, height: int) -> Intrinsics | None:
        if self.per_frame is not None:
            if index >= self.per_frame.shape[0]:
                raise InputError(
                    f"frame {index} has no intrinsics: the per-frame array holds "
                    f"{self.per_frame.shape[0]} matrices"
                )
            return intrinsics_from_matrix(self.per_frame[index], width, height)
        key = (width, height)
        if key not in self._cache:
            if self.single is not None:
                intr = self.single.with_size(width, height)
                if self.single.size is not None and intr is not self.single:
                    log.info("rescaled %dx%d intrinsics to %dx%d frames",
                             *self.single.size, width, height)
            elif self.fov_deg is not None:
                intr = intrinsics_from_fov(self.fov_deg, width, height)
            else:
                return None
            self._cache[key] = intr
        return self._cache[key]


class FrameSource(ABC):
    """Base class of frame sources: an iterable of :class:`Frame` and a context manager.

    Subclasses implement :meth:`_frames` (yield frames) and may override :meth:`close`,
    :attr:`frame_count` and :attr:`fps`. ``len(source)`` works when the frame count is known
    and raises ``TypeError`` otherwise (a live camera).
    """

    def __init__(
        self, name: str, intrinsics: IntrinsicsSpec = None, fov_deg: float | None = None
    ) -> None:
        self.name = name
        self._intrinsics = _IntrinsicsAssigner(intrinsics, fov_deg)
        self._closed = False
        #: Why the last pass ended before the source's known end (a damaged or truncated
        #: file), as a sentence for the user; None when it read everything (or is running).
        self.ended_early: str | None = None

    # -- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def _frames(self) -> Iterator[Frame]:
        """Yield the frames of one pass over the source."""

    @property
    def frame_count(self) -> int | None:
        """Number of frames, when known before reading (an estimate for some video files)."""
        return None

    @property
    def fps(self) -> float | None:
        """Nominal frames per second, when known."""
        return None

    def close(self) -> None:
        """Release the device or file handles. Idempotent."""
        self._closed = True

    # -- shared behaviour ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise InputError(f"{self.name}: the source is closed")
        return self._frames()

    def __len__(self) -> int:
        count = self.frame_count
        if count is None:
            raise TypeError(f"{type(self).__name__} ({self.name}) has no known length")
        return count

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def assume_camera(self, fov_deg: float | None) -> None:
        """Where no intrinsics describe this source, give its frames the ideal intrinsics of
        ``fov_deg`` (horizontal, degrees; photos with an EXIF focal length use that), marked
        ``intrinsics_source="assumed"``; None leaves them without intrinsics (weak
        perspective). Intrinsics or a field of view given when opening always win."""
        self._intrinsics.assumed_fov_deg = None if fov_deg is None else float(fov_deg)

    @property
    def camera_known(self) -> bool:
        """Whether the frames' intrinsics were given (not assumed)."""
        return self._intrinsics.known

    def _unknown_camera(self, index: int, width: int, height: int) -> tuple[Intrinsics | None, str]:
        """Intrinsics of a frame nobody described: ``(assumed or None, its source)``."""
        intr = self._intrinsics.assumed(width, height)
        return intr, "none" if intr is None else "assumed"

    def _make_frame(self, index: int, timestamp_s: float, image_rgb: np.ndarray) -> Frame:
        h, w = image_rgb.shape[:2]
        intr, origin = self._intrinsics(index, w, h), "given"
        if intr is None:
            intr, origin = self._unknown_camera(index, w, h)
        return Frame(
            index=index,
            timestamp_s=float(timestamp_s),
            image=image_rgb,
            intrinsics=intr,
            source=self.name,
            intrinsics_source=origin,
        )


def opencv_image_to_rgb(image: np.ndarray, bgr: bool = True) -> np.ndarray:
    """HandTwin's uint8 (H, W, 3) RGB image from whatever ``cv2.imread``/``read`` returned.

    Args:
        image: (H, W) gray, (H, W, 3) BGR (or RGB when ``bgr`` is False) or (H, W, 4) with
            alpha (dropped); 16-bit images are rescaled to 8 bits.
        bgr: whether colour channels are in OpenCV's BGR order.
    """
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(float(image.max()), 1.0))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    return bgr_to_rgb(image) if bgr else np.ascontiguousarray(image)


class CameraSource(FrameSource):
    """A live camera (``cv2.VideoCapture`` on an index, a device path or a stream URL).

    Single pass: iterating twice continues the same stream. Timestamps are seconds on the
    monotonic clock since ``epoch_s`` (the moment of opening unless given; give cameras that
    are synchronized together the same epoch).

    Raises:
        InputError: the camera does not open or delivers no first frame.
    """

    def __init__(
        self,
        device: int | str,
        intrinsics: IntrinsicsSpec = None,
        fov_deg: float | None = None,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        epoch_s: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name if name is not None else str(device), intrinsics, fov_deg)
        self.device = device
        self._cap = cv2.VideoCapture(device)
        if not self._cap.isOpened():
            self._cap.release()
            what = f"camera {device}" if isinstance(device, int) else f"camera device {device}"
            raise InputError(f"could not open {what} (not connected, or in use by another app?)")
        if width is not None and height is not None:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps is not None:
            self._cap.set(cv2.CAP_PROP_FPS, fps)
        self.epoch_s = time.monotonic() if epoch_s is None else epoch_s
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise InputError(f"camera {device} opened but delivered no frame")
        self._pending: tuple[float, np.ndarray] | None = (time.monotonic() - self.epoch_s, first)
        self._next_index = 0
        reported = self._cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(reported) if reported and reported > 0 else None

    @property
    def fps(self) -> float | None:
        return self._fps

    def _frames(self) -> Iterator[Frame]:
        while not self._closed:
            if self._pending is not None:
                t, bgr = self._pending
                self._pending = None
            else:
                ok, bgr = self._cap.read()
                t = time.monotonic() - self.epoch_s
                if not ok or bgr is None:
                    log.warning("%s: the camera stopped delivering frames after %d frames",
                                self.name, self._next_index)
                    return
            frame = self._make_frame(self._next_index, t, opencv_image_to_rgb(bgr, bgr=True))
            self._next_index += 1
            yield frame

    def close(self) -> None:
        if not self._closed:
            self._cap.release()
        super().close()


class VideoFileSource(FrameSource):
    """A video file read with ``cv2.VideoCapture``; re-iterable (each pass reopens the file).

    Timestamps are ``index / fps`` (or the container's position when it reports no rate).
    A file that stops decoding part of the way (truncated, damaged) ends the pass with the
    frames read so far and a logged warning.

    Raises:
        InputError: missing file, or a file OpenCV cannot open or decode a first frame from.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        intrinsics: IntrinsicsSpec = None,
        fov_deg: float | None = None,
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        super().__init__(name if name is not None else str(path), intrinsics, fov_deg)
        if not self.path.is_file():
            raise InputError(f"video file not found: {self.path}")
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise InputError(
                    f"cannot open {self.path} as a video (corrupt or unsupported format)"
                )
            ok, first = cap.read()
            if not ok or first is None:
                raise InputError(f"{self.path}: no decodable frame (corrupt or empty video)")
            rate = cap.get(cv2.CAP_PROP_FPS)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
        self._fps = float(rate) if rate and 0 < rate < 1000 else None
        self._count = count if count > 0 else None
        self.frame_size = (int(first.shape[1]), int(first.shape[0]))
        from core.inputs import check_image_size

        check_image_size(*self.frame_size, f"the video {self.path}")
        self._intrinsics.check_count(self._count, self.name, exact=False)

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def frame_count(self) -> int | None:
        """Frame count the container reports (may exceed what a damaged file decodes)."""
        return self._count

    def _frames(self) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.path))
        index = 0
        self.ended_early = None
        try:
            while not self._closed:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                if self._fps is not None:
                    t = index / self._fps
                else:
                    t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                yield self._make_frame(index, t, opencv_image_to_rgb(bgr, bgr=True))
                index += 1
        finally:
            cap.release()
        if self._count is not None and index < self._count and not self._closed:
            self.ended_early = (f"{self.name} stopped decoding after {index} of its {self._count} frames "
                                f"(the file is damaged or truncated)")
            log.warning("%s", self.ended_early)


class ImageSequenceSource(FrameSource):
    """Still images in a given order (an image folder sorted by file name, or a glob).

    Re-iterable. Frame ``i`` is file ``i`` of the list; timestamps are ``i / fps`` with a
    nominal ``fps``. An unreadable file is skipped with a warning (its index stays unused, so
    per-frame intrinsics stay aligned with files).

    Raises:
        InputError: an empty list, or a first image that cannot be read.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        intrinsics: IntrinsicsSpec = None,
        fov_deg: float | None = None,
        fps: float = 30.0,
        name: str = "images",
    ) -> None:
        super().__init__(name, intrinsics, fov_deg)
        self.paths = tuple(Path(p) for p in paths)
        if not self.paths:
            raise InputError(f"{name}: no images")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._fps = float(fps)
        from core.inputs import check_image_file

        for path in self.paths:  # sizes from the headers: a decompression bomb is refused here
            check_image_file(path, "the image", readable=False)
        if cv2.imread(str(self.paths[0]), cv2.IMREAD_UNCHANGED) is None:
            raise InputError(f"cannot read image {self.paths[0]} (corrupt or unsupported format)")
        self._intrinsics.check_count(len(self.paths), self.name, exact=True)

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike[str],
        intrinsics: IntrinsicsSpec = None,
        fov_deg: float | None = None,
        fps: float = 30.0,
        name: str | None = None,
    ) -> ImageSequenceSource:
        """All images directly in ``folder`` (see :data:`IMAGE_EXTENSIONS`), sorted by name.

        Raises:
            InputError: the folder does not exist or holds no images.
        """
        root = Path(folder)
        if not root.is_dir():
            raise InputError(f"not a folder: {root}")
        paths = sorted(
            (p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
            key=lambda p: p.name,
        )
        if not paths:
            raise InputError(
                f"folder {root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        return cls(paths, intrinsics, fov_deg, fps, name if name is not None else str(folder))

    @classmethod
    def from_glob(
        cls,
        pattern: str,
        intrinsics: IntrinsicsSpec = None,
        fov_deg: float | None = None,
        fps: float = 30.0,
    ) -> ImageSequenceSource:
        """Image files matching a glob (``*``, ``?``, ``[..]``, ``**``), sorted by full path.

        Raises:
            InputError: nothing matches, or only non-image files match.
        """
        matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        paths = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if not matches:
            raise InputError(f"no files match {pattern!r}")
        if not paths:
            raise InputError(f"{len(matches)} paths match {pattern!r} but none is an image")
        return cls(paths, intrinsics, fov_deg, fps, name=pattern)

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def frame_count(self) -> int:
        return len(self.paths)

    def _frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            if self._closed:
                return
            raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if raw is None:
                log.warning("%s: skipping unreadable image %s", self.name, path)
                continue
            yield self._make_frame(index, index / self._fps, opencv_image_to_rgb(raw, bgr=True))

    def _unknown_camera(self, index: int, width: int, height: int) -> tuple[Intrinsics | None, str]:
        """A photo's EXIF focal length, where it has one and a camera is assumed at all."""
        if self._intrinsics.assumed_fov_deg is not None:
            exif = intrinsics_from_exif(self.paths[index], width, height)
            if exif is not None:
                return exif, "exif"
        return super()._unknown_camera(index, width, height)


class ArraySource(FrameSource):
    """In-memory RGB images (tests, synthetic clips, frames already decoded). Re-iterable.

    Args:
        images: sequence of (H, W, 3) uint8 RGB images, or one (N, H, W, 3) array.
        timestamps_s: one timestamp per image in seconds; defaults to ``i / fps``.
        fps: nominal frame rate.
        name: the ``Frame.source`` string.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        timestamps_s: Sequence[float] | None = None,
        intrinsics: IntrinsicsSpec = None,
        fov_deg: float | None = None,
        fps: float = 30.0,
        name: str = "arrays",
    ) -> None:
        super().__init__(name, intrinsics, fov_deg)
        self.images = list(images)
        if timestamps_s is None:
            timestamps_s = [i / fps for i in range(len(self.images))]
        if len(timestamps_s) != len(self.images):
            raise ValueError("give one timestamp per image")
        self.timestamps_s = [float(t) for t in timestamps_s]
        self._fps = float(fps)
        self._intrinsics.check_count(len(self.images), self.name, exact=True)

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def frame_count(self) -> int:
        return len(self.images)

    def _frames(self) -> Iterator[Frame]:
        for index, (image, t) in enumerate(zip(self.images, self.timestamps_s)):
            if self._closed:
                return
            yield self._make_frame(index, t, image)
