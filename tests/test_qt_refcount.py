"""The Qt binding keeps Python's reference counts right over a long session (issue 17).

PySide6 6.12.0 drops one reference to ``None`` on every call of a C++ method that returns
nothing, and one to ``True`` on every signal emit. On Python < 3.12 (where ``None`` and the
booleans are not immortal) the window's 15 ms draw timer, whose slot calls such methods,
drove ``None``'s count to zero after about 12.5 minutes: ``Fatal Python error: none_dealloc``.
pyproject.toml keeps PySide6 below 6.12; this test fails on a binding with that leak.

The ticks run in a child process: a leaking binding aborts it (bool_dealloc), not the test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="None, True and False are immortal on Python >= 3.12 (PEP 683)"
)

TICKS = 3000

# A QTimer firing into a Python slot that, like MainWindow._draw_latest, calls a void C++
# method and emits a signal on every tick; refcounts of None/True/False before and after.
_SCRIPT = """
import json, sys
from PySide6.QtCore import QCoreApplication, QObject, QTimer, Signal
import PySide6

class Ticker(QObject):
    ticked = Signal()

app = QCoreApplication([])
ticker = Ticker()
ticker.ticked.connect(lambda: None)
timer = QTimer()
state = {"n": 0}
singletons = (None, True, False)

def tick():
    state["n"] += 1
    timer.setInterval(0)   # a void method: returns None
    ticker.ticked.emit()   # returns True
    if state["n"] == 100:  # after warm-up (caches, first calls)
        state["start"] = [sys.getrefcount(x) for x in singletons]
    elif state["n"] == 100 + TICKS:
        state["end"] = [sys.getrefcount(x) for x in singletons]
        timer.stop()
        app.quit()

timer.setInterval(0)
timer.timeout.connect(tick)
timer.start()
app.exec()
print(json.dumps({"version": PySide6.__version__,
                  "delta": dict(zip(("None", "True", "False"),
                                    (e - s for s, e in zip(state["start"], state["end"]))))}))
"""


def test_timer_ticks_keep_the_refcounts_of_none_and_true() -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", f"TICKS = {TICKS}\n" + _SCRIPT], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, f"the timer loop aborted (exit {proc.returncode}): {proc.stderr.strip()[-400:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # A leak loses one reference per tick (3000); allow a little noise from the interpreter.
    for name, delta in report["delta"].items():
        assert abs(delta) < 50, f"PySide6 {report['version']}: refcount of {name} changed by {delta} over {TICKS} ticks"
