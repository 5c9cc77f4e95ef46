"""The live refinement's whole evaluation (loss and gradient) in one C call.

:func:`core.refine.fused.loss_and_grad` chains about twenty C kernels (skinning, projection,
soft rasterizer, silhouette reduction, regularizers and their backward passes) with a few
dozen NumPy operations of glue. In a stream that glue costs more than the kernels it joins
(about 1.5 ms of a 4 ms evaluation on the demo), and every call in and out of C competes for
the GIL with the detector's and the texture's threads. :class:`NativeEvaluation` does the same
arithmetic in one C function, built from the same kernels (their sources are compiled into
this library with it) and run with the GIL released: the other threads keep both cores busy
while it runs.

It computes exactly what :func:`core.refine.fused.loss_and_grad` computes (the NumPy glue
stays the reference, and the fallback where this library does not build); the tests check
values and gradients against it and against ``Refiner._evaluate`` + autograd.

Arguments travel as one table of pointers, one of sizes and one of scalars, laid out by the
name lists below (the C source's indices are generated from them and precede
``refine_eval_real.c``): a call sets the evaluation's outputs and offsets in a table whose
fixed entries (model, crop, topology) were filled once per refinement call.
"""

from __future__ import annotations

import ctypes

import numpy as np

from core.native import NativeLibrary, address, kernel_source
from core.refine import _native as _refine_kernels
from core.render import _native as _raster_kernels

__all__ = ["LIBRARY", "NativeEvaluation", "available"]

#: Entries of the pointer table, in order (C: ``P(name)``). Model, crop, topology, offsets,
#: then the outputs. ``posedirs``, ``pose_mean``, ``keypoints``, ``slack`` and the gradients
#: may be NULL.
POINTERS = (
    "v_template", "shapedirs", "j_template", "j_shapedirs", "posedirs", "weights", "parents",
    "pose_mean", "tip_ids", "mp_order",
    "pose0", "betas0", "transl0", "t_scale", "edge0", "K", "affine", "target", "weight", "area",
    "keypoints", "faces", "topo_faces", "adj_ptr", "adj_nbr", "inv_deg",
    "dp", "ds", "du", "dt", "df", "slack",
    "loss", "iou", "verts", "base", "keypoints_3d", "K_img",
    "g_pose", "g_shape", "g_vertices", "g_translation", "g_focal",
    "theta", "lr", "best_theta", "best_loss", "best_iteration", "best_iou", "iou_before",
)
#: Entries of the size table (C: ``N(name)``): hands, vertices, joints, shape coefficients,
#: drawn faces, all faces, crop height and width, rasterizer threads, flags (FLAG_*).
SIZES = ("B", "V", "J", "S", "F", "FT", "H", "W", "threads", "flags")
#: Entries of the scalar table (C: ``X(name)``), doubles.
SCALARS = ("z_near", "inv_sigma", "r2", "w_silhouette", "w_keypoints", "w_vertex", "w_laplacian",
           "w_edge", "w_normal", "w_pose", "w_shape", "keypoint_scale_px", "slack_tolerance_px")
FLAG_GRAD, FLAG_FREE_FOCAL, FLAG_USE_SLACK, FLAG_SLACK_GIVEN, FLAG_KEYPOINTS = 1, 2, 4, 8, 16
_THREADS, _FLAGS = SIZES.index("threads"), SIZES.index("flags")
_INDEX = {name: i for i, name in enumerate(POINTERS)}
_WEIGHTS = ("silhouette", "keypoints", "vertex", "laplacian", "edge", "normal", "pose", "shape")

_FLAVOURS = (("float", "f32", "exp_f32", "sqrtf"), ("double", "f64", "exp", "sqrt"))


def source() -> str:
    """The C source: the rasterizer's and the refinement's kernels, then the evaluation."""
    tables = "".join(f"#define {prefix}_{name} {i}\n"
                     for prefix, names in (("P", POINTERS), ("N", SIZES), ("X", SCALARS))
                     for i, name in enumerate(names))
    tables += f"#define P_COUNT {len(POINTERS)}\n#define N_COUNT {len(SIZES)}\n"
    flags = "".join(f"#define {k} {v}\n" for k, v in (
        ("FLAG_GRAD", FLAG_GRAD), ("FLAG_FREE_FOCAL", FLAG_FREE_FOCAL), ("FLAG_USE_SLACK", FLAG_USE_SLACK),
        ("FLAG_SLACK_GIVEN", FLAG_SLACK_GIVEN), ("FLAG_KEYPOINTS", FLAG_KEYPOINTS)))
    text = _raster_kernels.source() + _refine_kernels.source() + tables + flags
    for real, suffix, exp, sqrt in _FLAVOURS:
        text += kernel_source(__file__, "refine_eval_real.c", [("REAL", real), ("SFX", suffix), ("EXP", exp),
                                                               ("SQRT", sqrt)])
    return text


def _declare(lib: ctypes.CDLL) -> None:
    for _, suffix, *_ in _FLAVOURS:
        f = getattr(lib, f"refine_eval_{suffix}")
        f.argtypes = [ctypes.c_void_p] * 3
        f.restype = ctypes.c_int
        run = getattr(lib, f"refine_run_{suffix}")
        run.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2
        run.restype = ctypes.c_int


#: The library (built on first use). The evaluation runs for milliseconds: the GIL is released.
LIBRARY = NativeLibrary("refine-eval", source, _declare)


def available(dtype) -> bool:
    """Whether :class:`NativeEvaluation` can run for arrays of this dtype (builds on first call)."""
    return np.dtype(dtype) in (np.float32, np.float64) and LIBRARY.get() is not None


class NativeEvaluation:
    """:func:`core.refine.fused.loss_and_grad` for one group, in one C call per evaluation.

    Made once per refinement call: the fixed entries of the argument tables (model, crop,
    topology) are filled here, each call fills the offsets and fresh outputs.

    Args:
        lean: the side's skinning (:meth:`~core.refine.lbs.LeanHand.arrays`).
        view: the group's fixed data as :func:`core.refine.fused.numpy_view` gives it (its
            arrays must stay alive as long as this object).
        soft: the crop's :class:`~core.render.SoftRasterSettings`.
        keypoint_scale_px: the keypoint term's unit, crop px.
    """

    def __init__(self, lean, view, soft, keypoint_scale_px: float) -> None:
        m = lean.arrays()
        self.view, self.model = view, m  # keep the arrays the table points into alive
        self.dtype = view.pose0.dtype
        suffix = "f32" if self.dtype == np.float32 else "f64"
        self.fn = getattr(LIBRARY.require(), f"refine_eval_{suffix}")
        self.fn_run = getattr(LIBRARY.require(), f"refine_run_{suffix}")
        b = view.pose0.shape[0]
        self.shapes = {"b": b, "v": m.v_template.shape[0], "j": m.weights.shape[1], "s": view.betas0.shape[1]}
        self.pointers = (ctypes.c_void_p * len(POINTERS))()
        fixed = {"v_template": m.v_template, "shapedirs": m.shapedirs_flat, "j_template": m.j_template,
                 "j_shapedirs": m.j_shapedirs, "posedirs": m.posedirs, "weights": m.weights,
                 "parents": m.parents_all, "pose_mean": m.pose_mean, "tip_ids": m.tip_ids, "mp_order": m.mp_order,
                 "pose0": view.pose0, "betas0": view.betas0, "transl0": view.transl0, "t_scale": view.t_scale,
                 "edge0": view.edge0, "K": view.K, "affine": view.affine, "target": view.target,
                 "weight": view.weight, "area": view.area, "keypoints": view.keypoints, "faces": view.faces,
                 "topo_faces": view.topo.faces, "adj_ptr": view.topo.adj_ptr, "adj_nbr": view.topo.adj_nbr,
                 "inv_deg": view.topo.inv_deg}
        for name, arr in fixed.items():
            if arr is not None and not arr.flags.c_contiguous:
                raise ValueError(f"{name} must be C-contiguous")
            self.pointers[_INDEX[name]] = address(arr)
        h, w = soft.image_size
        self.sizes = np.array([b, self.shapes["v"], self.shapes["j"], self.shapes["s"], view.faces.shape[0],
                               view.topo.faces.shape[0], h, w, 1, 0], np.int64)
        self.scalars = np.zeros(len(SCALARS), np.float64)
        for name, value in (("z_near", soft.z_near), ("inv_sigma", 1.0 / soft.sigma),
                            ("r2", soft.cull_radius ** 2), ("keypoint_scale_px", keypoint_scale_px)):
            self.scalars[SCALARS.index(name)] = value

    def _prepare(self, weights: dict[str, float], slack: np.ndarray | None, use_slack: bool,
                 slack_tolerance_px: float | None, need_grad: bool, threads: int) -> np.ndarray | None:
        """Fill the call's flags, weights and keypoint slack; returns the slack array in use
        (``slack`` itself, or a new one the kernel fills at the first evaluation), or None."""
        has_kp = self.view.keypoints is not None and weights["keypoints"] > 0
        slack_given = slack is not None
        if use_slack and has_kp:
            slack = (np.empty((self.shapes["b"], 21), self.dtype) if slack is None
                     else np.ascontiguousarray(slack, self.dtype))
        self.pointers[_INDEX["slack"]] = address(slack) if use_slack and has_kp else None
        self.sizes[_THREADS] = max(1, int(threads))
        self.sizes[_FLAGS] = ((FLAG_GRAD if need_grad else 0) | (FLAG_FREE_FOCAL if self.view.free_focal else 0)
                              | (FLAG_USE_SLACK if use_slack else 0) | (FLAG_SLACK_GIVEN if slack_given else 0)
                              | (FLAG_KEYPOINTS if has_kp else 0))
        for key in _WEIGHTS:
            self.scalars[SCALARS.index("w_" + key)] = weights[key]
        self.scalars[SCALARS.index("slack_tolerance_px")] = (
            -1.0 if slack_tolerance_px is None else float(slack_tolerance_px))
        return slack

    def __call__(self, params: dict[str, np.ndarray], weights: dict[str, float], slack: np.ndarray | None,
                 use_slack: bool, slack_tolerance_px: float | None, need_grad: bool, threads: int = 1):
        """One evaluation; arguments and result as :func:`core.refine.fused.loss_and_grad`'s."""
        from core.refine.fused import FusedOutput

        dt, sh = self.dtype, self.shapes
        b, v = sh["b"], sh["v"]
        out = {"loss": np.empty(b, dt), "iou": np.empty(b, dt), "verts": np.empty((b, v, 3), dt),
               "base": np.empty((b, v, 3), dt), "keypoints_3d": np.empty((b, 21, 3), dt),
               "K_img": np.empty((b, 3, 3), dt)}
        grads = None
        if need_grad:
            grads = {"pose": np.empty((b, 3 * sh["j"]), dt), "shape": np.empty((b, sh["s"]), dt),
                     "vertices": np.empty((b, v, 3), dt), "translation": np.empty((b, 3), dt),
                     "focal": np.empty((b, 1), dt)}
        ptr, idx = self.pointers, _INDEX
        for name, key in (("dp", "pose"), ("ds", "shape"), ("du", "vertices"), ("dt", "translation"),
                          ("df", "focal")):
            a = params[key]
            if not a.flags.c_contiguous or a.dtype != dt:
                raise ValueError(f"the {key} offsets must be C-contiguous {dt}")
            ptr[idx[name]] = address(a)
        for name, a in out.items():
            ptr[idx[name]] = address(a)
        for name in ("pose", "shape", "vertices", "translation", "focal"):
            ptr[idx["g_" + name]] = None if grads is None else address(grads[name])
        slack = self._prepare(weights, slack, use_slack, slack_tolerance_px, need_grad, threads)
        if self.fn(ctypes.addressof(ptr), address(self.sizes), address(self.scalars)) != 0:
            raise MemoryError("refinement evaluation: out of memory")
        return FusedOutput(out["loss"], out["iou"], out["verts"], out["base"], out["keypoints_3d"],
                           out["K_img"], slack, grads)

    def run(self, theta: np.ndarray, lr: np.ndarray, n_iter: int, keep_best: bool, weights: dict[str, float],
            slack: np.ndarray | None, use_slack: bool, slack_tolerance_px: float | None,
            threads: int = 1) -> dict[str, np.ndarray]:
        """The whole refinement of this group in one C call (``Refiner._optimize``'s loop, for
        ``Refiner._refine_native``). Not reentrant (the argument tables are shared).

        Args:
            theta: the group's flat offsets (all zero at the start), the blocks pose (B, 3J),
                shape (B, S), vertices (B, V, 3), translation (B, 3), focal (B, 1) one after
                the other; stepped in place (it ends at the last iterate).
            lr: per-entry step sizes, same layout (0 freezes an entry).
            n_iter: Adam steps (``n_iter + 1`` evaluations). keep_best: keep each hand's
                lowest-loss iterate, else the last.
            weights, slack, use_slack, slack_tolerance_px, threads: as :meth:`__call__`.

        Returns:
            Per hand, the kept iterate: ``theta`` (B, P) its offsets (the hand's row of every
            block), ``loss``, ``iteration``, ``iou`` (B,), ``verts``, ``base`` (B, V, 3),
            ``keypoints`` (B, 21, 3), ``K`` (B, 3, 3); ``iou_before`` (B,) the start's IoU;
            ``slack`` (B, 21) the keypoint slack in use (None without one).
        """
        dt, sh = self.dtype, self.shapes
        b, v = sh["b"], sh["v"]
        size = b * (3 * sh["j"] + sh["s"] + 3 * v + 4)
        for name, a in (("theta", theta), ("lr", lr)):
            if a.dtype != dt or not a.flags.c_contiguous or a.size != size:
                raise ValueError(f"{name} must be a C-contiguous {dt} vector of {size} values")
        out = {"theta": np.empty((b, size // b), dt), "loss": np.empty(b, dt), "iteration": np.empty(b, dt),
               "iou": np.empty(b, dt), "iou_before": np.empty(b, dt), "verts": np.empty((b, v, 3), dt),
               "base": np.empty((b, v, 3), dt), "keypoints": np.empty((b, 21, 3), dt), "K": np.empty((b, 3, 3), dt)}
        ptr, idx = self.pointers, _INDEX
        for name, key in (("best_loss", "loss"), ("best_iteration", "iteration"), ("best_iou", "iou"),
                          ("iou_before", "iou_before"), ("best_theta", "theta"), ("verts", "verts"),
                          ("base", "base"), ("keypoints_3d", "keypoints"), ("K_img", "K")):
            ptr[idx[name]] = address(out[key])
        ptr[idx["theta"]] = address(theta)
        ptr[idx["lr"]] = address(lr)
        slack = self._prepare(weights, slack, use_slack, slack_tolerance_px, False, threads)
        if self.fn_run(ctypes.addressof(ptr), address(self.sizes), address(self.scalars), int(n_iter),
                       int(bool(keep_best))) != 0:
            raise MemoryError("refinement: out of memory")
        out["slack"] = slack
        return out
