"""Persisted preferences (QSettings): last source, intrinsics, refinement, device, texture."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from PySide6.QtCore import QSettings

DEVICES = ("cpu", "cuda")

#: Silhouette refinement iterations per live frame by default (the engine's live setting:
#: with the texture a frame then costs about 1.3-1.4x MediaPipe's time, ``bench``).
LIVE_REFINE_ITERATIONS = 3

#: The stored settings' format: 2 since refinement is on by default. Version 1 stores (no
#: version key) saved every field, so their ``refine_iterations`` of 0 is the old default, not
#: a choice: it is not read back.
SETTINGS_VERSION = 2


def cuda_available() -> bool:
    return bool(torch.cuda.is_available())


@dataclass(frozen=True)
class AppSettings:
    """What the app remembers between runs.

    Attributes:
        last_source: the SRC last tracked ("demo", "0", a path; "a|b" for a stereo pair).
        intrinsics_mode: "none" (what the source carries, else an assumed camera), "file", "fov"
            or "weak" (weak perspective where the source carries no camera).
        intrinsics_file: path of an intrinsics JSON/NPY (mode "file").
        fov_deg: horizontal field of view in degrees (mode "fov").
        refine_iterations: silhouette refinement iterations per frame (0: off; default
            :data:`LIVE_REFINE_ITERATIONS`).
        fit_iterations: tailor (Levenberg-Marquardt) iterations per frame.
        device: "cpu" or "cuda".
        texture: capture the skin texture while tracking.
        silhouette: draw the silhouettes over the camera image.
        realtime: play files at their frame rate (off: as fast as the engine goes).
        active_profile: path of the profile driving identity-aware tracking ("" for none).
        profiles_dir: where profiles are kept ("" for the default).
    """

    last_source: str = "demo"
    intrinsics_mode: str = "none"
    intrinsics_file: str = ""
    fov_deg: float = 60.0
    refine_iterations: int = LIVE_REFINE_ITERATIONS
    fit_iterations: int = 20
    device: str = "cpu"
    texture: bool = True
    silhouette: bool = True
    realtime: bool = True
    active_profile: str = ""
    profiles_dir: str = ""
    recent_sources: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def load(cls, store: QSettings) -> AppSettings:
        """Read from ``store``; missing or malformed values fall back to the defaults."""
        values: dict[str, Any] = {}
        default = cls()
        old = store.value("settings_version") is None
        for f in fields(cls):
            raw = store.value(f.name)
            if raw is None or (old and f.name == "refine_iterations"):
                continue
            current = getattr(default, f.name)
            try:
                if isinstance(current, bool):
                    value: Any = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
                elif isinstance(current, int):
                    value = int(raw)
                elif isinstance(current, float):
                    value = float(raw)
                elif isinstance(current, tuple):
                    value = tuple(str(x) for x in (raw if isinstance(raw, (list, tuple)) else [raw]) if str(x))
                else:
                    value = str(raw)
            except (TypeError, ValueError):
                continue
            values[f.name] = value
        settings = replace(default, **values)
        if settings.device not in DEVICES or (settings.device == "cuda" and not cuda_available()):
            settings = replace(settings, device="cpu")
        if settings.intrinsics_mode not in ("none", "file", "fov", "weak"):
            settings = replace(settings, intrinsics_mode="none")
        return settings

    def save(self, store: QSettings) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            store.setValue(f.name, list(value) if isinstance(value, tuple) else value)
        store.setValue("settings_version", SETTINGS_VERSION)
        store.sync()

    def with_recent(self, source: str, keep: int = 8) -> AppSettings:
        recent = (source,) + tuple(s for s in self.recent_sources if s != source)
        return replace(self, last_source=source, recent_sources=recent[:keep])


def open_store() -> QSettings:
    """The app's QSettings (organization and application "HandTwin")."""
    return QSettings("HandTwin", "HandTwin")
