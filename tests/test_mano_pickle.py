"""The MANO pickle reader (core.model.mano_pickle): exact arrays from real layouts, one clear error
for every crafted or malformed file, no crash under a seeded mutation fuzzer."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse
import torch

from core.errors import ModelFileError, UnsafePickleError
from core.model import HandModel, load_model_data, mano_pickle
from core.model.mano_pickle import load_mano_pickle, parse_mano_pickle
from tests import mano_files
from tests.mano_files import CRAFTED, Ch, dumps, mano_dict, python2_pickle, tiny_mano_dict

ROOT = Path(__file__).resolve().parents[1]


def _expected(value: Any) -> Any:
    """What the reader must give for a value written into a MANO pickle."""
    if isinstance(value, Ch):
        return value.x
    if scipy.sparse.issparse(value):
        return value.toarray().astype(np.float64)
    return value


def _assert_same(got: dict[str, Any], model: dict[str, Any]) -> None:
    assert got.keys() == model.keys()
    for key, value in model.items():
        want = _expected(value)
        if isinstance(want, np.ndarray):
            assert isinstance(got[key], np.ndarray), key
            assert got[key].dtype == want.dtype.newbyteorder("="), key
            assert got[key].shape == want.shape, key
            np.testing.assert_array_equal(got[key], want, err_msg=key)
        else:
            assert got[key] == want and type(got[key]) is type(want), key


# ----------------------------------------------------------------------------- valid files


def test_python2_layout_gives_exactly_the_written_arrays(tmp_path: Path, open_hand, hand_layer) -> None:
    # The official files: Python 2 cPickle, protocol 2, str data, chumpy Ch, scipy.sparse.csc.
    model = mano_dict(open_hand)
    raw = python2_pickle(model)
    assert b"chumpy.ch\nCh" in raw and b"scipy.sparse.csc\ncsc_matrix" in raw and b"_codecs" not in raw
    _assert_same(parse_mano_pickle(raw), model)
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(raw)
    layer = HandModel(load_model_data(path))
    g = torch.Generator().manual_seed(3)
    pose, betas = torch.randn(3, 48, generator=g) * 0.3, torch.randn(3, 10, generator=g)
    with torch.no_grad():
        a, b = hand_layer(pose, betas), layer(pose, betas)
    torch.testing.assert_close(a.vertices, b.vertices, rtol=0, atol=1e-6)


def test_python2_protocol_0_text_pickle() -> None:
    # cPickle.dumps(..., 0) of a dict holding an array: STRING opcodes with escaped bytes.
    data = np.array([1.5, -2.0, 1e-300])
    escaped = "".join(f"\\x{b:02x}" for b in data.tobytes()).encode()
    raw = (b"(dp0\nS'v'\np1\ncnumpy.core.multiarray\n_reconstruct\np2\n(cnumpy\nndarray\np3\n(I0\ntp4\n"
           b"S'b'\np5\ntp6\nRp7\n(I1\n(I3\ntp8\ncnumpy\ndtype\np9\n(S'f8'\np10\nI0\nI1\ntp11\nRp12\n"
           b"(I3\nS'<'\np13\nNNNI-1\nI-1\nI0\ntp14\nbI00\nS'" + escaped + b"'\np15\ntp16\nbs.")
    got = parse_mano_pickle(raw)["v"]
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, data)


@pytest.mark.parametrize("protocol", range(6))
def test_every_protocol_gives_the_same_arrays(protocol: int) -> None:
    rng = np.random.default_rng(protocol)
    model = {
        "f8": rng.normal(size=(4, 3)),
        "fortran": np.asfortranarray(rng.normal(size=(3, 2))),
        "big_endian": np.arange(5, dtype=">i4"),
        "u32": np.arange(6, dtype=np.uint32).reshape(2, 3),
        "f4": rng.normal(size=7).astype(np.float32),
        "bool": np.array([True, False]),
        "complex": np.array([1 + 2j]),
        "empty": np.zeros((0, 3)),
        "empty_int": np.zeros(0, np.int64),
        "ch": Ch(rng.normal(size=(2, 3, 2))),
        "csc": scipy.sparse.csc_matrix(rng.normal(size=(3, 5)) * (rng.random((3, 5)) > 0.5)),
        "csr": scipy.sparse.csr_matrix(rng.normal(size=(4, 2))),
        "empty_csc": scipy.sparse.csc_matrix((2, 0)),
        "scalar": np.float64(2.5),
        "list": [1, 2.0, "x", None, (1, 2), True],
        "text": "lbs",
    }
    _assert_same(parse_mano_pickle(dumps(model, protocol)), model)


def test_empty_arrays_load_in_a_model(tmp_path: Path, open_hand) -> None:
    # Python 3 writes an empty array's data as __builtin__.bytes(): it used to be refused.
    model = {**mano_dict(open_hand), "J": np.zeros((0, 3)), "extra": np.zeros(0, np.uint32)}
    raw = dumps(model)
    assert b"__builtin__\nbytes" in raw
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(raw)
    assert load_mano_pickle(path)["J"].shape == (0, 3)
    assert load_model_data(path).num_vertices == open_hand.num_vertices


def test_sparse_duplicates_add_up_like_scipy() -> None:
    m = scipy.sparse.csc_matrix((np.array([1.0, 2.0, 4.0]), np.array([1, 1, 0]), np.array([0, 2, 3])), shape=(2, 2))
    got = parse_mano_pickle(dumps({"J": m}))["J"]
    np.testing.assert_array_equal(got, m.toarray())
    assert got[1, 0] == 3.0


# ----------------------------------------------------------------------------- crafted files

#: A phrase each crafted case's error must contain.
_CRAFTED_ERRORS = {
    "dtype-pointer": "'O8' is not a plain number type",
    "dtype-singleton": "only plain numbers",
    "os-system": "posix.system",
    "self-dict": "contains itself",
    "self-list": "contains itself",
    "nested-200k": "nested deeper than",
    "tuple-key-200k": "dict key is a tuple",
    "chumpy-80k": "nested deeper than",
    "shared-2^30": "more than",
    "sparse-2^40": "size is 1099511627776",
    "sparse-index": "index out of range",
    "sparse-indptr": "indptr",
    "array-claims-more": "size is 1000000000",
    "f-float": "'f' is a float64 array, expected an integer array",
    "f-text": "'f' is a str",
    "weights-shape": "weights have shape",
    "kintree-1d": "'kintree_table' has shape (16,)",
    "coeffs-text": "'hands_coeffs' is a list",
    "mean-nan": "'hands_mean' has non-finite values",
    "truncated": "not a readable MANO pickle",
}


@pytest.fixture(scope="module")
def crafted_dir(tmp_path_factory: pytest.TempPathFactory, open_hand) -> Path:
    folder = tmp_path_factory.mktemp("crafted")
    for name, (_what, build) in CRAFTED.items():
        (folder / f"{name}.pkl").write_bytes(build(open_hand))
    return folder


def test_every_crafted_case_has_an_expected_error() -> None:
    assert set(_CRAFTED_ERRORS) == set(CRAFTED)


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_file_gives_one_clear_error(crafted_dir: Path, name: str) -> None:
    with pytest.raises(ModelFileError) as info:
        load_model_data(crafted_dir / f"{name}.pkl")
    message = str(info.value)
    assert _CRAFTED_ERRORS[name] in message
    assert "\n" not in message and len(message) < 400


def test_unknown_callables_are_unsafe_not_just_malformed(crafted_dir: Path) -> None:
    with pytest.raises(UnsafePickleError, match="posix.system"):
        load_mano_pickle(crafted_dir / "os-system.pkl")
    assert not Path("/tmp/handtwin-pwned").exists()


def test_crash_prone_cases_through_the_command_line(crafted_dir: Path) -> None:
    # These crashed (segfault), hung or printed tracebacks with the old unpickler: run them in a
    # child so that a regression fails this test instead of killing the test run.
    names = ["dtype-pointer", "dtype-singleton", "tuple-key-200k", "nested-200k", "chumpy-80k", "self-dict",
             "shared-2^30", "sparse-2^40"]
    script = (
        "import contextlib, io, sys\n"
        "import main\n"
        "for path in sys.argv[1:]:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        rc = main.main(['model-info', '--model', path])\n"
        "    print(rc, repr(err.getvalue()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *(str(crafted_dir / f"{n}.pkl") for n in names)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert len(lines) == len(names)
    for name, line in zip(names, lines):
        rc, err = line.split(" ", 1)
        err = ast.literal_eval(err)  # the repr printed above
        assert rc == "2", (name, line)
        assert err.startswith("handtwin: error: ") and err.count("\n") == 1, (name, err)
        assert _CRAFTED_ERRORS[name] in err, (name, err)


def test_segfault_case_exits_2_from_main_py(crafted_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "main.py", "model-info", "--model", str(crafted_dir / "dtype-pointer.pkl")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith("handtwin: error: ") and out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr and out.stdout == ""


# ----------------------------------------------------------------------------- bounds


def test_depth_bound_is_exact() -> None:
    ok = mano_files._nested(mano_pickle.MAX_DEPTH - 1)  # dict + lists
    assert isinstance(parse_mano_pickle(ok)["v_template"], list)
    with pytest.raises(ModelFileError, match="nested deeper"):
        parse_mano_pickle(mano_files._nested(mano_pickle.MAX_DEPTH))


def test_shared_values_count_as_often_as_they_appear() -> None:
    assert len(parse_mano_pickle(mano_files._shared_lists(10))["v_template"]) == 2
    with pytest.raises(ModelFileError, match="more than 1000000 values"):
        parse_mano_pickle(mano_files._shared_lists(20))


@pytest.mark.parametrize(
    "limit, value, error",
    [
        ("MAX_OPCODES", 50, "more than 50 opcodes"),
        ("MAX_MEMO", 3, "more than 3 memo entries"),
        ("MAX_STACK", 3, "stack grows"),
        ("MAX_TOTAL_ELEMENTS", 20, "more than 20 elements in all"),
        ("MAX_ARRAY_ELEMENTS", 10, "more than 10"),
    ],
)
def test_bounds_give_clear_errors(monkeypatch: pytest.MonkeyPatch, limit: str, value: int, error: str) -> None:
    raw = python2_pickle(tiny_mano_dict())
    parse_mano_pickle(raw)
    monkeypatch.setattr(mano_pickle, limit, value)
    with pytest.raises(ModelFileError, match=error):
        parse_mano_pickle(raw)


def test_oversized_file_is_refused_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(python2_pickle(tiny_mano_dict()))
    monkeypatch.setattr(mano_pickle, "MAX_FILE_BYTES", 100)
    with pytest.raises(ModelFileError, match="larger than"):
        load_mano_pickle(path)


@pytest.mark.parametrize(
    "payload, error",
    [
        (b"\x80\x02}q\x00h\x00h\x00s.", "dict key is a dict"),
        (b"\x80\x02cnumpy\nndarray\n)\x81.", "NEWOBJ"),
        (b"\x80\x02(I1\nI2\nb.", "BUILD on a int"),
        (b"\x80\x02}(X\x01\x00\x00\x00aP1\nu.", "PERSID"),
        (b"\x80\x02}X\x01\x00\x00\x00a\x82\x01s.", "EXT1"),
        (b"\x80\x05}X\x01\x00\x00\x00a\x97s.", "NEXT_BUFFER"),
        (b"\x80\x02}X\x01\x00\x00\x00acnumpy\ndtype\ns.", "left over"),
        (b"\x80\x02}X\x01\x00\x00\x00a\x8a\x10" + b"\xff" * 15 + b"\x7fs.", "integer of 127 bits"),
        (b"\x80\x02}X\x01\x00\x00\x00ah\x07s.", "read before it is written"),
        (b"\x80\x02}X\x01\x00\x00\x00a", "not a readable MANO pickle"),
        (b"\x80\x02].", "expected a dict"),
        (b"\x80\x02X\x01\x00\x00\x00a.", "expected a dict"),  # found by atheris
        (b"\x80\x02cnumpy\ndtype\n.", "left over"),
    ],
)
def test_malformed_opcodes_give_clear_errors(payload: bytes, error: str) -> None:
    with pytest.raises(ModelFileError, match=error):
        parse_mano_pickle(payload)


# ----------------------------------------------------------------------------- fuzzing

_SNIPPETS = [
    b"(", b"t", b"R", b"b", b"\x81", b"h\x00", b"h\x01", b"q\x00", b"q\x02", b"N", b"}", b"]", b")", b"a",
    b"s", b"u", b"e", b"0", b"1", b"2", b"\x85", b"\x86", b"\x87", b"\x94", b"\x93", b"\x88", b"\x89",
    b"K\xff", b"J\xff\xff\xff\x7f", b"\x8a\x08" + b"\xff" * 8, b"X\x02\x00\x00\x00f8", b"U\x02O8",
    b"cnumpy\ndtype\n", b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n",
    b"c_codecs\nencode\n", b"c__builtin__\nset\n", b"cchumpy.ch\nCh\n", b"cscipy.sparse.csc\ncsc_matrix\n",
    b"ccopy_reg\n_reconstructor\n", b"c__builtin__\nobject\n", b"c__builtin__\nbytes\n", b".",
]


def fuzz_seeds() -> list[bytes]:
    """Valid pickles in every layout and the small crafted ones: what the fuzzer mutates."""
    tiny = tiny_mano_dict()
    seeds = [python2_pickle(tiny)] + [dumps(tiny, p) for p in (0, 1, 2, 4, 5)]
    seeds += [mano_files._dtype_pointer_attack(tiny), mano_files._dtype_singleton_attack(tiny)]
    seeds += [mano_files._self_dict(), mano_files._self_list(), mano_files._shared_lists(8),
              mano_files._nested(40), mano_files._nested_tuple_key(40), mano_files._array_claims_more()]
    return seeds


def mutate(data: bytes, seeds: list[bytes], rng: np.random.Generator) -> bytes:
    """1 to 3 of: bit flips, byte set, truncation, deletion, duplication, splices."""
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        n = len(buf)
        kind = int(rng.integers(7))
        at = int(rng.integers(n + 1))
        if kind == 0 and n:
            for _ in range(int(rng.integers(1, 5))):
                buf[int(rng.integers(n))] ^= 1 << int(rng.integers(8))
        elif kind == 1 and n:
            buf[int(rng.integers(n))] = int(rng.integers(256))
        elif kind == 2:
            del buf[at:]
        elif kind == 3:
            del buf[at:at + int(rng.integers(1, 16))]
        elif kind == 4:
            end = min(n, at + int(rng.integers(1, 32)))
            buf[at:at] = buf[at:end]
        elif kind == 5:
            other = seeds[int(rng.integers(len(seeds)))]
            a = int(rng.integers(len(other)))
            buf[at:at] = other[a:a + int(rng.integers(1, 64))]
        else:
            buf[at:at] = _SNIPPETS[int(rng.integers(len(_SNIPPETS)))]
    return bytes(buf)


def check_plain(value: Any) -> None:
    """The reader's output holds only plain data and numeric arrays (iteratively)."""
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, dict):
            todo.extend(v.keys())
            todo.extend(v.values())
        elif isinstance(v, (list, tuple, set, frozenset)):
            todo.extend(v)
        elif isinstance(v, np.ndarray):
            assert v.dtype.kind in "biufc" and v.dtype.isnative, v.dtype
        else:
            assert isinstance(v, (str, bytes, int, float, type(None), np.number, np.bool_, np.dtype)), type(v)


def run_fuzz(count: int, seed: int) -> dict[str, int]:
    """Parse ``count`` mutated inputs; any exception but ModelFileError fails."""
    rng = np.random.default_rng(seed)
    seeds = fuzz_seeds()
    tally = {"loaded": 0, "refused": 0}
    for i in range(count):
        data = mutate(seeds[i % len(seeds)], seeds, rng)
        try:
            result = parse_mano_pickle(data)
        except ModelFileError as exc:
            assert "\n" not in str(exc), str(exc)
            tally["refused"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the fuzzer
            raise AssertionError(f"input {i} ({data!r:.300}) raised {type(exc).__name__}: {exc}") from exc
        check_plain(result)
        tally["loaded"] += 1
    return tally


def test_mutation_fuzzer_finds_only_clean_errors() -> None:
    count = int(os.environ.get("HANDTWIN_FUZZ_INPUTS", "5000"))
    tally = run_fuzz(count, seed=17)
    assert tally["loaded"] + tally["refused"] == count
    assert tally["loaded"] > count // 200 and tally["refused"] > count // 2, tally  # both paths exercised


_FIELD_VALUES = [
    lambda v: v.T if isinstance(v, np.ndarray) else v,
    lambda v: v.astype(np.float32) if isinstance(v, np.ndarray) else v,
    lambda v: v.astype(np.complex128) if isinstance(v, np.ndarray) else v,
    lambda v: v.astype(bool) if isinstance(v, np.ndarray) else v,
    lambda v: v[:1] if isinstance(v, np.ndarray) else v,
    lambda v: np.zeros((0,) + v.shape[1:]) if isinstance(v, np.ndarray) else v,
    lambda v: np.full(v.shape, np.inf) if isinstance(v, np.ndarray) else v,
    lambda v: np.float64(1.0),
    lambda v: "text",
    lambda v: [1, 2, 3],
    lambda v: None,
    lambda v: {"x": 1},
    lambda v: Ch(v) if isinstance(v, np.ndarray) else v,
    lambda v: np.array(-1),
]


def test_field_fuzzer_through_the_model_loader(tmp_path: Path, open_hand) -> None:
    # Whole files, wrong entries: a clean ModelFileError or a valid model, nothing else.
    rng = np.random.default_rng(5)
    base = mano_dict(open_hand)
    keys = sorted(base)
    path = tmp_path / "MANO_RIGHT.pkl"
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(30):
        model = dict(base)
        for _ in range(int(rng.integers(1, 3))):
            key = keys[int(rng.integers(len(keys)))]
            value = _expected(model[key])
            model[key] = _FIELD_VALUES[int(rng.integers(len(_FIELD_VALUES)))](value)
        path.write_bytes(dumps(model))
        try:
            load_model_data(path)
            outcomes["loaded"] += 1
        except ModelFileError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 10, outcomes
