"""Hand shape personalization (identity-aware paper, Sec. 3.4-3.5): candidate frames with
free-shape fits and confidences, frame selection, attention calibration (Eq. 6-7), metric
scale, profiles.

Public API::

    CalibrationSession(side="right", k=20, model=None, device="cpu")
        .offer(frame, result) -> CalibrationFrame | None     .candidates   .selected
        .add(i)   .drop(i)   .calibrate(scale=None, progress=None) -> CalibrationResult
        .to_profile(result, name) -> dict
    ScaleOption(source="prior" | "hand_length" | "aruco" | "stereo", ...)
    attention_weights(c, T=0.33), calibrate_shape(layer, betas, poses, weights)
"""

from core.personalize.attention import (
    DEFAULT_TEMPERATURE,
    Calibration,
    attention_weights,
    calibrate_shape,
    shape_jacobians,
)
from core.personalize.confidence import ConfidencePredictor
from core.personalize.scale import ScaleOption, SheetSpec, StereoCalibration
from core.personalize.selection import select_frames
from core.personalize.session import CalibrationFrame, CalibrationResult, CalibrationSession

__all__ = [
    "DEFAULT_TEMPERATURE",
    "Calibration",
    "CalibrationFrame",
    "CalibrationResult",
    "CalibrationSession",
    "ConfidencePredictor",
    "ScaleOption",
    "SheetSpec",
    "StereoCalibration",
    "attention_weights",
    "calibrate_shape",
    "select_frames",
    "shape_jacobians",
]
