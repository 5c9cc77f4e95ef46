"""A small terminal progress bar (stderr, only when it is a terminal)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """``with ProgressBar(total, "track") as bar: bar.update(1, "3 hands")``.

    Draws nothing when stderr is not a terminal (logs and CI stay clean).
    """

    def __init__(self, total: int | None, label: str, enabled: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.count = 0
        self.start = time.perf_counter()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last_draw = 0.0

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._draw("", force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()

    def update(self, n: int = 1, note: str = "") -> None:
        self.count += n
        self._draw(note)

    def _draw(self, note: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        rate = self.count / max(now - self.start, 1e-9)
        if self.total:
            frac = min(1.0, self.count / self.total)
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            eta = (self.total - self.count) / rate if rate > 0 else 0.0
            text = f"\r{self.label} [{bar}] {self.count}/{self.total} {rate:5.1f} fps eta {eta:4.0f}s {note}"
        else:
            text = f"\r{self.label} {self.count} frames {rate:5.1f} fps {note}"
        sys.stderr.write(text[:120].ljust(120))
        sys.stderr.flush()
