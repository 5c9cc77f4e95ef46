"""Write MANO-format pickles the way the official files are laid out, for tests, and crafted ones.

Real MANO cannot be shipped, so tests write a small stand-in from the open hand: a Python
dict of numpy arrays where ``shapedirs`` is a ``chumpy.ch.Ch`` object and ``J_regressor`` a
``scipy.sparse.csc_matrix``, as in ``MANO_RIGHT.pkl``. chumpy is not installed: a stand-in
class is registered under the name ``chumpy.ch.Ch`` while pickling.

:func:`python2_pickle` writes the same dict opcode by opcode the way Python 2's ``cPickle``
did for the official files (protocol 2, ``str`` as ``BINSTRING``, old scipy module names).
:data:`CRAFTED` holds the hostile and malformed files of issue 17, each as bytes.
"""

from __future__ import annotations

import pickle
import struct
import sys
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse

from core.model.data import HandModelData


class Ch:
    """Pickles like chumpy's ``Ch``: its state is a dict whose ``x`` is the array."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x

    def __getstate__(self) -> dict:
        return {"x": self.x, "_dirty_vars": set(), "_itr": None}


def mano_dict(d: HandModelData, shapedirs: np.ndarray | None = None) -> dict[str, Any]:
    """``d`` in the layout (names, dtypes, chumpy and sparse entries) of ``MANO_RIGHT.pkl``."""
    kintree = np.stack([d.parents, np.arange(16)]).astype(np.int64)
    kintree[0, 0] = 4294967295
    return {
        "v_template": d.v_template.astype(np.float64),
        "f": d.faces.astype(np.uint32),
        "shapedirs": Ch((d.shapedirs if shapedirs is None else shapedirs).astype(np.float64)),
        "posedirs": d.posedirs.astype(np.float64),
        "J_regressor": scipy.sparse.csc_matrix(d.j_regressor.astype(np.float64)),
        "weights": d.weights.astype(np.float64),
        "kintree_table": kintree,
        "hands_components": d.hands_components.astype(np.float64),
        "hands_mean": d.hands_mean.astype(np.float64),
        "hands_coeffs": np.random.default_rng(0).normal(size=(50, 45)),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "tip_vertex_ids": d.tip_vertex_ids.astype(np.int64),
    }


def dumps(obj: Any, protocol: int = 2) -> bytes:
    """``pickle.dumps`` with the stand-in ``Ch`` registered as ``chumpy.ch.Ch``."""
    fake = types.ModuleType("chumpy.ch")
    Ch.__module__ = "chumpy.ch"
    fake.Ch = Ch
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"] = types.ModuleType("chumpy")
    sys.modules["chumpy.ch"] = fake
    try:
        return pickle.dumps(obj, protocol=protocol)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def write_mano_pickle(path: Path, d: HandModelData, shapedirs: np.ndarray | None = None) -> Path:
    """Write ``d`` as a MANO-format pickle (protocol 2, like the official Python 2 files)."""
    path.write_bytes(dumps(mano_dict(d, shapedirs), protocol=2))
    return path


# --------------------------------------------------------------------------- Python 2 layout


class _Py2Writer:
    """Protocol-2 opcodes as Python 2 wrote them: str as BINSTRING, memoized dtypes."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")
        self.memo: dict[str, int] = {}

    def put(self) -> int:
        n = len(self.memo) + 1000
        self.out += b"r" + struct.pack("<I", n)  # LONG_BINPUT
        return n

    def text(self, s: str | bytes) -> None:
        b = s.encode("latin1") if isinstance(s, str) else s
        self.out += (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)

    def int(self, n: int) -> None:
        if 0 <= n < 256:
            self.out += b"K" + bytes([n])
        elif -(2**31) <= n < 2**31:
            self.out += b"J" + struct.pack("<i", n)
        else:  # Python 2 long: LONG1
            b = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(b)]) + b

    def dtype(self, dt: np.dtype) -> None:
        key = dt.str
        if key in self.memo:
            self.out += b"j" + struct.pack("<I", self.memo[key])  # LONG_BINGET
            return
        self.out += b"cnumpy\ndtype\n"
        self.text(dt.str[1:])
        self.out += b"K\x00K\x01\x87R"
        self.memo[key] = self.put()
        self.out += b"(K\x03"
        self.text(dt.str[0] if dt.itemsize > 1 else "|")
        self.out += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"

    def value(self, v: Any) -> None:
        o = self.out
        if v is None:
            o += b"N"
        elif isinstance(v, bool):
            o += b"\x88" if v else b"\x89"
        elif isinstance(v, int):
            self.int(v)
        elif isinstance(v, float):
            o += b"G" + struct.pack(">d", v)
        elif isinstance(v, (str, bytes)):
            self.text(v)
        elif isinstance(v, tuple):
            o += b"("
            for x in v:
                self.value(x)
            o += b"t"
        elif isinstance(v, list):
            o += b"]("
            for x in v:
                self.value(x)
            o += b"e"
        elif isinstance(v, set):
            o += b"c__builtin__\nset\n]("
            for x in sorted(v):
                self.value(x)
            o += b"e\x85R"
        elif isinstance(v, dict):
            o += b"}("
            for k, x in v.items():
                self.value(k)
                self.value(x)
            o += b"u"
        elif isinstance(v, np.ndarray):
            o += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
            o += b"(K\x01"
            self.value(tuple(int(n) for n in v.shape))
            self.dtype(v.dtype)
            o += b"\x89"
            self.text(np.ascontiguousarray(v).tobytes())
            o += b"tb"
        elif isinstance(v, Ch):
            o += b"cchumpy.ch\nCh\n)\x81"
            self.value(v.__getstate__())
            o += b"b"
        elif isinstance(v, scipy.sparse.csc_matrix):
            o += b"cscipy.sparse.csc\ncsc_matrix\n)\x81"
            self.value({"_shape": v.shape, "maxprint": 50, "format": "csc", "indices": v.indices,
                        "indptr": v.indptr, "data": v.data})
            o += b"b"
        else:
            raise TypeError(f"no Python 2 layout for {type(v).__name__}")


def python2_pickle(obj: Any) -> bytes:
    """``obj`` (dicts, lists, tuples, sets, text, numbers, arrays, Ch, csc) as Python 2 pickled it."""
    w = _Py2Writer()
    w.value(obj)
    w.out += b"."
    return bytes(w.out)


# --------------------------------------------------------------------------- crafted files


_PLACEHOLDER = "@@crafted@@"


def tiny_mano_dict(seed: int = 0) -> dict[str, Any]:
    """A few-byte dict in MANO's layout (chumpy, CSC, uint32 faces); not a valid hand."""
    rng = np.random.default_rng(seed)
    return {
        "v_template": rng.normal(size=(4, 3)),
        "f": np.array([[0, 1, 2], [0, 2, 3]], np.uint32),
        "shapedirs": Ch(rng.normal(size=(4, 3, 2))),
        "J_regressor": scipy.sparse.csc_matrix(np.eye(2, 4)),
        "weights": np.full((4, 2), 0.5),
        "kintree_table": np.array([[4294967295, 0], [0, 1]], np.int64),
        "hands_mean": np.zeros(0),
        "bs_style": "lbs",
    }


def in_model(model: dict[str, Any], value: bytes) -> bytes:
    """``model`` pickled with ``v_template`` replaced by the opcodes ``value`` (no memo use)."""
    raw = dumps({**model, "v_template": _PLACEHOLDER})
    text = _PLACEHOLDER.encode()
    op = b"X" + struct.pack("<I", len(text)) + text
    assert raw.count(op) == 1
    return raw.replace(op, value)


def _dtype_pointer_attack(d: HandModelData | dict[str, Any]) -> bytes:
    """Issue 17: only allow-listed callables, yet numpy reads attacker bytes as object pointers.

    ``numpy.dtype('O8')`` given a state with zeroed flags, then ``_reconstruct`` and
    ``_codecs.encode``: ``ndarray.__setstate__`` copies the raw bytes into an object array,
    and reading ``v_template`` dereferences 0x4141414141414141.
    """
    enc = b"c_codecs\nencode\n"
    dtype = (b"cnumpy\ndtype\nX\x02\x00\x00\x00O8\x89\x88\x87R"
             b"(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    arr = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
           + enc + b"X\x01\x00\x00\x00bX\x06\x00\x00\x00latin1\x86R\x87R"
           + b"(K\x01K\x02K\x03\x86" + dtype + b"\x89"
           + enc + b"X\x30\x00\x00\x00" + b"\x41" * 48 + b"X\x06\x00\x00\x00latin1\x86R" + b"tb")
    return in_model(d if isinstance(d, dict) else mano_dict(d), arr)


def _dtype_singleton_attack(d: HandModelData | dict[str, Any]) -> bytes:
    """BUILD on numpy's shared float64 dtype with object-dtype flags (63), then float64 arrays."""
    return in_model(d if isinstance(d, dict) else mano_dict(d), b"cnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R"
                        b"(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb")


def _nested(depth: int) -> bytes:
    """``{'v_template': [[[...]]]}`` nested ``depth`` lists deep (pickle.dumps cannot write it)."""
    return (b"\x80\x02}X\x0a\x00\x00\x00v_template" + b"]" * depth + b"a" * (depth - 1) + b"s.")


def _nested_tuple_key(depth: int) -> bytes:
    """A dict key that is a tuple nested ``depth`` deep (hashing it would recurse in C)."""
    return b"\x80\x02}" + b")" + b"\x85" * depth + b"K\x01s."


def _shared_lists(levels: int) -> bytes:
    """'Billion laughs': x0 = 1.0, x_{i+1} = [x_i, x_i]; 2**levels leaves from a few bytes."""
    out = bytearray(b"\x80\x04}X\x0a\x00\x00\x00v_templateG?\xf0\x00\x00\x00\x00\x00\x00")
    for i in range(levels):
        out += b"\x940(h" + bytes([i]) + b"h" + bytes([i]) + b"l"  # MEMOIZE POP MARK GET GET LIST
    return bytes(out) + b"s."


def _nested_ch(depth: int) -> bytes:
    """``v_template`` a chumpy object whose ``x`` is a chumpy object ... ``depth`` deep."""
    out = b"\x80\x02}X\x0a\x00\x00\x00v_template" + b"cchumpy.ch\nCh\n)\x81" * depth + b"K\x01"
    # stack: Ch_1 .. Ch_n, value: memoize the value, drop it, BUILD Ch_k with {'x': value}.
    return out + b"q\x000}X\x01\x00\x00\x00xh\x00sb" * depth + b"s."


def _model_with(d: HandModelData, **changes: Any) -> bytes:
    model = mano_dict(d)
    model.update(changes)
    return dumps(model)


def _sparse(shape: tuple[int, int], indptr: list[int], indices: list[int],
            data: list[float]) -> scipy.sparse.csc_matrix:
    m = scipy.sparse.csc_matrix((1, 1))
    m._shape = shape  # scipy checks shapes on creation only: this is how a file can lie
    m.indptr, m.indices, m.data = (np.array(indptr, np.int32), np.array(indices, np.int32), np.array(data))
    return m


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return (os.system, ("touch /tmp/handtwin-pwned",))


def _array_claims_more() -> bytes:
    """A Python 2 array whose state claims (10^9, 3) elements for 24 bytes of data."""
    raw = python2_pickle({"v_template": np.zeros((1, 3))})
    bad = raw.replace(b"(K\x01(K\x01K\x03t", b"(K\x01(J\x00\xca\x9a\x3bK\x03t")
    assert bad != raw
    return bad


def _self_dict() -> bytes:
    d: dict[str, Any] = {}
    d["v_template"] = d
    return pickle.dumps(d, protocol=2)


def _self_list() -> bytes:
    lst: list[Any] = []
    lst.append(lst)
    return pickle.dumps({"v_template": lst}, protocol=2)


#: name -> (what it is, builder from the open hand). Every one must give one clear error.
CRAFTED: dict[str, tuple[str, Callable[[HandModelData], bytes]]] = {
    "dtype-pointer": ("object dtype with zeroed flags + _reconstruct + _codecs.encode", _dtype_pointer_attack),
    "dtype-singleton": ("BUILD on numpy's float64 dtype with object flags", _dtype_singleton_attack),
    "os-system": ("REDUCE of posix.system", lambda d: pickle.dumps({"v_template": _Evil()}, protocol=2)),
    "self-dict": ("a dict that contains itself", lambda d: _self_dict()),
    "self-list": ("a list that contains itself", lambda d: _self_list()),
    "nested-200k": ("lists nested 200 000 deep", lambda d: _nested(200_000)),
    "chumpy-80k": ("chumpy objects nested 80 000 deep", lambda d: _nested_ch(80_000)),
    "tuple-key-200k": ("a dict key of tuples nested 200 000 deep", lambda d: _nested_tuple_key(200_000)),
    "shared-2^30": ("30 levels of [x, x]: 2^30 leaves", lambda d: _shared_lists(30)),
    "sparse-2^40": ("J_regressor of shape (2^40, 1)",
                    lambda d: _model_with(d, J_regressor=_sparse((2**40, 1), [0, 0], [], []))),
    "sparse-index": ("J_regressor with a row index out of range",
                     lambda d: _model_with(d, J_regressor=_sparse((16, 2), [0, 1, 1], [99], [1.0]))),
    "sparse-indptr": ("J_regressor whose indptr runs backwards",
                      lambda d: _model_with(d, J_regressor=_sparse((16, 2), [0, 5, 1], [0], [1.0]))),
    "array-claims-more": ("an array of shape (10^9, 3) given 24 bytes", lambda d: _array_claims_more()),
    "f-float": ("f is a float array", lambda d: _model_with(d, f=d.faces.astype(np.float64) + 0.5)),
    "f-text": ("f is a string", lambda d: _model_with(d, f="faces")),
    "weights-shape": ("weights of shape (V, 15)",
                      lambda d: _model_with(d, weights=d.weights[:, :15].astype(np.float64))),
    "kintree-1d": ("kintree_table of shape (16,)", lambda d: _model_with(d, kintree_table=np.arange(16))),
    "coeffs-text": ("hands_coeffs is a list of strings", lambda d: _model_with(d, hands_coeffs=["a", "b"])),
    "mean-nan": ("hands_mean holds NaN", lambda d: _model_with(d, hands_mean=np.full(45, np.nan))),
    "truncated": ("a valid file cut in half", lambda d: _model_with(d)[: len(_model_with(d)) // 2]),
}
