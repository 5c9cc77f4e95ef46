"""Hand profiles (the JSON of docs/ARCHITECTURE.md): read, validate, write atomically, list, rename, delete.

Personalization (calibration) writes them; tracking reads the identity to fix the hand
(:func:`load_profile`, :attr:`Profile.identity`); the GUI manages them (:func:`list_profiles`,
...). Every malformed file raises :class:`~core.errors.InputError` with the reason.

Version 2 adds the personal identity beyond the shape (all optional, null when absent):
``skeleton_mm`` (21 x 3 rest keypoints, MediaPipe order, millimetres, the **right** hand's
rest frame at the profile's shape; a left hand uses the mirror image), ``surface_offsets_mm``
(V x 3 per-vertex offsets, same frame), ``focal_px`` with ``focal_image_size`` [w, h] (the
focal length calibration estimated for a camera without intrinsics), ``rejected_frames``
([{source, frame, reason}]) and ``scale_note`` (a sentence on where the size comes from).
Version 1 profiles still load (no personal skeleton: the model's own).

Version 3 stores the **surface** calibration fits (:mod:`core.personalize.surface`) compactly in
``profile["surface"]`` (null when there is none)::

    "surface": {
        "offsets_mm": {"dtype": "float16", "shape": [V, 3], "base64": "..."},
        "mean_mm": 0.62, "max_mm": 2.9,          # mean and largest offset length, mm
        "frames": 18,                            # calibration frames it was fitted to
        "iou_before": 0.91, "iou_after": 0.95    # their mean silhouette IoU without / with it
    }

``offsets_mm`` is the (V, 3) per-vertex offset array in millimetres, the right hand's personal
rest frame (like ``skeleton_mm``; a left hand uses the mirror image), little-endian ``float16``
or ``float32``, base64; it is added to the personal model's rest mesh
(:func:`core.model.personal.personal_model`). ``mean_mm`` and ``max_mm`` are what a viewer
shows; :attr:`Profile.surface_offsets_mm` is the decoded array (a version 2 profile's
``surface_offsets_mm`` list loads into it too). Versions 1 and 2 still load.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError

log = logging.getLogger(__name__)

PROFILE_FORMAT = "handtwin-profile"
PROFILE_VERSION = 3


# ----------------------------------------------------------------------------- full profiles

SCALE_SOURCES = ("prior", "hand_length", "aruco", "stereo", "depth")


@dataclass(frozen=True)
class Profile:
    """A whole hand profile (docs/ARCHITECTURE.md), validated.

    Attributes:
        name: display name. handedness: "right", "left" or "both".
        shape: (S,) float32 shape coefficients. hand_length_mm, hand_width_mm: measures.
        bone_lengths_mm: (20,) float32 (child order 1..20 of the keypoint tree), or empty.
        scale_source: "prior" | "hand_length" | "aruco" | "stereo" | "depth".
        frames: the calibration frames [{"source", "frame", "confidence", "weight"}].
        texture: absolute path of the texture PNG (stored relative to the JSON), or None.
        created: ISO 8601 time. path: the file read. model_name, model_sha256: the model.
        raw: the whole JSON document.
        skeleton_mm: (21, 3) float64 personal rest keypoints, mm, right hand's frame, or None.
        surface_offsets_mm: (V, 3) float64 surface offsets, mm, right hand's frame, or None
            (version 3: decoded from ``profile["surface"]``; version 2: its list).
        focal_px: estimated focal length (pixels) for ``focal_image_size`` (w, h), or None.
        rejected_frames: calibration frames the optimization rejected [{source, frame, reason}].
        scale_note: where the size comes from, in words ("" in version 1 profiles).
    """

    name: str
    handedness: str
    shape: np.ndarray
    hand_length_mm: float
    hand_width_mm: float
    bone_lengths_mm: np.ndarray
    scale_source: str
    frames: tuple[dict[str, Any], ...]
    texture: Path | None
    created: str
    raw: dict[str, Any]
    path: Path | None = None
    model_name: str = ""
    model_sha256: str = ""
    skeleton_mm: np.ndarray | None = None
    surface_offsets_mm: np.ndarray | None = None
    focal_px: float | None = None
    focal_image_size: tuple[int, int] | None = None
    rejected_frames: tuple[dict[str, Any], ...] = ()
    scale_note: str = ""

    @property
    def identity(self):  # -> core.model.personal.PersonalIdentity
        """The personal identity (shape, skeleton and surface offsets in metres) to build the
        personal model from (:func:`core.model.personal.identity_model`)."""
        from core.model.personal import PersonalIdentity

        return PersonalIdentity(
            shape=self.shape,
            skeleton=None if self.skeleton_mm is None else self.skeleton_mm / 1000.0,
            offsets=None if self.surface_offsets_mm is None else self.surface_offsets_mm / 1000.0,
        )


def _number(doc: dict, key: str, where: str, lo: float, hi: float) -> float:
    v = doc.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or not lo <= v <= hi:
        raise InputError(f"{where}: '{key}' must be a number in [{lo:g}, {hi:g}] (got {v!r:.40})")
    return float(v)


def validate_profile(doc: Any, where: str = "profile") -> None:
    """Check a profile document completely; raise :class:`InputError` naming the first problem."""
    if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
        raise InputError(f"{where} is not a HandTwin profile (format must be '{PROFILE_FORMAT}')")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= PROFILE_VERSION:
        raise InputError(f"{where}: unsupported profile version {version!r} "
                         f"(this HandTwin reads 1 to {PROFILE_VERSION})")
    if not isinstance(doc.get("name"), str) or not doc["name"].strip() or "\x00" in doc["name"]:
        raise InputError(f"{where}: 'name' must be a non-empty string")
    if doc.get("handedness") not in ("right", "left", "both"):
        raise InputError(f"{where}: 'handedness' must be 'right', 'left' or 'both'")
    model = doc.get("model")
    if (not isinstance(model, dict) or not isinstance(model.get("name"), str)
            or not isinstance(model.get("sha256"), str)):
        raise InputError(f"{where}: 'model' must be {{\"name\": str, \"sha256\": str}}")
    shape = doc.get("shape")
    if (not isinstance(shape, list) or not shape or len(shape) > 300
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in shape)
            or not np.isfinite(np.asarray(shape, dtype=np.float64)).all()
            or np.abs(np.asarray(shape, dtype=np.float64)).max() > 10):
        raise InputError(f"{where}: 'shape' must be a list of finite numbers within +-10")
    _number(doc, "hand_length_mm", where, 50.0, 400.0)
    _number(doc, "hand_width_mm", where, 10.0, 200.0)
    bones = doc.get("bone_lengths_mm")
    if (not isinstance(bones, list) or len(bones) != 20
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and 0 < v < 200
                       for v in bones)):
        raise InputError(f"{where}: 'bone_lengths_mm' must be 20 positive numbers (mm)")
    if doc.get("scale_source") not in SCALE_SOURCES:
        raise InputError(f"{where}: 'scale_source' must be one of {', '.join(SCALE_SOURCES)}")
    frames = doc.get("frames")
    if not isinstance(frames, list) or not all(
            isinstance(f, dict) and isinstance(f.get("source"), str) and isinstance(f.get("frame"), int)
            and isinstance(f.get("confidence"), (int, float)) and isinstance(f.get("weight"), (int, float))
            for f in frames):
        raise InputError(f"{where}: 'frames' must be a list of {{source, frame, confidence, weight}}")
    tex = doc.get("texture")
    if tex is not None and (not isinstance(tex, str) or not tex or len(tex) > 255 or not tex.isprintable()
                            or Path(tex).is_absolute() or ".." in Path(tex).parts):
        raise InputError(f"{where}: 'texture' must be null or a file name next to the profile")
    if not isinstance(doc.get("created"), str):
        raise InputError(f"{where}: 'created' must be an ISO 8601 time string")
    if version >= 2:
        _validate_v2(doc, where)


#: Bounds of the version 2 fields: rest keypoints within this many mm of the wrist's frame
#: origin, bones of a plausible hand, surface offsets, vertices, focal lengths.
_MAX_KEYPOINT_MM = 500.0
_BONE_MM = (2.0, 150.0)
_MAX_OFFSET_MM = 30.0
_MAX_VERTICES = 100_000
_FOCAL_PX = (10.0, 100_000.0)


def _number_array(value: Any, rows: int | None, where: str, key: str, bound: float) -> np.ndarray:
    """A (rows, 3) array of finite numbers within +-bound, or InputError."""
    what = f"{where}: '{key}' must be null or a list of {rows if rows else 'N'} [x, y, z] numbers within +-{bound:g}"
    if (not isinstance(value, list) or not value or (rows is not None and len(value) != rows)
            or len(value) > _MAX_VERTICES):
        raise InputError(what)
    for row in value:
        if (not isinstance(row, list) or len(row) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row)):
            raise InputError(what)
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all() or np.abs(arr).max() > bound:
        raise InputError(what)
    return arr


def _validate_v2(doc: dict[str, Any], where: str) -> None:
    from core.keypoints import bone_lengths

    skel = doc.get("skeleton_mm")
    if skel is not None:
        arr = _number_array(skel, 21, where, "skeleton_mm", _MAX_KEYPOINT_MM)
        bones = bone_lengths(arr)
        if bones.min() < _BONE_MM[0] or bones.max() > _BONE_MM[1]:
            raise InputError(f"{where}: 'skeleton_mm' is not a hand: bone lengths must be "
                             f"{_BONE_MM[0]:g}-{_BONE_MM[1]:g} mm "
                             f"(got {bones.min():.1f}-{bones.max():.1f})")
    offsets = doc.get("surface_offsets_mm")
    if offsets is not None:
        _number_array(offsets, None, where, "surface_offsets_mm", _MAX_OFFSET_MM)
    if doc["version"] >= 3 and doc.get("surface") is not None:
        if offsets is not None:
            raise InputError(f"{where}: give the surface once, in 'surface' (not also 'surface_offsets_mm')")
        decode_surface(doc["surface"], where)
    focal = doc.get("focal_px")
    if focal is not None:
        _number(doc, "focal_px", where, *_FOCAL_PX)
        size = doc.get("focal_image_size")
        if (not isinstance(size, list) or len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                    and 1 <= v <= 100_000 for v in size)):
            raise InputError(f"{where}: 'focal_image_size' must be [width, height] in pixels when 'focal_px' is given")
    rejected = doc.get("rejected_frames", [])
    if not isinstance(rejected, list) or len(rejected) > 10_000 or not all(
            isinstance(f, dict) and isinstance(f.get("source"), str) and isinstance(f.get("frame"), int)
            and not isinstance(f.get("frame"), bool) and isinstance(f.get("reason"), str) for f in rejected):
        raise InputError(f"{where}: 'rejected_frames' must be a list of {{source, frame, reason}}")
    note = doc.get("scale_note", "")
    if not isinstance(note, str) or len(note) > 1000:
        raise InputError(f"{where}: 'scale_note' must be a short string")


_SURFACE_DTYPES = {"float16": "<f2", "float32": "<f4"}


def encode_surface(offsets_mm: np.ndarray, dtype: str = "float16", **extra: Any) -> dict[str, Any]:
    """The ``profile["surface"]`` object of (V, 3) offsets in millimetres (module docstring);
    ``extra``: more fields (``frames``, ``iou_before``, ``iou_after``)."""
    import base64

    arr = np.asarray(offsets_mm, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3 or not np.isfinite(arr).all():
        raise ValueError(f"surface offsets must be finite (V, 3), got shape {arr.shape}")
    stored = arr.astype(_SURFACE_DTYPES[dtype])
    lengths = np.linalg.norm(stored.astype(np.float64), axis=1)
    return {
        "offsets_mm": {"dtype": dtype, "shape": [int(arr.shape[0]), 3],
                       "base64": base64.b64encode(stored.tobytes()).decode("ascii")},
        "mean_mm": round(float(lengths.mean()), 3),
        "max_mm": round(float(lengths.max()), 3),
        **extra,
    }


def decode_surface(surface: Any, where: str = "profile") -> np.ndarray:
    """(V, 3) float64 offsets (mm) of a ``profile["surface"]`` object, fully checked.

    Raises:
        InputError: anything malformed (one message naming ``'surface'``).
    """
    import base64
    import binascii

    what = (f"{where}: 'surface' must be null or {{\"offsets_mm\": {{\"dtype\": \"float16\" or \"float32\", "
            f"\"shape\": [V, 3], \"base64\": ...}}, \"mean_mm\", \"max_mm\", ...}} with V <= {_MAX_VERTICES} "
            f"and offsets within +-{_MAX_OFFSET_MM:g} mm")
    if not isinstance(surface, dict) or not isinstance(surface.get("offsets_mm"), dict):
        raise InputError(what)
    enc = surface["offsets_mm"]
    dtype, shape, data = enc.get("dtype"), enc.get("shape"), enc.get("base64")
    if (dtype not in _SURFACE_DTYPES or not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
            or not 1 <= shape[0] <= _MAX_VERTICES or shape[1] != 3 or not isinstance(data, str)):
        raise InputError(what)
    nbytes = shape[0] * 3 * np.dtype(_SURFACE_DTYPES[dtype]).itemsize
    if len(data) != 4 * ((nbytes + 2) // 3):  # before decoding anything
        raise InputError(f"{what} (the base64 data has {len(data)} characters, {shape} {dtype} needs "
                         f"{4 * ((nbytes + 2) // 3)})")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what} (its base64 data is not valid base64)") from None
    arr = np.frombuffer(raw, dtype=_SURFACE_DTYPES[dtype]).astype(np.float64).reshape(shape)
    if not np.isfinite(arr).all() or np.abs(arr).max() > _MAX_OFFSET_MM:
        raise InputError(what)
    for key in ("mean_mm", "max_mm"):
        v = surface.get(key)
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v)
                or not 0 <= v <= 2 * _MAX_OFFSET_MM):
            raise InputError(what)
    for key in ("frames", "iou_before", "iou_after"):
        v = surface.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v)
                              or not 0 <= v <= 100_000):
            raise InputError(what)
    return arr


def _read_json(path: Path) -> Any:
    from core.inputs import read_json

    return read_json(path, "profile")


def profile_from_doc(doc: dict[str, Any], path: Path | None = None) -> Profile:
    """A validated :class:`Profile` from a document (``path``: where it lives, for the texture)."""
    validate_profile(doc, str(path) if path else "profile")
    tex = doc.get("texture")
    return Profile(
        name=doc["name"],
        handedness=doc["handedness"],
        shape=np.asarray(doc["shape"], dtype=np.float32),
        hand_length_mm=float(doc["hand_length_mm"]),
        hand_width_mm=float(doc["hand_width_mm"]),
        bone_lengths_mm=np.asarray(doc["bone_lengths_mm"], dtype=np.float32),
        scale_source=doc["scale_source"],
        frames=tuple(dict(f) for f in doc["frames"]),
        texture=None if tex is None else ((path.parent / tex) if path is not None else Path(tex)),
        created=doc["created"],
        raw=doc,
        path=path,
        model_name=doc["model"]["name"],
        model_sha256=doc["model"]["sha256"],
        **_v2_fields(doc),
    )


def _v2_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The version 2 attributes of a validated document (defaults for version 1)."""
    if doc["version"] < 2:
        return {}
    skel, offsets, focal = doc.get("skeleton_mm"), doc.get("surface_offsets_mm"), doc.get("focal_px")
    surface = doc.get("surface") if doc["version"] >= 3 else None
    return {
        "skeleton_mm": None if skel is None else np.asarray(skel, dtype=np.float64),
        "surface_offsets_mm": (decode_surface(surface) if surface is not None
                               else None if offsets is None else np.asarray(offsets, dtype=np.float64)),
        "focal_px": None if focal is None else float(focal),
        "focal_image_size": None if focal is None else tuple(int(v) for v in doc["focal_image_size"]),
        "rejected_frames": tuple(dict(f) for f in doc.get("rejected_frames", [])),
        "scale_note": str(doc.get("scale_note", "")),
    }


def load_profile(path: str | Path) -> Profile:
    """Read and fully validate a profile file.

    Raises:
        InputError: missing or unreadable file, invalid JSON, any malformed field.
    """
    path = Path(path)
    return profile_from_doc(_read_json(path), path)


def check_profile_model(profile: Profile, model: str | os.PathLike[str] | None) -> None:
    """Refuse a profile made with another hand model than ``model`` (None: the model in use).

    A shape is a set of coefficients of one model's shape space: on another model it is a
    different hand. Profiles that name no model (an empty ``sha256``) are accepted.

    Raises:
        InputError: the profile's ``model.sha256`` differs from the file of the model in use
            (for the profile's side; either side for "both"), or its shape has another number
            of coefficients than that model's shape space. ModelFileError: no model.
    """
    from core.model import load_model_data

    sides = (profile.handedness,) if profile.handedness in ("right", "left") else ("right", "left")
    datas = [load_model_data(model, side) for side in sides]  # type: ignore[arg-type]
    where = profile.path if profile.path is not None else f"the profile {profile.name!r}"
    if len(profile.shape) != datas[0].num_betas:  # an edited or foreign file, whatever its sha256 says
        raise InputError(f"{where}: 'shape' has {len(profile.shape)} values; the hand model in use, "
                         f"{datas[0].name!r}, has {datas[0].num_betas} shape components")
    if not profile.model_sha256:
        return
    if any(not d.sha256 or d.sha256 == profile.model_sha256 for d in datas):
        return
    raise InputError(
        f"{where} was made with the hand model {profile.model_name!r} (sha256 {profile.model_sha256[:12]}), "
        f"not the one in use, {datas[0].name!r} (sha256 {datas[0].sha256[:12]}): its shape would be another "
        f"hand; calibrate again with this model or pass the profile's model with --model"
    )


def save_profile(path: str | Path, profile: dict[str, Any]) -> Path:
    """Validate ``profile`` and write it atomically (the folder is created). Returns the path.

    Raises:
        InputError: a malformed document. ExportError: the file cannot be written.
    """
    from core.outputs import write_atomic

    path = Path(path)
    validate_profile(profile, f"the profile for {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder {path.parent}: {exc.strerror}") from exc
    return write_atomic(path, (json.dumps(profile, indent=2) + "\n").encode("utf-8"))


def profiles_dir() -> Path:
    """Where profiles live: ``$HANDTWIN_HOME/profiles``, else ``~/.local/share/handtwin/profiles``."""
    home = os.environ.get("HANDTWIN_HOME")
    base = Path(home) if home else Path.home() / ".local" / "share" / "handtwin"
    return base / "profiles"


def profile_file_name(name: str) -> str:
    """A safe file name for a profile name: ``"Ann's hand"`` -> ``"ann-s-hand.json"``."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.strip().lower()).strip("-") or "profile"
    return slug[:64] + ".json"


def list_profiles(directory: str | Path | None = None) -> list[Profile]:
    """Valid profiles in ``directory`` (default :func:`profiles_dir`), by name; malformed files
    are skipped with a warning."""
    folder = Path(directory) if directory is not None else profiles_dir()
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(load_profile(p))
        except InputError as exc:
            log.warning("skipping %s: %s", p, exc)
    return sorted(out, key=lambda pr: pr.name.lower())


def _resolve(name_or_path: str | Path, directory: str | Path | None) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".json" and p.exists():
        return p
    folder = Path(directory) if directory is not None else profiles_dir()
    for pr in list_profiles(folder):
        if pr.name == str(name_or_path):
            return pr.path
    candidate = folder / profile_file_name(str(name_or_path))
    if candidate.exists():
        return candidate
    raise InputError(f"no profile named {str(name_or_path)!r} in {folder}")


def rename_profile(name_or_path: str | Path, new_name: str, directory: str | Path | None = None) -> Path:
    """Give a profile a new name (and the matching file name in its folder). Returns the new path.

    Raises:
        InputError: no such profile, an empty name, or another profile file already has it.
    """
    if not isinstance(new_name, str) or not new_name.strip():
        raise InputError("a profile name cannot be empty")
    src = _resolve(name_or_path, directory)
    doc = load_profile(src).raw
    dst = src.parent / profile_file_name(new_name)
    if dst != src and dst.exists():
        raise InputError(f"a profile file {dst.name} already exists in {dst.parent}")
    doc = dict(doc, name=new_name.strip())
    save_profile(dst, doc)
    if dst != src:
        src.unlink()
    return dst


def _own_texture(path: Path, tex: Path | None) -> Path | None:
    """The profile's texture if it is its own: next to it, an image, and no other file (another
    profile, a profile's JSON) - a ``"texture"`` field naming another profile's file is not."""
    if tex is None or not tex.is_file() or tex.parent.resolve() != path.parent.resolve():
        return None
    if tex.resolve() == path.resolve() or tex.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        return None
    for other in path.parent.glob("*.json"):
        if other.resolve() == path.resolve():
            continue
        try:
            theirs = load_profile(other).texture
        except InputError:
            continue
        if theirs is not None and theirs.resolve() == tex.resolve():
            return None  # shared with another profile: it stays
    return tex


def delete_profile(name_or_path: str | Path, directory: str | Path | None = None) -> None:
    """Delete a profile file and its own texture.

    The texture goes only if it is an image next to the profile that no other profile in that
    folder uses; the ``"texture"`` field can never make it delete another file.
    """
    path = _resolve(name_or_path, directory)
    try:
        tex = load_profile(path).texture
    except InputError:
        tex = None
    own = _own_texture(path, tex)
    path.unlink()
    if own is not None:
        own.unlink()
