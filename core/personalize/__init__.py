"""Hand shape personalization: attention calibration of one shape from selected frames."""

from core.personalize.attention import (
    DEFAULT_TEMPERATURE,
    Calibration,
    attention_weights,
    calibrate_shape,
    shape_jacobians,
)

__all__ = ["DEFAULT_TEMPERATURE", "Calibration", "attention_weights", "calibrate_shape", "shape_jacobians"]
