"""Tests of core.capture: sources, the SRC factory, synchronized pairing, session recording."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

import core.capture.open as capture_open
from core.camera import DEFAULT_FOV_DEG, Intrinsics, intrinsics_from_fov, rgb_to_bgr, save_intrinsics
from core.capture import (
    ArraySource,
    CameraSource,
    Frame,
    FrameSet,
    FrameSource,
    ImageSequenceSource,
    SessionRecorder,
    SessionSource,
    SynchronizedSource,
    VideoFileSource,
    is_session_folder,
    open_multi_source,
    open_source,
    read_session_results,
)
from core.errors import InputError

W, H = 64, 48


def _coded_image(i: int) -> np.ndarray:
    """A 48x64 RGB image whose mean brightness encodes ``i`` (survives lossy codecs)."""
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = min(255, 10 * i)  # red carries the index
    image[:, : W // 4, 2] = 200  # a blue stripe on the left: checks channel order and flips
    return image


def _decode_index(image: np.ndarray) -> int:
    return int(round(float(image[:, W // 2 :, 0].mean()) / 10.0))


def _write_video(path: Path, count: int, fps: float = 10.0, fourcc: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps,
                             (W, H))
    assert writer.isOpened()
    for i in range(count):
        writer.write(rgb_to_bgr(_coded_image(i)))
    writer.release()
    return path


@pytest.fixture()
def video(tmp_path: Path) -> Path:
    return _write_video(tmp_path / "clip.avi", 12)


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    # names chosen so that name order differs from numeric order
    for i, name in enumerate(["a_10.png", "a_2.png", "b_1.jpg"]):
        cv2.imwrite(str(folder / name), rgb_to_bgr(_coded_image(i)))
    (folder / "notes.txt").write_text("not an image")
    return folder


# ---------------------------------------------------------------------------------------------
# Frame
# ---------------------------------------------------------------------------------------------


def test_frame_validates_and_is_read_only() -> None:
    image = _coded_image(1)
    frame = Frame(0, 0.0, image, None, "test")
    assert (frame.width, frame.height) == (W, H)
    with pytest.raises(ValueError):
        frame.image[0, 0, 0] = 1
    image[0, 0, 0] = 7  # the caller's array stays writable
    with pytest.raises(ValueError, match="uint8"):
        Frame(0, 0.0, image.astype(np.float32), None, "test")
    with pytest.raises(ValueError):
        Frame(0, 0.0, image[..., 0], None, "test")


# ---------------------------------------------------------------------------------------------
# Video files
# ---------------------------------------------------------------------------------------------


def test_video_source_reads_rgb_frames_with_timestamps(video: Path) -> None:
    with open_source(str(video)) as source:
        assert isinstance(source, VideoFileSource)
        assert len(source) == 12 and source.fps == pytest.approx(10.0)
        frames = list(source)
        again = list(source)  # re-iterable
    assert len(frames) == 12 and len(again) == 12
    for i, frame in enumerate(frames):
        assert frame.image.dtype == np.uint8 and frame.image.shape == (H, W, 3)
        assert frame.index == i and frame.timestamp_s == pytest.approx(i / 10.0)
        assert _decode_index(frame.image) == i
        # nobody described the camera: a perspective camera of the default field of view
        assert frame.intrinsics == intrinsics_from_fov(DEFAULT_FOV_DEG, W, H) and frame.source == str(video)
        assert frame.intrinsics_source == "assumed"
    # RGB order: the blue stripe is in channel 2, on the left
    assert frames[0].image[:, :4, 2].mean() > 150 and frames[0].image[:, :4, 0].mean() < 60


def test_corrupt_video_raises_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match="broken.mp4"):
        open_source(str(bad))
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(InputError):
        open_source(str(empty))


def test_truncated_video_ends_cleanly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    full = _write_video(tmp_path / "full.avi", 20)
    data = full.read_bytes()
    movi = data.index(b"movi")  # the AVI frame data starts here; keep the header intact
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: movi + (len(data) - movi) // 2])
    with caplog.at_level(logging.WARNING), open_source(str(cut)) as source:
        frames = list(source)
        reason = source.ended_early  # what the GUI tells the user
    assert 1 <= len(frames) < 20
    assert [_decode_index(f.image) for f in frames] == list(range(len(frames)))
    assert reason == f"{cut} stopped decoding after {len(frames)} of its 20 frames (the file is damaged or truncated)"
    assert any(r.message == reason for r in caplog.records)
    with open_source(str(full)) as source:
        assert len(list(source)) == 20 and source.ended_early is None


def test_missing_file_and_unknown_spec(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_source(str(tmp_path / "nope.mp4"))
    with pytest.raises(InputError, match="empty"):
        open_source("  ")


# ---------------------------------------------------------------------------------------------
# Cameras and the demo clip
# ---------------------------------------------------------------------------------------------


def test_camera_that_does_not_open_raises_input_error() -> None:
    with pytest.raises(InputError, match="camera 57"):
        open_source("57")
    with pytest.raises(InputError, match="/dev/video99"):
        open_source("/dev/video99")


def test_camera_source_reads_until_the_stream_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class FakeCapture:
        """Delivers three frames, then fails like an unplugged camera."""

        def __init__(self, device: object) -> None:
            self.reads = 0

        def isOpened(self) -> bool:  # noqa: N802  (OpenCV's name)
            return True

        def read(self) -> tuple[bool, np.ndarray | None]:
            self.reads += 1
            if self.reads > 3:
                return False, None
            return True, rgb_to_bgr(_coded_image(self.reads - 1))

        def get(self, prop: int) -> float:
            return 30.0

        def set(self, prop: int, value: float) -> bool:
            return True

        def release(self) -> None:
            pass

    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    with caplog.at_level(logging.WARNING), CameraSource(0, fov_deg=60.0) as camera:
        with pytest.raises(TypeError):
            len(camera)  # a live stream has no length
        frames = list(camera)
    assert [f.index for f in frames] == [0, 1, 2]
    assert [_decode_index(f.image) for f in frames] == [0, 1, 2]
    assert all(b.timestamp_s >= a.timestamp_s for a, b in zip(frames, frames[1:]))
    assert frames[0].intrinsics is not None and frames[0].intrinsics.size == (W, H)
    assert any("stopped delivering" in r.message for r in caplog.records)


def test_demo_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture_open, "DEMO_CLIP_PATH", tmp_path / "missing" / "demo.mp4")
    with pytest.raises(InputError, match="demo clip is missing"):
        open_source("demo")
    clip = _write_video(tmp_path / "demo.avi", 3)
    monkeypatch.setattr(capture_open, "DEMO_CLIP_PATH", clip)
    with open_source("demo") as source:
        frames = list(source)
    assert len(frames) == 3 and frames[0].source == "demo"


# ---------------------------------------------------------------------------------------------
# Image folders and globs
# ---------------------------------------------------------------------------------------------


def test_folder_is_sorted_by_file_name(image_folder: Path) -> None:
    with open_source(str(image_folder)) as source:
        assert isinstance(source, ImageSequenceSource)
        assert [p.name for p in source.paths] == ["a_10.png", "a_2.png", "b_1.jpg"]
        assert len(source) == 3
        frames = list(source)
    assert [_decode_index(f.image) for f in frames] == [0, 1, 2]
    assert [f.timestamp_s for f in frames] == pytest.approx([0, 1 / 30, 2 / 30])


def test_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        open_source(str(empty))
    (empty / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no images"):
        open_source(str(empty))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "0.png").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read"):
        open_source(str(corrupt))


def test_unreadable_image_mid_folder_is_skipped(
    image_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (image_folder / "a_3.png").write_bytes(b"garbage")  # sorts between a_2 and b_1
    with caplog.at_level(logging.WARNING), open_source(str(image_folder)) as source:
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 3]  # indices stay aligned with files
    assert any("unreadable" in r.message for r in caplog.records)


def test_glob_and_single_image(image_folder: Path) -> None:
    with open_source(str(image_folder / "a_*.png")) as source:
        assert len(source) == 2
    with pytest.raises(InputError, match="no files match"):
        open_source(str(image_folder / "zzz_*.png"))
    with pytest.raises(InputError, match="none is an image"):
        open_source(str(image_folder / "*.txt"))
    with open_source(str(image_folder / "b_1.jpg")) as single:
        assert len(list(single)) == 1


# ---------------------------------------------------------------------------------------------
# Intrinsics attached to frames
# ---------------------------------------------------------------------------------------------


def test_fov_and_file_intrinsics_reach_frames(image_folder: Path, tmp_path: Path) -> None:
    with open_source(str(image_folder), fov_deg=90.0) as source:
        frame = next(iter(source))
    assert frame.intrinsics is not None
    assert frame.intrinsics.fx == pytest.approx(W / 2) and frame.intrinsics.size == (W, H)
    path = tmp_path / "cam.json"
    save_intrinsics(path, Intrinsics(100.0, 100.0, 31.5, 23.5, 2 * W, 2 * H))
    with open_source(str(image_folder), intrinsics=str(path)) as source:
        frame = next(iter(source))
    assert frame.intrinsics is not None and frame.intrinsics.fx == pytest.approx(50.0)
    with pytest.raises(InputError, match="not both"):
        open_source(str(image_folder), intrinsics=str(path), fov_deg=60.0)


def test_per_frame_intrinsics(image_folder: Path, tmp_path: Path) -> None:
    K = np.array([[100.0, 0, 32], [0, 100, 24], [0, 0, 1]])
    Ks = np.stack([K * [[1 + i], [1 + i], [1]] for i in range(3)])
    np.save(tmp_path / "ks.npy", Ks)
    with open_source(str(image_folder), intrinsics=str(tmp_path / "ks.npy")) as source:
        fx = [f.intrinsics.fx for f in source if f.intrinsics is not None]
    assert fx == [100.0, 200.0, 300.0]
    np.save(tmp_path / "two.npy", Ks[:2])
    with pytest.raises(InputError, match="2 per-frame intrinsics for 3 frames"):
        open_source(str(image_folder), intrinsics=str(tmp_path / "two.npy"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        open_source(str(image_folder), intrinsics=str(tmp_path / "bad.json"))


# ---------------------------------------------------------------------------------------------
# Synchronized cameras
# ---------------------------------------------------------------------------------------------


def test_stereo_pairs_by_nearest_timestamp() -> None:
    rng = np.random.default_rng(7)
    n = 20
    t_ref = np.arange(n) / 30.0
    # second camera: 4 ms late, +-2 ms jitter, frames 5 and 6 lost, starts one frame early
    t_other = np.concatenate([[-1 / 30], t_ref + 0.004 + rng.uniform(-0.002, 0.002, n)])
    keep = np.ones(n + 1, bool)
    keep[[6, 7]] = False  # positions of reference frames 5 and 6 (shifted by the early frame)
    t_other = t_other[keep]
    images_ref = [_coded_image(i) for i in range(n)]
    images_other = [_coded_image(i) for i in range(n + 1)]
    images_other = [im for im, k in zip(images_other, keep) if k]
    ref = ArraySource(images_ref, t_ref, name="left")
    other = ArraySource(images_other, t_other, name="right")
    with SynchronizedSource([ref, other], tolerance_s=0.010) as rig:
        sets = list(rig)
        assert rig.dropped_reference_frames == 2
    assert all(isinstance(s, FrameSet) and len(s) == 2 for s in sets)
    paired = [s[0].index for s in sets]
    assert paired == [i for i in range(n) if i not in (5, 6)]
    for s in sets:
        assert s.max_skew_s <= 0.010
        assert abs(s[1].timestamp_s - s[0].timestamp_s - 0.004) < 0.0025
    assert [s.index for s in sets] == list(range(len(sets)))
    # each partner frame is used once
    assert len({id(s[1]) for s in sets}) == len(sets)


def test_open_multi_source_with_two_videos(tmp_path: Path) -> None:
    a = _write_video(tmp_path / "a.avi", 6)
    b = _write_video(tmp_path / "b.avi", 5)
    with open_multi_source([str(a), str(b)]) as rig:
        sets = list(rig)
    assert len(sets) == 5
    assert all(_decode_index(s[0].image) == _decode_index(s[1].image) for s in sets)
    with pytest.raises(InputError, match="two or more"):
        open_multi_source([str(a)])
    with pytest.raises(InputError):
        open_multi_source([str(a), str(tmp_path / "missing.avi")])


# ---------------------------------------------------------------------------------------------
# Session recording and replay
# ---------------------------------------------------------------------------------------------


def _record(folder: Path, storage: str, close: bool = True) -> list[Frame]:
    intr = Intrinsics(80.0, 80.0, 31.5, 23.5)
    frames = list(ArraySource([_coded_image(i) for i in range(5)], intrinsics=intr, fps=15.0))
    recorder = SessionRecorder(folder, storage=storage, source="unit-test", fps=15.0)
    for frame in frames:
        recorder.add_frame(frame)
        recorder.add_result({"frame": frame.index, "hands": []})
    if close:
        recorder.close()
    return frames


@pytest.mark.parametrize("storage", ["png", "mp4"])
def test_recorder_round_trip(tmp_path: Path, storage: str) -> None:
    folder = tmp_path / "session"
    frames = _record(folder, storage)
    assert is_session_folder(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["frame_count"] == 5
    assert manifest["format"] == "handtwin-session" and manifest["source"] == "unit-test"
    assert (folder / "intrinsics.json").is_file() and manifest["depth"] is None
    assert not (folder / "depth").exists() and not (folder / "depth_camera.json").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    with open_source(str(folder)) as replay:
        assert isinstance(replay, SessionSource) and len(replay) == 5 and replay.fps == 15.0
        replayed = list(replay)
        assert replay.results() == [{"frame": i, "hands": []} for i in range(5)]
    assert [f.index for f in replayed] == [f.index for f in frames]
    assert [f.timestamp_s for f in replayed] == pytest.approx([f.timestamp_s for f in frames])
    for original, copy in zip(frames, replayed):
        assert copy.intrinsics == original.intrinsics
        if storage == "png":
            np.testing.assert_array_equal(copy.image, original.image)
        else:
            assert _decode_index(copy.image) == _decode_index(original.image)
    assert read_session_results(folder)[-1] == {"frame": 4, "hands": []}


def test_recorder_keeps_the_depth_of_rgbd_frames(tmp_path: Path) -> None:
    """An RGB-D source's depth is recorded (16-bit millimetres) and replayed on its frames; the
    session's frames and depth folders pair image by image, an RGB-D source for --depth."""
    import dataclasses

    folder = tmp_path / "session"
    intr = Intrinsics(80.0, 80.0, 31.5, 23.5)
    frames = list(ArraySource([_coded_image(i) for i in range(4)], intrinsics=intr, fps=15.0))
    rng = np.random.default_rng(0)
    depths = {}
    for i in (1, 3):  # frames 0 and 2 come without depth (unreadable depth images of the stream)
        d = rng.uniform(0.2, 2.0, frames[i].image.shape[:2]).astype(np.float32)
        d[:4, :4] = 0.0  # unknown stays unknown
        d[-1, -1] = 80.0  # beyond 16-bit millimetres: unknown, not a wrong depth
        depths[i] = d
        frames[i] = dataclasses.replace(frames[i], depth=d)
    with SessionRecorder(folder, storage="png", source="unit-test", fps=15.0) as recorder:
        for frame in frames:
            recorder.add_frame(frame)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["depth"] == "depth" and manifest["depth_scale_m"] == 0.001
    with open_source(str(folder)) as replay:
        replayed = list(replay)
    assert replayed[0].depth is None and replayed[2].depth is None
    for i, want in depths.items():
        got = replayed[i].depth
        assert got is not None and got.dtype == np.float32 and got.shape == want.shape
        assert (got[:4, :4] == 0).all() and got[-1, -1] == 0
        known = want.copy()
        known[-1, -1] = 0
        assert np.abs(got - known).max() <= 0.0005 + 1e-6  # millimetre steps
    assert sorted(p.name for p in (folder / "depth").iterdir()) == [f"{i:06d}.png" for i in range(4)]
    with open_source(str(folder / "frames"), depth=str(folder / "depth"),
                     depth_camera=str(folder / "depth_camera.json")) as rgbd:
        again = list(rgbd)
        assert rgbd.camera_known  # the depth camera file describes the colour frames
    assert len(again) == 4 and again[0].intrinsics.fx == 80.0
    for i in (1, 3):
        np.testing.assert_array_equal(again[i].depth, replayed[i].depth)
    assert not again[0].depth.any() and not again[2].depth.any()


def test_recorder_keeps_both_cameras_of_a_calibrated_pair(tmp_path: Path) -> None:
    """A stereo pair's recording keeps the second camera's frames (``second/``, a session of its
    own) and the pair's calibration: the folder replays as that calibrated pair, set by set; a
    recording without the second camera (an older session) still replays as one camera."""
    import dataclasses

    from core.capture import open_spec, resolve_spec
    from core.capture.stereo import StereoCalibration, StereoSource

    k1, k2 = Intrinsics(80.0, 80.0, 31.5, 23.5), Intrinsics(90.0, 90.0, 30.5, 22.5)
    cal = StereoCalibration(k1.K, k2.K, np.eye(3), np.array([-0.06, 0.0, 0.0]))
    ref = list(ArraySource([_coded_image(i) for i in range(4)], intrinsics=k1, fps=15.0))
    # the second camera's frames: other images, taken 5 ms later
    other = [dataclasses.replace(f, image=_coded_image(10 + i), intrinsics=k2, timestamp_s=f.timestamp_s + 0.005)
             for i, f in enumerate(ArraySource([_coded_image(0)] * 4, fps=15.0))]
    folder = tmp_path / "pair"
    with SessionRecorder(folder, storage="png", source="unit-test", calibration=cal) as recorder:
        for a, b in zip(ref, other):
            recorder.add_frame(a, b)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stereo"] == {"session": "second", "calibration": "stereo_calib.json"}
    assert is_session_folder(folder / "second")
    spec = resolve_spec(capture_open.parse_spec(str(folder)))
    assert spec.sources == (str(folder), str(folder / "second")) and spec.stereo_calib.endswith("stereo_calib.json")
    with open_spec(str(folder)) as replay:
        assert isinstance(replay, StereoSource) and replay.frame_count == 4
        np.testing.assert_allclose(replay.calibration.T, cal.T)
        np.testing.assert_allclose(replay.calibration.K2, k2.K)
        sets = list(replay)
    assert len(sets) == 4
    for i, fs in enumerate(sets):
        assert _decode_index(fs[0].image) == i and _decode_index(fs[1].image) == 10 + i
        assert fs[0].intrinsics.fx == 80.0 and fs[1].intrinsics.fx == 90.0
    # the reference camera alone still opens as a plain session
    with open_source(str(folder)) as alone:
        assert isinstance(alone, SessionSource) and len(list(alone)) == 4
    # an older session (no "stereo" in its manifest) replays as one camera through the spec too
    old = tmp_path / "old"
    _record(old, "png")
    assert json.loads((old / "manifest.json").read_text())["stereo"] is None
    doc = json.loads((old / "manifest.json").read_text())
    del doc["stereo"]
    (old / "manifest.json").write_text(json.dumps(doc))
    with open_spec(str(old)) as replay:
        assert isinstance(replay, SessionSource) and len(list(replay)) == 5


def test_unfinished_session_still_replays(tmp_path: Path) -> None:
    folder = tmp_path / "crashed"
    _record(folder, "png", close=False)
    with (folder / "frames.jsonl").open("a") as handle:
        handle.write('{"record": 5, "index"')  # a line cut short by the crash
    assert json.loads((folder / "manifest.json").read_text())["complete"] is False
    with open_source(str(folder)) as replay:
        assert len(list(replay)) == 5


def test_recorder_refuses_an_existing_session(tmp_path: Path) -> None:
    folder = tmp_path / "session"
    _record(folder, "png")
    with pytest.raises(InputError, match="already holds"):
        SessionRecorder(folder)
    not_a_session = tmp_path / "plain"
    not_a_session.mkdir()
    with pytest.raises(InputError, match="not a recorded"):
        SessionSource(not_a_session)


# ---------------------------------------------------------------------------------------------
# The base class contract
# ---------------------------------------------------------------------------------------------


def test_closed_source_refuses_iteration() -> None:
    class Endless(FrameSource):
        def _frames(self) -> Iterator[Frame]:
            i = 0
            while True:
                yield self._make_frame(i, i / 30, _coded_image(0))
                i += 1

    source = Endless("endless")
    with pytest.raises(TypeError):
        len(source)
    with source:
        assert next(iter(source)).index == 0
    with pytest.raises(InputError, match="closed"):
        iter(source)


def test_weak_perspective_on_the_demo_is_not_overridden_by_its_own_camera() -> None:
    """``track demo --weak-perspective`` fitted in the clip's bundled camera ("given",
    perspective): the flag was ignored for the demo. Now its frames carry no camera."""
    from core.capture import open_source

    with open_source("demo") as src:
        frame = next(iter(src))
        assert frame.intrinsics is not None and frame.intrinsics_source == "given"
    with open_source("demo", weak_perspective=True) as src:
        frame = next(iter(src))
        assert frame.intrinsics is None and not src.camera_known


def test_a_gui_source_spec_given_to_the_command_line_says_which_options_to_use(tmp_path: Path) -> None:
    """``track 'clip.mp4|depth=d|depth-intrinsics=D.json'`` said only 'no such file or folder'."""
    from core.capture import open_source

    with pytest.raises(InputError, match=r"source spec is for gui --source; .*--depth/--depth-intrinsics"):
        open_source(f"demo|depth={tmp_path}|depth-intrinsics={tmp_path / 'D.json'}")
    with pytest.raises(InputError, match=r"no such file or folder: .*a camera index"):
        open_source(str(tmp_path / "missing.mp4"))
