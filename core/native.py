"""Small C kernels compiled on first use with the system compiler, cached, loaded with ctypes.

A few hot loops (the soft rasterizer, :mod:`core.render._native`; the refinement's mesh
regularizers, :mod:`core.refine._native`) are plain C. Each :class:`NativeLibrary` compiles its
source with ``$CC`` (else ``cc``, ``gcc`` or ``clang``) into a shared library cached under
``$HANDTWIN_CACHE_DIR`` (default ``~/.cache/handtwin``) in ``kernels/``, named by a hash of the
source, the flags, the compiler and the CPU: the first build takes about a second, later
processes only load it. Where nothing compiles (no compiler, an unwritable cache) the library
is None, a warning is logged once, and callers fall back to PyTorch ops.

The C sources are files shipped with their package (``core/render/softras.c``,
``core/refine/refine_real.c`` ...; package data in ``pyproject.toml``). A module assembles its
library's source with :func:`kernel_source`: the file's text, a few placeholders substituted
(a file named ``*_real.c`` is a template instantiated once per float type: the C type, the
function suffix and the math functions are substituted), behind a ``#line`` directive so that
the compiler's errors and warnings name the file and its lines. The cache key hashes the
assembled text, so editing a file rebuilds its library.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from core.errors import HandTwinError
from core.outputs import atomic_path

log = logging.getLogger(__name__)

__all__ = ["CACHE_ENV_VAR", "FLAGS", "NativeLibrary", "NativeUnavailableError", "address", "cache_dir",
           "kernel_source"]

#: Environment variable naming the folder of cached builds (default ``~/.cache/handtwin``).
CACHE_ENV_VAR = "HANDTWIN_CACHE_DIR"

#: Flags: loops vectorize at -O3 without -ffast-math (which would also switch the whole process
#: to flush-to-zero); the math flags below only allow reassociating sums and dropping errno.
FLAGS = ("-O3", "-fPIC", "-shared", "-pthread", "-std=c11", "-ffp-contract=fast",
         "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros", "-fassociative-math",
         "-freciprocal-math")
#: Tried first; dropped when the compiler rejects it (the cache key includes the CPU).
NATIVE_ARCH = "-march=native"


def address(a) -> int | None:
    """The data address of a NumPy array or a PyTorch tensor (None for None), to pass to a
    kernel. ``__array_interface__`` is several times cheaper than ``ndarray.ctypes.data``.
    The caller keeps the array alive and contiguous for the call."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return a.__array_interface__["data"][0]
    return a.data_ptr()


class NativeUnavailableError(HandTwinError):
    """C kernels could not be built or loaded on this machine (the message says why)."""


def kernel_source(module_file: str, name: str, substitutions: Iterable[tuple[str, str]] = ()) -> str:
    """The C file ``name`` next to ``module_file`` (a module's ``__file__``), ready to compile.

    Each ``(placeholder, text)`` of ``substitutions`` is replaced, in order, through the whole
    file (comments included); the result is preceded by ``#line 1 "<the file's path>"``, so a
    library assembled from several files (or one template twice) reports each diagnostic at
    the line of the file it comes from. A substitution must not add or remove lines.

    Raises:
        NativeUnavailableError: the file is missing (a broken install).
        ValueError: a substitution changed the number of lines.
    """
    path = Path(module_file).resolve().with_name(name)
    try:
        original = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NativeUnavailableError(f"C source missing: {path} ({exc.strerror})") from exc
    text = original
    for placeholder, value in substitutions:
        text = text.replace(placeholder, value)
    if text.count("\n") != original.count("\n"):
        raise ValueError(f"{name}: a substitution changed the number of lines")
    quoted = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return f'#line 1 "{quoted}"\n{text}' + ("" if text.endswith("\n") else "\n")


def compiler() -> str | None:
    """Path of the C compiler to use, or None."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _cpu_id() -> str:
    """What a cached build depends on besides its source: machine and CPU features."""
    text = platform.machine() + platform.system()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "model name", "Features", "CPU part")):
                    text += line
                    if line.startswith(("flags", "Features")):
                        break
    except OSError:
        text += platform.processor()
    return text


def cache_dir() -> Path:
    """Folder of the cached builds: ``$HANDTWIN_CACHE_DIR`` or ``~/.cache/handtwin``."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "handtwin"


def build(name: str, text: str, cc: str) -> Path:
    """Compile ``text`` (or find it compiled); returns the shared library's path."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True,
                             timeout=30).stdout.splitlines()[:1]
    key = hashlib.sha256("\0".join([text, *FLAGS, NATIVE_ARCH, cc, *version,
                                    _cpu_id()]).encode()).hexdigest()[:16]
    folder = cache_dir() / "kernels"
    target = folder / f"{name}-{key}{'.dll' if os.name == 'nt' else '.so'}"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        src = Path(tmp) / f"{name}.c"
        src.write_text(text, encoding="utf-8")
        errors = ""
        for arch in (NATIVE_ARCH, None):
            try:  # moved into place only when it built (a concurrent build writes the same bytes)
                with atomic_path(target, target.suffix) as out:
                    cmd = [cc, *FLAGS, *([arch] if arch else []), "-o", str(out), str(src), "-lm"]
                    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                    if result.returncode != 0:
                        raise NativeUnavailableError(result.stderr.strip())  # removes the temporary file
                return target
            except NativeUnavailableError as exc:
                errors = str(exc)
        raise NativeUnavailableError(f"{Path(cc).name} failed: {errors[:1000]}")  # the first diagnostics


class NativeLibrary:
    """One C library: built on the first :meth:`get`, then shared by the process. Thread-safe.

    Args:
        name: file name stem of the build (``kernels/<name>-<hash>.so``) and the log's label.
        source: returns the complete C source.
        declare: sets the ``argtypes``/``restype`` of the loaded library's functions.
        hold_gil: call the functions without releasing the GIL (``ctypes.PyDLL``). ctypes
            releases it around every foreign call, and taking it back means waiting for the
            thread that took it meanwhile to give it up (up to the interpreter's switch
            interval, 5 ms by default). For kernels of a fraction of a millisecond, called
            dozens of times per frame while other threads run Python, that wait costs far
            more than the kernel; a long kernel (the soft rasterizer) should release it.
    """

    def __init__(self, name: str, source: Callable[[], str],
                 declare: Callable[[ctypes.CDLL], None], hold_gil: bool = False) -> None:
        self.name = name
        self.source = source
        self.declare = declare
        self._loader = ctypes.PyDLL if hold_gil else ctypes.CDLL
        self._lock = threading.Lock()
        self._lib: ctypes.CDLL | None = None
        self._error: str | None = None

    def get(self) -> ctypes.CDLL | None:
        """The loaded library, building it on the first call; None where that fails.

        A failure is logged once (warning) and remembered for the rest of the process
        (:attr:`error` gives the reason).
        """
        with self._lock:
            if self._lib is not None or self._error is not None:
                return self._lib
            try:
                cc = compiler()
                if cc is None:
                    raise NativeUnavailableError("no C compiler found ($CC, cc, gcc, clang)")
                path = build(self.name, self.source(), cc)
                try:
                    lib = self._loader(str(path))
                except OSError:  # a damaged cached build: build it again, once
                    path.unlink(missing_ok=True)
                    lib = self._loader(str(build(self.name, self.source(), cc)))
                self.declare(lib)
                self._lib = lib
            except (OSError, subprocess.SubprocessError, NativeUnavailableError) as exc:
                self._error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: C kernels unavailable (%s); using PyTorch ops", self.name,
                            self._error.splitlines()[0])
            return self._lib

    def require(self) -> ctypes.CDLL:
        """:meth:`get`, raising :class:`NativeUnavailableError` where it is None."""
        lib = self._lib  # once loaded, no lock: kernels look their library up on every call
        if lib is not None:
            return lib
        lib = self.get()
        if lib is None:
            raise NativeUnavailableError(self._error or "not built")
        return lib

    @property
    def error(self) -> str | None:
        """Why :meth:`get` failed in this process, or None (not tried yet, or it worked)."""
        return self._error

    def reset(self) -> None:
        """Forget the loaded library or the failure (tests; the next :meth:`get` tries again)."""
        with self._lock:
            self._lib = None
            self._error = None
