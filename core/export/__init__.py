"""Export a personalized hand mesh: OBJ (+MTL+PNG), GLB (static or rigged and animated), PLY.

Builders are pure (numpy arrays in, bytes out); only :mod:`core.export.writer` touches the
disk, atomically. Typical use::

    from core.export import MeshBundle, Rig, export_mesh

    bundle = MeshBundle(vertices=v, faces=f, uv=uv, uv_faces=uv_f, texture=rgb,
                        rig=Rig(joints=j, parents=p, names=names, weights=w))
    export_mesh("hand.glb", bundle, rigged=True)

Shapes, dtypes, units and axis conventions are documented in :mod:`core.export.bundle`.
"""

from core.export.bundle import (
    Animation,
    MeshBundle,
    Rig,
    SeamSplit,
    matrices_to_quaternions,
    quaternions_to_matrices,
    split_uv_seams,
    top_k_weights,
    vertex_normals,
)
from core.export.gltf import build_glb, build_rigged_glb
from core.export.obj import build_obj
from core.export.ply import build_ply
from core.export.writer import SUPPORTED_SUFFIXES, export_mesh, write_atomic, write_bundle

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Animation",
    "MeshBundle",
    "Rig",
    "SeamSplit",
    "build_glb",
    "build_obj",
    "build_ply",
    "build_rigged_glb",
    "export_mesh",
    "matrices_to_quaternions",
    "quaternions_to_matrices",
    "split_uv_seams",
    "top_k_weights",
    "vertex_normals",
    "write_atomic",
    "write_bundle",
]
