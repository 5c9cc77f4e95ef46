"""``bench --only soak``: the real GUI on the demo clip, offscreen, for a long session.

The window runs in a child process (``main.py gui --source demo --quit-after S`` with
``QT_QPA_PLATFORM=offscreen``; ``core`` never imports Qt); this process samples the resident
memory of the child and its descendants from ``/proc`` and reports whether the window lived
the whole session and quit cleanly. A Qt binding that leaks references (PySide6 6.12.0 on
Python < 3.12: see tests/test_qt_refcount.py) aborts such a session after about 12 minutes.
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.procstat import tree_rss_mb

log = logging.getLogger(__name__)

#: The default session length, seconds (issue 17: the GUI used to abort after ~12.5 min).
DEFAULT_SOAK_S = 1200.0
#: main.py, the entry point the soak starts (it lies next to the ``core`` package).
MAIN_SCRIPT = Path(__file__).resolve().parents[2] / "main.py"
_FRAMES_LINE = re.compile(r"quitting after [\d.]+ s: (\d+) frames shown")


@dataclass(frozen=True)
class SoakResult:
    """One soak session of the GUI.

    Attributes:
        duration_s: the session asked for (the window quits by itself after it), seconds.
        ran_s: wall time until the process ended, seconds.
        exit_code: the process's exit status (negative: killed by that signal; None: it
            hung past the grace period and was killed).
        survived: it lived the whole session and then exited with status 0.
        rss_mb: (N, 2) samples (seconds since start, resident MiB of the process tree).
        warmup_s: samples before this time are start-up (models loading), not the steady state.
        frames_shown: frames the window drew, from its closing log line (None if it never said).
        error: the last line of its stderr that names a fatal error, else "".
    """

    duration_s: float
    ran_s: float
    exit_code: int | None
    survived: bool
    rss_mb: tuple[tuple[float, float], ...]
    warmup_s: float
    frames_shown: int | None
    error: str

    def figures(self) -> dict[str, object]:
        """Bench figures: RSS at the end of warm-up (start), its peak and end, and its growth
        rate after warm-up (the least-squares slope of the samples, MiB per hour)."""
        steady = [(t, m) for t, m in self.rss_mb if t >= self.warmup_s] or list(self.rss_mb)
        start = steady[0][1] if steady else None
        end = steady[-1][1] if steady else None
        slope = None
        if len(steady) >= 2 and steady[-1][0] > steady[0][0]:  # least-squares line through the steady state
            t = np.array([p[0] for p in steady])
            m = np.array([p[1] for p in steady])
            slope = float(np.polyfit(t, m, 1)[0]) * 3600.0
        r = lambda v: None if v is None else round(v, 1)  # noqa: E731
        return {
            "soak_s": self.duration_s,
            "soak_ran_s": round(self.ran_s, 1),
            "soak_survived": self.survived,
            "soak_exit_code": self.exit_code,
            "soak_frames_shown": self.frames_shown,
            "soak_rss_start_mb": r(start),
            "soak_rss_peak_mb": r(max((m for _, m in self.rss_mb), default=None)),
            "soak_rss_end_mb": r(end),
            "soak_rss_growth_mb_per_h": r(slope),
            "soak_error": self.error,
        }


def run_gui_soak(duration_s: float = DEFAULT_SOAK_S, sample_s: float = 5.0, grace_s: float = 120.0,
                 source: str = "demo") -> SoakResult:
    """Run the GUI on ``source`` offscreen for ``duration_s`` seconds and watch it.

    The window quits by itself after ``duration_s`` (``--quit-after``); a process still there
    ``grace_s`` later is taken for hung and killed.
    """
    if not duration_s > 0 or not math.isfinite(duration_s):  # NaN passed '<= 0' and failed in the window
        raise InputError(f"the soak duration must be > 0 s, got {duration_s}")
    if not MAIN_SCRIPT.is_file():
        raise InputError(f"the soak starts {MAIN_SCRIPT}, which is missing (run from a checkout)")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    cmd = [sys.executable, str(MAIN_SCRIPT), "gui", "--source", source, "--quit-after", f"{duration_s:g}"]
    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryFile(mode="w+b") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=MAIN_SCRIPT.parent)
        exit_code: int | None = None
        try:
            while True:
                try:
                    exit_code = proc.wait(timeout=sample_s)
                    break
                except subprocess.TimeoutExpired:
                    pass
                elapsed = time.monotonic() - t0
                rss = tree_rss_mb(proc.pid)
                if rss is not None:
                    samples.append((round(elapsed, 1), rss))
                if elapsed > duration_s + grace_s:
                    log.warning("soak: the GUI is still running %.0f s after it should have quit; killing it",
                                elapsed - duration_s)
                    break
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        ran_s = time.monotonic() - t0
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    frames = [int(m) for m in _FRAMES_LINE.findall(text)]
    fatal = [ln.strip() for ln in text.splitlines()
             if re.search(r"Fatal|Traceback|Error:|handtwin: error:|Segmentation", ln)]
    survived = exit_code == 0 and ran_s >= duration_s
    return SoakResult(
        duration_s=float(duration_s), ran_s=ran_s, exit_code=exit_code, survived=survived,
        rss_mb=tuple(samples), warmup_s=min(120.0, duration_s / 4), frames_shown=frames[-1] if frames else None,
        error=fatal[-1] if fatal else "",
    )


def plot_rss(result: SoakResult, path: Path) -> Path:
    """Draw the soak's resident memory over time (PNG) with the warm-up marked."""
    from core.tools.bench import figure

    with figure(path) as ax:
        ax.plot([t / 60 for t, _ in result.rss_mb], [m for _, m in result.rss_mb], lw=1.2)
        ax.axvline(result.warmup_s / 60, color="k", ls="--", lw=0.8, label="end of warm-up")
        ax.set_xlabel("minutes since start")
        ax.set_ylabel("resident memory (MiB)")
        ended = "survived" if result.survived else f"exit {result.exit_code} after {result.ran_s / 60:.1f} min"
        ax.set_title(f"GUI on the demo, {result.duration_s / 60:.0f} min: {ended}")
        ax.legend(fontsize=8)
    return path


def bench_soak(duration_s: float | None = None, plots: Path | None = None) -> dict[str, object]:
    """The soak's figures (``bench --only soak [--soak-s S] [--plots DIR]``; default
    :data:`DEFAULT_SOAK_S`); with ``plots``, also ``soak_rss.png`` there."""
    result = run_gui_soak(DEFAULT_SOAK_S if duration_s is None else duration_s)
    if not result.survived:
        log.warning("soak: the GUI did not survive the session (exit %s after %.0f s): %s",
                    result.exit_code, result.ran_s, result.error or "no error printed")
    if plots is not None and result.rss_mb:
        plot_rss(result, plots / "soak_rss.png")
    return result.figures()
