"""The command line: model-info, bench, and clear errors for what is not there yet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import main as cli
from tests.mano_files import write_mano_pickle

ROOT = Path(__file__).resolve().parents[1]


def test_model_info_json(capsys) -> None:
    assert cli.main(["model-info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for key in ("name", "license", "vertices", "faces", "joints", "hand_length_mm", "hand_width_mm"):
        assert key in info
    assert info["vertices"] == 1610 and info["joints"] == 16
    assert 170 <= info["hand_length_mm"] <= 200
    sweep = {(r["component"], r["sd"]): r for r in info["shape_sweep"]}
    assert len(sweep) == 6
    assert sweep[(1, -2.0)]["hand_length_mm"] < info["hand_length_mm"] < sweep[(1, 2.0)]["hand_length_mm"]


def test_model_info_table_and_user_model(tmp_path: Path, open_hand, capsys) -> None:
    path = write_mano_pickle(tmp_path / "MANO_RIGHT.pkl", open_hand)
    assert cli.main(["model-info", "--model", str(path)]) == 0
    out = capsys.readouterr().out
    assert "MANO (MANO_RIGHT.pkl)" in out and "beta 1" in out


def test_bad_model_path_is_one_clear_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "MANO_RIGHT.pkl"
    bad.write_bytes(b"\x80\x02garbage")
    assert cli.main(["model-info", "--model", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("handtwin: error:")


def test_bench_reports_model_forward(capsys) -> None:
    assert cli.main(["bench", "--json", "--only", "model"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model_forward_ms"] > 0 and res["baseline_ms"] > 0
    assert res["model_forward_ratio"] == pytest.approx(res["model_forward_ms"] / res["baseline_ms"], rel=0.01)


def test_main_runs_as_a_script() -> None:
    result = subprocess.run(
        [sys.executable, "main.py", "model-info", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["faces"] == 3216


def test_bench_reports_cpu_steal_share() -> None:
    from core.tools.bench import cpu_steal_ticks, steal_share

    assert steal_share((10, 1000), (60, 2000)) == 0.05
    assert steal_share(None, (1, 2)) is None
    ticks = cpu_steal_ticks()
    if ticks is not None:  # Linux
        steal, total = ticks
        assert 0 <= steal <= total


def test_bench_refuses_an_unknown_benchmark_before_running_any(capsys, monkeypatch) -> None:
    """``bench --only pipelin`` ran nothing but the baseline and exited 0; now one error line
    listing the names --only takes, and no benchmark (not even the baseline) runs."""
    import core.tools.bench as bench

    ran: list[str] = []
    monkeypatch.setitem(bench.BENCHMARKS, "baseline", lambda: ran.append("baseline") or {})
    assert cli.main(["bench", "--only", "model", "pipelin"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("handtwin: error: no benchmark named pipelin;")
    assert "pipeline" in err[0] and "softras" in err[0] and ran == []


def test_bench_refuses_a_plots_folder_it_cannot_make_before_running(tmp_path: Path, capsys, monkeypatch) -> None:
    """``--plots FILE`` failed with a traceback when the first plot was drawn, after the benchmarks."""
    import core.tools.bench as bench

    ran: list[str] = []
    monkeypatch.setitem(bench.BENCHMARKS, "baseline", lambda: ran.append("baseline") or {})
    taken = tmp_path / "plots.png"
    taken.write_bytes(b"x")
    for where in (taken, taken / "sub"):
        assert cli.main(["bench", "--only", "model", "--plots", str(where)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"handtwin: error: --plots {where}: cannot make that folder")
    assert ran == []
    assert cli.main(["bench", "--only", "baseline", "--plots", str(tmp_path / "new" / "plots")]) == 0
    assert (tmp_path / "new" / "plots").is_dir() and ran == ["baseline"]


def test_gui_without_a_display_is_one_clear_error(monkeypatch, capsys) -> None:
    """Qt aborted the process (status 134) where there is no screen; now one line, exit 2."""
    for key in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert cli.main(["gui", "--quit-after", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no display" in err[0] and "xvfb-run" in err[0]


def test_gui_checks_its_intrinsics_file_before_the_window_opens(tmp_path: Path, monkeypatch, capsys) -> None:
    """A malformed --intrinsics file was only reported inside the window (exit 0)."""
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    bad = tmp_path / "K.json"
    bad.write_text('{"fx": 500, "fy":')
    assert cli.main(["gui", "--source", "demo", "--intrinsics", str(bad), "--quit-after", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("handtwin: error:") and "K.json" in err[0]


@pytest.mark.parametrize("argv, message", [
    (["track", "demo", "--out", "r.jsonl", "--fov", "wide"], "argument --fov: invalid float value: 'wide'"),
    (["track", "demo"], "the following arguments are required: --out"),
    (["calibrate", "demo", "--out", "p.json", "--side", "middle"], "argument --side: invalid choice"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_a_mistyped_argument_is_one_error_line(argv: list[str], message: str, capsys) -> None:
    """argparse printed its usage block first and named the sub-command ('handtwin track: error:');
    now the one line every other error has, with where to look, and status 2."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("handtwin: error: ") and message in err[0], captured.err
    assert err[0].endswith("--help)") and captured.out == ""


def test_a_closed_stdout_is_no_traceback() -> None:
    """``main.py bench --json | head -1`` ended in a BrokenPipeError traceback when head left first."""
    proc = subprocess.Popen([sys.executable, "main.py", "model-info", "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


@pytest.mark.parametrize("value", ["nan", "-5", "inf", "0"])
def test_gui_quit_after_must_be_a_positive_time(value: str, monkeypatch, capsys) -> None:
    """``--quit-after nan`` ended in a ValueError traceback after the window opened; a negative
    value quit at once with 'QTimer::start: negative intervals'. Checked before the window."""
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert cli.main(["gui", "--source", "demo", "--quit-after", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("handtwin: error: --quit-after must be between 0.1 and")


def test_bench_flags_a_baseline_whose_threads_wait_on_each_other() -> None:
    """Two threads 10x slower than one: another process holds a core (measured: 0.6 -> 290 ms)."""
    from core.tools.bench import threads_contended

    assert threads_contended({"baseline_ms": 290.3, "baseline_one_thread_ms": 0.71})
    assert not threads_contended({"baseline_ms": 0.63, "baseline_one_thread_ms": 0.71})
    assert not threads_contended({"baseline_ms": 1.0})  # an older result without the figure
