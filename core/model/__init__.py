"""The hand model layer: MANO-layout model files served through smplx's MANO layer."""

from core.model.data import HandModelData, load_model_data, load_open_hand, mirror_model
from core.model.layer import HandModel, HandOutput, hand_measures
from core.model.personal import personal_model

__all__ = [
    "HandModel",
    "HandModelData",
    "HandOutput",
    "hand_measures",
    "load_model_data",
    "load_open_hand",
    "mirror_model",
    "personal_model",
]
