"""core.native_logs: MediaPipe's native start-up notes kept off a command's terminal, nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.native_logs import is_chatter

ROOT = Path(__file__).resolve().parents[1]

# Lines MediaPipe 0.10.21 and 1.2 wrote before every command's result (seen on this project's venvs).
CHATTER = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"WARNING: Logging before InitGoogle() is written to STDERR",
    b"I0000 00:00:1796554455.962054   12503 task_runner.cc:85] GPU suport is not available: INTERNAL: ; "
    b"RET_CHECK failure (mediapipe/gpu/gl_context_egl.cc:84) egl_initializedUnable to initialize EGL",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    b"W0000 00:00:1796554455.991835   12533 inference_feedback_manager.cc:114] Feedback manager requires a "
    b"model with a single signature inference. Disabling support for feedback tensors.",
    b"INFO: [environment.cc:36] Creating LiteRT environment with options",
    b"WARNING: Read-only tensor #3 (model_1/model/up_sampling2d_1/mul) has an unaligned buffer",
    b"W0000 00:00:1796553840.262638    3755 landmark_projection_calculator.cc:81] Using NORM_RECT without "
    b"IMAGE_DIMENSIONS is only supported for the square ROI.",
]
KEPT = [
    b"handtwin: error: no hand was found in any of the 3 frames of x; r.jsonl was not written",
    b"WARNING core.capture.sources: v.avi stopped decoding after 3 of its 20 frames",
    b"INFO core.tools.cli_track: no camera given for x",
    b"E0000 00:00:1796554455.962054   12503 graph.cc:85] something really failed",
    b"[mjpeg @ 0x7f5a80009cc0] overread 8",
    b"Traceback (most recent call last):",
    b"",
]


@pytest.mark.parametrize("line", CHATTER)
def test_native_chatter_is_dropped(line: bytes) -> None:
    assert is_chatter(line)


@pytest.mark.parametrize("line", KEPT)
def test_everything_else_is_kept(line: bytes) -> None:
    assert not is_chatter(line)


def test_filtered_process_keeps_python_stderr_and_children_lose_only_chatter() -> None:
    """Native writes to file descriptor 2 (here os.write, and a child process's) lose only the
    chatter; Python's sys.stderr is untouched; the last line, without its newline, is not lost."""
    code = r"""
import os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from core.native_logs import filter_native_logs
assert filter_native_logs([])
os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nE0000 00:00:1.5   1 x.cc:1] kept error\n")
print("python line", file=sys.stderr)
child = "import os; os.write(2, b'W0000 00:00:17.1   9 y.cc:2] chatter\\nchild kept\\n')"
subprocess.run([sys.executable, "-c", child])
os.write(2, b"last words")
"""
    res = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    err = res.stderr.decode()
    assert "INFO: Created" not in err and "chatter" not in err
    for kept in ("E0000 00:00:1.5   1 x.cc:1] kept error", "python line", "child kept", "last words"):
        assert kept in err, err


def test_verbose_or_the_environment_turns_the_filter_off(monkeypatch) -> None:
    from core.native_logs import filter_native_logs

    assert filter_native_logs(["-v", "track"]) is False
    monkeypatch.setenv("HANDTWIN_NATIVE_LOGS", "1")
    assert filter_native_logs(["track"]) is False


def test_ctrl_c_to_the_process_group_leaves_the_filter_quiet_and_working() -> None:
    """The terminal sends Ctrl-C to the whole process group: the filter ignores it (no
    KeyboardInterrupt traceback of its own) and still passes what the command writes after it."""
    code = r"""
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from core.native_logs import filter_native_logs
assert filter_native_logs([])
signal.signal(signal.SIGINT, signal.SIG_IGN)
time.sleep(0.5)  # let the filter start and install its handler
os.killpg(0, signal.SIGINT)
time.sleep(0.2)
os.write(2, b"after ctrl-c\n")
"""
    res = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, timeout=60,
                         start_new_session=True)
    assert res.returncode == 0, res.stderr
    err = res.stderr.decode()
    assert "KeyboardInterrupt" not in err and "after ctrl-c" in err, err



def test_ffmpeg_lines_do_not_repeat_what_handtwin_reports(tmp_path: Path) -> None:
    """Run as a user runs it, on a truncated MJPG video: FFmpeg's '[mjpeg @ 0x...] overread 8'
    came beside HandTwin's own warning that the file stopped decoding; now only HandTwin's lines."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for _ in range(12):
        writer.write(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    writer.release()
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    res = subprocess.run([sys.executable, "main.py", "track", str(video), "--out", str(tmp_path / "r.jsonl"),
                          "--fov", "60"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2  # noise: no hand
    lines = res.stderr.strip().splitlines()
    assert [ln.split(":")[0].split(" ")[0] for ln in lines] == ["WARNING", "handtwin"], res.stderr
    assert "stopped decoding after" in lines[0] and "no hand was found" in lines[1]
