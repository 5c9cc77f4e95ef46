"""MediaPipe in a child process (core.detect.process), and the engine's
stream on it: same answers as in this process, clear errors, nothing left behind."""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from core.capture import DEMO_CLIP_PATH, open_source
from core.detect import HandDetector
from core.detect.process import DetectorConfig, DetectorProcess, DetectorProcessError
from core.engine import Engine, EngineSettings
from core.errors import InputError

pytestmark = pytest.mark.skipif(not DEMO_CLIP_PATH.exists(), reason="demo clip not built")


@pytest.fixture(scope="module")
def frames():
    with open_source("demo") as src:
        return list(itertools.islice(src, 10))


def blocks_of(child: DetectorProcess) -> set[str]:
    """Names of the shared-memory blocks the child's frame slots hold now."""
    return {s.name.lstrip("/") for s in child._slots if s is not None}  # noqa: SLF001 - what the test checks


def still_there(names: set[str]) -> set[str]:
    """The named blocks that still exist (only this test's own: other processes may come and go)."""
    return {n for n in names if (Path("/dev/shm") / n).exists()}


def test_the_child_answers_as_this_process_would(frames) -> None:
    """Keypoints and handedness equal those of a detector here; frames
    pipelined two deep come back in order; bad frames are refused before they are sent."""
    used: set[str] = set()
    with DetectorProcess(DetectorConfig(max_hands=1, mode="video")) as child, \
            HandDetector(max_hands=1, mode="video") as here:
        answers = []
        for f in frames:
            child.submit(f.image, f.timestamp_s)
            used |= blocks_of(child)
            if child.in_flight == child.depth:
                answers.append(child.receive())
        with pytest.raises(DetectorProcessError, match="in flight"):
            for _ in range(3):
                child.submit(frames[0].image, 1e6)
        child.drain()
        assert child.in_flight == 0
        with pytest.raises(InputError, match="uint8"):
            child.submit(np.zeros((4, 4), np.float32), 0.0)
        for _ in range(3):  # a larger frame gets larger shared memory in every slot it passes
            child.submit(np.zeros((600, 900, 3), np.uint8), 1e7 + _)
            used |= blocks_of(child)
            assert child.receive().detections == ()
        for f, a in zip(frames, answers):
            mine = here.detect(f.image, f.timestamp_s)
            assert [d.handedness for d in a.detections] == [d.handedness for d in mine]
            for d, m in zip(a.detections, mine):
                np.testing.assert_array_equal(d.keypoints_2d, m.keypoints_2d)
                np.testing.assert_array_equal(d.world_landmarks, m.world_landmarks)
            assert len(a.detections) == 1
            assert a.detect_ms > 0
        assert child.cpu_time_s() is None or child.cpu_time_s() > 0
    assert used and not still_there(used)  # the frames' shared memory is gone


def test_a_child_that_cannot_start_or_dies_says_so(frames) -> None:
    with pytest.raises(DetectorProcessError, match="could not start: ValueError: mode"):
        DetectorProcess(DetectorConfig(mode="sideways"))
    child = DetectorProcess(DetectorConfig(max_hands=1))
    child.submit(frames[0].image, 0.0)
    os.kill(child._proc.pid, signal.SIGKILL)  # noqa: SLF001 - simulate a crash
    with pytest.raises(DetectorProcessError, match=r"stopped unexpectedly \(exit code -9\)"):
        child.receive()
    assert not child.alive
    child.close()  # idempotent after a death


def test_a_reset_is_done_when_it_returns(frames) -> None:
    """reset() waits for the child's answer (MediaPipe's graph made anew is paid at the reset,
    not inside the next stream's first frame): it drops the frame in flight, leaves nothing on
    the line, the next frame starts a new stream, and a child that died says so at the reset."""
    with DetectorProcess(DetectorConfig(max_hands=1)) as child, HandDetector(max_hands=1, mode="video") as here:
        for f in frames[:3]:
            child.submit(f.image, f.timestamp_s)
            child.receive()
        child.submit(frames[3].image, frames[3].timestamp_s)  # in flight: dropped
        child.reset()
        assert child.in_flight == 0 and not child._conn.poll(0)  # noqa: SLF001 - the answer was read
        child.submit(frames[6].image, frames[6].timestamp_s)
        fresh = here.detect(frames[6].image, frames[6].timestamp_s)
        np.testing.assert_array_equal(child.receive().detections[0].keypoints_2d, fresh[0].keypoints_2d)
        os.kill(child._proc.pid, signal.SIGKILL)  # noqa: SLF001 - simulate a crash
        with pytest.raises(DetectorProcessError, match="stopped unexpectedly"):
            child.reset()
        assert not child.alive


def test_the_stream_in_a_child_equals_the_stream_in_a_thread(frames) -> None:
    """process_stream with the detector process gives the thread's fits and refinements; a
    stream stopped early leaves no stale answer for the next; a dead child is replaced."""
    def run(engine, n=None):
        engine.reset()
        out = []
        for r in engine.process_stream(frames):
            out.append(r)
            if n is not None and len(out) == n:
                break
        return out

    settings = EngineSettings(max_hands=1, device="cpu", refine_iterations=2)
    with Engine(settings) as engine:
        run(engine, 3)  # stopped early: frames stay in flight and must be dropped
        in_child = run(engine)
        assert engine._worker is not None  # noqa: SLF001
        assert engine._worker.config == DetectorConfig(max_hands=1, mode="video")  # noqa: SLF001 - MediaPipe only
        os.kill(engine._worker._proc.pid, signal.SIGKILL)  # noqa: SLF001
        with pytest.raises(DetectorProcessError, match="stopped unexpectedly"):
            list(engine.process_stream(frames))
        again = run(engine)  # a new child
    with Engine(EngineSettings(max_hands=1, device="cpu", refine_iterations=2, detector_process=False)) as engine:
        in_thread = run(engine)
        assert engine._worker is None  # noqa: SLF001
    assert len(in_child) == len(in_thread) == len(again) == len(frames)
    for a, b, c in zip(in_child, in_thread, again):
        assert a.frame == b.frame == c.frame
        for x, y, z in zip(a.hands, b.hands, c.hands):
            np.testing.assert_array_equal(x.detection.keypoints_2d, y.detection.keypoints_2d)
            np.testing.assert_allclose(x.fit.keypoints_3d, y.fit.keypoints_3d, atol=1e-6)
            np.testing.assert_allclose(x.refined.vertices, y.refined.vertices, atol=1e-6)
            np.testing.assert_allclose(z.refined.vertices, y.refined.vertices, atol=1e-6)
            np.testing.assert_array_equal(x.mask, y.mask)
            assert x.mask.sum() > 0


def test_a_paced_source_gets_each_result_before_its_next_frame_is_read(frames) -> None:
    """With the child, a frame's answer is taken when the child gives it, not once the next
    frame has come from the source: a source that gives frame k+1 only after the result of
    frame k was yielded (a camera is slower than the pipeline) is never kept waiting. Before,
    the detector's thread read frame k+1 before taking k's answer: a frame period of latency."""
    yielded = {f.index: threading.Event() for f in frames}

    def camera():
        for prev, frame in zip([None, *frames], frames):
            if prev is not None and not yielded[prev.index].wait(30.0):  # a guard: no result comes
                raise AssertionError(f"frame {frame.index} was read before the result of frame {prev.index}")
            yield frame

    def source_fails():
        yield from frames[:4]
        raise OSError("camera unplugged")

    settings = EngineSettings(max_hands=1, device="cpu", refine_iterations=2)
    with Engine(settings) as engine:
        order = []
        for r in engine.process_stream(camera()):
            order.append(r.frame)
            yielded[r.frame].set()
        assert engine._worker is not None  # noqa: SLF001 - the stream detected in the child
        engine.reset()
        with pytest.raises(OSError, match="camera unplugged"):
            list(engine.process_stream(source_fails()))
        engine.reset()
        again = [r.frame for r in engine.process_stream(frames)]  # nothing stale left in flight
    assert order == again == [f.index for f in frames]


def test_where_the_child_cannot_start_the_stream_detects_in_a_thread(frames, monkeypatch, caplog) -> None:
    import logging

    import core.engine

    def refuse(*args, **kwargs):
        raise DetectorProcessError("could not start the detector process: no processes here")

    monkeypatch.setattr(core.engine, "DetectorProcess", refuse)
    with caplog.at_level(logging.WARNING), Engine(EngineSettings(max_hands=1, device="cpu")) as engine:
        results = list(engine.process_stream(frames[:4]))
        assert engine._worker is None  # noqa: SLF001
    assert "hand detection stays in this process" in caplog.text and "no processes here" in caplog.text
    assert [len(r.hands) for r in results] == [1, 1, 1, 1]


def test_an_engine_made_for_streams_starts_its_child_at_once_and_no_detector_here(frames) -> None:
    with Engine(EngineSettings(max_hands=1, device="cpu"), stream=True) as engine:
        assert engine._worker is not None and engine._worker.alive  # noqa: SLF001 - loading meanwhile
        results = list(engine.process_stream(frames[:3]))
        assert engine._detector is None  # noqa: SLF001 - MediaPipe was never loaded in this process
    assert [len(r.hands) for r in results] == [1, 1, 1]


def test_without_shared_memory_the_child_is_not_started(monkeypatch) -> None:
    from multiprocessing import shared_memory

    def no_memory(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shared_memory, "SharedMemory", no_memory)
    with pytest.raises(DetectorProcessError, match="no shared memory for frames"):
        DetectorProcess(DetectorConfig(max_hands=1))


def test_a_child_that_stops_answering_is_given_up(frames) -> None:
    with DetectorProcess(DetectorConfig(max_hands=1)) as child:
        child.answer_timeout_s = 0.5
        os.kill(child._proc.pid, signal.SIGSTOP)  # noqa: SLF001 - a hung child
        child.submit(frames[0].image, 0.0)
        with pytest.raises(DetectorProcessError, match=r"no answer in 0.5 s"):
            child.receive()
        assert not child.alive


def test_photos_are_tiled_in_the_child_and_in_this_process(tmp_path: Path) -> None:
    """A photo folder (static mode) gets the detector's tiles wherever MediaPipe runs: a small
    hand in a large photo is found and fitted; a stream (video mode) never tiles."""
    import cv2

    from core.capture import open_source as open_folder
    from core.tools.cli_source import engine_settings_for
    from tests.test_detect import small_hand_in_a_large_photo

    photo = small_hand_in_a_large_photo()[0]
    cv2.imwrite(str(tmp_path / "photo.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    with open_folder(str(tmp_path)) as src:
        settings = engine_settings_for(EngineSettings(device="cpu"), src)
        assert settings.detector_mode == "static" and settings.detector_tiles
        frames_ = list(src)
    with Engine(settings) as engine:
        in_child = list(engine.process_stream(frames_))
        assert engine._worker is not None and engine._worker.config.tiles  # noqa: SLF001
        here = engine.process(frames_[0])
    assert len(in_child[0].hands) == len(here.hands) == 1
    with Engine(EngineSettings(device="cpu", detector_process=False)) as engine:
        assert not engine.detector.tiles  # video mode
    with Engine(dataclasses.replace(settings, detector_tiles=False, detector_process=False)) as engine:
        assert engine.process(frames_[0]).hands == ()
