"""The records frame sources hand to the rest of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.camera import Intrinsics

__all__ = ["Frame", "FrameSet"]


@dataclass(frozen=True)
class Frame:
    """One captured image and what is known about it.

    Attributes:
        index: position of the frame in its source, from 0. For an image folder it is the
            file's position in the sorted listing (an unreadable file leaves a gap), so a
            per-frame intrinsics array stays aligned.
        timestamp_s: capture time in seconds. Video files, folders and arrays: ``index / fps``
            (the container's clock); live cameras: seconds on the monotonic clock since the
            source's ``epoch_s`` (sources opened together share one epoch); replayed sessions:
            the recorded time.
        image: (H, W, 3) uint8 RGB image (read-only view; copy before modifying).
        intrinsics: the camera's intrinsics for this frame (size filled in), or ``None`` when
            unknown (the fitter then uses weak perspective).
        source: the source's name, e.g. the SRC string it was opened from.
        intrinsics_source: where ``intrinsics`` came from: "given" (a file, a field of view,
            a recorded session, the demo's known camera), "exif" (a photo's focal length),
            "assumed" (nobody said: :data:`core.camera.DEFAULT_FOV_DEG`) or "none".
        depth: (H, W) float32 metres registered to ``image`` (the colour camera's z at each of
            its pixels; 0 where unknown), read-only; None without a depth stream
            (:mod:`core.capture.rgbd`).
    """

    index: int
    timestamp_s: float
    image: np.ndarray
    intrinsics: Intrinsics | None
    source: str
    intrinsics_source: str = "given"
    depth: np.ndarray | None = None

    def __post_init__(self) -> None:
        img = self.image
        is_rgb8 = (
            isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3
            and img.shape[2] == 3
        )
        if not is_rgb8:
            raise ValueError(
                f"Frame.image must be an (H, W, 3) uint8 RGB array, got "
                f"{getattr(img, 'shape', None)} {getattr(img, 'dtype', type(img).__name__)}"
            )
        if img.flags.writeable:
            img = img.view()
            img.flags.writeable = False
            object.__setattr__(self, "image", img)
        if self.depth is not None:
            d = self.depth
            if not (isinstance(d, np.ndarray) and d.dtype == np.float32 and d.shape == img.shape[:2]):
                raise ValueError(
                    f"Frame.depth must be a float32 array of the image's {img.shape[:2]} pixels, got "
                    f"{getattr(d, 'shape', None)} {getattr(d, 'dtype', type(d).__name__)}"
                )
            if d.flags.writeable:
                d = d.view()
                d.flags.writeable = False
                object.__setattr__(self, "depth", d)

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[0])


@dataclass(frozen=True)
class FrameSet:
    """Frames of several cameras taken at (nearly) the same time.

    Attributes:
        index: position of the set in the synchronized stream, from 0.
        timestamp_s: the reference (first) camera's timestamp, seconds.
        frames: one :class:`Frame` per camera, in the order the cameras were given.
    """

    index: int
    timestamp_s: float
    frames: tuple[Frame, ...]

    @property
    def max_skew_s(self) -> float:
        """Largest timestamp difference between any frame and the reference, seconds."""
        return max(abs(f.timestamp_s - self.timestamp_s) for f in self.frames)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Frame:
        return self.frames[i]
