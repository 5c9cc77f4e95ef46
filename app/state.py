"""The application's state, shared by the window's parts: settings, hand model, active profile,
the source being tracked and its latest frame, the calibration session and result, the texture.

The panels (calibration, profiles, export) bind to an :class:`AppState`: they read it, change
it through its methods and follow its signals; they never reach into the main window, which
only composes them and reacts to the same signals (status bar, title, tracking restarts).

Everything here lives in the GUI thread, except :attr:`AppState.calibration_lock`, which
guards the calibration session (touched by the tracking thread's frame hook and by jobs).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, QSettings, Signal

from app.jobs import JobRunner, describe_error
from app.settings import AppSettings
from core.errors import InputError

if TYPE_CHECKING:
    from core.model import HandModelData
    from core.profile_io import Profile

log = logging.getLogger(__name__)


def load_profile_for(path: str | Path, data: HandModelData | None) -> Profile:
    """Read the profile at ``path`` and check that its shape fits the hand model ``data``
    (a core.model.HandModelData, or None to skip the check).

    Raises:
        HandTwinError: the profile cannot be read or its shape has the wrong length.
    """
    from core.profile_io import load_profile

    profile = load_profile(path)
    if data is not None and len(profile.shape) != data.num_betas:
        raise InputError(f"the profile {Path(path).name}'s shape has {len(profile.shape)} values; "
                         f"the hand model {data.name} needs {data.num_betas}")
    return profile


def profile_texture(profile: Profile | None) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB of the profile's texture file, or None (no profile, no texture,
    unreadable file)."""
    if profile is None or profile.texture is None or not Path(profile.texture).is_file():
        return None
    import cv2

    bgr = cv2.imread(str(profile.texture), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class AppState(QObject):
    """What the window's parts share (see the module docstring).

    Args:
        store: where settings persist.
        settings: the settings to start from (saved to ``store`` on every change).
        model_path: the hand model path (None: ``$HANDTWIN_MODEL`` or the bundled open hand).
        jobs: the runner of long jobs (it owns the progress dialogs and message boxes).
        run_only: settings given on the command line for this run (``gui --fov 90``): in use
            now, but saved as the stored values they replaced until the user changes them.

    Signals (GUI thread):
        settings_changed(AppSettings); model_changed(HandModelData);
        profile_changed(Profile | None, restart: bool) - restart: a running source should
        restart with the new identity; source_changed(str) - the SRC tracked now, "" when
        stopped; calibration_changed(CalibrationResult | None); session_changed(session | None);
        texture_changed(ndarray | None); frame_hook_changed(callable | None) - the per-frame
        hook of auto-capture; message(text, ms) - a status line (0 ms: until replaced);
        error(title, text) - a failure the user must see (the window shows a message box).
    """

    settings_changed = Signal(object)
    model_changed = Signal(object)
    profile_changed = Signal(object, bool)
    source_changed = Signal(str)
    calibration_changed = Signal(object)
    session_changed = Signal(object)
    texture_changed = Signal(object)
    frame_hook_changed = Signal(object)
    message = Signal(str, int)
    error = Signal(str, str)

    def __init__(self, store: QSettings, settings: AppSettings, model_path: str | None, jobs: JobRunner,
                 parent: QObject | None = None, run_only: dict[str, Any] | None = None) -> None:
        super().__init__(parent)
        self.store = store
        run_only = dict(run_only or {})
        #: field -> (this run's value, the stored value it stands in for)
        self._run_only = {k: (v, getattr(settings, k)) for k, v in run_only.items()}
        self._settings = dataclasses.replace(settings, **run_only) if run_only else settings
        self.model_path = model_path
        self.jobs = jobs
        self.model_data: HandModelData | None = None
        self.profile: Profile | None = None
        self.source = ""
        self.current_update: Any = None  # app.worker.LiveUpdate of the frame on screen
        self.texture: np.ndarray | None = None
        #: Returns the live texture for a side ("right"/"left") or None (set by the window
        #: while a worker runs; it may be fresher than :attr:`texture`).
        self.live_texture: Callable[[str], np.ndarray | None] | None = None
        self.frame_hook: Callable[[tuple, Any], None] | None = None
        self.calibration_session: Any = None  # core.personalize.session.CalibrationSession
        self.calibration: Any = None  # core.personalize.session.CalibrationResult
        self.calibration_lock = threading.RLock()
        self.last_message = ""

    # ------------------------------------------------------------------ settings, model

    @property
    def settings(self) -> AppSettings:
        return self._settings

    def update_settings(self, **changes: Any) -> AppSettings:
        """Change some settings, save them and tell everyone."""
        self.set_settings(dataclasses.replace(self._settings, **changes) if changes else self._settings)
        return self._settings

    def set_settings(self, settings: AppSettings, save: bool = True) -> None:
        self._settings = settings
        if save:
            self._stored(settings).save(self.store)
        self.settings_changed.emit(settings)

    def save_settings(self) -> None:
        """Save the current settings (less the command line's run-only values)."""
        self._stored(self._settings).save(self.store)

    def _stored(self, settings: AppSettings) -> AppSettings:
        """What is saved: ``settings`` with the command line's run-only values replaced by the
        stored ones they stand in for, while they are still in use (a value the user changed
        is the user's and is saved)."""
        keep = {k: stored for k, (run, stored) in self._run_only.items() if getattr(settings, k) == run}
        return dataclasses.replace(settings, **keep) if keep else settings

    def set_model(self, data: HandModelData) -> None:
        self.model_data = data
        self.model_changed.emit(data)

    @property
    def profiles_directory(self) -> Path:
        from core.profile_io import profiles_dir

        return Path(self._settings.profiles_dir) if self._settings.profiles_dir else profiles_dir()

    @property
    def export_directory(self) -> Path:
        return self.profiles_directory.parent / "exports"

    @property
    def sessions_directory(self) -> Path:
        return self.profiles_directory.parent / "sessions"

    # ------------------------------------------------------------------ messages

    def show_message(self, text: str, ms: int = 0) -> None:
        """A status line (the window's status bar)."""
        self.message.emit(text, int(ms))

    def fail(self, title: str, text: str, quiet: bool = False) -> None:
        """A failure: remembered as :attr:`last_message`; a message box, or only a status line
        when ``quiet`` (e.g. at start-up)."""
        self.last_message = text
        if quiet:
            log.warning(text)
            self.message.emit(text, 8000)
        else:
            self.error.emit(title, text)

    # ------------------------------------------------------------------ profile

    def set_profile(self, profile: Profile | None, restart: bool = True) -> None:
        """Make ``profile`` (or None) the active one for identity-aware tracking; its texture,
        if any, becomes the current texture."""
        self.profile = profile
        self._settings = dataclasses.replace(
            self._settings, active_profile=str(profile.path) if profile is not None and profile.path else "")
        self.save_settings()
        self.set_texture(profile_texture(profile))
        self.profile_changed.emit(profile, bool(restart))

    def load_profile_file(self, path: str | Path, restart: bool = True, quiet: bool = False) -> bool:
        """Read a profile and make it the active one; a bad file gives a message and changes nothing."""
        try:
            profile = load_profile_for(path, self.model_data)
        except Exception as exc:  # noqa: BLE001 - a corrupt profile is a message, never a crash
            self.fail("Profile", f"Cannot use the profile {Path(path).name}: {describe_error(exc)}", quiet=quiet)
            return False
        self.set_profile(profile, restart=restart)
        return True

    def save_profile(self, doc: dict[str, Any]) -> Path:
        """Write the profile document ``doc`` (with the current texture next to it) into the
        profiles folder and make it the active profile.

        Raises:
            HandTwinError, OSError: it cannot be written (nothing changes then).
        """
        import cv2

        from core.profile_io import profile_file_name, save_profile

        folder = self.profiles_directory
        path = folder / profile_file_name(doc["name"])
        folder.mkdir(parents=True, exist_ok=True)
        texture = self.current_texture()
        if texture is not None:
            tex_name = path.with_suffix(".png").name
            if not cv2.imwrite(str(folder / tex_name), cv2.cvtColor(texture, cv2.COLOR_RGB2BGR)):
                raise OSError(f"cannot write the texture {folder / tex_name}")
            doc = {**doc, "texture": tex_name}
        saved = Path(save_profile(path, doc))
        self.load_profile_file(saved)
        return saved

    # ------------------------------------------------------------------ source, frame, texture

    @property
    def tracking(self) -> bool:
        """Whether a source is being tracked."""
        return bool(self.source)

    def set_source(self, spec: str) -> None:
        if spec != self.source:
            self.source = spec
            self.source_changed.emit(spec)

    def current_hand_fit(self) -> Any:
        """The first hand's fit (core.fit.HandFit) of the frame on screen, or None."""
        u = self.current_update
        return u.result.hands[0].fit if u is not None and u.result.hands else None

    def set_texture(self, texture: np.ndarray | None) -> None:
        self.texture = texture
        self.texture_changed.emit(texture)

    def current_texture(self) -> np.ndarray | None:
        """The live texture of the hand on screen when texture capture runs, else the last one
        (captured, or the active profile's)."""
        if self.live_texture is not None and self._settings.texture:
            fit = self.current_hand_fit()
            try:
                tex = self.live_texture(fit.side if fit is not None else "right")
            except Exception:  # noqa: BLE001 - a texture that cannot be read now: the last one
                log.debug("no live texture", exc_info=True)
                tex = None
            if tex is not None:
                return tex
        return self.texture

    def export_shape(self) -> tuple[np.ndarray, str]:
        """(shape, side) to export: the profile's, else the current frame's, else the mean."""
        if self.profile is not None:
            side = self.profile.handedness if self.profile.handedness in ("right", "left") else "right"
            return np.asarray(self.profile.shape, np.float32), side
        fit = self.current_hand_fit()
        if fit is not None:
            return np.asarray(fit.betas, np.float32), fit.side
        n = self.model_data.num_betas if self.model_data is not None else 10
        return np.zeros(n, np.float32), "right"

    # ------------------------------------------------------------------ calibration

    def set_frame_hook(self, hook: Callable[[tuple, Any], None] | None) -> None:
        """The hook the tracking worker calls for every frame (auto-capture), or None."""
        self.frame_hook = hook
        self.frame_hook_changed.emit(hook)

    def set_calibration_session(self, session: Any) -> None:
        with self.calibration_lock:
            self.calibration_session = session
        self.session_changed.emit(session)

    def set_calibration(self, result: Any) -> None:
        """The calibration result (None: not calibrated); the active profile is not touched."""
        self.calibration = result
        self.calibration_changed.emit(result)
