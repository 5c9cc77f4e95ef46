"""The one place that sets the size of OpenBLAS's thread pools.

HandTwin's NumPy and SciPy work is made of small arrays (a 60 x 60 solve, a few thousand
texels), where BLAS threads never pay. They cost a great deal: after each multi-threaded call
OpenBLAS's worker threads busy-wait for their next job, so on a 2-core machine a pipeline that
calls NumPy now and then keeps one core spinning. Measured on the demo with refinement and
texture, frame by frame in one thread: 117 ms of CPU per 63 ms frame with the default pool,
60 ms of CPU with one thread, the wall time unchanged; the spinning core is then free for
MediaPipe and the engine's other threads.

:data:`BLAS_THREADS` finds the pools of the OpenBLAS libraries loaded in this process (NumPy's
and SciPy's bundled copies, through ``/proc/self/maps``; elsewhere it finds none and does
nothing). ``BLAS_THREADS.limit(1)`` is a context manager; :meth:`BlasThreads.set` sets the
size until it is set again (the engine does this while it is open).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)

__all__ = ["BLAS_THREADS", "BlasThreads"]

_Pool = tuple[Callable[[], int], Callable[[int], None]]


class BlasThreads:
    """The OpenBLAS thread pools of this process (found on first use)."""

    _NAMES = (("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
              ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
              ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
              ("openblas_get_num_threads", "openblas_set_num_threads"))

    def __init__(self) -> None:
        self._pools: list[_Pool] | None = None
        self._lock = threading.Lock()

    def _find(self) -> list[_Pool]:
        pools: list[_Pool] = []
        try:
            with open("/proc/self/maps") as fh:
                paths = sorted({ln.split()[-1] for ln in fh if "openblas" in ln.lower() and ".so" in ln})
        except OSError:
            return pools
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for get_name, set_name in self._NAMES:
                get, put = getattr(lib, get_name, None), getattr(lib, set_name, None)
                if get is not None and put is not None:
                    get.restype = ctypes.c_int
                    put.argtypes = [ctypes.c_int]
                    pools.append((get, put))
                    break
        log.debug("OpenBLAS pools found: %d", len(pools))
        return pools

    @property
    def pools(self) -> list[_Pool]:
        with self._lock:
            if self._pools is None:
                self._pools = self._find()
            return self._pools

    def get(self) -> list[int]:
        """The current size of each pool."""
        return [get() for get, _ in self.pools]

    def set(self, n: int | list[int]) -> list[int]:
        """Set every pool to ``n`` threads (or each to its entry of a list from :meth:`get`);
        returns the previous sizes."""
        pools = self.pools
        sizes = n if isinstance(n, list) else [int(n)] * len(pools)
        saved = [get() for get, _ in pools]
        for (_, put), old, new in zip(pools, saved, sizes):
            if old != new:
                put(new)
        return saved

    def limit(self, n: int) -> "_Limit":
        """A context manager: ``n`` threads inside, the previous sizes restored on exit."""
        return _Limit(self, n)


class _Limit:
    def __init__(self, owner: BlasThreads, n: int) -> None:
        self._owner, self._n = owner, n
        self._saved: list[int] = []

    def __enter__(self) -> None:
        self._saved = self._owner.set(self._n)

    def __exit__(self, *exc: object) -> None:
        self._owner.set(self._saved)


#: This process's OpenBLAS pools.
BLAS_THREADS = BlasThreads()
