"""CPU time and resident memory of a process and its descendants, from Linux ``/proc``.

Used by the detector's child-process accounting (:mod:`core.detect.process`), the window's
session figures (``gui --stats``) and the GUI soak (``bench --only soak``). Every reader
returns None where ``/proc`` does not tell (another OS, or the process has ended).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path


def process_cpu_s(pid: int) -> float | None:
    """CPU time (user + system) ``pid`` has used so far, seconds; None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def process_rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid``, MiB (0 for a process without one, e.g. a zombie); None
    where unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(m.group(1)) / 1024.0 if m else 0.0


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (of all its threads); [] where unknown."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return out


def tree_total(pid: int, read: Callable[[int], float | None]) -> float | None:
    """``read`` summed over ``pid`` and all its descendants; None when ``pid`` itself cannot
    be read (a descendant that ended meanwhile counts 0)."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        value = read(p)
        if value is None:
            if p == pid:
                return None
            continue
        total += value
        todo += children(p)
    return total


def tree_cpu_s(pid: int | None = None) -> float | None:
    """CPU time (user + system) of a process (default: this one) and all its descendants so
    far, seconds; None without ``/proc``."""
    return tree_total(os.getpid() if pid is None else pid, process_cpu_s)


def tree_rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` and all its descendants, MiB; None if ``pid`` is gone."""
    return tree_total(pid, process_rss_mb)
