"""``track`` on bad input: one clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import main as cli


def _noise_video(path: Path, frames: int = 6) -> Path:
    rng = np.random.default_rng(0)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for _ in range(frames):
        w.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    w.release()
    return path


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("handtwin:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_video_without_hands_keeps_the_previous_output(tmp_path: Path, capsys) -> None:
    video = _noise_video(tmp_path / "nohands.mp4")
    out = tmp_path / "r.jsonl"
    out.write_text("previous\n")
    code, _, err = _run(["track", str(video), "--out", str(out), "--fov", "60"], capsys)
    assert code == 2
    assert "no hand was found in any of the 6 frames" in _one_error_line(err)
    assert out.read_text() == "previous\n"
    assert not list(tmp_path.glob(".r.jsonl*"))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: (d / "corrupt.mp4").write_bytes(b"\x00junk" * 50) and d / "corrupt.mp4", "corrupt"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no images"),
    ],
)
def test_bad_sources(tmp_path: Path, capsys, make, message) -> None:
    src = make(tmp_path)
    code, _, err = _run(["track", str(src), "--out", str(tmp_path / "r.jsonl")], capsys)
    assert code == 2
    assert message in _one_error_line(err).lower()
    assert not (tmp_path / "r.jsonl").exists()
    assert not list(tmp_path.glob("r.jsonl*.part"))


def test_missing_camera(tmp_path: Path, capsys) -> None:
    code, _, err = _run(["track", "57", "--out", str(tmp_path / "r.jsonl")], capsys)
    assert code == 2
    assert "camera 57" in _one_error_line(err)


@pytest.mark.parametrize(
    "content", ['{"fx": 500}', "not json", '{"K": [[1, 0], [0, 1]]}', '{"fx": -5, "fy": 5, "cx": 1, "cy": 1}']
)
def test_malformed_intrinsics(tmp_path: Path, capsys, content: str) -> None:
    video = _noise_video(tmp_path / "v.mp4", frames=2)
    k = tmp_path / "K.json"
    k.write_text(content)
    code, _, err = _run(["track", str(video), "--out", str(tmp_path / "r.jsonl"), "--intrinsics", str(k)], capsys)
    assert code == 2
    assert "K.json" in _one_error_line(err)


def test_malformed_profile(tmp_path: Path, capsys) -> None:
    video = _noise_video(tmp_path / "v.mp4", frames=2)
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps({
        "format": "handtwin-profile", "version": 1, "name": "p", "handedness": "right",
        "model": {"name": "open hand", "sha256": ""}, "shape": "big", "hand_length_mm": 185.0,
        "hand_width_mm": 45.0, "bone_lengths_mm": [30.0] * 20, "scale_source": "prior", "frames": [],
        "texture": None, "created": "2026-01-01T00:00:00+00:00",
    }))
    code, _, err = _run(["track", str(video), "--out", str(tmp_path / "r.jsonl"), "--profile", str(prof)], capsys)
    assert code == 2
    assert "shape" in _one_error_line(err)


def test_unwritable_output_folder(tmp_path: Path, capsys) -> None:
    video = _noise_video(tmp_path / "v.mp4", frames=2)
    code, _, err = _run(["track", str(video), "--out", str(tmp_path / "nope" / "r.jsonl")], capsys)
    assert code == 2
    assert "does not exist" in _one_error_line(err)


def test_summary_reports_a_source_that_ended_early() -> None:
    """A truncated video used to be tracked to its break with only a log line before the
    summary; the summary itself now says the frames after it are missing (and counts read well)."""
    from core.tools.cli_track import TrackSummary

    s = TrackSummary(frames=1, frames_with_hands=1, hands=1, mean_time_ms={"detect": 1.0}, fps=1.0,
                     mean_reprojection_error_px=2.0, out="r.jsonl")
    assert s.format().startswith("tracked 1 frame (1 with a hand, 100%), 1 hand;") and "warning" not in s.format()
    note = "v.avi stopped decoding after 3 of its 20 frames (the file is damaged or truncated)"
    s = TrackSummary(frames=3, frames_with_hands=3, hands=3, mean_time_ms={}, fps=1.0,
                     mean_reprojection_error_px=2.0, out="r.jsonl", ended_early=note)
    lines = s.format().splitlines()
    assert lines[0].startswith("tracked 3 frames") and lines[1] == f"warning: {note}; the frames after it are missing"



def test_lines_of_an_image_folder_name_their_image(tmp_path: Path, capsys) -> None:
    """A photo folder's lines said only the folder and a frame number: with an unreadable image
    skipped, nothing tied a line to its photo. Each line now carries ``file``."""
    from core.capture import DEMO_CLIP_PATH

    folder = tmp_path / "photos"
    folder.mkdir()
    cap = cv2.VideoCapture(str(DEMO_CLIP_PATH))
    for name in ("a.png", "c.png"):
        ok, bgr = cap.read()
        assert ok
        cv2.imwrite(str(folder / name), bgr)
    cap.release()
    (folder / "b.png").write_bytes(b"not a png")  # unreadable, between the two: a gap at frame 1
    out = tmp_path / "r.jsonl"
    code, _, err = _run(["track", str(folder), "--out", str(out), "--fov", "60", "--max-hands", "1"], capsys)
    assert code == 0, err
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [(d["frame"], Path(d["file"]).name) for d in lines] == [(0, "a.png"), (2, "c.png")]
    assert all(d["hands"] for d in lines)
    video = _noise_video(tmp_path / "v.mp4", frames=2)
    from core.capture import open_source
    from core.tools.cli_track import _image_files

    with open_source(str(video)) as src:
        assert _image_files(src) is None


def test_summary_camera_is_a_range_when_the_frames_had_different_cameras() -> None:
    """Photos of several sizes (or per-frame intrinsics) each have their own camera; the summary
    printed the last frame's as if it were everyone's. One camera still reads as before."""
    from types import SimpleNamespace

    from core.camera import intrinsics_from_fov
    from core.tools.cli_track import _Cameras

    def result(w: int, h: int, source: str):
        return SimpleNamespace(camera=intrinsics_from_fov(70.0, w, h), camera_source=source)

    one = _Cameras()
    for _ in range(3):
        one.add(result(640, 480, "assumed"))
    assert one.note() == "camera f 457.0 px, 70 degrees (assumed); "
    many = _Cameras()
    for w, h, src in ((640, 480, "assumed"), (320, 240, "exif"), (640, 480, "assumed")):
        many.add(result(w, h, src))
    assert many.note() == "camera f 228.5-457.0 px over the frames (assumed, exif); "
    assert _Cameras().note() == ""


def test_summary_says_in_words_how_many_refinements_were_undone() -> None:
    """'the fit kept in 0 refined hands' read as a riddle; the guard's count is now explained."""
    from core.tools.cli_track import TrackSummary

    s = TrackSummary(frames=3, frames_with_hands=3, hands=3, mean_time_ms={}, fps=1.0, mean_reprojection_error_px=2.0,
                     out="r.jsonl", mean_silhouette_iou=0.8, mean_fit_reprojection_error_px=1.9,
                     refinements_fell_back=2)
    assert "mean reprojection error 2.00 px (fit 1.90 px; refinement undone in 2 hands whose keypoints it made " \
           "worse); mean silhouette IoU 0.800;" in s.format()


def test_a_recording_estimates_the_focal_length_in_line_a_camera_in_the_background() -> None:
    """The same file gives the same output whatever the machine's load: a recording's unknown
    focal length is estimated in the frame that completes its set, not in a thread whose
    finishing frame depends on how busy the machine is. A live camera cannot wait for it."""
    from core.capture import CameraSource
    from core.engine import EngineSettings
    from core.tools.cli_source import SourceOptions, engine_settings_for

    with SourceOptions("demo").open() as src:
        assert engine_settings_for(EngineSettings(), src).focal.background is False
    camera = CameraSource.__new__(CameraSource)  # not opened: only its kind matters here
    assert engine_settings_for(EngineSettings(), camera).focal.background is True
    assert engine_settings_for(EngineSettings(focal=None), camera).focal is None


def test_the_assumed_camera_message_fits_the_source(tmp_path: Path, capsys, caplog) -> None:
    """Without a camera, a video is told its focal length will come from the stream (it said
    "a photo's EXIF focal length" for videos too); a photo folder is told about EXIF."""
    import logging

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    for src, said, not_said in ((_noise_video(tmp_path / "v.mp4", frames=2), "until the stream gives", "EXIF"),
                                (folder, "each photo's EXIF focal length", "until the stream")):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="core.tools.cli_track"):
            code, _, err = _run(["track", str(src), "--out", str(tmp_path / "r.jsonl")], capsys)
        assert code == 2 and "no hand was found" in err  # noise: no hands, one clear error
        message = " ".join(r.getMessage() for r in caplog.records if "no camera given" in r.getMessage())
        assert said in message and not_said not in message, message
