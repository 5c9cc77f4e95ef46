"""Reading what a user hands HandTwin, safely: JSON and ``.npy`` files, image headers, numbers.

The one module that owns the limits on user input. Every reader checks sizes *before* it
allocates or decodes (a 30000 x 30000 PNG, an ``.npy`` header claiming a billion matrices, a
100 000-deep JSON list, a 400-digit integer) and every failure is one
:class:`~core.errors.InputError` naming the file and the allowed range, never a traceback.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError

__all__ = [
    "FOCAL_RANGE_PX",
    "MAX_HANDS",
    "MAX_IMAGE_SIDE",
    "MAX_JSON_BYTES",
    "MAX_REFINE",
    "check_image_file",
    "check_image_size",
    "check_int",
    "check_number",
    "image_file_size",
    "load_npy",
    "read_json",
]

#: Largest accepted JSON file (profiles and intrinsics are a few kB).
MAX_JSON_BYTES = 16 * 1024 * 1024
#: Deepest accepted JSON nesting (profiles nest three levels).
MAX_JSON_DEPTH = 32
#: Longest accepted integer literal in JSON, in digits (int64 has 19).
MAX_INT_DIGITS = 19
#: Largest accepted image side, pixels (frames, textures); 8K video is 7680 or 8192 wide.
MAX_IMAGE_SIDE = 8192
#: Accepted focal lengths, pixels (a 1-pixel focal length or one of 10^6 px is not a camera).
FOCAL_RANGE_PX = (1.0, 1.0e6)
#: Most hands tracked per frame (``--max-hands``).
MAX_HANDS = 4
#: Most silhouette refinement iterations per hand and frame (``--refine``).
MAX_REFINE = 100
#: Largest accepted ``.npy`` of intrinsics, elements (a million frames of 3 x 3).
MAX_NPY_ELEMENTS = 9_000_000


def check_number(value: float, name: str, lo: float, hi: float, unit: str = "") -> float:
    """``value`` as a float if it is finite and in ``[lo, hi]``, else an :class:`InputError`
    naming ``name`` and the allowed range."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        v = math.nan
    if not (math.isfinite(v) and lo <= v <= hi):
        suffix = f" {unit}" if unit else ""
        raise InputError(f"{name} must be between {lo:g} and {hi:g}{suffix}, got {_short(value)}")
    return v


def check_int(value: int, name: str, lo: int, hi: int) -> int:
    """``value`` if it is an integer in ``[lo, hi]``, else an :class:`InputError` with the range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise InputError(f"{name} must be an integer from {lo} to {hi}, got {_short(value)}")
    return int(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:20] + "..."


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer with {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _check_tree(doc: Any, p: Path, what: str) -> None:
    """Nesting depth and NUL characters of a parsed JSON document (iterative: no recursion)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str) and "\x00" in node:
            raise InputError(f"the {what} {p} contains a NUL character")
        if isinstance(node, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise InputError(f"the {what} {p} is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
            if isinstance(node, dict):
                stack.extend((k, depth) for k in node)
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a user's JSON file with bounds: size, nesting, integer length, no NUL byte.

    Args:
        path: the file. what: what it is, for messages ("profile", "intrinsics file").

    Raises:
        InputError: missing, a folder, unreadable, too large, not UTF-8, invalid JSON, nested
            deeper than :data:`MAX_JSON_DEPTH`, integers longer than :data:`MAX_INT_DIGITS`
            digits, or a NUL character anywhere.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise InputError(f"{p} is a folder, not a {what}")
        if size > MAX_JSON_BYTES:
            raise InputError(f"the {what} {p} is {size} bytes; at most {MAX_JSON_BYTES} bytes are accepted")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} not found: {p}") from None
    except UnicodeDecodeError:
        raise InputError(f"the {what} {p} is not a UTF-8 JSON text file") from None
    except OSError as exc:
        raise InputError(f"cannot read the {what} {p}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise InputError(f"the {what} {p} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise InputError(f"the {what} {p} is nested too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    except ValueError as exc:  # from _parse_int, or CPython's own integer-length limit
        raise InputError(f"the {what} {p} holds a number out of range ({exc})") from None
    _check_tree(doc, p, what)
    return doc


def load_npy(path: str | os.PathLike[str], what: str, max_elements: int = MAX_NPY_ELEMENTS) -> np.ndarray:
    """A numeric ``.npy`` array, its header checked before any data is read.

    Raises:
        InputError: not an ``.npy`` file, a non-numeric or object dtype, more than
            ``max_elements`` elements, or a header that claims more data than the file holds.
    """
    p = Path(path)
    fmt = np.lib.format
    try:
        with open(p, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
            file_size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise InputError(f"{what} not found: {p}") from None
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise InputError(f"{p}: not a readable .npy array ({exc})") from None
    if dtype.hasobject or not np.issubdtype(dtype, np.number):
        raise InputError(f"{p}: expected a numeric array, got dtype {dtype}")
    count = math.prod(int(n) for n in shape)
    if count > max_elements:
        raise InputError(f"{p}: the array {tuple(shape)} has {count} elements; at most {max_elements} are accepted")
    if offset + count * dtype.itemsize > file_size:
        raise InputError(f"{p}: the header claims shape {tuple(shape)} but the file holds only {file_size} bytes")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{p}: not a readable .npy array ({exc})") from None


def check_image_size(width: int, height: int, what: str) -> None:
    """Raise :class:`InputError` unless ``width x height`` is within :data:`MAX_IMAGE_SIDE`."""
    if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
        raise InputError(
            f"{what} is {width}x{height} pixels; images up to {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} are accepted"
        )


def image_file_size(path: str | os.PathLike[str], what: str = "the image") -> tuple[int, int] | None:
    """``(width, height)`` of an image file from its header only (nothing is decoded), or None
    when the file is missing or not an image PIL can identify.

    Raises:
        InputError: PIL refuses the header as a decompression bomb (over twice
            ``PIL.Image.MAX_IMAGE_PIXELS``).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:  # lazy: reads the header only
            return image.size
    except Image.DecompressionBombError as exc:
        raise InputError(f"{what} {path} is too large ({exc}); images up to "
                         f"{MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} are accepted") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None


def check_image_file(path: str | os.PathLike[str], what: str, readable: bool = True) -> tuple[int, int] | None:
    """``(width, height)`` of an image file read from its header only (nothing is decoded).

    Args:
        readable: whether a file that is no image is an error (else None is returned).

    Raises:
        InputError: the file is missing or cannot be identified as an image (with
            ``readable``), or it is larger than :data:`MAX_IMAGE_SIDE` on a side (a
            decompression bomb is refused before decoding).
    """
    p = Path(path)
    size = image_file_size(p, what)
    if size is None:
        if not readable:
            return None
        if not p.exists():
            raise InputError(f"{what} not found: {p}")
        raise InputError(f"cannot read {what} {p} (not an image, or a damaged one)")
    check_image_size(*size, f"{what} {p}")
    return size
