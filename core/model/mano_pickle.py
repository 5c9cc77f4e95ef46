"""Read MANO ``.pkl`` files as plain data, safe by construction.

The official ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` are Python 2 pickles (protocol 2) holding
numpy arrays, ``chumpy.ch.Ch`` objects (chumpy is unmaintained and broken on Python 3.11) and a
``scipy.sparse.csc_matrix``. A pickle is a program: ``pickle.load`` calls whatever callables it
names, and even numpy's own reconstruction, driven by a crafted dtype state, reads raw bytes
as object pointers. So nothing here calls into pickle or numpy's reconstruction.

:func:`load_mano_pickle` is a small interpreter over the opcodes that :mod:`pickletools`
decodes (protocols 0 to 5) that builds plain data only:

* numbers, strings, bytes, ``None``, lists, tuples, dicts and sets of scalars;
* numeric arrays: the dtype is one of :data:`_NUMERIC_DTYPES` built here from its code (the
  pickled dtype state is only checked, never applied), and the shape must account for exactly
  the bytes given;
* ``chumpy.ch.Ch`` objects become their ``x`` array; ``scipy.sparse`` CSC/CSR matrices are
  validated (``indptr`` monotonic and consistent, indices in range, shape bounded) and become
  dense float64 arrays.

Every other global, and the opcodes that can only serve other objects (``INST``, ``OBJ``,
extension registry, persistent ids, out-of-band buffers), raise
:class:`~core.errors.UnsafePickleError`. Sizes, nesting depth, the memo, the stack and the
number of opcodes are bounded; self-references are refused; every malformed input raises
:class:`~core.errors.ModelFileError`.
"""

from __future__ import annotations

import codecs
import io
import math
import pickletools
import struct
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

import numpy as np

from core.errors import ModelFileError, UnsafePickleError

#: Largest file read (the official MANO pickles are about 4 MB).
MAX_FILE_BYTES = 256 << 20
#: Most elements in one array, dense sparse matrices included (MANO's largest: 315 k).
MAX_ARRAY_ELEMENTS = 1 << 24
#: Most array elements in one file, all arrays together (MANO: about 0.6 M).
MAX_TOTAL_ELEMENTS = 1 << 25
#: Most dimensions of one array.
MAX_ARRAY_DIMS = 8
#: Deepest nesting of containers (MANO needs 3: dict -> Ch state -> set).
MAX_DEPTH = 32
#: Most opcodes, memo entries, stack items (MANO: a few hundred of each).
MAX_OPCODES = 1_000_000
MAX_MEMO = 1_000_000
MAX_STACK = 1_000_000
#: Most values in the result counted as a tree, a value shared n times counting n times.
MAX_VALUES = 1_000_000
#: Largest integer literal (a shape, an index; array data are raw bytes, not integers).
MAX_INT_BITS = 64

#: The array element types a model file may use: booleans, integers, floats, complex.
_NUMERIC_DTYPES = frozenset(
    ["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
)
_BYTE_ORDERS = frozenset("<>|=")


class _Global:
    """A name from the allow-list, as pushed by ``GLOBAL`` / ``STACK_GLOBAL``."""

    __slots__ = ("kind", "name")

    def __init__(self, kind: str, name: str) -> None:
        self.kind, self.name = kind, name


class _DType:
    """A dtype under construction: ``numpy.dtype(code, align, copy)`` then its state."""

    __slots__ = ("code", "order", "built")

    def __init__(self, code: str) -> None:
        self.code, self.order, self.built = code, "=", False

    def dtype(self) -> np.dtype:
        return np.dtype(self.code).newbyteorder(self.order)


class _ArrayStub:
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')``, waiting for its state."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None


class _ObjStub:
    """A chumpy ``Ch`` or a scipy sparse matrix: only its state dict is kept."""

    __slots__ = ("kind", "state")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.state: Any = None


_CHUMPY, _CSC, _CSR = "chumpy", "csc", "csr"

#: (module, name) -> the role it may play. Nothing here is ever called.
_ALLOWED: dict[tuple[str, str], str] = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.multiarray", "scalar"): "scalar",
    ("numpy._core.multiarray", "scalar"): "scalar",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("copy_reg", "_reconstructor"): "reconstructor",
    ("copyreg", "_reconstructor"): "reconstructor",
    ("__builtin__", "object"): "object",
    ("builtins", "object"): "object",
    # Python 3 writes bytes in protocol 2 as _codecs.encode(text, "latin1"), b"" as bytes().
    ("_codecs", "encode"): "encode",
    ("__builtin__", "bytes"): "bytes",
    ("builtins", "bytes"): "bytes",
    ("__builtin__", "bytearray"): "bytes",
    ("builtins", "bytearray"): "bytes",
    ("__builtin__", "set"): "set",
    ("builtins", "set"): "set",
    ("__builtin__", "frozenset"): "frozenset",
    ("builtins", "frozenset"): "frozenset",
    ("chumpy.ch", "Ch"): _CHUMPY,
    ("scipy.sparse.csc", "csc_matrix"): _CSC,
    ("scipy.sparse._csc", "csc_matrix"): _CSC,
    ("scipy.sparse._csc", "csc_array"): _CSC,
    ("scipy.sparse.csr", "csr_matrix"): _CSR,
    ("scipy.sparse._csr", "csr_matrix"): _CSR,
    ("scipy.sparse._csr", "csr_array"): _CSR,
}
_CLASSES = (_CHUMPY, _CSC, _CSR)


class _Malformed(Exception):
    """Internal: the pickle is not what a MANO file holds; becomes a ModelFileError."""


def _fail(what: str) -> NoReturn:
    raise _Malformed(what)


class _Budget:
    """Array elements left for one file (a tiny sparse state can claim a huge dense array)."""

    def __init__(self) -> None:
        self.left = MAX_TOTAL_ELEMENTS

    def take(self, count: int, what: str) -> None:
        if count > MAX_ARRAY_ELEMENTS:
            _fail(f"{what} has {count} elements, more than {MAX_ARRAY_ELEMENTS}")
        if count > self.left:
            _fail(f"the arrays hold more than {MAX_TOTAL_ELEMENTS} elements in all")
        self.left -= count


def _short(value: Any, limit: int = 60) -> str:
    """A bounded, single-line rendering of attacker-controlled text for error messages."""
    text = ascii(value) if isinstance(value, (str, bytes)) else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- scalars


def _is_key(obj: Any) -> bool:
    """Scalars and flat tuples of scalars: hashable without recursion."""
    if isinstance(obj, (str, bytes, int, float, type(None))):
        return True
    return isinstance(obj, tuple) and len(obj) <= 16 and all(
        isinstance(o, (str, bytes, int, float, type(None))) for o in obj
    )


def _as_bytes(obj: Any, what: str) -> bytes:
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):  # a Python 2 str read as latin-1
        try:
            return obj.encode("latin1")
        except UnicodeEncodeError:
            _fail(f"{what} holds text that is not bytes")
    _fail(f"{what} is a {type(obj).__name__}, not bytes")


def _as_int(obj: Any, what: str, lo: int = 0, hi: int = 1 << 62) -> int:
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, bool) and lo <= int(obj) <= hi:
        return int(obj)
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, bool):
        _fail(f"{what} is {int(obj)}, outside [{lo}, {hi}]")
    _fail(f"{what} is a {type(obj).__name__}, not an integer")


def _as_text(obj: Any, what: str) -> str:
    if isinstance(obj, bytes):
        return obj.decode("latin1")
    if not isinstance(obj, str):
        _fail(f"{what} is a {type(obj).__name__}, not text")
    return obj


# --------------------------------------------------------------------------- arrays


def _shape(obj: Any, what: str) -> tuple[int, ...]:
    if not isinstance(obj, (tuple, list)) or len(obj) > MAX_ARRAY_DIMS:
        _fail(f"{what} shape is not a tuple of at most {MAX_ARRAY_DIMS} sizes")
    shape = tuple(_as_int(n, f"{what} size", 0, MAX_ARRAY_ELEMENTS) for n in obj)
    if math.prod(shape) > MAX_ARRAY_ELEMENTS:
        _fail(f"{what} of shape {shape} has more than {MAX_ARRAY_ELEMENTS} elements")
    return shape


def _dtype(obj: Any, what: str) -> np.dtype:
    if not isinstance(obj, _DType):
        _fail(f"{what} has a {type(obj).__name__} where a dtype belongs")
    return obj.dtype()


def _array(raw: Any, dtype: np.dtype, shape: tuple[int, ...], fortran: bool, what: str,
           budget: _Budget) -> np.ndarray:
    """An array that owns a native-order copy of exactly ``raw``'s bytes."""
    data = _as_bytes(raw, f"{what} data")
    count = math.prod(shape)
    budget.take(count, what)
    if len(data) != count * dtype.itemsize:
        _fail(f"{what} of shape {shape} and type {dtype.str} needs {count * dtype.itemsize} bytes, "
              f"the file gives {len(data)}")
    flat = np.frombuffer(data, dtype=dtype, count=count) if count else np.empty(0, dtype)
    out = flat.reshape(shape, order="F" if fortran else "C")
    return np.array(out, dtype=dtype.newbyteorder("="), order="K", copy=True)


def _fill_array(stub: _ArrayStub, state: Any, budget: _Budget) -> None:
    """``ndarray.__setstate__``: (version, shape, dtype, is_fortran, data), checked."""
    if stub.array is not None:
        _fail("an array is given its data twice")
    if isinstance(state, tuple) and len(state) == 5:
        _as_int(state[0], "array state version", 0, 1)
        state = state[1:]
    if not (isinstance(state, tuple) and len(state) == 4):
        _fail("an array's state is not (shape, dtype, is_fortran, data)")
    shape = _shape(state[0], "an array")
    dtype = _dtype(state[1], "an array")
    if not isinstance(state[2], (bool, int)):
        _fail("an array's is_fortran flag is not a boolean")
    stub.array = _array(state[3], dtype, shape, bool(state[2]), "an array", budget)


def _build_dtype(stub: _DType, state: Any) -> None:
    """``dtype.__setstate__`` for a plain numeric type: only the byte order may vary."""
    if stub.built:
        _fail("a dtype is given its state twice")
    if not isinstance(state, tuple) or len(state) not in (8, 9):
        _fail("a dtype state is not a plain numeric type's")
    _as_int(state[0], "dtype state version", 3, 4)
    order = _as_text(state[1], "dtype byte order")
    if order not in _BYTE_ORDERS:
        _fail(f"dtype byte order {_short(order)}")
    plain = (None, None, None, -1, -1, 0) + ((None,) if len(state) == 9 else ())
    if any(type(a) is not type(b) or a != b for a, b in zip(state[2:], plain)):
        _fail("a dtype state describes a structured, object or flagged type (only plain numbers are allowed)")
    stub.order, stub.built = order, True


# --------------------------------------------------------------------------- objects


def _reduce(func: Any, args: Any, budget: _Budget) -> Any:
    """``REDUCE`` for the allow-listed callables; nothing is called."""
    if not isinstance(func, _Global):
        _fail(f"REDUCE on a {type(func).__name__}")
    if not isinstance(args, tuple):
        _fail(f"{func.name} is given a {type(args).__name__}, not an argument tuple")
    kind = func.kind
    if kind == "dtype":
        if not 1 <= len(args) <= 3:
            _fail("numpy.dtype takes 1 to 3 arguments")
        code = _as_text(args[0], "a dtype code")
        if code not in _NUMERIC_DTYPES:
            _fail(f"array element type {_short(code)} is not a plain number type")
        if not all(isinstance(a, (bool, int)) for a in args[1:]):
            _fail("numpy.dtype flags are not booleans")
        return _DType(code)
    if kind == "reconstruct":
        if len(args) != 3 or not (isinstance(args[0], _Global) and args[0].kind == "ndarray"):
            _fail("_reconstruct is not asked for a plain ndarray")
        return _ArrayStub()
    if kind == "scalar":
        if len(args) != 2:
            _fail("numpy scalar takes (dtype, data)")
        return _array(args[1], _dtype(args[0], "a scalar"), (), False, "a scalar", budget)[()]
    if kind == "frombuffer":
        if len(args) != 4:
            _fail("_frombuffer takes (buffer, dtype, shape, order)")
        order = _as_text(args[3], "an array order")
        if order not in ("C", "F"):
            _fail(f"array order {_short(order)}")
        shape = _shape(args[2], "an array")
        return _array(args[0], _dtype(args[1], "an array"), shape, order == "F", "an array", budget)
    if kind == "encode":
        if len(args) != 2 or _as_text(args[1], "an encoding") not in ("latin1", "latin-1"):
            _fail("_codecs.encode is used for something other than bytes")
        return _as_bytes(_as_text(args[0], "encoded text"), "encoded text")
    if kind == "bytes":
        if len(args) > 1:
            _fail("bytes() takes at most one argument")
        return _as_bytes(args[0], "bytes()") if args else b""
    if kind in ("set", "frozenset"):
        items = args[0] if args else []
        if len(args) > 1 or not isinstance(items, (list, tuple)) or not all(_is_key(i) for i in items):
            _fail("a set of something other than plain values")
        return set(items) if kind == "set" else frozenset(items)
    if kind == "reconstructor":  # protocol 0/1: copy_reg._reconstructor(cls, object, None)
        if (len(args) != 3 or not isinstance(args[0], _Global) or args[0].kind not in _CLASSES
                or not (isinstance(args[1], _Global) and args[1].kind == "object") or args[2] is not None):
            _fail("copy_reg._reconstructor is not asked for a chumpy or sparse object")
        return _ObjStub(args[0].kind)
    _fail(f"{func.name} cannot be called")


def _newobj(cls: Any, args: Any) -> _ObjStub:
    if not (isinstance(cls, _Global) and cls.kind in _CLASSES):
        _fail(f"NEWOBJ of a {_short(getattr(cls, 'name', type(cls).__name__))}")
    if args != ():
        _fail(f"{cls.name} is created with arguments")
    return _ObjStub(cls.kind)


def _build(obj: Any, state: Any, budget: _Budget) -> None:
    if isinstance(obj, _ArrayStub):
        _fill_array(obj, state, budget)
    elif isinstance(obj, _DType):
        _build_dtype(obj, state)
    elif isinstance(obj, _ObjStub):
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]  # (dict, slots) with no slots
        if obj.state is not None or not isinstance(state, dict):
            _fail(f"a {obj.kind} object's state is not one dict")
        obj.state = state
    else:
        _fail(f"BUILD on a {type(obj).__name__}")


# --------------------------------------------------------------------------- the interpreter

_OPCODES: dict[bytes, pickletools.OpcodeInfo] = {op.code.encode("latin1"): op for op in pickletools.opcodes}


def _read_py2_string(f: io.BytesIO) -> str:
    """Protocol 0's ``STRING``: a quoted, escaped Python 2 str, as latin-1 text.

    (pickletools decodes it as ASCII, which refuses the array bytes of a protocol-0 file.)
    """
    line = f.readline()
    if not line.endswith(b"\n"):
        _fail("a STRING has no newline")
    line = line[:-1]
    if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
        _fail("a STRING is not quoted")
    return codecs.escape_decode(line[1:-1])[0].decode("latin1")


def _ops(data: bytes) -> Iterator[tuple[str, Any]]:
    """(opcode name, decoded argument) up to STOP, like :func:`pickletools.genops`."""
    f = io.BytesIO(data)
    while True:
        code = f.read(1)
        op = _OPCODES.get(code)
        if op is None:
            _fail("the pickle ends before its STOP" if not code else f"unknown opcode {code!r}")
        if op.name == "STRING":
            arg: Any = _read_py2_string(f)
        else:
            arg = None if op.arg is None else op.arg.reader(f)
        yield op.name, arg
        if op.name == "STOP":
            return


def _run(data: bytes, budget: _Budget) -> Any:
    """Execute the opcodes of ``data`` over plain data and stubs; returns the STOP value."""
    stack: list[Any] = []
    marks: list[list[Any]] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        nonlocal stack
        if not marks:
            _fail("a MARK is missing")
        items, stack = stack, marks.pop()
        return items

    def pop() -> Any:
        if not stack:
            _fail("the stack is empty")
        return stack.pop()

    def top() -> Any:
        if not stack:
            _fail("the stack is empty")
        return stack[-1]

    def set_items(target: Any, items: list[Any]) -> None:
        if not isinstance(target, dict) or len(items) % 2:
            _fail("SETITEM on something that is not a dict")
        for k, v in zip(items[::2], items[1::2]):
            if not _is_key(k):
                _fail(f"a dict key is a {type(k).__name__}")
            target[k] = v

    for count, (name, arg) in enumerate(_ops(data)):
        if count >= MAX_OPCODES:
            _fail(f"more than {MAX_OPCODES} opcodes")
        if len(stack) + len(marks) > MAX_STACK:
            _fail("the stack grows beyond its bound")
        if isinstance(arg, int) and not isinstance(arg, bool) and arg.bit_length() > MAX_INT_BITS:
            _fail(f"an integer of {arg.bit_length()} bits")
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            if marks or len(stack) != 1:
                _fail("the pickle ends with a malformed stack")
            return stack[0]
        if name == "MARK":
            marks.append(stack)
            stack = []
        elif name == "POP":
            pop()
        elif name == "POP_MARK":
            pop_mark()
        elif name == "DUP":
            stack.append(top())
        elif name in ("NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG",
                      "LONG1", "LONG4", "FLOAT", "BINFLOAT", "UNICODE", "BINUNICODE",
                      "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"):
            stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}.get(name, arg))
        elif name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):  # Python 2 str: latin-1
            stack.append(arg)
        elif name == "BYTEARRAY8":
            stack.append(bytes(arg))
        elif name == "READONLY_BUFFER":
            top()
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name == "EMPTY_SET":
            stack.append(set())
        elif name in ("APPEND", "APPENDS"):
            items = [pop()] if name == "APPEND" else pop_mark()
            lst = top()
            if not isinstance(lst, list):
                _fail(f"{name} to a {type(lst).__name__}")
            lst.extend(items)
        elif name in ("LIST", "TUPLE"):
            items = pop_mark()  # before naming `stack`: pop_mark rebinds it
            stack.append(items if name == "LIST" else tuple(items))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            if len(stack) < n:
                _fail("the stack is too short for a tuple")
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "DICT":
            d: dict[Any, Any] = {}
            set_items(d, pop_mark())
            stack.append(d)
        elif name == "SETITEM":
            value, key = pop(), pop()
            set_items(top(), [key, value])
        elif name == "SETITEMS":
            items = pop_mark()
            set_items(top(), items)
        elif name in ("ADDITEMS", "FROZENSET"):
            items = pop_mark()
            if not all(_is_key(i) for i in items):
                _fail("a set of something other than plain values")
            if name == "FROZENSET":
                stack.append(frozenset(items))
            else:
                target = top()
                if not isinstance(target, set):
                    _fail(f"ADDITEMS to a {type(target).__name__}")
                target.update(items)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if len(memo) >= MAX_MEMO:
                _fail(f"more than {MAX_MEMO} memo entries")
            key = len(memo) if name == "MEMOIZE" else arg
            if not isinstance(key, int) or key < 0:
                _fail("a memo key is not a non-negative integer")
            memo[key] = top()
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in memo:
                _fail(f"memo entry {_short(arg)} is read before it is written")
            stack.append(memo[arg])
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "GLOBAL":
                module, _, qual = str(arg).partition(" ")
            else:
                qual, module = pop(), pop()
                if not (isinstance(module, str) and isinstance(qual, str)):
                    _fail("STACK_GLOBAL names are not text")
            kind = _ALLOWED.get((module, qual))
            if kind is None:
                raise UnsafePickleError(
                    f"the model file asks for {_short(f'{module}.{qual}', 80)}, which a MANO file never "
                    "needs; refusing to load it (it could run code)"
                )
            stack.append(_Global(kind, f"{module}.{qual}"))
        elif name == "REDUCE":
            args = pop()
            stack.append(_reduce(pop(), args, budget))
        elif name == "NEWOBJ":
            args = pop()
            stack.append(_newobj(pop(), args))
        elif name == "NEWOBJ_EX":
            kwargs, args = pop(), pop()
            if kwargs != {}:
                _fail("NEWOBJ_EX with keyword arguments")
            stack.append(_newobj(pop(), args))
        elif name == "BUILD":
            state = pop()
            _build(top(), state, budget)
        else:  # INST, OBJ, EXT*, PERSID, BINPERSID, NEXT_BUFFER
            raise UnsafePickleError(
                f"the model file uses the pickle opcode {name}, which a MANO file never needs; "
                "refusing to load it (it could run code)"
            )
    _fail("the pickle has no STOP")


# --------------------------------------------------------------------------- to plain data


def _children(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return list(obj.values())
    if isinstance(obj, (list, tuple)):
        return list(obj)
    if isinstance(obj, _ObjStub):
        return [obj.state]
    return []


def _is_node(obj: Any) -> bool:
    return isinstance(obj, (dict, list, tuple, _ObjStub))


def _leaf(obj: Any) -> Any:
    if isinstance(obj, _ArrayStub):
        if obj.array is None:
            _fail("an array is never given its data")
        return obj.array
    if isinstance(obj, _DType):
        return obj.dtype()
    if isinstance(obj, _Global):
        _fail(f"{_short(obj.name, 80)} is left over as a value")
    return obj


def _numeric(value: Any, what: str) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        return value
    _fail(f"{what} is a {type(value).__name__}, not a numeric array")


def _dense(kind: str, state: dict[Any, Any], budget: _Budget) -> np.ndarray:
    """A CSC or CSR matrix's state, checked, as a dense float64 array."""
    what = f"a {kind.upper()} sparse matrix"
    if state is None:
        _fail(f"{what} has no state")
    shape = state.get("_shape", state.get("shape"))
    if not (isinstance(shape, tuple) and len(shape) == 2):
        _fail(f"{what} has no 2-D shape")
    rows, cols = (_as_int(n, f"{what} size", 0, MAX_ARRAY_ELEMENTS) for n in shape)
    budget.take(rows * cols, f"{what} of shape ({rows}, {cols})")
    try:
        data = _numeric(state["data"], f"{what}'s data")
        indices = _numeric(state["indices"], f"{what}'s indices")
        indptr = _numeric(state["indptr"], f"{what}'s indptr")
    except KeyError as exc:
        _fail(f"{what} has no {exc.args[0]!r}")
    if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu" or data.dtype.kind == "c":
        _fail(f"{what} has non-integer indices or complex data")
    major, minor = (cols, rows) if kind == _CSC else (rows, cols)
    if data.ndim != 1 or indices.shape != data.shape or indptr.shape != (major + 1,):
        _fail(f"{what} has inconsistent sizes (data {data.shape}, indices {indices.shape}, indptr {indptr.shape})")
    ptr = indptr.astype(np.int64)
    if ptr[0] != 0 or ptr[-1] != data.size or bool((np.diff(ptr) < 0).any()):
        _fail(f"{what} has an indptr that does not run from 0 to its {data.size} entries")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= minor):
        _fail(f"{what} has an index out of range")
    dense = np.zeros((rows, cols))
    lines = np.repeat(np.arange(major), np.diff(ptr))
    at = (indices.astype(np.int64), lines) if kind == _CSC else (lines, indices.astype(np.int64))
    np.add.at(dense, at, data.astype(np.float64))  # duplicates add up, as in scipy
    return dense


def _convert(obj: Any, done: Callable[[Any], Any], budget: _Budget) -> Any:
    if isinstance(obj, dict):
        return {k: done(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [done(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(done(v) for v in obj)
    state = done(obj.state)
    if obj.kind == _CHUMPY:
        if not isinstance(state, dict) or "x" not in state:
            _fail("a chumpy object in the model file has no array value")
        x = state["x"]
        if isinstance(x, (bool, int, float, np.number)):
            return np.asarray(x)
        return _numeric(x, "a chumpy object's value")
    return _dense(obj.kind, state, budget)


def _to_plain(root: Any, budget: _Budget) -> Any:
    """Stubs to arrays, without recursion; refuses cycles, deep nesting and huge graphs.

    Each container is converted once (a shared one stays shared), after its children. Its
    size as a tree (a value shared n times counts n times) is bounded too, so that nothing
    later walking the result (``np.asarray`` on nested lists) can be made to take forever.
    """
    if not _is_node(root):
        return _leaf(root)
    done: dict[int, Any] = {}  # by id: every original object stays alive through root
    size: dict[int, int] = {}
    path: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(root, 1, False)]
    while stack:
        obj, level, closing = stack.pop()
        oid = id(obj)
        if closing:
            path.discard(oid)
            children = _children(obj)
            size[oid] = 1 + sum(size[id(c)] if _is_node(c) else 1 for c in children)
            if size[oid] > MAX_VALUES:
                _fail(f"more than {MAX_VALUES} values")
            done[oid] = _convert(obj, lambda c: done[id(c)] if _is_node(c) else _leaf(c), budget)
            continue
        if oid in done:
            continue
        if oid in path:
            _fail("a value contains itself (self-reference)")
        if level > MAX_DEPTH:
            _fail(f"values nested deeper than {MAX_DEPTH} levels")
        path.add(oid)
        stack.append((obj, level, True))
        for child in _children(obj):
            if _is_node(child):
                if id(child) in path:
                    _fail("a value contains itself (self-reference)")
                stack.append((child, level + 1, False))
    return done[id(root)]


def parse_mano_pickle(data: bytes, source: str = "the model file") -> dict[str, Any]:
    """Parse the bytes of a MANO-format pickle into plain data (see the module docstring).

    Raises:
        ModelFileError: malformed, oversized, or not a dict.
        UnsafePickleError: it names a callable or opcode no MANO file needs.
    """
    try:
        budget = _Budget()
        with warnings.catch_warnings():  # escape decoding warns on invalid escapes in text opcodes
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = _run(data, budget)
        obj = _to_plain(tree, budget)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{source}: {exc}") from None
    except _Malformed as exc:
        raise ModelFileError(f"{source} is not a readable MANO pickle: {exc}") from None
    except (ValueError, EOFError, struct.error, OverflowError, UnicodeError) as exc:
        # pickletools' readers of truncated or invalid opcode arguments.
        raise ModelFileError(f"{source} is not a readable MANO pickle: {_short(str(exc), 120)}") from None
    if not isinstance(obj, dict):
        raise ModelFileError(f"{source} does not hold a MANO model (expected a dict, got {type(obj).__name__})")
    return obj


def load_mano_pickle(path: str | Path) -> dict[str, Any]:
    """Load a MANO-format pickle safely.

    Args:
        path: a ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` style file.

    Returns:
        a dict of the file's entries with chumpy and sparse objects turned into numpy arrays.

    Raises:
        ModelFileError: the file is missing, unreadable, too large, or not a MANO-format dict.
        UnsafePickleError: the pickle names a callable or opcode outside the allow-list.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ModelFileError(f"cannot read the model file {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise ModelFileError(f"{path} is larger than {MAX_FILE_BYTES >> 20} MB; a MANO file is a few MB")
    return parse_mano_pickle(raw, str(path))
