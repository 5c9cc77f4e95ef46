"""Long jobs off the GUI thread: calibration, texture bake, export, camera calibration.

A job is a plain function ``fn(progress) -> result`` that runs in its own ``QThread``.
``progress(fraction, message)`` reports how far it got (the dialog's bar) and raises
:class:`JobCancelled` once the user pressed Cancel, so a job stops at its next report.
The result, an error message or the cancellation comes back to the GUI thread as a signal;
an exception inside a job is never raised in the GUI thread, it becomes a message box.

    runner = JobRunner(window)
    runner.start("Exporting", lambda progress: export(..., progress=progress), on_done=show)
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import QMessageBox, QProgressDialog, QWidget

from core.errors import Cancelled, HandTwinError

log = logging.getLogger(__name__)


class JobCancelled(Cancelled):
    """Raised inside a job by its progress callback after the user cancelled it (a core
    function may also raise :class:`core.errors.Cancelled` when its ``cancel`` check says so:
    the job ends as cancelled either way)."""


def show_error(parent: QWidget | None, title: str, message: str) -> None:
    """The one way the app tells the user that something failed (tests patch QMessageBox)."""
    log.warning("%s: %s", title, message)
    QMessageBox.warning(parent, title, message)


def describe_error(exc: BaseException) -> str:
    """A user-facing message: our own errors as they are, anything else with its type."""
    if isinstance(exc, HandTwinError):
        return str(exc)
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    return f"{type(exc).__name__}: {exc}"


class Progress:
    """The callback a job receives; accepts the shapes core functions use.

    ``progress(fraction)``, ``progress(fraction, message)``, ``progress(done, total)`` or
    ``progress(done, total, message)``; a fraction is clipped to [0, 1].
    """

    def __init__(self, job: Job) -> None:
        self._job = job

    @property
    def cancelled(self) -> bool:
        return self._job.cancel_requested

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if self._job.cancel_requested:
            raise JobCancelled()
        numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        texts = [a for a in args if isinstance(a, str)]
        message = kwargs.get("message") or (texts[0] if texts else "")
        if len(numbers) >= 2 and numbers[1]:
            fraction = numbers[0] / numbers[1]
        elif numbers:
            fraction = float(numbers[0])
        else:
            fraction = -1.0  # busy, no fraction
        self._job.progress.emit(min(max(fraction, -1.0), 1.0), str(message))


class Job(QObject):
    """One long job; lives in its own thread while it runs.

    Signals (received in the GUI thread): ``progress(fraction, message)`` (fraction -1:
    unknown), ``succeeded(result)``, ``failed(message)``, ``cancelled()``, and ``finished()``
    after exactly one of the three.
    """

    progress = Signal(float, str)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, title: str, fn: Callable[[Progress], Any]) -> None:
        super().__init__()
        self.title = title
        self.fn = fn
        self._cancel = threading.Event()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    @Slot()
    def run(self) -> None:
        try:
            result = self.fn(Progress(self))
            if self._cancel.is_set():
                self.cancelled.emit()
            else:
                self.succeeded.emit(result)
        except Cancelled:
            self.cancelled.emit()
        except Exception as exc:  # noqa: BLE001 - a job's failure is a message, never a crash
            if not isinstance(exc, HandTwinError):
                log.error("job %r failed:\n%s", self.title, traceback.format_exc())
            self.failed.emit(describe_error(exc))
        finally:
            self.finished.emit()


class JobRunner(QObject):
    """Starts jobs in threads, shows a progress dialog with Cancel, reports errors.

    Args:
        parent: the window that owns the dialogs and message boxes.
    """

    job_started = Signal(object)
    job_finished = Signal(object)

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self._widget = parent
        self._running: list[tuple[Job, QThread, QProgressDialog | None]] = []

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def jobs(self) -> list[Job]:
        return [job for job, _, _ in self._running]

    def start(
        self,
        title: str,
        fn: Callable[[Progress], Any],
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        dialog: bool = True,
        progress_to: Callable[[float, str], None] | None = None,
    ) -> Job:
        """Run ``fn(progress)`` in a new thread.

        Args:
            title: what the job does ("Calibrating"), the dialog's title.
            fn: the work; returns the result passed to ``on_done``.
            on_done: called in the GUI thread with the result.
            on_error: called with the message instead of the default message box.
            dialog: show a modeless progress dialog with a Cancel button.
            progress_to: also forward progress reports (e.g. to a panel's own bar).
        """
        job = Job(title, fn)
        thread = QThread(self)
        thread.setObjectName(f"handtwin-job-{title}")
        job.moveToThread(thread)
        box: QProgressDialog | None = None
        if dialog:
            box = QProgressDialog(f"{title}…", "Cancel", 0, 1000, self._widget)
            box.setWindowTitle(title)
            box.setWindowModality(Qt.WindowModality.NonModal)
            box.setMinimumDuration(300)
            box.setAutoClose(False)
            box.setAutoReset(False)
            box.setValue(0)
        entry = (job, thread, box)
        bridge = _Bridge(self, job, thread, box, entry, on_done, on_error, progress_to)
        if box is not None:
            box.canceled.connect(bridge.cancel)
        job.progress.connect(bridge.on_progress)
        job.succeeded.connect(bridge.on_succeeded)
        job.failed.connect(bridge.on_failed)
        job.cancelled.connect(bridge.on_cancelled)
        job.finished.connect(bridge.on_finished)
        thread.started.connect(job.run)
        self._running.append(entry)
        thread.start()
        self.job_started.emit(job)
        return job

    def cancel_all(self, wait_ms: int = 10000) -> None:
        """Ask every job to stop and wait for their threads (at window close)."""
        for job, _thread, _box in list(self._running):
            job.cancel()
        for job, thread, box in list(self._running):
            if not thread.wait(wait_ms):
                log.warning("job %r did not stop within %d ms", job.title, wait_ms)
            thread.quit()
            thread.wait(1000)
            if box is not None:
                box.close()
        self._running.clear()


class _Bridge(QObject):
    """Receives a job's signals in the GUI thread (bound slots of an object living there;
    a plain closure connected to a signal would run in the job's thread)."""

    def __init__(self, runner: JobRunner, job: Job, thread: QThread, box: QProgressDialog | None, entry,
                 on_done, on_error, progress_to) -> None:
        super().__init__(runner)
        self.runner, self.job, self.thread, self.box, self.entry = runner, job, thread, box, entry
        self.on_done, self.on_error, self.progress_to = on_done, on_error, progress_to

    @Slot()
    def cancel(self) -> None:
        self.job.cancel()

    @Slot(float, str)
    def on_progress(self, fraction: float, message: str) -> None:
        box = self.box
        if box is not None:
            if fraction < 0:
                box.setRange(0, 0)
            else:
                box.setRange(0, 1000)
                box.setValue(int(1000 * fraction))
            if message:
                box.setLabelText(message)
        if self.progress_to is not None:
            self.progress_to(fraction, message)

    @Slot(str)
    def on_failed(self, message: str) -> None:
        if self.on_error is not None:
            self.on_error(message)
        else:
            show_error(self.runner._widget, self.job.title, message)  # noqa: SLF001

    @Slot(object)
    def on_succeeded(self, result: Any) -> None:
        if self.on_done is None:
            return
        try:
            self.on_done(result)
        except Exception as exc:  # noqa: BLE001 - a slot's failure must not kill the app
            log.exception("showing the result of %r failed", self.job.title)
            show_error(self.runner._widget, self.job.title, describe_error(exc))  # noqa: SLF001

    @Slot()
    def on_cancelled(self) -> None:
        log.info("%s: cancelled", self.job.title)

    @Slot()
    def on_finished(self) -> None:
        self.thread.quit()
        self.thread.wait()
        if self.box is not None:
            self.box.close()
            self.box.deleteLater()
        running = self.runner._running  # noqa: SLF001
        if self.entry in running:
            running.remove(self.entry)
        self.runner.job_finished.emit(self.job)
        self.job.deleteLater()
        self.thread.deleteLater()
        self.deleteLater()
