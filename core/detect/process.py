"""MediaPipe in a child process, a frame or two ahead of the caller.

Why a process and not a thread: the engine's stream (:meth:`core.engine.Engine.process_stream`)
runs detection next to the fit, the refinement and the texture. Those hold the GIL while they
run Python, and MediaPipe's Python wrapper needs it before and after every frame (packets in,
landmarks out). In a thread, each frame's MediaPipe call therefore waited for the other stages'
Python (up to the interpreter's 5 ms switch interval) while the detector's own cores sat idle,
and MediaPipe is the slowest stage. A child process has its own interpreter: MediaPipe runs
frame after frame, and the parent only copies pixels in and reads a few arrays out.

The child is a fresh interpreter (``python -m core.detect.process FD``), not a
``multiprocessing`` child: that would import the caller's main script again in the child,
which breaks any script without an ``if __name__ == "__main__"`` guard.

Protocol, on a private socket pair between this process and the child it started (messages
are pickled; that is safe only because nothing else holds either end):

* the parent first sends the :class:`DetectorConfig`; the child answers ``("ready",)`` once
  MediaPipe is loaded, or ``("error", exception class name, message)``;

* the parent copies each frame into one of ``depth + 1`` shared-memory slots and sends
  ``("frame", slot, slot name, shape, timestamp_s)``; it reuses a slot only after the answer
  for the frame in it has come back;
* the child answers in order, ``("ok", detections, detect_ms)``, or ``("error", exception class
  name, message)``;
* ``("reset",)`` forgets the tracked hands (MediaPipe's graph is made anew, about 20 ms); the
  child answers ``("reset",)`` once done, or ``("error", ...)``, so that a reset is paid when it
  is asked for, as :meth:`HandDetector.reset` is, not inside the next stream's first frame;
* ``None`` ends the child.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from core.detect.mediapipe_hands import Detection, HandDetector, detection_image
from core.errors import HandTwinError, InputError
from core.procstat import process_cpu_s

log = logging.getLogger(__name__)

__all__ = ["DetectorConfig", "DetectorProcess", "Detected", "DetectorProcessError"]


class DetectorProcessError(HandTwinError):
    """The detector's child process could not start, or stopped unexpectedly."""


@dataclass(frozen=True)
class DetectorConfig:
    """What the child runs.

    Attributes:
        max_hands, mode, tiles: the :class:`HandDetector`'s.
    """

    max_hands: int = 2
    mode: str = "video"
    tiles: bool = False


@dataclass(frozen=True)
class Detected:
    """The child's answer for one frame.

    Attributes:
        detections: MediaPipe's hands, most confident first.
        detect_ms: wall time of the detection in the child, milliseconds.
    """

    detections: tuple[Detection, ...]
    detect_ms: float


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open the parent's shared memory without this process's resource tracker claiming it
    (before Python 3.13 an attaching process registers the block too, and would unlink it
    or warn about a leak when it exits)."""
    shm = shared_memory.SharedMemory(name=name)
    try:
        resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001 - see docstring
    except Exception:  # noqa: BLE001 - the tracker is an implementation detail; never fatal
        log.debug("could not unregister %s from the resource tracker", name)
    return shm


def _serve(conn: Connection, config: DetectorConfig) -> None:
    """The child's loop (runs in the child process)."""
    slots: dict[int, shared_memory.SharedMemory] = {}
    try:
        detector = HandDetector(max_hands=config.max_hands, mode=config.mode, tiles=config.tiles)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    conn.send(("ready",))
    try:
        while (msg := conn.recv()) is not None:
            try:
                if msg[0] == "reset":
                    detector.reset()
                    answer: tuple = ("reset",)
                else:
                    answer = _answer(detector, slots, *msg[1:])
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
                answer = ("error", type(exc).__name__, str(exc))
            conn.send(answer)
    except (EOFError, OSError, KeyboardInterrupt):  # the parent went away
        pass
    finally:
        detector.close()
        for shm in slots.values():
            shm.close()


def _answer(detector: HandDetector, slots: dict[int, shared_memory.SharedMemory], slot: int, name: str,
            shape: tuple[int, ...], timestamp_s: float | None) -> tuple:
    """The child's answer for one frame (its view of the slot ends with this call)."""
    if slot not in slots or slots[slot].name != name:  # a new or larger block
        if slot in slots:
            slots[slot].close()
        slots[slot] = _attach(name)
    image = np.ndarray(shape, np.uint8, buffer=slots[slot].buf)
    t0 = time.perf_counter()
    detections = detector.detect(image, timestamp_s)
    return "ok", detections, (time.perf_counter() - t0) * 1e3


class DetectorProcess:
    """A :class:`HandDetector` in a child process, pipelined.

    ``submit`` frames and ``receive`` their answers in the same order; up to ``depth`` frames
    may be in flight, so the child starts on the next frame while the caller reads the last
    answer. Use as a context manager, or call :meth:`close`.

    Args:
        config: what the child runs.
        depth: frames in flight at most.
        start_timeout_s: how long to wait for the child to load MediaPipe.
        wait: wait here until the child has loaded MediaPipe (a few seconds); else return at
            once and wait at the first use (:meth:`wait_ready`), so the caller can load other
            things meanwhile.

    Raises:
        DetectorProcessError: the child could not be started or did not come up.
    """

    def __init__(self, config: DetectorConfig, depth: int = 2, start_timeout_s: float = 120.0,
                 wait: bool = True) -> None:
        self.config = config
        self.depth = int(depth)
        self.start_timeout_s = float(start_timeout_s)
        #: Longest wait for one frame's answer before the child is taken for hung, seconds.
        self.answer_timeout_s = 60.0
        self._ready = False
        self._slots: list[shared_memory.SharedMemory | None] = [None] * (self.depth + 1)
        self._next_slot = 0
        self._in_flight = 0  # frames sent whose answer has not been read
        self._proc: subprocess.Popen | None = None
        try:  # frames travel through shared memory: make sure this system has some
            probe = shared_memory.SharedMemory(create=True, size=4096)
            probe.close()
            probe.unlink()
        except OSError as exc:
            raise DetectorProcessError(f"no shared memory for frames: {exc}") from exc
        parent, child = socket.socketpair()
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the core package
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        env.setdefault("OPENBLAS_NUM_THREADS", "1")  # small arrays only: no busy-waiting workers
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "core.detect.process", str(child.fileno())],
                                          pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL)
        except (OSError, ValueError) as exc:
            parent.close()
            raise DetectorProcessError(f"could not start the detector process: {exc}") from exc
        finally:
            child.close()
        self._conn = Connection(parent.detach())
        try:
            self._conn.send(config)
        except OSError as exc:
            raise self._died("while starting") from exc
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the child has loaded MediaPipe (at once when it has).

        Raises:
            DetectorProcessError: it could not start, or did not within ``start_timeout_s``.
        """
        if self._ready:
            return
        if self._proc is None:
            raise DetectorProcessError("the detector process is closed")
        try:
            if not self._conn.poll(self.start_timeout_s):
                raise DetectorProcessError(f"the detector process did not start in {self.start_timeout_s:.0f} s")
            answer = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died("while starting") from exc
        except DetectorProcessError:
            self._kill()
            raise
        if answer[0] != "ready":
            self._kill()
            raise DetectorProcessError(f"the detector process could not start: {answer[1]}: {answer[2]}")
        self._ready = True

    @property
    def alive(self) -> bool:
        """Whether the child is running (False once it died or was closed)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def in_flight(self) -> int:
        """Frames submitted whose answer has not been received."""
        return self._in_flight

    def fileno(self) -> int:
        """The connection to the child: readable once an answer (or the child's end) waits, so
        a caller can wait for it beside other things (:func:`multiprocessing.connection.wait`)."""
        return self._conn.fileno()

    def cpu_time_s(self) -> float | None:
        """CPU time the child has used so far (user + system), seconds; None where unknown
        (no ``/proc``, or the child has ended)."""
        return None if self._proc is None else process_cpu_s(self._proc.pid)

    def submit(self, image: np.ndarray, timestamp_s: float | None) -> None:
        """Send a frame ((H, W, 3) uint8 RGB). At most ``depth`` may be in flight.

        Raises:
            InputError: the image is not (H, W, 3) uint8.
            DetectorProcessError: ``depth`` frames are already in flight, or the child died.
        """
        image = detection_image(image)
        self.wait_ready()
        if self._in_flight >= self.depth:
            raise DetectorProcessError(f"{self.depth} frames are already in flight; receive() first")
        slot = self._next_slot
        self._next_slot = (slot + 1) % len(self._slots)
        shm = self._slots[slot]
        if shm is None or shm.size < image.nbytes:  # a larger frame: a larger block
            if shm is not None:
                shm.close()
                shm.unlink()
            try:
                shm = self._slots[slot] = shared_memory.SharedMemory(create=True, size=max(1, image.nbytes))
            except OSError as exc:
                self._slots[slot] = None
                raise DetectorProcessError(f"no shared memory for a {image.shape} frame: {exc}") from exc
        np.copyto(np.ndarray(image.shape, np.uint8, buffer=shm.buf), image)
        try:
            self._conn.send(("frame", slot, shm.name, image.shape, timestamp_s))
        except (OSError, ValueError) as exc:
            raise self._died() from exc
        self._in_flight += 1

    def receive(self) -> Detected:
        """The answer for the oldest frame in flight (waits for it).

        Raises:
            InputError: the frame was refused.
            DetectorProcessError: nothing is in flight, the child died, or detection failed.
        """
        if not self._in_flight:
            raise DetectorProcessError("no frame in flight")
        self._in_flight -= 1
        _, detections, detect_ms = self._answer()
        return Detected(tuple(detections), float(detect_ms))

    def _answer(self) -> Any:
        """The child's next answer (waits for it); its errors raised here."""
        try:
            if not self._conn.poll(self.answer_timeout_s):
                self._kill()
                raise DetectorProcessError(f"the detector process gave no answer in {self.answer_timeout_s:g} s")
            answer: Any = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died() from exc
        if answer[0] == "error":
            kind, message = answer[1], answer[2]
            if kind == "InputError":
                raise InputError(message)
            raise DetectorProcessError(f"hand detection failed in its process: {kind}: {message}")
        return answer

    def drain(self) -> None:
        """Receive and drop every answer still in flight (a stream stopped early)."""
        while self._in_flight:
            try:
                self.receive()
            except InputError:
                pass

    def reset(self) -> None:
        """Forget the tracked hands (the next frame starts a new stream); drops answers in flight.
        Returns once the child has reset (like :meth:`HandDetector.reset`).

        Raises:
            DetectorProcessError: the child died, or could not reset.
        """
        self.wait_ready()
        self.drain()
        try:
            self._conn.send(("reset",))
        except (OSError, ValueError) as exc:
            raise self._died() from exc
        self._answer()

    def close(self) -> None:
        """Stop the child and free the shared memory. Idempotent."""
        if self._proc is None:
            return
        try:
            self._conn.send(None)
            self._proc.wait(timeout=5.0)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        self._kill()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self._conn.close()
        for shm in self._slots:
            if shm is not None:
                shm.close()
                try:
                    shm.unlink()
                except FileNotFoundError:
                    pass
        self._slots = [None] * len(self._slots)
        self._in_flight = 0

    def _died(self, when: str = "unexpectedly") -> DetectorProcessError:
        code = None
        if self._proc is not None:
            try:
                code = self._proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        return DetectorProcessError(f"the detector process stopped {when} (exit code {code})")

    def __enter__(self) -> DetectorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            self.close()


def main(argv: list[str]) -> int:
    """The child's entry point: ``python -m core.detect.process FD`` (FD: its socket's end)."""
    conn = Connection(int(argv[0]))
    try:
        config = conn.recv()
    except EOFError:
        return 1
    _serve(conn, config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
