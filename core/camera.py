"""Camera and image conventions: the one module that owns them.

Camera model
------------
HandTwin uses the OpenCV pinhole camera everywhere:

* camera frame: **x right, y down, z forward** (into the scene), in **metres**;
* intrinsics ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in **pixels**;
* a camera-frame point ``(X, Y, Z)`` projects to ``u = fx * X / Z + cx``,
  ``v = fy * Y / Z + cy`` (see :func:`project`);
* **pixel centres lie at integer coordinates**: the centre of the top-left pixel is
  ``(0, 0)``, the image spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``. The optical centre of an
  ideal camera is therefore ``((W - 1) / 2, (H - 1) / 2)``.

Unknown cameras
---------------
A source opened without ``--intrinsics`` or ``--fov`` is still a perspective camera: its frames
get the ideal intrinsics of :data:`DEFAULT_FOV_DEG` across the image's longer side
(:func:`assumed_intrinsics`; or, for a photo, of the 35 mm-equivalent
focal length in its EXIF data, :func:`intrinsics_from_exif`), and say so in
``Frame.intrinsics_source``. HandTailor's weak-perspective path is only used when asked for
(``--weak-perspective``): on a real wide-angle video it was 4x worse than a perspective fit.

Lens distortion is not part of :class:`Intrinsics`; :func:`calibrate_camera` reports it
separately (OpenCV's ``(k1, k2, p1, p2, k3)``) so a caller can undistort frames once.

Image convention
----------------
Images inside ``core`` are **RGB, uint8, H x W x 3**, C-contiguous. OpenCV reads and writes
BGR; convert only at those I/O boundaries with :func:`bgr_to_rgb` / :func:`rgb_to_bgr`, never
with an inline ``[:, :, ::-1]``.

Intrinsics files
----------------
:func:`load_intrinsics` reads the formats of the ``--intrinsics`` option:

* JSON ``{"fx": .., "fy": .., "cx": .., "cy": ..}`` (optionally ``"width"``, ``"height"``);
* JSON ``{"K": [[..], [..], [..]]}`` (optionally ``"width"``, ``"height"``);
* ``.npy`` of shape ``(3, 3)`` (one camera) or ``(N, 3, 3)`` (one K per frame, source order).

:func:`save_intrinsics` writes the first JSON form, atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from core.errors import InputError
from core.outputs import atomic_write_bytes

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "DEFAULT_FOV_DEG",
    "assumed_intrinsics",
    "CalibrationResult",
    "HandCamera",
    "CharucoPattern",
    "CheckerboardPattern",
    "Intrinsics",
    "atomic_write_text",
    "bgr_to_rgb",
    "calibrate_camera",
    "calibrate_camera_images",
    "check_camera_args",
    "check_fov",
    "intrinsics_from_exif",
    "intrinsics_from_fov",
    "intrinsics_from_matrix",
    "load_intrinsics",
    "project",
    "weak_perspective_camera",
    "weak_perspective_origin",
    "rgb_to_bgr",
    "save_intrinsics",
]


# --------------------------------------------------------------------------------------------
# Colour order at the OpenCV boundary
# --------------------------------------------------------------------------------------------


def _check_colour_image(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"{name}: expected an H x W x 3 image, got shape {shape}")


def bgr_to_rgb(image_bgr: np.ndarray) -> np.ndarray:
    """Convert an OpenCV BGR image to HandTwin's RGB order.

    Args:
        image_bgr: (H, W, 3) image in BGR order, any dtype (uint8 from OpenCV).

    Returns:
        (H, W, 3) new C-contiguous array in RGB order, same dtype. The input is not modified.
    """
    _check_colour_image(image_bgr, "bgr_to_rgb")
    return np.ascontiguousarray(image_bgr[:, :, ::-1])


def rgb_to_bgr(image_rgb: np.ndarray) -> np.ndarray:
    """Convert a HandTwin RGB image to OpenCV's BGR order (for ``cv2.imwrite``, ``VideoWriter``).

    Args:
        image_rgb: (H, W, 3) image in RGB order, any dtype.

    Returns:
        (H, W, 3) new C-contiguous array in BGR order, same dtype. The input is not modified.
    """
    _check_colour_image(image_rgb, "rgb_to_bgr")
    return np.ascontiguousarray(image_rgb[:, :, ::-1])


# --------------------------------------------------------------------------------------------
# Intrinsics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of one camera (OpenCV convention, pixels, pixel centres at integers).

    Attributes:
        fx, fy: focal lengths in pixels (> 0).
        cx, cy: principal point in pixels.
        width, height: image size in pixels the intrinsics belong to, or ``None`` when a file
            gave only the matrix; frame sources fill it in from the frames they deliver.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        for name in ("fx", "fy", "cx", "cy"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(
                float(value)
            ):
                raise ValueError(f"Intrinsics.{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or neither")
        if self.width is not None and self.height is not None:
            width, height = int(self.width), int(self.height)
            if width <= 0 or height <= 0:
                raise ValueError(f"image size must be positive, got {width}x{height}")
            object.__setattr__(self, "width", width)
            object.__setattr__(self, "height", height)

    @property
    def K(self) -> np.ndarray:  # noqa: N802  (K is the standard name)
        """The (3, 3) float64 matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (a new array)."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    @property
    def size(self) -> tuple[int, int] | None:
        """``(width, height)`` in pixels, or ``None`` when unknown."""
        if self.width is None or self.height is None:
            return None
        return (self.width, self.height)

    @property
    def fov_x_deg(self) -> float | None:
        """Horizontal field of view in degrees (needs ``width``), else ``None``."""
        if self.width is None:
            return None
        return fov_from_focal(self.fx, self.width)

    def scaled(self, sx: float, sy: float | None = None) -> Intrinsics:
        """Intrinsics of the same camera after resizing the image by ``(sx, sy)``.

        Consistent with pixel centres at integer coordinates: the image edge ``-0.5`` stays at
        ``-0.5``, so ``c' = (c + 0.5) * s - 0.5``. ``width``/``height`` are scaled and rounded.

        Args:
            sx: horizontal scale factor (new width / old width), > 0.
            sy: vertical scale factor; defaults to ``sx``.
        """
        sy = sx if sy is None else sy
        if not (sx > 0 and sy > 0):
            raise ValueError(f"scale factors must be positive, got sx={sx}, sy={sy}")
        width = None if self.width is None else int(round(self.width * sx))
        height = None if self.height is None else int(round(self.height * sy))
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=width,
            height=height,
        )

    def with_size(self, width: int, height: int) -> Intrinsics:
        """Intrinsics for frames of ``width x height`` pixels.

        Unknown size: the size is filled in. Same size: ``self``. Another size with the same
        aspect ratio (within 1 %): rescaled with :meth:`scaled`.

        Raises:
            InputError: the aspect ratio differs (the frames are cropped, not resized, so no
                scale maps these intrinsics onto them).
        """
        if self.width is None or self.height is None:
            return Intrinsics(self.fx, self.fy, self.cx, self.cy, int(width), int(height))
        if (self.width, self.height) == (width, height):
            return self
        sx, sy = width / self.width, height / self.height
        if abs(sx / sy - 1.0) > 0.01:
            raise InputError(
                f"the intrinsics are for {self.width}x{self.height} images but the frames are "
                f"{width}x{height} (a different aspect ratio); calibrate at this resolution"
            )
        return self.scaled(sx, sy)


def intrinsics_from_matrix(
    K: np.ndarray, width: int | None = None, height: int | None = None  # noqa: N803
) -> Intrinsics:
    """Build :class:`Intrinsics` from a 3x3 matrix, checking it.

    Args:
        K: (3, 3) matrix ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``; the skew ``s`` must be ~0.
        width, height: optional image size in pixels.

    Raises:
        InputError: wrong shape, non-finite entries, non-positive focal lengths, non-zero skew
            or a bottom row other than ``[0, 0, 1]``.
    """
    try:
        k = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"K must be a 3x3 matrix of numbers: {exc}") from None
    if k.shape != (3, 3):
        raise InputError(f"K must be a 3x3 matrix, got shape {k.shape}")
    if not np.all(np.isfinite(k)):
        raise InputError("K contains non-finite values (NaN or inf)")
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise InputError(f"K has non-positive focal lengths fx={k[0, 0]}, fy={k[1, 1]}")
    _check_intrinsic_ranges(k[0, 0], k[1, 1], k[0, 2], k[1, 2])
    scale = max(abs(k[0, 0]), abs(k[1, 1]))
    if abs(k[0, 1]) > 1e-6 * scale or abs(k[1, 0]) > 1e-6 * scale:
        raise InputError(f"K has skew terms ({k[0, 1]}, {k[1, 0]}); HandTwin needs zero skew")
    if not np.allclose(k[2], [0.0, 0.0, 1.0], atol=1e-9):
        raise InputError(f"K's last row must be [0, 0, 1], got {k[2].tolist()}")
    try:
        return Intrinsics(k[0, 0], k[1, 1], k[0, 2], k[1, 2], width, height)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _check_intrinsic_ranges(fx: float, fy: float, cx: float, cy: float) -> None:
    """Raise :class:`InputError` for focal lengths outside :data:`core.inputs.FOCAL_RANGE_PX`
    or a principal point farther than that from the image (numbers no camera has, which
    would overflow the fit to NaN)."""
    from core.inputs import FOCAL_RANGE_PX, check_number

    lo, hi = FOCAL_RANGE_PX
    check_number(fx, "the focal length fx", lo, hi, "px")
    check_number(fy, "the focal length fy", lo, hi, "px")
    check_number(cx, "the principal point cx", -hi, hi, "px")
    check_number(cy, "the principal point cy", -hi, hi, "px")


def focal_from_fov(fov_deg: float, width: float) -> float:
    """The focal length (pixels) of a pinhole whose horizontal field of view over an image
    ``width`` pixels wide is ``fov_deg`` degrees: ``(width / 2) / tan(fov / 2)``."""
    return (width / 2.0) / math.tan(math.radians(float(fov_deg)) / 2.0)


def fov_from_focal(focal_px: float, width: float) -> float:
    """The horizontal field of view (degrees) of a pinhole with focal length ``focal_px`` over
    an image ``width`` pixels wide (the inverse of :func:`focal_from_fov`)."""
    return math.degrees(2.0 * math.atan(width / (2.0 * focal_px)))


def intrinsics_from_fov(fov_deg: float, width: int, height: int) -> Intrinsics:
    """Ideal intrinsics from a **horizontal** field of view (square pixels, centred).

    ``fx = fy = (width / 2) / tan(fov / 2)``; ``cx = (width - 1) / 2``, ``cy = (height - 1) / 2``
    (pixel centres at integer coordinates).

    Args:
        fov_deg: horizontal field of view in degrees, in (0, 180).
        width, height: image size in pixels.
    """
    if not (0.0 < float(fov_deg) < 180.0):
        raise InputError(f"field of view must be between 0 and 180 degrees, got {fov_deg}")
    if width <= 0 or height <= 0:
        raise InputError(f"image size must be positive, got {width}x{height}")
    f = focal_from_fov(fov_deg, width)
    return Intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height))


def weak_perspective_camera(image_size: tuple[int, int], fov_deg: float) -> Intrinsics:
    """The pinhole camera a weak-perspective fit lives in: :func:`intrinsics_from_fov` of the
    fitter's nominal field of view (``FitSettings.nominal_fov_deg``) for the image.

    Weak perspective sees scale, not depth; the fitter places the hand in this camera
    (:func:`weak_perspective_origin`) and every consumer of such a fit (the refiner, the
    texture, the frame's result, the personalization's bundle adjustment) uses this same one.

    Args:
        image_size: (width, height) pixels. fov_deg: horizontal field of view, degrees.
    """
    width, height = image_size
    return intrinsics_from_fov(fov_deg, int(width), int(height))


def weak_perspective_origin(camera: Intrinsics, pixel: Sequence[float], scale: float) -> np.ndarray:
    """Where a weak-perspective fit's origin (its wrist) sits in ``camera``
    (:func:`weak_perspective_camera`): depth ``z = fx / scale`` behind its pixel, so that the
    3D hand projects close to the fit.

    Args:
        camera: the nominal camera. pixel: (u, v) of the wrist, pixels. scale: the fit's
            weak-perspective scale, pixels per metre.

    Returns:
        (3,) float32 camera-frame position, metres.
    """
    z = camera.fx / scale
    u, v = pixel
    return np.array([(u - camera.cx) * z / camera.fx, (v - camera.cy) * z / camera.fy, z], dtype=np.float32)


#: Depth a weak-perspective hand is pushed back to when it is expressed as a pinhole view
#: (:meth:`HandCamera.pinhole`), metres: a hand 0.2 m deep then projects within 2e-4 of its
#: size (0.02 px over a 100 px hand) of the weak projection, and float32 keeps 1e-4 m there.
WEAK_PINHOLE_DEPTH_M = 1000.0


@dataclass(frozen=True, eq=False)
class HandCamera:
    """The camera a hand's 3D result lives in: the one projection under which its mesh
    lines up with the image (what the overlay, the silhouette and the texture all use).

    A perspective hand (a fit with known intrinsics, or any refined hand: the refiner renders
    with a pinhole) projects with ``intrinsics`` (:func:`project`). A weak-perspective fit
    projects with its scale about an anchor, ``pixel = scale * (X - anchor)[:2] + anchor_px``
    (HandTailor's weak camera); it is also placed in ``intrinsics``
    (:func:`weak_perspective_camera`, :func:`weak_perspective_origin`), but that pinhole only
    approximates it (about 17 px off at the fingertips on the demo's frames).

    Attributes:
        intrinsics: the pinhole camera (the frame's, the refiner's, or the nominal one a
            weak-perspective fit is placed in).
        weak_scale: None for a perspective hand; else the weak camera's scale, pixels per metre.
        weak_anchor: (3,) float64 camera-frame point (the wrist), metres; weak hands only.
        weak_anchor_px: (2,) float64 its pixel; weak hands only.
    """

    intrinsics: Intrinsics
    weak_scale: float | None = None
    weak_anchor: np.ndarray | None = None
    weak_anchor_px: np.ndarray | None = None

    @classmethod
    def weak(cls, intrinsics: Intrinsics, scale: float, anchor: np.ndarray, anchor_px: np.ndarray) -> HandCamera:
        """A weak-perspective hand's camera: ``anchor`` (metres, camera frame) is seen at
        ``anchor_px`` and everything else ``scale`` pixels per metre away from it in x and y."""
        return cls(intrinsics, float(scale), np.asarray(anchor, np.float64).reshape(3).copy(),
                   np.asarray(anchor_px, np.float64).reshape(2).copy())

    @property
    def is_weak(self) -> bool:
        return self.weak_scale is not None

    @property
    def K(self) -> np.ndarray:  # noqa: N802
        """(3, 3) float64 the pinhole's matrix (for a weak hand, only its nominal camera)."""
        return self.intrinsics.K

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) camera-frame points, metres -> (N, 2) float32 pixels."""
        pts = np.asarray(points, np.float64).reshape(-1, 3)
        if self.weak_scale is None:
            return project(pts, self.intrinsics.K).astype(np.float32)
        return (self.weak_scale * (pts[:, :2] - self.weak_anchor[:2]) + self.weak_anchor_px).astype(np.float32)

    def pinhole(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The points and a pinhole ``K`` that projects them as this camera does, for code that
        takes a pinhole (the texture's sampling, the refinement): a perspective hand as it is; a
        weak one as the limit of perspective, moved :data:`WEAK_PINHOLE_DEPTH_M` away with a
        lens that long (anchor on the optical axis), its shape unchanged (:meth:`pinhole_frame`).

        Returns:
            (N, 3) float32 points, metres; (3, 3) float64 K.
        """
        pts = np.asarray(points, np.float32).reshape(-1, 3)
        if self.weak_scale is None:
            return pts, self.intrinsics.K
        offset, K = self.pinhole_frame()
        return (pts.astype(np.float64) + offset).astype(np.float32), K

    def pinhole_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """The pinhole form of this camera (:meth:`pinhole`) as a move and a lens: camera-frame
        points plus ``offset`` project through ``K`` as this camera projects the points.

        Returns:
            (3,) float64 offset, metres (zero for a perspective hand; a weak one's anchor to
            ``(0, 0, WEAK_PINHOLE_DEPTH_M)``); (3, 3) float64 K (a weak one's: focal length
            ``scale * WEAK_PINHOLE_DEPTH_M``, principal point its anchor's pixel).
        """
        if self.weak_scale is None:
            return np.zeros(3), self.intrinsics.K
        depth = WEAK_PINHOLE_DEPTH_M
        f = self.weak_scale * depth
        K = np.array([[f, 0.0, self.weak_anchor_px[0]], [0.0, f, self.weak_anchor_px[1]], [0.0, 0.0, 1.0]])
        return (0.0, 0.0, depth) - self.weak_anchor, K

    def from_pinhole_frame(self, anchor: np.ndarray) -> tuple[HandCamera, np.ndarray]:
        """A weak hand that moved in this camera's pinhole form (:meth:`pinhole_frame`, where
        the refinement works), back as a weak hand: the weak camera that limit now stands for,
        and the move that puts the moved points back where the fitter places a weak hand (its
        anchor at :func:`weak_perspective_origin` in ``intrinsics``).

        A move along the optical axis in the pinhole form is a change of the weak camera's
        scale (``f / depth``), a sideways one a change of the anchor's pixel; the shape is
        unchanged.

        Args:
            anchor: (3,) the anchor (the wrist) after the move, pinhole-form frame, metres.

        Returns:
            The weak :class:`HandCamera`; (3,) float64 offset, metres, to add to pinhole-form
            points (such that its :meth:`pinhole_frame` moves them back, up to the second order
            of the hand's depth over :data:`WEAK_PINHOLE_DEPTH_M`).

        Raises:
            ValueError: on a perspective camera.
        """
        if self.weak_scale is None:
            raise ValueError("a perspective hand has no pinhole form to come back from")
        _, K = self.pinhole_frame()
        a = np.asarray(anchor, np.float64).reshape(3)
        scale = K[0, 0] / a[2]
        pixel = K[:2, 2] + K[0, 0] * a[:2] / a[2]
        origin = weak_perspective_origin(self.intrinsics, pixel, scale).astype(np.float64)
        return HandCamera.weak(self.intrinsics, scale, origin, pixel), origin - a


#: Field of view assumed for a camera nobody described, degrees, across the image's longer side
#: (:func:`assumed_intrinsics`): typical webcams and phone main cameras span about 60-80 degrees
#: across their sensor's long side. On the real clips the team has, the perspective fit's median
#: reprojection error barely moves between 50 and 120 degrees (EgoHands 4.8 / 4.4 / 4.2 / 4.3 px
#: at 50 / 75 / 100 / 120), while the weak-perspective path gave 16.9 px.
DEFAULT_FOV_DEG = 70.0


def assumed_intrinsics(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> Intrinsics:
    """The camera assumed for an image nobody described: ``fov_deg`` across its **longer** side.

    A camera's sensor is landscape and a portrait photo is that sensor turned, so the field of
    view a camera is known by spans the image's long side, as :func:`intrinsics_from_exif`
    reads the 35 mm frame (``f = f35 / 36 * max(width, height)``). Landscape and square images
    get :func:`intrinsics_from_fov` itself; a portrait phone photo no longer gets a 70 degree
    view across its short side (94 degrees across its long side, wider than phones' main
    cameras): on the four portrait OneHand10K photos the fit's 2D error against the labels went
    11.29 -> 11.02 px (``bench --only accuracy_real``).
    """
    if width >= height:
        return intrinsics_from_fov(fov_deg, width, height)
    f = intrinsics_from_fov(fov_deg, height, width).fx  # the turned sensor's
    return Intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height))


def check_fov(fov_deg: float, name: str = "--fov") -> float:
    """A horizontal field of view in degrees, checked: one :class:`InputError` unless it is a
    finite number in [1, 179]."""
    from core.inputs import check_number

    return check_number(fov_deg, name, 1.0, 179.0, "degrees")


def check_camera_args(intrinsics: object, fov_deg: float | None, weak_perspective: bool = False) -> None:
    """The camera options of a command that takes a source: at most one of ``--intrinsics``,
    ``--fov`` and ``--weak-perspective``, and a field of view in range (one
    :class:`InputError` otherwise)."""
    if intrinsics is not None and fov_deg is not None:
        raise InputError("give either --intrinsics or --fov, not both")
    if weak_perspective and (intrinsics is not None or fov_deg is not None):
        raise InputError("--weak-perspective is for a camera nobody described: drop --intrinsics / --fov")
    if fov_deg is not None:
        check_fov(fov_deg)


#: EXIF tag of the 35 mm-equivalent focal length, millimetres.
_EXIF_FOCAL_35MM = 0xA405
_EXIF_IFD = 0x8769


def intrinsics_from_exif(path: PathLike, width: int, height: int) -> Intrinsics | None:
    """Ideal intrinsics from a photo's EXIF 35 mm-equivalent focal length, or None.

    A 35 mm frame is 36 mm across its long side, so ``f = f35 / 36 * max(width, height)``
    pixels; the principal point is the image's centre. Images without the tag (or that PIL
    cannot read) give None.
    """
    try:
        from PIL import Image

        with Image.open(path) as img:
            exif = img.getexif()
            f35 = exif.get_ifd(_EXIF_IFD).get(_EXIF_FOCAL_35MM) or exif.get(_EXIF_FOCAL_35MM)
    except Exception:  # noqa: BLE001 - no metadata is the common case, never an error
        return None
    try:
        f35 = float(f35)
    except (TypeError, ValueError):
        return None
    if not (1.0 <= f35 <= 2000.0):
        return None
    f = f35 / 36.0 * max(width, height)
    return Intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height))


def _optional_size(data: dict, path: Path) -> tuple[int | None, int | None]:
    width, height = data.get("width"), data.get("height")
    if width is None and height is None:
        return None, None
    from core.inputs import MAX_IMAGE_SIDE

    if (not (isinstance(width, int) and isinstance(height, int)) or isinstance(width, bool)
            or isinstance(height, bool) or not 0 < width <= MAX_IMAGE_SIDE or not 0 < height <= MAX_IMAGE_SIDE):
        raise InputError(
            f"{path}: 'width' and 'height' must both be integers from 1 to {MAX_IMAGE_SIDE}, "
            f"got {width!r}, {height!r}"
        )
    return width, height


def _load_intrinsics_json(path: Path) -> Intrinsics:
    from core.inputs import read_json

    data = read_json(path, "intrinsics file")
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object with fx, fy, cx, cy or K")
    width, height = _optional_size(data, path)
    if "K" in data:
        try:
            return intrinsics_from_matrix(np.asarray(data["K"], dtype=np.float64), width, height)
        except (TypeError, ValueError):
            raise InputError(f"{path}: 'K' must be a 3x3 list of numbers") from None
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
    missing = [k for k in ("fx", "fy", "cx", "cy") if k not in data]
    if missing:
        raise InputError(
            f"{path}: missing key(s) {', '.join(missing)}; expected fx, fy, cx, cy or K"
        )
    values = [data[k] for k in ("fx", "fy", "cx", "cy")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise InputError(f"{path}: fx, fy, cx, cy must be numbers, got {values}")
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{path}: fx, fy, cx, cy must be finite, got {values}")
    if values[0] <= 0 or values[1] <= 0:
        raise InputError(
            f"{path}: focal lengths must be positive, got fx={values[0]}, fy={values[1]}"
        )
    try:
        _check_intrinsic_ranges(*values)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return Intrinsics(*values, width=width, height=height)


def _load_intrinsics_npy(path: Path) -> Intrinsics | np.ndarray:
    from core.inputs import load_npy

    array = load_npy(path, "intrinsics file").astype(np.float64)
    if array.shape == (3, 3):
        try:
            return intrinsics_from_matrix(array)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
    if array.ndim == 3 and array.shape[1:] == (3, 3) and array.shape[0] > 0:
        for i, k in enumerate(array):
            try:
                intrinsics_from_matrix(k)
            except InputError as exc:
                raise InputError(f"{path}: matrix {i}: {exc}") from None
        return array
    raise InputError(f"{path}: expected shape (3, 3) or (N, 3, 3), got {array.shape}")


def load_intrinsics(path: PathLike) -> Intrinsics | np.ndarray:
    """Read an intrinsics file (see the module docstring for the formats).

    Args:
        path: a ``.json`` or ``.npy`` file.

    Returns:
        :class:`Intrinsics` for one camera, or an ``(N, 3, 3)`` float64 array of per-frame K
        (one per frame, in source order; every matrix already checked).

    Raises:
        InputError: missing file, unknown extension, bad JSON, missing keys, wrong shape,
            non-finite values or non-positive focal lengths. The message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"intrinsics file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".json":
        return _load_intrinsics_json(p)
    if suffix == ".npy":
        return _load_intrinsics_npy(p)
    raise InputError(f"{p}: intrinsics must be a .json or .npy file, got '{suffix}'")


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    :func:`core.outputs.atomic_write_bytes`: a reader never sees a half-written file.

    Raises:
        OSError: the write failed (``path`` is unchanged).
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def save_intrinsics(path: PathLike, intr: Intrinsics) -> None:
    """Write intrinsics as JSON ``{"fx","fy","cx","cy"[,"width","height"]}``, atomically."""
    data: dict[str, float | int] = {"fx": intr.fx, "fy": intr.fy, "cx": intr.cx, "cy": intr.cy}
    if intr.width is not None and intr.height is not None:
        data["width"], data["height"] = intr.width, intr.height
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:  # noqa: N803
    """Project camera-frame points to pixels with a pinhole ``K``.

    Args:
        points: (..., 3) points in the camera frame (x right, y down, z forward), metres,
            with ``z > 0`` for points in front of the camera.
        K: (3, 3) intrinsics matrix (or broadcastable (..., 3, 3), e.g. one K per frame).

    Returns:
        (..., 2) pixel coordinates ``(u, v)`` (pixel centres at integers), float64 unless the
        inputs are float32 (then float32). Points with ``z == 0`` give inf/nan.
    """
    pts = np.asarray(points)
    k = np.asarray(K)
    if pts.shape[-1] != 3:
        raise ValueError(f"project: expected (..., 3) points, got shape {pts.shape}")
    if k.shape[-2:] != (3, 3):
        raise ValueError(f"project: expected (3, 3) K, got shape {k.shape}")
    dtype = np.result_type(pts.dtype, k.dtype, np.float32)
    pts = pts.astype(dtype, copy=False)
    k = k.astype(dtype, copy=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = pts[..., :2] / pts[..., 2:3]
    fx, fy = k[..., 0, 0], k[..., 1, 1]
    cx, cy = k[..., 0, 2], k[..., 1, 2]
    u = fx[..., None] * xy[..., 0:1] + k[..., 0, 1][..., None] * xy[..., 1:2] + cx[..., None]
    v = fy[..., None] * xy[..., 1:2] + cy[..., None]
    return np.concatenate([u, v], axis=-1)


# --------------------------------------------------------------------------------------------
# Calibration from checkerboard / ChArUco images
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckerboardPattern:
    """A plain checkerboard.

    Attributes:
        inner_cols, inner_rows: number of *inner* corners along the board's x (columns) and y
            (rows); a board of 10 x 7 squares has 9 x 6 inner corners.
        square_m: side of one square in metres (only scales the recovered board poses; the
            intrinsics do not depend on it).
    """

    inner_cols: int = 9
    inner_rows: int = 6
    square_m: float = 0.025

    def object_points(self) -> np.ndarray:
        """(inner_rows * inner_cols, 3) float32 corner positions on the board plane z = 0,
        metres, row-major in OpenCV's detection order (x along columns first)."""
        grid = np.mgrid[0 : self.inner_cols, 0 : self.inner_rows].T.reshape(-1, 2)
        pts = np.zeros((grid.shape[0], 3), np.float32)
        pts[:, :2] = grid * self.square_m
        return pts


@dataclass(frozen=True)
class CharucoPattern:
    """A ChArUco board (``cv2.aruco.CharucoBoard``).

    Attributes:
        squares_x, squares_y: number of chessboard squares along x and y.
        square_m: side of one chessboard square in metres.
        marker_m: side of one ArUco marker in metres (smaller than ``square_m``).
        dictionary: name of a predefined ArUco dictionary in ``cv2.aruco``.
        min_corners: fewest ChArUco corners for an image to count as a detected board.
    """

    squares_x: int = 7
    squares_y: int = 5
    square_m: float = 0.04
    marker_m: float = 0.03
    dictionary: str = "DICT_5X5_100"
    min_corners: int = 6

    def board(self) -> cv2.aruco.CharucoBoard:
        """The OpenCV board object."""
        dict_id = getattr(cv2.aruco, self.dictionary, None)
        if dict_id is None:
            raise InputError(f"unknown ArUco dictionary {self.dictionary!r}")
        dictionary = cv2.aruco.getPredefinedDictionary(dict_id)
        return cv2.aruco.CharucoBoard(
            (self.squares_x, self.squares_y), self.square_m, self.marker_m, dictionary
        )


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`calibrate_camera` found.

    Attributes:
        intrinsics: pinhole intrinsics (with the image size).
        dist_coeffs: (5,) float64 OpenCV distortion ``(k1, k2, p1, p2, k3)``.
        rms_px: root-mean-square reprojection error over all used corners, pixels.
        used_images: names (paths) of the images where the board was found, input order.
    """

    intrinsics: Intrinsics
    dist_coeffs: np.ndarray = field(repr=False)
    rms_px: float
    used_images: tuple[str, ...]


def _find_checkerboard(gray: np.ndarray, pattern: CheckerboardPattern) -> np.ndarray | None:
    """(M, 1, 2) float32 corners in OpenCV's order, refined to sub-pixel, or None."""
    size = (pattern.inner_cols, pattern.inner_rows)
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
    found, corners = cv2.findChessboardCorners(gray, size, flags=flags)
    if not found:
        return None
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)
    return cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), criteria)


def _board_finder(
    pattern: CheckerboardPattern | CharucoPattern,
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """A function gray image -> (object points (M, 1, 3), image points (M, 1, 2)) or None."""
    if isinstance(pattern, CheckerboardPattern):
        object_points = pattern.object_points().reshape(-1, 1, 3)

        def find_checkerboard(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
            corners = _find_checkerboard(gray, pattern)
            if corners is None:
                return None
            return object_points, corners.reshape(-1, 1, 2).astype(np.float32)

        return find_checkerboard

    board = pattern.board()
    detector = cv2.aruco.CharucoDetector(board)

    def find_charuco(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        corners, ids, _, _ = detector.detectBoard(gray)
        if ids is None or len(ids) < pattern.min_corners:
            return None
        obj, img = board.matchImagePoints(corners, ids)
        return obj.reshape(-1, 1, 3).astype(np.float32), img.reshape(-1, 1, 2).astype(np.float32)

    return find_charuco


def calibrate_camera_images(
    images: Sequence[np.ndarray],
    pattern: CheckerboardPattern | CharucoPattern = CheckerboardPattern(),
    names: Sequence[str] | None = None,
    min_boards: int = 3,
) -> CalibrationResult:
    """Calibrate from in-memory images (see :func:`calibrate_camera`).

    Args:
        images: RGB uint8 (H, W, 3) or grayscale (H, W) images, all the same size.
        pattern: the board that appears in the images.
        names: one name per image for ``used_images`` and messages; defaults to ``"image <i>"``.
        min_boards: fewest images with a detected board.
    """
    if min_boards < 1:
        raise ValueError(f"min_boards must be >= 1, got {min_boards}")
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    if len(names) != len(images):
        raise ValueError("give one name per image")
    if not images:
        raise InputError("calibration needs images of the board; none were given")
    size: tuple[int, int] | None = None
    obj_all: list[np.ndarray] = []
    img_all: list[np.ndarray] = []
    used: list[str] = []
    find = _board_finder(pattern)
    for name, image in zip(names, images):
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape[:2]
        if size is None:
            size = (w, h)
        elif size != (w, h):
            raise InputError(
                f"all calibration images must have the same size: {name} is {w}x{h}, "
                f"the first is {size[0]}x{size[1]}"
            )
        found = find(gray)
        if found is None:
            log.debug("calibration: no board found in %s", name)
            continue
        obj_all.append(found[0])
        img_all.append(found[1])
        used.append(name)
    if len(used) < min_boards:
        what = (
            f"{pattern.inner_cols}x{pattern.inner_rows} inner-corner checkerboard"
            if isinstance(pattern, CheckerboardPattern)
            else f"{pattern.squares_x}x{pattern.squares_y} ChArUco board ({pattern.dictionary})"
        )
        raise InputError(
            f"found the {what} in only {len(used)} of {len(images)} images; calibration needs "
            f"at least {min_boards}. Check the pattern size and show the whole board, sharp "
            f"and at several angles."
        )
    rms, K, dist, _, _ = cv2.calibrateCamera(obj_all, img_all, size, None, None)  # noqa: N806
    intr = intrinsics_from_matrix(K, *size)  # type: ignore[misc]  (size set by the loop)
    log.debug("calibrated from %d images: fx=%.1f fy=%.1f rms=%.3f px", len(used), intr.fx,
             intr.fy, rms)
    return CalibrationResult(
        intrinsics=intr,
        dist_coeffs=np.asarray(dist, np.float64).reshape(-1)[:5],
        rms_px=float(rms),
        used_images=tuple(used),
    )


def calibrate_camera(
    image_paths: Iterable[PathLike],
    pattern: CheckerboardPattern | CharucoPattern = CheckerboardPattern(),
    min_boards: int = 3,
) -> CalibrationResult:
    """Calibrate a camera from photos of a checkerboard or ChArUco board.

    Show the whole board at several tilts (about 10 to 20 images); the board's physical size
    matters only for ``square_m``, which does not affect the intrinsics.

    Args:
        image_paths: image files (any format OpenCV reads), all the same size.
        pattern: :class:`CheckerboardPattern` (inner corners!) or :class:`CharucoPattern`.
        min_boards: fewest images with a detected board (OpenCV needs 3 views of a planar
            board for a stable focal length and principal point).

    Returns:
        :class:`CalibrationResult` with intrinsics, distortion, RMS error and used images.

    Raises:
        InputError: an unreadable image, images of different sizes, or fewer than
            ``min_boards`` images with a detected board.
    """
    paths = [Path(p) for p in image_paths]
    images = []
    from core.inputs import check_image_file

    for p in paths:
        check_image_file(p, "the calibration image")
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"cannot read calibration image {p}")
        images.append(bgr_to_rgb(bgr))
    return calibrate_camera_images(images, pattern, [str(p) for p in paths], min_boards)
