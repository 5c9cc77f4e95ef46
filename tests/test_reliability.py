"""Reliability (issue 17): every bad input through the real command line.

Each case runs ``python main.py ...`` in a subprocess and asserts: exit status 2, exactly one
``handtwin: error:`` line, no traceback, nothing tracked before the error (MediaPipe never
started: the input was validated before any work), the previous output byte for byte, and no
leftovers (``*.part`` / ``*.tmp`` files). Interrupts (SIGTERM, SIGHUP) must also release the
detector's shared memory. Inputs are tiny: two demo frames and small generated files.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import main as cli
from core.capture.open import DEMO_CLIP_PATH

ROOT = Path(__file__).resolve().parents[1]
PREVIOUS = b"previous output\n"
#: What MediaPipe prints on stderr once it starts: its absence proves no frame was tracked.
MEDIAPIPE_STARTED = "XNNPACK"


# ----------------------------------------------------------------------------- helpers


def _run(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, HANDTWIN_HOME=str(cwd / "home"))
    env.pop("HANDTWIN_MODEL", None)
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _handtwin_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("handtwin:")]


def _one_error(result: subprocess.CompletedProcess, *, tracked: bool = False) -> str:
    """The single error line of a failed run (exit 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = _handtwin_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("handtwin: error: "), result.stderr[-2000:]
    if not tracked:
        assert MEDIAPIPE_STARTED not in result.stderr, "work started before the input was checked"
    return lines[0]


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp"))]


def _previous(path: Path) -> Path:
    path.write_bytes(PREVIOUS)
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _profile_doc(**changes) -> dict:
    from core.model import load_model_data

    data = load_model_data()
    doc = {
        "format": "handtwin-profile", "version": 1, "name": "me", "handedness": "right",
        "model": {"name": data.name, "sha256": data.sha256}, "shape": [0.0] * 10,
        "hand_length_mm": 185.0, "hand_width_mm": 80.0, "bone_lengths_mm": [30.0] * 20,
        "scale_source": "prior", "frames": [], "texture": None, "created": "2026-01-01T00:00:00+00:00",
    }
    doc.update(changes)
    return doc


@pytest.fixture(scope="module")
def demo_frames(tmp_path_factory) -> Path:
    """Two frames of the demo clip with a hand (PNG), in a folder of their own."""
    folder = tmp_path_factory.mktemp("frames")
    cap = cv2.VideoCapture(str(DEMO_CLIP_PATH))
    for index in range(31):
        ok, bgr = cap.read()
        assert ok
        if index in (20, 30):
            cv2.imwrite(str(folder / f"f{index}.png"), bgr)
    cap.release()
    return folder


@pytest.fixture
def work(tmp_path: Path, demo_frames: Path) -> Path:
    """A working folder with a copy of one demo frame (``hand.png``) and a previous output."""
    (tmp_path / "hand.png").write_bytes((demo_frames / "f20.png").read_bytes())
    _previous(tmp_path / "r.jsonl")
    return tmp_path


# ----------------------------------------------------------------------------- bad intrinsics

def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def _npy_claiming(path: Path, shape: tuple[int, ...]) -> None:
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    path.write_bytes(header.getvalue() + np.eye(3).tobytes())


INTRINSICS_CASES = {
    "400-digit integer": ("K.json", '{"fx": ' + "9" * 400 + ', "fy": 500, "cx": 240, "cy": 180}', "400 digits"),
    "fx 1e-300": ("K.json", '{"fx": 1e-300, "fy": 500, "cx": 240, "cy": 180}', "between 1 and 1e+06 px"),
    "fx 1e300": ("K.json", '{"fx": 1e300, "fy": 1e300, "cx": 240, "cy": 180}', "between 1 and 1e+06 px"),
    "K 1e300": ("K.json", '{"K": [[1e300, 0, 240], [0, 1e300, 180], [0, 0, 1]]}', "between 1 and 1e+06 px"),
    "100k-deep JSON": ("K.json", _deep_json(100_000), "nested too deeply"),
    "huge width": ("K.json", '{"fx": 500, "fy": 500, "cx": 240, "cy": 180, "width": 99999999, "height": 4}',
                   "from 1 to 8192"),
}


@pytest.mark.parametrize("case", sorted(INTRINSICS_CASES))
def test_track_refuses_bad_intrinsics(work: Path, case: str) -> None:
    name, content, message = INTRINSICS_CASES[case]
    (work / name).write_text(content)
    line = _one_error(_run(["track", "hand.png", "--out", "r.jsonl", "--intrinsics", name], work))
    assert message in line and name in line
    assert (work / "r.jsonl").read_bytes() == PREVIOUS and not _leftovers(work)


def test_track_refuses_an_npy_header_claiming_a_billion_matrices(work: Path) -> None:
    _npy_claiming(work / "K.npy", (1_000_000_000, 3, 3))
    line = _one_error(_run(["track", "hand.png", "--out", "r.jsonl", "--intrinsics", "K.npy"], work))
    assert "(1000000000, 3, 3)" in line and "at most" in line
    _npy_claiming(work / "K.npy", (2, 3, 3))  # fits the limit, but the file holds one matrix
    line = _one_error(_run(["track", "hand.png", "--out", "r.jsonl", "--intrinsics", "K.npy"], work))
    assert "holds only" in line
    assert (work / "r.jsonl").read_bytes() == PREVIOUS and not _leftovers(work)


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("args, message", [
    (["--max-hands", "0"], "--max-hands must be an integer from 1 to 4, got 0"),
    (["--max-hands", "-1"], "--max-hands must be an integer from 1 to 4, got -1"),
    (["--refine", "-1"], "--refine must be an integer from 0 to 100"),
    (["--fov", "1e300"], "--fov must be between 1 and 179 degrees"),
])
def test_track_refuses_counts_and_angles_out_of_range(work: Path, args: list[str], message: str) -> None:
    line = _one_error(_run(["track", "hand.png", "--out", "r.jsonl", *args], work))
    assert message in line
    assert (work / "r.jsonl").read_bytes() == PREVIOUS


# ----------------------------------------------------------------------------- bad profiles


PROFILE_CASES = {
    "huge integer": (lambda: json.dumps(_profile_doc()).replace('"version": 1', '"version": ' + "7" * 500),
                     "500 digits"),
    "deep nesting": (lambda: json.dumps(_profile_doc()).replace('"frames": []', '"frames": ' + _deep_json(50_000)),
                     "nested too deeply"),
    "NUL in the name": (lambda: json.dumps(_profile_doc(name="me\u0000you")), "NUL"),
    "NUL in the texture": (lambda: json.dumps(_profile_doc(texture="me.png\u0000.json")), "NUL"),
    "another model": (lambda: json.dumps(_profile_doc(model={"name": "MANO", "sha256": "ab" * 32})),
                      "made with the hand model 'MANO'"),
}


@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_track_refuses_bad_profiles(work: Path, case: str) -> None:
    make, message = PROFILE_CASES[case]
    (work / "p.json").write_text(make())
    line = _one_error(_run(["track", "hand.png", "--out", "r.jsonl", "--profile", "p.json"], work))
    assert message in line
    assert (work / "r.jsonl").read_bytes() == PREVIOUS and not _leftovers(work)


@pytest.mark.parametrize("case", ["another model", "deep nesting"])
def test_export_refuses_bad_profiles(work: Path, case: str) -> None:
    make, message = PROFILE_CASES[case]
    (work / "p.json").write_text(make())
    line = _one_error(_run(["export", "--profile", "p.json", "--out", "hand.glb"], work))
    assert message in line
    assert not (work / "hand.glb").exists() and not _leftovers(work)


def test_export_refuses_a_decompression_bomb_as_texture(work: Path) -> None:
    _png_header_only(work / "tex.png", 30_000, 30_000)
    (work / "p.json").write_text(json.dumps(_profile_doc(texture="tex.png")))
    line = _one_error(_run(["export", "--profile", "p.json", "--out", "out.glb"], work))
    assert "tex.png is too large" in line and "8192x8192" in line
    _png_header_only(work / "tex.png", 9000, 100)  # under PIL's limit, over HandTwin's
    line = _one_error(_run(["export", "--profile", "p.json", "--out", "out.glb"], work))
    assert "9000x100 pixels" in line
    assert not (work / "out.glb").exists() and not _leftovers(work)


def test_track_refuses_an_oversized_image_before_decoding_it(work: Path) -> None:
    _png_header_only(work / "huge.png", 30_000, 30_000)
    line = _one_error(_run(["track", "huge.png", "--out", "r.jsonl"], work))
    assert "huge.png is too large" in line
    assert (work / "r.jsonl").read_bytes() == PREVIOUS


# ----------------------------------------------------------------------------- outputs


def test_track_output_that_is_a_folder_fails_before_tracking(work: Path) -> None:
    (work / "outdir").mkdir()
    line = _one_error(_run(["track", "hand.png", "--out", "outdir"], work))
    assert "it is a folder" in line
    assert list((work / "outdir").iterdir()) == []


def test_track_refuses_to_overwrite_its_input(work: Path, demo_frames: Path) -> None:
    before = (work / "hand.png").read_bytes()
    line = _one_error(_run(["track", "hand.png", "--out", "hand.png"], work))
    assert "it is an input of this command" in line
    line = _one_error(_run(["track", str(demo_frames), "--out", str(demo_frames / "f30.png")], work))
    assert "it is an input of this command" in line
    line = _one_error(_run(["track", "*.png", "--out", "hand.png"], work))
    assert "it is an input of this command" in line
    assert (work / "hand.png").read_bytes() == before and not _leftovers(work)


def test_a_run_without_a_hand_keeps_the_previous_output(work: Path) -> None:
    cv2.imwrite(str(work / "wall.png"), np.full((120, 160, 3), 90, np.uint8))
    line = _one_error(_run(["track", "wall.png", "--out", "r.jsonl"], work), tracked=True)
    assert "no hand was found in any of the 1 frames" in line and "was not written" in line
    assert (work / "r.jsonl").read_bytes() == PREVIOUS and not _leftovers(work)


def test_track_writes_running_means(work: Path, demo_frames: Path) -> None:
    """The summary's means (running sums, no per-frame lists) are the means of the lines."""
    result = _run(["track", str(demo_frames), "--out", "r.jsonl", "--max-hands", "1"], work)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(x) for x in (work / "r.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    total = np.mean([x["time_ms"]["total"] for x in lines])
    assert f"total {total:.1f} ms" in result.stdout
    errors = [h["reprojection_error_px"] for x in lines for h in x["hands"]]
    assert errors and f"mean reprojection error {np.mean(errors):.2f} px" in result.stdout
    assert not _leftovers(work)


def test_disk_full_while_tracking_keeps_the_previous_output(work: Path, monkeypatch, capsys) -> None:
    """ENOSPC in the middle of the JSONL: one line, the previous output intact, no *.part."""
    import core.outputs as outputs

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def fdopen(fd, mode="r", *args, **kwargs):  # the JSONL is opened "w"; probes and exports "wb"
        handle = real_fdopen(fd, mode, *args, **kwargs)
        return Full(handle) if mode == "w" else handle

    monkeypatch.setattr(outputs.os, "fdopen", fdopen)
    code = cli.main(["track", str(work / "hand.png"), "--out", str(work / "r.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = _handtwin_lines(err)
    assert len(lines) == 1 and "the disk is full" in lines[0], err
    assert (work / "r.jsonl").read_bytes() == PREVIOUS and not _leftovers(work)


def test_calibrate_checks_its_output_before_any_work(work: Path) -> None:
    line = _one_error(_run(["calibrate", "hand.png", "--out", "missing/sub/me.json"], work))
    assert "does not exist" in line
    assert not (work / "missing").exists()
    (work / "me.json").mkdir()
    assert "it is a folder" in _one_error(_run(["calibrate", "hand.png", "--out", "me.json"], work))
    (work / "K.json").write_text('{"fx": 500, "fy": 500, "cx": 240, "cy": 180}')
    line = _one_error(_run(["calibrate", "hand.png", "--out", "K.json", "--intrinsics", "K.json"], work))
    assert "it is an input of this command" in line


def test_export_never_overwrites_its_source_photo(work: Path) -> None:
    """``export photo.png --out photo.glb`` used to write the texture over the photo."""
    before = (work / "hand.png").read_bytes()
    line = _one_error(_run(["export", "hand.png", "--out", "hand.glb"], work))
    assert "hand.png, an input of this command" in line
    assert (work / "hand.png").read_bytes() == before
    assert not (work / "hand.glb").exists() and not _leftovers(work)


def test_export_companions_of_someone_else_are_refused_unless_forced(work: Path) -> None:
    (work / "p.json").write_text(json.dumps(_profile_doc()))
    (work / "me.mtl").write_bytes(b"my material\n")
    line = _one_error(_run(["export", "--profile", "p.json", "--out", "me.obj"], work))
    assert "me.mtl, which it did not write" in line and "--force" in line
    assert (work / "me.mtl").read_bytes() == b"my material\n" and not (work / "me.obj").exists()
    # --force replaces it; exporting again under the same name replaces its own companions
    assert _run(["export", "--profile", "p.json", "--out", "me.obj", "--force"], work).returncode == 0
    assert (work / "me.mtl").read_bytes() != b"my material\n"
    assert _run(["export", "--profile", "p.json", "--out", "me.obj"], work).returncode == 0
    # the profile itself is never a companion to overwrite
    (work / "q.profile.json").write_text(json.dumps(_profile_doc()))
    line = _one_error(_run(["export", "--profile", "q.profile.json", "--out", "q.glb", "--force"], work))
    assert "q.profile.json, an input of this command" in line
    assert not _leftovers(work)


# ----------------------------------------------------------------------------- interrupts


def _noise_video(path: Path, frames: int, size: tuple[int, int]) -> Path:
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, size)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def _segments_of_size(nbytes: int) -> set[str]:
    shm = Path("/dev/shm")
    return {p.name for p in shm.glob("psm_*") if p.stat().st_size == nbytes} if shm.is_dir() else set()


@pytest.mark.skipif(not hasattr(signal, "SIGHUP") or not Path("/dev/shm").is_dir(), reason="POSIX shared memory")
@pytest.mark.parametrize("signum", [signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)])
def test_sigterm_and_sighup_remove_the_part_file_and_release_shared_memory(work: Path, signum: int) -> None:
    # an odd frame size makes this run's shared-memory blocks recognisable among others'
    size = (202, 146)  # even sides: the mp4v encoder crops odd ones
    nbytes = size[0] * size[1] * 3
    _noise_video(work / "long.mp4", 3000, size)
    env = dict(os.environ, HANDTWIN_HOME=str(work / "home"))
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "track", "long.mp4", "--out", "r.jsonl"],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if _segments_of_size(nbytes) and list(work.glob(".r.jsonl.*.part")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert _segments_of_size(nbytes), "the detector process never received a frame"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, err[-2000:]
    assert "Traceback" not in err
    assert _handtwin_lines(err) == [f"handtwin: terminated by signal {signum}"]
    assert (work / "r.jsonl").read_bytes() == PREVIOUS
    assert not _leftovers(work)
    assert not _segments_of_size(nbytes)


# ----------------------------------------------------------------------------- profiles


def test_delete_profile_touches_only_its_own_files(tmp_path: Path) -> None:
    from core.profile_io import delete_profile

    (tmp_path / "b.png").write_bytes(b"b's texture")
    (tmp_path / "b.json").write_text(json.dumps(_profile_doc(name="b", texture="b.png")))
    (tmp_path / "a.json").write_text(json.dumps(_profile_doc(name="a", texture="b.png")))  # shares b's texture
    (tmp_path / "c.json").write_text(json.dumps(_profile_doc(name="c", texture="b.json")))  # names b's profile
    (tmp_path / "d.png").write_bytes(b"d's texture")
    (tmp_path / "d.json").write_text(json.dumps(_profile_doc(name="d", texture="d.png")))
    delete_profile(tmp_path / "a.json")
    delete_profile(tmp_path / "c.json")
    assert (tmp_path / "b.png").exists() and (tmp_path / "b.json").exists()
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "c.json").exists()
    delete_profile(tmp_path / "d.json")  # its own texture goes with it
    assert not (tmp_path / "d.png").exists() and not (tmp_path / "d.json").exists()


def test_calib_camera_checks_its_output_and_board_first(work: Path) -> None:
    before = (work / "hand.png").read_bytes()
    line = _one_error(_run(["calib-camera", "*.png", "--out", "hand.png"], work))
    assert "it is an input of this command" in line
    assert (work / "hand.png").read_bytes() == before
    line = _one_error(_run(["calib-camera", "*.png", "--out", "K.json", "--cols", "0"], work))
    assert "--cols must be an integer from 2 to 100, got 0" in line
    line = _one_error(_run(["calib-camera", "*.png", "--out", "K.json", "--square-mm", "1e308"], work))
    assert "--square-mm must be between 0.1 and 1000 mm" in line
    assert not (work / "K.json").exists() and not _leftovers(work)
