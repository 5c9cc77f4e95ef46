"""Record a capture session to a folder, and replay it as a frame source.

Session folder layout (``version`` 1)::

    session/
      manifest.json    {"format": "handtwin-session", "version": 1, "created", "source",
                        "fps", "storage": "png" | "mp4", "frame_count", "complete",
                        "frames_index": "frames.jsonl", "results": "results.jsonl",
                        "intrinsics": "intrinsics.json" | null,
                        "depth": "depth" | null, "depth_scale_m": 0.001 (with depth),
                        "stereo": {"session": "second", "calibration": "stereo_calib.json" | null}
                        | null}
      frames.jsonl     one line per recorded frame: {"record", "index", "timestamp_s",
                        "width", "height", "file" (png storage), "K" (3x3, when known),
                        "depth" (the frame's depth image, when it had one)}
      frames/000000.png ...   (png storage, lossless)   or   frames.mp4 (mp4 storage, lossy)
      depth/000000.png ...    an RGB-D source's depth (``Frame.depth``, registered to the
                        frame): 16-bit PNGs of ``depth_scale_m`` units, 0 unknown; one per
                        recorded frame once a frame had depth (all 0 for frames without)
      depth_camera.json the depth images' camera file (core.capture.rgbd: the first depth
                        frame's intrinsics, ``depth_scale_m``), so ``frames/`` and ``depth/``
                        are also an RGB-D source for ``--depth`` / ``--depth-intrinsics``
      intrinsics.json  the first frame's intrinsics (core.camera.save_intrinsics format)
      results.jsonl    one JSON object per line, appended by the caller (e.g. track lines)
      second/          a stereo pair's second camera: a session folder of its own (same
                        layout, no results), frame i paired with frame i (recorded under the
                        reference frame's index and timestamp)
      stereo_calib.json the pair's calibration (core.capture.stereo: K1, K2, R, T), so that
                        replaying the folder is a calibrated stereo source again
                        (:func:`stereo_session`; ``open_spec`` and the GUI do it)

The manifest is written atomically when recording starts and again when it ends
(``complete: true``); the two JSONL files are appended and flushed line by line, so a
session cut short by a crash still replays up to its last whole line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

import cv2
import numpy as np

from core.camera import (
    Intrinsics,
    atomic_write_text,
    intrinsics_from_matrix,
    rgb_to_bgr,
    save_intrinsics,
)
from core.capture.frame import Frame
from core.capture.sources import FrameSource, IntrinsicsSpec, opencv_image_to_rgb
from core.errors import InputError

if TYPE_CHECKING:
    from core.capture.stereo import StereoCalibration

log = logging.getLogger(__name__)

__all__ = [
    "SESSION_FORMAT",
    "SessionRecorder",
    "SessionSource",
    "is_session_folder",
    "read_session_results",
    "stereo_session",
]

SESSION_FORMAT = "handtwin-session"
SESSION_VERSION = 1
MANIFEST_NAME = "manifest.json"
FRAMES_INDEX_NAME = "frames.jsonl"
RESULTS_NAME = "results.jsonl"
INTRINSICS_NAME = "intrinsics.json"
VIDEO_NAME = "frames.mp4"
FRAMES_DIR = "frames"
DEPTH_DIR = "depth"
DEPTH_CAMERA_NAME = "depth_camera.json"
SECOND_DIR = "second"
STEREO_CALIB_NAME = "stereo_calib.json"
#: Metres per unit of a recorded depth image (16-bit millimetres: 1 mm steps up to 65.5 m, the
#: common RGB-D coding).
DEPTH_SCALE_M = 0.001


def is_session_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding a HandTwin session manifest."""
    manifest = Path(path) / MANIFEST_NAME
    if not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("format") == SESSION_FORMAT


def stereo_session(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(second camera's session folder, calibration file) of a session recorded from a
    calibrated stereo pair, or None (not a session, a single camera, or an uncalibrated pair)."""
    folder = Path(path)
    if not is_session_folder(folder):
        return None
    try:
        stereo = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8")).get("stereo")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(stereo, dict) or not isinstance(stereo.get("session"), str) \
            or not isinstance(stereo.get("calibration"), str):
        return None
    second, calib = folder / stereo["session"], folder / stereo["calibration"]
    if not is_session_folder(second) or not calib.is_file():
        log.warning("%s: the second camera's frames or the pair's calibration are missing; replaying the "
                    "reference camera alone", folder)
        return None
    return str(second), str(calib)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Objects of a JSON-lines file; a damaged line (a crash mid-write) ends the list."""
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: line %d is damaged; reading stops there", path, number)
                break
            if isinstance(row, dict):
                rows.append(row)
    return rows


def read_session_results(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-frame result objects a session recorded, in order."""
    return _read_jsonl(Path(folder) / RESULTS_NAME)


class SessionRecorder:
    """Writes frames, intrinsics and per-frame results into a session folder.

    Usage::

        with SessionRecorder("out/session1", source=src.name, fps=src.fps) as rec:
            for frame in src:
                rec.add_frame(frame)
                rec.add_result({"frame": frame.index, "hands": [...]})

    Args:
        folder: the session folder; created if missing, must not already hold a session.
        storage: ``"png"`` (lossless, one file per frame) or ``"mp4"`` (small, lossy; all
            frames must have one size).
        source: name of what is being recorded (kept in the manifest).
        fps: nominal frame rate (the mp4's rate; kept in the manifest).
        calibration: a stereo pair's :class:`~core.capture.stereo.StereoCalibration`, written
            beside the second camera's frames (:meth:`add_frame`'s ``second``).

    Raises:
        InputError: the folder already holds a session or a file, or cannot be created.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        storage: str = "png",
        source: str = "",
        fps: float | None = None,
        calibration: StereoCalibration | None = None,
    ) -> None:
        if storage not in ("png", "mp4"):
            raise ValueError(f"storage must be 'png' or 'mp4', got {storage!r}")
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"cannot record into {self.folder}: it is a file")
        if (self.folder / MANIFEST_NAME).exists():
            raise InputError(f"{self.folder} already holds a recorded session")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if storage == "png":
                (self.folder / FRAMES_DIR).mkdir(exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create session folder {self.folder}: {exc}") from None
        self.storage = storage
        self.source = source
        self.fps = fps
        self.frame_count = 0
        self._created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._first_intrinsics: Intrinsics | None = None
        self._depth_frames = 0
        self.calibration = calibration
        self._second: SessionRecorder | None = None  # a stereo pair's second camera
        self._video: cv2.VideoWriter | None = None
        self._video_size: tuple[int, int] | None = None
        self._frames_log: TextIO = (self.folder / FRAMES_INDEX_NAME).open("a", encoding="utf-8")
        self._results_log: TextIO = (self.folder / RESULTS_NAME).open("a", encoding="utf-8")
        self._closed = False
        self._write_manifest(complete=False)

    def _write_manifest(self, complete: bool) -> None:
        manifest = {
            "format": SESSION_FORMAT,
            "version": SESSION_VERSION,
            "created": self._created,
            "source": self.source,
            "fps": self.fps,
            "storage": self.storage,
            "frame_count": self.frame_count,
            "complete": complete,
            "frames_index": FRAMES_INDEX_NAME,
            "results": RESULTS_NAME,
            "intrinsics": INTRINSICS_NAME if self._first_intrinsics is not None else None,
            "depth": DEPTH_DIR if self._depth_frames else None,
        }
        if self._depth_frames:
            manifest["depth_scale_m"] = DEPTH_SCALE_M
        manifest["stereo"] = None if self._second is None else {
            "session": SECOND_DIR, "calibration": STEREO_CALIB_NAME if self.calibration is not None else None}
        atomic_write_text(self.folder / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")

    def add_frame(self, frame: Frame, second: Frame | None = None) -> None:
        """Store one frame (image, timestamp, intrinsics, depth) and, for a stereo pair, the
        second camera's frame taken with it (into ``second/``, under ``frame``'s index and
        timestamp, so that a replay pairs them again)."""
        if self._closed:
            raise RuntimeError("the recorder is closed")
        if second is not None:
            self._add_second(frame, second)
        record = self.frame_count
        entry: dict[str, Any] = {
            "record": record,
            "index": frame.index,
            "timestamp_s": frame.timestamp_s,
            "width": frame.width,
            "height": frame.height,
        }
        bgr = rgb_to_bgr(frame.image)
        if self.storage == "png":
            name = f"{FRAMES_DIR}/{record:06d}.png"
            self._write_png(name, bgr)
            entry["file"] = name
        else:
            size = (frame.width, frame.height)
            if self._video is None:
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                self._video = cv2.VideoWriter(str(self.folder / VIDEO_NAME), fourcc,
                                              float(self.fps or 30.0), size)
                if not self._video.isOpened():
                    raise InputError(f"cannot write {self.folder / VIDEO_NAME}")
                self._video_size = size
            elif size != self._video_size:
                raise InputError(
                    f"mp4 sessions need one frame size: got {size}, expected {self._video_size}"
                )
            self._video.write(bgr)
        if frame.intrinsics is not None:
            entry["K"] = frame.intrinsics.K.tolist()
            if self._first_intrinsics is None:
                self._first_intrinsics = frame.intrinsics
                save_intrinsics(self.folder / INTRINSICS_NAME, frame.intrinsics)
        depth = self._write_depth(record, frame)
        if depth is not None:
            entry["depth"] = depth
        self._frames_log.write(json.dumps(entry) + "\n")
        self._frames_log.flush()
        self.frame_count += 1

    def _add_second(self, frame: Frame, second: Frame) -> None:
        if self._second is None:
            if self.frame_count:
                log.warning("%s: the second camera starts at recorded frame %d; its earlier frames are not kept",
                            self.folder, self.frame_count)
            self._second = SessionRecorder(self.folder / SECOND_DIR, self.storage, f"{self.source} (second camera)",
                                           self.fps)
            if self.calibration is not None:
                c = self.calibration
                doc = {k: np.asarray(getattr(c, k), np.float64).tolist() for k in ("K1", "K2", "R", "T")}
                atomic_write_text(self.folder / STEREO_CALIB_NAME, json.dumps(doc, indent=2) + "\n")
            self._write_manifest(complete=False)
        self._second.add_frame(dataclasses.replace(second, index=frame.index, timestamp_s=frame.timestamp_s))

    def _write_depth(self, record: int, frame: Frame) -> str | None:
        """Store a frame's depth as a 16-bit PNG (:data:`DEPTH_SCALE_M` units; depths beyond its
        range are stored as unknown) and return its name (None for a frame without depth).

        ``depth/`` keeps one image per recorded frame from the first frame with depth on (zeros,
        unknown, for frames without, earlier ones included), so that it pairs with ``frames/``
        image by image; the first depth frame also writes the depth camera file."""
        if frame.depth is None and not self._depth_frames:
            return None
        if not self._depth_frames:
            (self.folder / DEPTH_DIR).mkdir(exist_ok=True)
            if frame.intrinsics is not None:
                intr = frame.intrinsics.with_size(frame.width, frame.height)
                doc = {"fx": intr.fx, "fy": intr.fy, "cx": intr.cx, "cy": intr.cy, "width": frame.width,
                       "height": frame.height, "depth_scale_m": DEPTH_SCALE_M}
                atomic_write_text(self.folder / DEPTH_CAMERA_NAME, json.dumps(doc, indent=2) + "\n")
            unknown = np.zeros((frame.height, frame.width), np.uint16)
            for earlier in range(record):
                self._write_png(f"{DEPTH_DIR}/{earlier:06d}.png", unknown)
        name = f"{DEPTH_DIR}/{record:06d}.png"
        if frame.depth is None:
            self._write_png(name, np.zeros((frame.height, frame.width), np.uint16))
            return None
        units = np.rint(np.asarray(frame.depth, np.float64) / DEPTH_SCALE_M)
        self._write_png(name, np.where((units > 0) & (units <= np.iinfo(np.uint16).max), units, 0).astype(np.uint16))
        self._depth_frames += 1
        return name

    def _write_png(self, name: str, image: np.ndarray) -> None:
        if not cv2.imwrite(str(self.folder / name), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise InputError(f"cannot write {self.folder / name}")

    def add_result(self, result: Mapping[str, Any]) -> None:
        """Append one JSON-serializable result object (e.g. a ``track`` line) to results.jsonl."""
        if self._closed:
            raise RuntimeError("the recorder is closed")
        self._results_log.write(json.dumps(result) + "\n")
        self._results_log.flush()

    def close(self) -> None:
        """Finish the files and mark the session complete. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._video is not None:
            self._video.release()
        self._frames_log.close()
        self._results_log.close()
        if self._second is not None:
            self._second.close()
        self._write_manifest(complete=True)
        log.info("recorded %d frames to %s", self.frame_count, self.folder)

    def __enter__(self) -> SessionRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SessionSource(FrameSource):
    """Replays a recorded session folder; re-iterable.

    Frames keep their recorded ``index`` and ``timestamp_s``; their intrinsics are the
    recorded ones unless ``intrinsics`` or ``fov_deg`` is given. ``Frame.source`` is the
    session folder.

    Raises:
        InputError: not a session folder, an unsupported version, or a session with no frames.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        intrinsics: IntrinsicsSpec = None,
        fov_deg: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name if name is not None else str(folder), intrinsics, fov_deg)
        self.folder = Path(folder)
        self._override = intrinsics is not None or fov_deg is not None
        if not is_session_folder(self.folder):
            raise InputError(f"{self.folder} is not a recorded HandTwin session")
        self.manifest: dict[str, Any] = json.loads(
            (self.folder / MANIFEST_NAME).read_text(encoding="utf-8")
        )
        if self.manifest.get("version") != SESSION_VERSION:
            raise InputError(
                f"{self.folder}: session version {self.manifest.get('version')} is not supported"
            )
        if not self.manifest.get("complete", False):
            log.warning("%s: the recording did not finish; replaying what was saved", self.folder)
        self.entries = _read_jsonl(self.folder / FRAMES_INDEX_NAME)
        if not self.entries:
            raise InputError(f"{self.folder}: the session holds no frames")
        self.storage = self.manifest.get("storage", "png")
        if self.storage == "mp4" and not (self.folder / VIDEO_NAME).is_file():
            raise InputError(f"{self.folder}: {VIDEO_NAME} is missing")
        fps = self.manifest.get("fps")
        self._fps = float(fps) if isinstance(fps, (int, float)) and fps > 0 else None
        self._intrinsics.check_count(len(self.entries), self.name, exact=True)

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def frame_count(self) -> int:
        return len(self.entries)

    def results(self) -> list[dict[str, Any]]:
        """The per-frame results recorded with the session."""
        return read_session_results(self.folder)

    def _frame_from_entry(self, entry: dict[str, Any], position: int, image: np.ndarray) -> Frame:
        depth = self._depth_of(entry, image.shape[:2])
        if not self._override and "K" in entry:
            h, w = image.shape[:2]
            intr = intrinsics_from_matrix(np.asarray(entry["K"], np.float64), w, h)
            return Frame(int(entry["index"]), float(entry["timestamp_s"]), image, intr, self.name, depth=depth)
        frame = self._make_frame(position, float(entry["timestamp_s"]), image)
        return Frame(int(entry["index"]), frame.timestamp_s, frame.image, frame.intrinsics, self.name,
                     frame.intrinsics_source, depth=depth)

    def _depth_of(self, entry: dict[str, Any], size: tuple[int, int]) -> np.ndarray | None:
        """The recorded depth of a frame, (H, W) float32 metres, or None (none recorded, or an
        unreadable or mis-sized file: logged, the frame replays without depth)."""
        name = entry.get("depth")
        if not isinstance(name, str):
            return None
        path = self.folder / name
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.dtype != np.uint16 or raw.shape != size:
            log.warning("%s: missing, unreadable or mis-sized depth image %s; the frame replays without depth",
                        self.name, path)
            return None
        scale = self.manifest.get("depth_scale_m", DEPTH_SCALE_M)
        return raw.astype(np.float32) * np.float32(scale)

    def _frames(self) -> Iterator[Frame]:
        if self.storage == "png":
            for position, entry in enumerate(self.entries):
                if self._closed:
                    return
                path = self.folder / str(entry.get("file", ""))
                raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if raw is None:
                    log.warning("%s: missing or unreadable frame %s; replay ends", self.name, path)
                    return
                yield self._frame_from_entry(entry, position, opencv_image_to_rgb(raw, bgr=True))
            return
        cap = cv2.VideoCapture(str(self.folder / VIDEO_NAME))
        try:
            for position, entry in enumerate(self.entries):
                if self._closed:
                    return
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    log.warning("%s: video ended after %d of %d frames", self.name, position,
                                len(self.entries))
                    return
                yield self._frame_from_entry(entry, position, opencv_image_to_rgb(bgr, bgr=True))
        finally:
            cap.release()
