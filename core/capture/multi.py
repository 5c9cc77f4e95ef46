"""Several cameras paired into :class:`FrameSet`s by nearest timestamp."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Sequence
from types import TracebackType

from core.capture.frame import Frame, FrameSet
from core.capture.sources import FrameSource
from core.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["SynchronizedSource"]


class _Lookahead:
    """An iterator of frames that can look a few frames ahead without consuming them."""

    def __init__(self, frames: Iterator[Frame]) -> None:
        self._it = frames
        self._buffer: deque[Frame] = deque()

    def peek(self, k: int = 0) -> Frame | None:
        """The k-th upcoming frame (0 = the next one), or None past the end."""
        while len(self._buffer) <= k:
            frame = next(self._it, None)
            if frame is None:
                return None
            self._buffer.append(frame)
        return self._buffer[k]

    def pop(self) -> Frame | None:
        """Consume and return the next frame, or None at the end."""
        if self.peek() is None:
            return None
        return self._buffer.popleft()


class SynchronizedSource:
    """Two or more frame sources read together and paired by nearest timestamp.

    The first source is the **reference** camera. For each reference frame, every other
    source advances to its frame nearest in time (older frames are dropped); when all of
    them lie within ``tolerance_s`` the set is yielded, otherwise the reference frame is
    dropped (logged at debug level). The stream ends when any source ends.

    Timestamps must share a clock: live cameras opened with :func:`open_multi_source` share
    one epoch; video files each start at 0, which pairs them frame by frame in time.

    Args:
        sources: two or more opened sources; this object owns and closes them.
        tolerance_s: largest accepted |t_other - t_reference| in seconds; default: half a
            frame period of the reference source (or 1/60 s when its rate is unknown).

    Raises:
        InputError: fewer than two sources.
    """

    def __init__(self, sources: Sequence[FrameSource], tolerance_s: float | None = None) -> None:
        if len(sources) < 2:
            raise InputError(f"synchronized capture needs two or more sources, got {len(sources)}")
        self.sources = tuple(sources)
        if tolerance_s is None:
            fps = self.sources[0].fps
            tolerance_s = 0.5 / fps if fps else 1.0 / 60.0
        if tolerance_s < 0:
            raise ValueError(f"tolerance_s must be >= 0, got {tolerance_s}")
        self.tolerance_s = float(tolerance_s)
        self.name = " + ".join(s.name for s in self.sources)
        self.dropped_reference_frames = 0

    @property
    def fps(self) -> float | None:
        """The reference camera's nominal rate."""
        return self.sources[0].fps

    @property
    def ended_early(self) -> str | None:
        """The first of the sources' :attr:`~core.capture.sources.FrameSource.ended_early`, or None."""
        return next((s.ended_early for s in self.sources if s.ended_early), None)

    def __iter__(self) -> Iterator[FrameSet]:
        reference = iter(self.sources[0])
        others = [_Lookahead(iter(s)) for s in self.sources[1:]]
        index = 0
        for ref in reference:
            chosen: list[Frame] = []
            for other in others:
                current = other.peek()
                if current is None:
                    return
                # Advance while the following frame is at least as close to the reference.
                while True:
                    following = other.peek(1)
                    if following is None or abs(following.timestamp_s - ref.timestamp_s) > abs(
                        current.timestamp_s - ref.timestamp_s
                    ):
                        break
                    other.pop()
                    current = following
                chosen.append(current)
            skew = max(abs(f.timestamp_s - ref.timestamp_s) for f in chosen)
            if skew > self.tolerance_s:
                self.dropped_reference_frames += 1
                log.debug("%s: no partner within %.4f s for reference frame %d (skew %.4f s)",
                          self.name, self.tolerance_s, ref.index, skew)
                continue
            for other in others:  # a partner is used once
                other.pop()
            yield FrameSet(index=index, timestamp_s=ref.timestamp_s, frames=(ref, *chosen))
            index += 1

    def close(self) -> None:
        """Close every source."""
        for source in self.sources:
            source.close()

    def __enter__(self) -> SynchronizedSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

