"""The GUI soak's bookkeeping (core.tools.bench_soak): figures from RSS samples, the process tree's RSS,
and that a plain ``bench`` leaves the 20-minute soak out."""

from __future__ import annotations

import os
import sys

import pytest

from core.tools.bench_soak import SoakResult, tree_rss_mb


def test_soak_figures_use_the_samples_after_warm_up() -> None:
    samples = ((5.0, 300.0), (60.0, 900.0), (120.0, 700.0), (1320.0, 710.0))
    r = SoakResult(duration_s=1200.0, ran_s=1321.0, exit_code=0, survived=True, rss_mb=samples,
                   warmup_s=120.0, frames_shown=5000, error="")
    f = r.figures()
    assert f["soak_rss_start_mb"] == 700.0 and f["soak_rss_end_mb"] == 710.0
    assert f["soak_rss_peak_mb"] == 900.0  # the peak counts start-up too
    # least squares through (120, 700), (1320, 710): 10 MiB in 1200 s
    assert f["soak_rss_growth_mb_per_h"] == pytest.approx(10.0 / 1200.0 * 3600.0, abs=0.05)
    flat = SoakResult(1200.0, 1300.0, 0, True, ((130.0, 700.0), (715.0, 720.0), (1300.0, 700.0)), 120.0, 1, "")
    assert flat.figures()["soak_rss_growth_mb_per_h"] == pytest.approx(0.0, abs=1e-6)  # a bump, not growth
    assert f["soak_survived"] is True and f["soak_frames_shown"] == 5000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_tree_rss_counts_this_process() -> None:
    status = open(f"/proc/{os.getpid()}/status").read()
    own = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:"))) / 1024.0
    assert tree_rss_mb(os.getpid()) >= own * 0.9
    assert tree_rss_mb(2**22 + 12345) is None  # no such process


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_tree_cpu_counts_a_busy_child() -> None:
    """``gui --stats``'s CPU per frame is the window's and its detector child's together."""
    import subprocess

    from core.procstat import process_cpu_s, tree_cpu_s

    burn = ("import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
            "print('done', flush=True)\ntime.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "done"
        own, tree = process_cpu_s(os.getpid()), tree_cpu_s()
        assert own is not None and tree is not None and tree - own >= 0.25  # the child's 0.3 s
        assert process_cpu_s(child.pid) >= 0.25 and process_cpu_s(2**22 + 12345) is None
    finally:
        child.kill()
        child.wait()


def test_plain_bench_skips_the_soak(monkeypatch) -> None:
    import core.tools.bench as bench

    ran = []
    monkeypatch.setattr(bench, "BENCHMARKS", {"baseline": lambda: {"baseline_ms": 1.0},
                                              "soak": lambda: ran.append("soak") or {}})
    monkeypatch.setattr(bench, "_stage_benchmarks", dict)
    bench.run_benchmarks(None)
    assert ran == []
    bench.run_benchmarks(["soak"])
    assert ran == ["soak"]


def test_plain_bench_skips_gui_fps(monkeypatch) -> None:
    import core.tools.bench as bench

    ran = []
    monkeypatch.setattr(bench, "BENCHMARKS", {"baseline": lambda: {"baseline_ms": 1.0},
                                              "gui_fps": lambda: ran.append("gui_fps") or {}})
    monkeypatch.setattr(bench, "_stage_benchmarks", dict)
    bench.run_benchmarks(None)
    assert ran == []
    bench.run_benchmarks(["gui_fps"])
    assert ran == ["gui_fps"]


@pytest.mark.parametrize("duration", [float("nan"), float("inf"), 0.0, -3.0])
def test_soak_refuses_a_duration_that_is_not_a_positive_time(duration: float) -> None:
    """``bench --only soak --soak-s nan`` started the GUI, which then failed; refused up front."""
    from core.errors import InputError
    from core.tools.bench_soak import run_gui_soak

    with pytest.raises(InputError, match="the soak duration must be > 0 s"):
        run_gui_soak(duration)
