"""Fitting the hand model to detections: analytic initialization and the tailor optimization."""

from core.fit.kinematics import KeypointModel
from core.fit.skeleton import Skeleton
from core.fit.tailor import FitSettings, HandFit, HandObservation, TailorFitter, fit_camera

__all__ = ["FitSettings", "HandFit", "HandObservation", "KeypointModel", "Skeleton", "TailorFitter", "fit_camera"]
