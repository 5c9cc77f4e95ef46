"""Reading hand profiles (the JSON of DESIGN.md), with clear errors for malformed files.

Personalization (calibration) writes them; tracking reads the shape to fix the hand's size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError

PROFILE_FORMAT = "handtwin-profile"
PROFILE_VERSION = 1


@dataclass(frozen=True)
class ProfileShape:
    """What tracking needs from a profile: the personal shape.

    Attributes:
        name: the profile's name. handedness: "right", "left" or "both".
        shape: (S,) float32 shape coefficients of the model named in ``model_name``.
        model_name, model_sha256: the hand model the shape belongs to.
        hand_length_mm, hand_width_mm: the measures recorded in the profile.
        raw: the whole JSON document.
    """

    name: str
    handedness: str
    shape: np.ndarray
    model_name: str
    model_sha256: str
    hand_length_mm: float
    hand_width_mm: float
    raw: dict[str, Any]


def load_profile_shape(path: str | Path) -> ProfileShape:
    """Read and validate a profile file.

    Raises:
        InputError: missing file, invalid JSON, wrong format or version, bad shape values.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"profile not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the profile {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"the profile {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
        raise InputError(f"{path} is not a HandTwin profile (format must be '{PROFILE_FORMAT}')")
    version = doc.get("version")
    if not isinstance(version, int) or version > PROFILE_VERSION:
        raise InputError(f"{path}: unsupported profile version {version!r} (this HandTwin reads up to {PROFILE_VERSION})")
    shape = doc.get("shape")
    try:
        arr = np.asarray(shape, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"{path}: 'shape' must be a list of numbers") from None
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all() or np.abs(arr).max() > 10:
        raise InputError(f"{path}: 'shape' must be a list of finite numbers within +-10 (got {shape!r:.80})")
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    return ProfileShape(
        name=str(doc.get("name", path.stem)),
        handedness=str(doc.get("handedness", "both")),
        shape=arr,
        model_name=str(model.get("name", "")),
        model_sha256=str(model.get("sha256", "")),
        hand_length_mm=float(doc.get("hand_length_mm") or 0.0),
        hand_width_mm=float(doc.get("hand_width_mm") or 0.0),
        raw=doc,
    )
