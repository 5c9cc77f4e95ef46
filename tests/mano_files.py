"""Write MANO-format pickles the way the official files are laid out, for tests.

Real MANO cannot be shipped, so tests write a small stand-in from the open hand: a Python
dict of numpy arrays where ``shapedirs`` is a ``chumpy.ch.Ch`` object and ``J_regressor`` a
``scipy.sparse.csc_matrix``, as in ``MANO_RIGHT.pkl``. chumpy is not installed: a stand-in
class is registered under the name ``chumpy.ch.Ch`` while pickling.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

from core.model.data import HandModelData


class Ch:
    """Pickles like chumpy's ``Ch``: its state is a dict whose ``x`` is the array."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x

    def __getstate__(self) -> dict:
        return {"x": self.x, "_dirty_vars": set(), "_itr": None}


def write_mano_pickle(path: Path, d: HandModelData, shapedirs: np.ndarray | None = None) -> Path:
    """Write ``d`` as a MANO-format pickle (protocol 2, like the official Python 2 files)."""
    kintree = np.stack([d.parents, np.arange(16)]).astype(np.int64)
    kintree[0, 0] = 4294967295
    model = {
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
    fake = types.ModuleType("chumpy.ch")
    Ch.__module__ = "chumpy.ch"
    fake.Ch = Ch
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"] = types.ModuleType("chumpy")
    sys.modules["chumpy.ch"] = fake
    try:
        path.write_bytes(pickle.dumps(model, protocol=2))
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return path
