"""The guided session's per-bone coverage bars and the next-pose hint."""

from __future__ import annotations

import numpy as np

from tests.test_gui_support import GUI_MARKS

pytestmark = GUI_MARKS


def _report(covered_bones: list[int]):
    from core.personalize.selection import coverage_report

    obs = np.zeros((8, 20))
    obs[:, covered_bones] = 1.0  # 8 side-on views of these bones: 0.1 / sqrt(8) < 0.04
    return coverage_report(obs)


def test_bars_show_covered_and_missing_bones(qtbot) -> None:
    from PySide6.QtGui import QColor

    from app.bone_coverage import BoneCoverage, coverage_hint

    w = BoneCoverage()
    qtbot.addWidget(w)
    w.resize(300, 60)
    report = _report(list(range(4, 20)))  # every finger, no thumb
    w.set_report(report)
    assert w.covered[4:].all() and not w.covered[:4].any()
    img = w.grab().toImage()
    bar_w = (300 - 4 * 8.0 - 20 * 2.0) / 20.0

    def bar_colour(b: int) -> QColor:
        g = b // 4
        x = g * (4 * (bar_w + 2.0) + 8.0) + (b % 4) * (bar_w + 2.0) + bar_w / 2
        return img.pixelColor(int(x * img.width() / 300), int(0.5 * (60 - 14) * img.height() / 60))

    green = bar_colour(5)
    assert green.green() > 150 and green.red() < 100  # a covered bar is full and green
    empty = bar_colour(1)
    assert empty.green() < 100  # the thumb's bars are empty (dark background)
    assert "thumb" in coverage_hint(report)
    assert "flat" in coverage_hint(_report([b for b in range(20) if b != 8])).lower()  # a metacarpal
    w.set_report(None)
    assert not w.covered.any() and w.fractions.max() == 0.0
    # The picture, for a look.
    from tests.test_gui_support import SHOTS

    SHOTS.mkdir(parents=True, exist_ok=True)
    w.set_report(_report([0, 1, 4, 5, 6, 8, 9, 12, 16, 17]))
    assert w.grab().save(str(SHOTS / "gui_bone_coverage.png"))
