"""Calibrated stereo pairs: the calibration file, triangulation and the pair as one source.

The calibration file is JSON ``{"K1": 3x3, "K2": 3x3, "R": 3x3, "T": 3}`` (pixels; metres), as
``cv2.stereoCalibrate`` reports it: ``x2 = R @ x1 + T`` takes the reference (first) camera's
coordinates to the second camera's. :func:`open_stereo` opens the two sources with those
intrinsics and pairs their frames by timestamp (:class:`~core.capture.multi.SynchronizedSource`);
:class:`core.stereo.StereoEngine` tracks one hand from both views in the reference camera.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InputError

__all__ = ["StereoCalibration", "StereoSource", "load_stereo_calibration", "open_stereo", "triangulate_keypoints"]


@dataclass(frozen=True)
class StereoCalibration:
    """Two calibrated cameras: K1, K2 (3, 3) px; R (3, 3), T (3,) metres take camera-1
    coordinates to camera 2 (x2 = R x1 + T), as cv2.stereoCalibrate reports them."""

    K1: np.ndarray
    K2: np.ndarray
    R: np.ndarray
    T: np.ndarray

    def to_reference(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) points of camera 2's frame in camera 1's (``R^T (x2 - T)``), metres."""
        return (np.asarray(points, dtype=np.float64) - self.T) @ self.R


def load_stereo_calibration(path: str | Path) -> StereoCalibration:
    """Read {"K1": 3x3, "K2": 3x3, "R": 3x3, "T": 3 (metres)} JSON.

    Raises:
        InputError: an unreadable or unbounded file, missing keys, wrong shapes, non-finite
            numbers, focal lengths that are not positive, or an R that is not a rotation.
    """
    from core.inputs import read_json

    doc = read_json(path, "stereo calibration")
    missing = [k for k in ("K1", "K2", "R", "T") if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise InputError(f"the stereo calibration {path} needs K1, K2, R and T (metres); missing {', '.join(missing)}")
    try:
        cal = StereoCalibration(*(np.asarray(doc[k], dtype=np.float64) for k in ("K1", "K2", "R", "T")))
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise InputError(f"cannot read the stereo calibration {path}: {exc}") from exc
    if cal.K1.shape != (3, 3) or cal.K2.shape != (3, 3) or cal.R.shape != (3, 3) or cal.T.reshape(-1).shape != (3,):
        raise InputError(f"{path}: K1, K2, R must be 3x3 and T 3 values")
    if not all(np.isfinite(a).all() for a in (cal.K1, cal.K2, cal.R, cal.T)):
        raise InputError(f"{path}: K1, K2, R, T must be finite numbers")
    if min(cal.K1[0, 0], cal.K1[1, 1], cal.K2[0, 0], cal.K2[1, 1]) <= 0:
        raise InputError(f"{path}: the focal lengths of K1 and K2 must be positive")
    if not np.allclose(cal.R @ cal.R.T, np.eye(3), atol=1e-4) or np.linalg.det(cal.R) < 0:
        raise InputError(f"{path}: R is not a rotation matrix")
    return StereoCalibration(cal.K1, cal.K2, cal.R, cal.T.reshape(3))


def triangulate_keypoints(kp1: np.ndarray, kp2: np.ndarray, cal: StereoCalibration) -> np.ndarray:
    """(21, 3) keypoints in camera 1's frame, metres, from their pixels in both views."""
    import cv2

    p1 = cal.K1 @ np.hstack([np.eye(3), np.zeros((3, 1))])
    p2 = cal.K2 @ np.hstack([cal.R, cal.T.reshape(3, 1)])
    x = cv2.triangulatePoints(p1, p2, np.asarray(kp1, dtype=np.float64).T, np.asarray(kp2, dtype=np.float64).T)
    return (x[:3] / x[3]).T


class StereoSource:
    """A calibrated pair read together: iterating yields :class:`~core.capture.frame.FrameSet`s
    of (reference, second) frames whose intrinsics are the calibration's K1, K2.

    Attributes:
        pair: the synchronized sources. calibration: the pair's :class:`StereoCalibration`.
    """

    def __init__(self, pair, calibration: StereoCalibration) -> None:
        self.pair, self.calibration = pair, calibration
        self.name = pair.name

    def __iter__(self):
        return iter(self.pair)

    @property
    def fps(self) -> float | None:
        return self.pair.fps

    @property
    def frame_count(self) -> int | None:
        counts = [getattr(s, "frame_count", None) for s in self.pair.sources]
        return None if None in counts else min(counts)

    @property
    def ended_early(self) -> str | None:
        return self.pair.ended_early

    def close(self) -> None:
        self.pair.close()

    def __enter__(self) -> StereoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_stereo(spec: str | os.PathLike[str], spec2: str | os.PathLike[str],
                calibration: str | os.PathLike[str] | StereoCalibration,
                tolerance_s: float | None = None) -> StereoSource:
    """The reference SRC and the second camera's SRC2 as one calibrated stereo source.

    Raises:
        InputError: an unreadable calibration, or either source does not open.
    """
    from core.camera import intrinsics_from_matrix
    from core.capture.open import open_multi_source

    cal = calibration if isinstance(calibration, StereoCalibration) else load_stereo_calibration(calibration)
    pair = open_multi_source([spec, spec2], tolerance_s,
                             intrinsics=[intrinsics_from_matrix(cal.K1), intrinsics_from_matrix(cal.K2)])
    return StereoSource(pair, cal)
