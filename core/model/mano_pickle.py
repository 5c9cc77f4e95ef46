"""Read MANO ``.pkl`` files without running code from them.

The official ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` are Python 2 pickles holding numpy arrays,
``chumpy.ch.Ch`` objects (chumpy is unmaintained and broken on Python 3.11) and a
``scipy.sparse.csc_matrix``. A pickle can name any importable callable, so loading one with
``pickle.load`` lets the file run code. :func:`load_mano_pickle` uses an unpickler with an
allow-list: numpy's array reconstruction, and two inert stand-ins for the chumpy and scipy
classes that only record their state and are converted to plain arrays afterwards. Any other
global raises :class:`~core.errors.UnsafePickleError`.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelFileError, UnsafePickleError


class _RecordedState:
    """Inert stand-in for a pickled object: keeps the state it is given, nothing else."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_array(self) -> np.ndarray:
        raise NotImplementedError


class _ChumpyArray(_RecordedState):
    """Stand-in for ``chumpy.ch.Ch``: its value lives in the state's ``x``."""

    def to_array(self) -> np.ndarray:
        if not isinstance(self.state, dict) or "x" not in self.state:
            raise ModelFileError("a chumpy object in the model file has no array value")
        return np.asarray(_to_plain(self.state["x"]))


class _SparseCSC(_RecordedState):
    """Stand-in for ``scipy.sparse.csc_matrix``: rebuilt densely from data/indices/indptr."""

    def to_array(self) -> np.ndarray:
        s = self.state if isinstance(self.state, dict) else {}
        try:
            shape = tuple(int(n) for n in s.get("_shape", s.get("shape")))
            data = np.asarray(s["data"], dtype=np.float64)
            indices = np.asarray(s["indices"], dtype=np.int64)
            indptr = np.asarray(s["indptr"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"malformed sparse matrix in the model file: {exc}") from exc
        rows, cols = shape
        if indptr.shape != (cols + 1,) or indices.shape != data.shape:
            raise ModelFileError("malformed sparse matrix in the model file (inconsistent sizes)")
        if indices.size and (indices.min() < 0 or indices.max() >= rows):
            raise ModelFileError("malformed sparse matrix in the model file (index out of range)")
        dense = np.zeros(shape)
        for c in range(cols):
            dense[indices[indptr[c]:indptr[c + 1]], c] = data[indptr[c]:indptr[c + 1]]
        return dense


def _reconstructor(cls: type, base: type, state: Any) -> object:
    """Safe version of ``copy_reg._reconstructor`` restricted to the stand-in classes."""
    if not (isinstance(cls, type) and issubclass(cls, _RecordedState)) or base is not object:
        raise UnsafePickleError(f"refusing to reconstruct {cls!r} from a model file")
    return cls()


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """The only use of ``_codecs.encode`` in a pickle: text back to bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("unexpected use of _codecs.encode in a model file")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): np.core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np.core.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): np.core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np.core.multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    # Python 3 writes bytes in protocol 2 as _codecs.encode(text, "latin1"): inert.
    ("_codecs", "encode"): _latin1_bytes,
    # Inert containers that chumpy objects keep in their state.
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("builtins", "frozenset"): frozenset,
    ("chumpy.ch", "Ch"): _ChumpyArray,
    ("scipy.sparse.csc", "csc_matrix"): _SparseCSC,
    ("scipy.sparse._csc", "csc_matrix"): _SparseCSC,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"the model file asks for '{module}.{name}', which a MANO file never needs; "
                "refusing to load it (it could run code)"
            ) from None


def _to_plain(obj: Any) -> Any:
    """Replace stand-in objects by arrays, recursively through dicts, lists and tuples."""
    if isinstance(obj, _RecordedState):
        return obj.to_array()
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_plain(v) for v in obj)
    return obj


def load_mano_pickle(path: str | Path) -> dict[str, Any]:
    """Load a MANO-format pickle safely.

    Args:
        path: a ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` style file.

    Returns:
        a dict of the file's entries with chumpy and sparse objects turned into numpy arrays.

    Raises:
        ModelFileError: the file is missing, unreadable, or not a MANO-format dict.
        UnsafePickleError: the pickle names a class or function outside the allow-list.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read the model file {path}: {exc.strerror or exc}") from exc
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, ImportError) as exc:
        raise ModelFileError(f"{path} is not a readable MANO pickle: {exc}") from exc
    if not isinstance(obj, dict):
        raise ModelFileError(f"{path} does not hold a MANO model (expected a dict, got {type(obj).__name__})")
    return _to_plain(obj)
