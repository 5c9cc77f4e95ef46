"""Keep MediaPipe's native info and warning lines off the terminal of a command-line run.

MediaPipe's C++ side (absl logging, TFLite / LiteRT) writes its start-up and first-frame
notes (``I0000 ...``, ``W0000 ...``, ``INFO: Created TensorFlow Lite XNNPACK delegate``, ...)
straight to file descriptor 2, asynchronously from its own threads; GLOG_minloglevel and
TF_CPP_MIN_LOG_LEVEL do not reach them in every release. A new user saw 15-30 such lines
before each command's one-line result or error.

:func:`filter_native_logs` (called by ``main.py`` run as a script, never by tests calling
``main.main``) points file descriptor 2 at a small filter process that drops exactly those
lines (:data:`CHATTER`) and passes everything else on, errors (``E0000 ...``) included.
Python's own ``sys.stderr`` (logging, tracebacks, progress bars, ``handtwin: error:``) keeps
the real stderr and never goes through the filter. Child processes (the detector) inherit the
filtered descriptor. ``-v`` or ``HANDTWIN_NATIVE_LOGS=1`` turns the filter off.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys

#: Native lines dropped: absl info/warning lines, TFLite/LiteRT "INFO: " lines, absl's note
#: that logging is not initialized, and LiteRT's note on unaligned read-only tensors.
CHATTER = (rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]]*\] |INFO: |WARNING: (?:All log messages before"
           rb"|Logging before InitGoogle|Read-only tensor))")

# The filter process: reads stdin (our file descriptor 2) and writes the kept lines to stdout
# (the real stderr); it ends when every writer has closed the pipe, so nothing is lost when
# the command exits or crashes. It runs in its own session, so the terminal's Ctrl-C (sent to the
# whole foreground process group) never reaches it, and ignores SIGINT besides: the command
# decides how to stop, and the filter ends when its input does.
_FILTER = f"""
import os, re, signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
chatter = re.compile({CHATTER!r})
pending = b""
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    *lines, pending = (pending + chunk).split(b"\\n")
    kept = b"".join(line + b"\\n" for line in lines if not chatter.match(line))
    if kept:
        os.write(1, kept)
if pending and not chatter.match(pending):
    os.write(1, pending)
"""


def is_chatter(line: bytes) -> bool:
    """Whether the filter drops ``line`` (one line, without its newline)."""
    return re.match(CHATTER, line) is not None


def filter_native_logs(argv: list[str] | None = None) -> bool:
    """Route file descriptor 2 through the filter process; Python's ``sys.stderr`` keeps the real
    stderr. Returns whether the filter is on (off with ``-v``/``--verbose`` in ``argv``,
    ``HANDTWIN_NATIVE_LOGS`` set, or where the filter process cannot start)."""
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("HANDTWIN_NATIVE_LOGS") or "-v" in argv or "--verbose" in argv:
        return False
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return False
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER], stdin=subprocess.PIPE,
                                stdout=real, stderr=real, close_fds=True, start_new_session=True)
    except OSError:
        os.close(real)
        return False
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr = os.fdopen(real, "w", buffering=1, encoding=encoding, errors="backslashreplace")
    assert proc.stdin is not None
    os.dup2(proc.stdin.fileno(), 2)
    proc.stdin.close()  # file descriptor 2 (and children's) now hold the pipe's write end

    def finish() -> None:
        """At exit: close our end so the filter sees the end of its input, and let it finish."""
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            proc.wait(timeout=1.0)
        except (OSError, subprocess.TimeoutExpired):
            pass

    atexit.register(finish)
    return True
