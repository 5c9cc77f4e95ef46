"""Fused CPU kernels of the soft rasterizer, in C, built on first use with the system compiler.

The fast rasterizer's per-pixel math (:mod:`core.render.soft`) is a few dozen flops per
face-pixel pair. As separate PyTorch ops every one of them reads and writes the whole
(pairs,) array; here each face's pixels are visited once, in registers, 8 pixels of a row at a
time (one AVX vector of floats). The C source (``softras.c``, then ``softras_real.c`` once
per float type) is compiled on first use by
:class:`core.native.NativeLibrary` (system compiler, cached build; the first build takes one
to a few seconds, later processes only load it). Where nothing compiles (no compiler, an
unwritable cache), :func:`library` returns None and the caller falls back to PyTorch ops.

The C functions take raw pointers to contiguous CPU tensors (float32 or float64: one set per
dtype, suffix ``_f32``/``_f64``). Images are stored with a row stride of ``W + LANES`` so a
vector of ``LANES`` pixels never runs past a row's buffer. Work is shared by
``threads`` threads (the caller plus detached helpers, each taking tasks from a shared
counter): the forward pass by bands of rows (each pixel's product formed in face order), the
backward pass by blocks of faces (each face's sums formed in row order, then added to the
vertices in face order), so results are the same bit for bit whatever the number of threads.

Model (as :mod:`core.render.soft`): for pixel centre p and face f, with l_k the signed
distance from p to the line of edge k (>= 0 on the face's side) and e_k its distance along the
edge beyond the edge's ends, ``d2 = min_k l_k^2 + e_k^2`` (squared distance to the boundary),
inside when every ``l_k >= 0`` (the dense reference's cross-product test), ``x = +-d2 / sigma``,
``q = 1 - D = 1 / (1 + exp(x))``, ``prod(p) = prod_f q``. Each face is paired with the
pixels of its box grown by the cull radius r (``r^2 = sigma log(1 / eps - 1)``: beyond it
``D < eps``), narrowed per row to where every ``l_k >= -r``: all pixels within r of the face
and a few more. Backward,
with ``w = dL/dsil * prod``: ``dL/dd2 = w D (+-1 / sigma)`` and, with c the closest point on
the nearest edge at the fraction t of the edge, ``d(d2)/d(start) = -2 (1 - t) (p - c)``,
``d(d2)/d(end) = -2 t (p - c)`` (exact also where t is clamped to 0 or 1). float32 uses an
exp of relative error < 3e-7 that vectorizes; float64 uses libm's.
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch
from torch import Tensor

from core.native import CACHE_ENV_VAR, NativeLibrary, NativeUnavailableError, address, cache_dir, kernel_source

__all__ = [
    "CACHE_ENV_VAR", "LANES", "NativeUnavailableError", "backward", "build_error", "cache_dir", "forward", "interior",
    "library", "native_supported", "source",
]

#: Pixels per vector: images passed to the kernels have rows of ``W + LANES`` values.
LANES = 8

_FLAVOURS = (  # C type, suffix, exp, sqrt, fabs
    ("float", "f32", "exp_f32", "sqrtf", "fabsf"),
    ("double", "f64", "exp", "sqrt", "fabs"),
)


def source() -> str:
    """The complete C source of the kernels (float32 and float64 versions)."""
    text = kernel_source(__file__, "softras.c", [("@LANES@", str(LANES))])
    for real, suffix, exp, sqrt, fabs in _FLAVOURS:
        text += kernel_source(__file__, "softras_real.c", [("REAL", real), ("SFX", suffix), ("EXP", exp),
                                                           ("SQRT", sqrt), ("FABS", fabs)])
    return text


def _declare(lib: ctypes.CDLL) -> None:
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.softras_interior.argtypes = [p, i64, i64, i64, i64, i64, p, p]
    lib.softras_interior.restype = None
    mesh = [p, p, p, i64, i64, i64, i64, i64, i64]  # uv, verts, faces, B, V, F, H, W, stride
    for _, suffix, *_ in _FLAVOURS:
        real = ctypes.c_float if suffix == "f32" else ctypes.c_double
        fwd = getattr(lib, f"softras_forward_{suffix}")
        fwd.argtypes = [*mesh, real, real, real, i64, p, p, p]
        bwd = getattr(lib, f"softras_backward_{suffix}")
        bwd.argtypes = [*mesh, real, real, real, p, i64, p, p]
        fwd.restype = bwd.restype = ctypes.c_int
        size = getattr(lib, f"softras_face_bytes_{suffix}")
        size.argtypes = []
        size.restype = ctypes.c_int64


#: The kernels' library (built on first use).
LIBRARY = NativeLibrary("softras", source, _declare)


def library() -> ctypes.CDLL | None:
    """The loaded kernels, building them on the first call; None where that fails (logged once)."""
    return LIBRARY.get()


def build_error() -> str | None:
    """Why :func:`library` failed in this process, or None (not tried yet, or it worked)."""
    return LIBRARY.error


def native_supported(t: Tensor) -> bool:
    """Whether the C kernels can take this tensor's data: a float32/64 CPU tensor."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


# --------------------------------------------------------------------------------------------
# Tensor-level wrappers (inputs: contiguous CPU tensors of one float dtype, checked by the
# caller; the C code trusts the shapes and the face indices)
# --------------------------------------------------------------------------------------------


def _lib() -> ctypes.CDLL:
    return LIBRARY.require()


def _suffix(t: Tensor | np.ndarray) -> str:
    return "f32" if t.dtype == torch.float32 or t.dtype == np.float32 else "f64"


def _mesh_args(uv: Tensor, verts: Tensor, faces: Tensor, height: int, width: int) -> list:
    batch, num_verts = uv.shape[:2]
    return [address(uv), address(verts), address(faces), batch, num_verts,
            faces.shape[0], height, width, width + LANES]


def forward(uv: Tensor, verts: Tensor, faces: Tensor, height: int, width: int, z_near: float,
            sigma: float, r2: float, threads: int) -> tuple[Tensor, Tensor, Tensor]:
    """``prod_f (1 - D)`` per pixel, and the hard coverage.

    Args:
        uv: (B, V, 2) projected vertices, pixels. verts: (B, V, 3) camera frame, metres
            (faces with a vertex at ``z <= z_near`` are not drawn). faces: (F, 3) int64.
        sigma: px^2. r2: squared cull radius, px^2.
        threads: threads to share the work (the result does not depend on it).

    Returns:
        prod (B, H, W + LANES); cover (B, H, W + LANES) uint8, 1 at pixel centres inside a
        drawn face (columns ``W:`` are padding); and the per-face workspace that
        :func:`backward` needs.
    """
    lib, suffix = _lib(), _suffix(uv)
    shape = (uv.shape[0], height, width + LANES)
    face_bytes = getattr(lib, f"softras_face_bytes_{suffix}")()
    size = max(1, uv.shape[0] * faces.shape[0]) * face_bytes
    if isinstance(uv, np.ndarray):
        prod, cover, workspace = np.ones(shape, uv.dtype), np.zeros(shape, np.uint8), np.empty(size, np.uint8)
    else:
        prod = torch.ones(shape, dtype=uv.dtype)
        cover = torch.zeros(shape, dtype=torch.uint8)
        workspace = torch.empty(size, dtype=torch.uint8)
    if getattr(lib, f"softras_forward_{suffix}")(
        *_mesh_args(uv, verts, faces, height, width), z_near, 1.0 / sigma, r2, threads,
        address(prod), address(cover), address(workspace)) != 0:
        raise MemoryError("soft rasterizer: out of memory")
    return prod, cover, workspace


def backward(uv: Tensor, verts: Tensor, faces: Tensor, height: int, width: int,
             z_near: float, sigma: float, r2: float, weight: Tensor, threads: int,
             workspace: Tensor) -> Tensor:
    """(B, V, 2) gradient w.r.t. ``uv`` from ``weight`` (B, H, W + LANES) = dL/dsil * prod
    (zero in the padding columns; runs of 8 zeros are not visited); ``workspace`` from
    :func:`forward` with the same arguments; other arguments as :func:`forward`."""
    grad = np.zeros_like(uv) if isinstance(uv, np.ndarray) else torch.zeros_like(uv)
    if getattr(_lib(), f"softras_backward_{_suffix(uv)}")(
        *_mesh_args(uv, verts, faces, height, width), z_near, 1.0 / sigma, r2,
        address(weight), threads, address(grad), address(workspace)) != 0:
        raise MemoryError("soft rasterizer: out of memory")
    return grad


def interior(cover: Tensor, radius: int) -> Tensor:
    """(B, H, W + LANES) uint8: 1 at pixels whose (2 radius + 1)^2 neighbourhood is covered
    (``cover`` from :func:`forward`; pixels off the image count as uncovered)."""
    batch, height, stride = cover.shape
    work = torch.empty_like(cover)
    out = torch.zeros_like(cover)
    _lib().softras_interior(cover.data_ptr(), batch, height, stride - LANES, stride, radius,
                            work.data_ptr(), out.data_ptr())
    return out
