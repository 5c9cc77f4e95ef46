"""Build the hand detector's model bundles (``resources/detect/*.task``), once, at development time.

It also copies MediaPipe's selfie (person) segmentation model, as it is, for
:func:`core.segment.methods.segment_selfie` (``resources/detect/selfie_segmentation.tflite``).

Usage::

    python -m core.detect.build_task_bundle [--wheel PATH] [--out DIR]

MediaPipe's Tasks API (:class:`mediapipe.tasks.python.vision.HandLandmarker`) reads its models
from a ``.task`` file: a zip archive holding ``hand_detector.tflite`` (palm detection) and
``hand_landmarks_detector.tflite`` (21 landmarks, handedness, world landmarks). Releases of
MediaPipe after 0.10.21 ship no hand models, so HandTwin ships the bundles itself
(``resources/detect/``; nothing is downloaded at run time).

The models come from the ``mediapipe==0.10.21`` wheel on PyPI (Apache-2.0), which bundles
them for its legacy ``solutions.hands`` API. The Tasks API needs TFLite model metadata in
each model: at least the input's NormalizationOptions (float input: without them it refuses
the model; here mean 0, std 255, i.e. pixels in [0, 1]). The full models carry that metadata
and go into ``hand_landmarker.task`` byte for byte. The lite models (``model_complexity=0``)
have none: each gets its full twin's metadata and associated label files (same input and
output tensors; MediaPipe's own metadata populator, then repacked with fixed timestamps).
Each source file's SHA-256 is checked against :data:`SOURCES` (the provenance recorded in
``THIRD_PARTY_NOTICES.md``; the wheel's licence goes beside the bundles as
``LICENSE-mediapipe.txt``), and the archives are written reproducibly (fixed member order
and timestamps, stored uncompressed): the same wheel always gives the same bundle bytes.
Building needs a MediaPipe with the metadata tools (``mediapipe.tasks.python.metadata``).

Where the models are taken from, first that works:

1. ``--wheel PATH``: a downloaded ``mediapipe-0.10.21-*.whl`` (read as a zip, not installed);
2. the ``mediapipe`` package of this interpreter, when it is 0.10.21 (it holds the files);
3. ``pip download mediapipe==0.10.21`` (no dependencies, the CPython 3.11 manylinux x86_64
   wheel: the models are the same in every build) into a temporary folder.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core.detect.mediapipe_hands import BUNDLE_DIR, BUNDLE_NAMES
from core.errors import ModelFileError
from core.outputs import write_atomic
from core.segment.methods import SELFIE_MODEL_PATH

log = logging.getLogger(__name__)

__all__ = ["BUNDLES", "BUNDLE_DIR", "SOURCE_WHEEL", "SOURCES", "build_bundle", "bundle_bytes", "main", "read_sources",
           "with_metadata_of"]

#: The registry package the models come from.
SOURCE_WHEEL = "mediapipe==0.10.21"



@dataclass(frozen=True)
class _Source:
    """One model file inside the source wheel."""

    wheel_path: str  # path inside the wheel (and inside the installed package's site-packages)
    sha256: str


#: The model files of the 0.10.21 wheel, by their path in the wheel.
SOURCES: dict[str, _Source] = {
    s.wheel_path: s
    for s in (
        _Source("mediapipe/modules/palm_detection/palm_detection_full.tflite",
                "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54"),
        _Source("mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
                "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3"),
        _Source("mediapipe/modules/palm_detection/palm_detection_lite.tflite",
                "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18"),
        _Source("mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
                "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6"),
        _Source("mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
                "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
    )
}

#: The selfie segmentation model, shipped as it is (it carries its metadata).
SELFIE_SOURCE = "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"

#: Model without metadata -> the model whose metadata it takes (same tensors).
METADATA_FROM: dict[str, str] = {
    "mediapipe/modules/palm_detection/palm_detection_lite.tflite":
        "mediapipe/modules/palm_detection/palm_detection_full.tflite",
    "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite":
        "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
}

#: Bundle file name -> {member name in the bundle: source path in the wheel}, by model complexity
#: (1: full, 0: lite, as the legacy API's ``model_complexity``).
BUNDLES: dict[int, tuple[str, dict[str, str]]] = {
    1: (BUNDLE_NAMES[1], {
        "hand_detector.tflite": "mediapipe/modules/palm_detection/palm_detection_full.tflite",
        "hand_landmarks_detector.tflite": "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
    }),
    0: (BUNDLE_NAMES[0], {
        "hand_detector.tflite": "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
        "hand_landmarks_detector.tflite": "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
    }),
}

#: The wheel's licence file (Apache-2.0), shipped beside the bundles.
LICENSE_PATH = "mediapipe-0.10.21.dist-info/LICENSE"
LICENSE_NAME = "LICENSE-mediapipe.txt"

_ZIP_DATE = (2025, 1, 1, 0, 0, 0)  # fixed member timestamps: reproducible archives


def _checked(wheel_path: str, data: bytes) -> bytes:
    """``data`` when its SHA-256 is the recorded one.

    Raises:
        ModelFileError: it is not (another build, or a damaged file).
    """
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCES[wheel_path].sha256:
        raise ModelFileError(f"{wheel_path}: SHA-256 {digest}, expected {SOURCES[wheel_path].sha256} "
                             f"(not the {SOURCE_WHEEL} model)")
    return data


def _zip_into(buffer: io.BytesIO, members: dict[str, bytes], mode: str) -> bytes:
    with zipfile.ZipFile(buffer, mode, zipfile.ZIP_STORED) as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, members[name])
    return buffer.getvalue()


def bundle_bytes(members: dict[str, bytes]) -> bytes:
    """A ``.task`` archive of ``members`` (name -> bytes), stored, in name order, fixed dates."""
    return _zip_into(io.BytesIO(), members, "w")


def with_metadata_of(model: bytes, donor: bytes) -> bytes:
    """``model`` with ``donor``'s TFLite metadata and associated files (the two models must have
    the same input and output tensors), reproducibly.

    TFLite keeps metadata in a flatbuffer buffer named ``TFLITE_METADATA`` and the associated
    files in a zip archive appended to the model; MediaPipe's populator writes both, then the
    archive is rewritten with fixed timestamps (same offsets scheme: appended in place).
    """
    from mediapipe.tasks.python.metadata import metadata as mp_metadata

    populator = mp_metadata.MetadataPopulator.with_model_buffer(bytearray(model))
    populator.load_metadata_buffer(mp_metadata.get_metadata_buffer(bytearray(donor)))
    packed = set(populator.get_packed_associated_file_list())  # the model's own label files stay
    with zipfile.ZipFile(io.BytesIO(donor)) as archive:
        populator.load_associated_file_buffers(
            {name: archive.read(name) for name in archive.namelist() if name not in packed})
    populator.populate()
    populated = bytes(populator.get_model_buffer())
    with zipfile.ZipFile(io.BytesIO(populated)) as archive:
        files = {info.filename: archive.read(info) for info in archive.infolist()}
        start = min(info.header_offset for info in archive.infolist())
    buffer = io.BytesIO()
    buffer.write(populated[:start])
    return _zip_into(buffer, files, "a")


def _read_from_wheel(wheel: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return {**{p: _checked(p, archive.read(p)) for p in SOURCES}, LICENSE_PATH: archive.read(LICENSE_PATH)}
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{wheel}: not a {SOURCE_WHEEL} wheel holding the hand models ({exc})") from exc


def _read_installed() -> dict[str, bytes] | None:
    """The models of this interpreter's mediapipe package, or None where it has none."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or spec.origin is None:
        return None
    site = Path(spec.origin).resolve().parents[1]
    if not all((site / p).is_file() for p in (*SOURCES, LICENSE_PATH)):
        return None
    return {**{p: _checked(p, (site / p).read_bytes()) for p in SOURCES},
            LICENSE_PATH: (site / LICENSE_PATH).read_bytes()}


def _download_wheel(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "-d", str(folder), SOURCE_WHEEL]
    log.info("downloading %s: %s", SOURCE_WHEEL, " ".join(cmd))
    subprocess.run(cmd, check=True)
    wheels = sorted(folder.glob("mediapipe-0.10.21-*.whl"))
    if not wheels:
        raise ModelFileError(f"pip download gave no {SOURCE_WHEEL} wheel in {folder}")
    return wheels[0]


def read_sources(wheel: Path | None = None) -> dict[str, bytes]:
    """The model files, checked, and the wheel's licence, by their path in the wheel (see
    the module docstring for where they come from)."""
    if wheel is not None:
        return _read_from_wheel(wheel)
    installed = _read_installed()
    if installed is not None:
        log.info("models taken from the installed mediapipe package")
        return installed
    with tempfile.TemporaryDirectory() as tmp:
        return _read_from_wheel(_download_wheel(Path(tmp)))


def build_bundle(sources: dict[str, bytes], out_dir: Path = BUNDLE_DIR) -> list[Path]:
    """Write every bundle of :data:`BUNDLES`, and the licence, into ``out_dir`` (atomically);
    return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = dict(sources)
    for path, donor in METADATA_FROM.items():
        sources[path] = with_metadata_of(sources[path], sources[donor])
    written = []
    for name, members in BUNDLES.values():
        data = bundle_bytes({member: sources[path] for member, path in members.items()})
        written.append(write_atomic(out_dir / name, data))
        log.info("%s: %d bytes, sha256 %s", out_dir / name, len(data), hashlib.sha256(data).hexdigest())
    written.append(write_atomic(out_dir / SELFIE_MODEL_PATH.name, sources[SELFIE_SOURCE]))  # as is (has metadata)
    written.append(write_atomic(out_dir / LICENSE_NAME, sources[LICENSE_PATH]))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.detect.build_task_bundle", description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", type=Path, help=f"a downloaded {SOURCE_WHEEL} wheel to take the models from")
    parser.add_argument("--out", type=Path, default=BUNDLE_DIR, help="folder for the .task files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in build_bundle(read_sources(args.wheel), args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
