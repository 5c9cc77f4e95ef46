"""glTF 2.0 binary (GLB) export: a textured mesh, optionally skinned and animated.

Pure functions: :func:`build_glb` and :func:`build_rigged_glb` return the file's bytes and
do no I/O (see :mod:`core.export.io` for writing).

What the files contain, and why
-------------------------------
- **Axes and units.** glTF is right-handed, +y up, +z towards the viewer, metres. Vertices
  are written exactly as given (the hand model's frame is right-handed with y up), with no
  conversion. The mesh node carries no transform.
- **UV seams.** glTF has a single index per vertex, so every distinct (vertex, uv) pair
  becomes its own glTF vertex (:func:`~core.export.bundle.split_uv_seams`). Split copies
  share position, normal and skinning weights, so the surface stays smooth across seams.
- **UV origin.** OBJ-style UVs (origin bottom-left) are written as ``(u, 1 - v)`` because
  glTF's origin is the image's top-left corner.
- **Texture.** The RGB image is embedded as a PNG in the binary chunk and used as the PBR
  ``baseColorTexture`` (metallic 0, roughness 0.7, double-sided because the wrist is open).
  Without a texture, vertex colours become ``COLOR_0`` (converted from sRGB to linear, as
  glTF requires); without either, a flat skin tone is used.
- **Layout.** One buffer (the GLB's BIN chunk); one bufferView per accessor, each starting
  on a 4-byte boundary; vertex attributes carry the ARRAY_BUFFER target and indices the
  ELEMENT_ARRAY_BUFFER target; both chunks are padded to 4 bytes (JSON with spaces, BIN
  with zeros). POSITION and animation inputs carry exact ``min``/``max``.
- **Skin** (:func:`build_rigged_glb`). Joint nodes form the rig's tree, each with its rest
  translation relative to its parent and no rotation. The skinned mesh node is a root node
  with no transform (the spec ignores it, and Blender and three.js differ if it has one).
  Inverse bind matrices are the inverses of the joints' rest world transforms, i.e. pure
  translations by minus each joint's rest position. ``JOINTS_0`` (unsigned byte, or
  unsigned short beyond 256 joints) and ``WEIGHTS_0`` (float) keep the 4 largest weights
  per vertex, renormalized to sum to 1.
- **Animation.** One LINEAR sampler per joint for its local rotation (quaternion
  ``x, y, z, w``) and one for the root's translation (rest position plus the animation's
  offset), all sharing one time accessor in seconds.
"""

from __future__ import annotations

import json
import logging
import struct
from typing import Any

import numpy as np

from core.export.bundle import (
    DEFAULT_BASE_COLOR,
    GENERATOR,
    Animation,
    MeshBundle,
    Rig,
    encode_png,
    split_uv_seams,
    top_k_weights,
)

__all__ = ["build_glb", "build_rigged_glb"]

log = logging.getLogger(__name__)

# glTF enums (glTF 2.0 spec, section 5).
_FLOAT, _UNSIGNED_BYTE, _UNSIGNED_SHORT, _UNSIGNED_INT = 5126, 5121, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_TRIANGLES = 4
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071

_COMPONENT_TYPES: dict[np.dtype, int] = {
    np.dtype(np.float32): _FLOAT,
    np.dtype(np.uint8): _UNSIGNED_BYTE,
    np.dtype(np.uint16): _UNSIGNED_SHORT,
    np.dtype(np.uint32): _UNSIGNED_INT,
}
_ELEMENT_TYPES: dict[tuple[int, ...], str] = {
    (): "SCALAR",
    (2,): "VEC2",
    (3,): "VEC3",
    (4,): "VEC4",
    (4, 4): "MAT4",
}

_GLB_MAGIC, _GLB_VERSION = 0x46546C67, 2  # b"glTF"
_CHUNK_JSON, _CHUNK_BIN = 0x4E4F534A, 0x004E4942  # b"JSON", b"BIN\0"


def _pad4(length: int) -> int:
    """Number of padding bytes that bring ``length`` to a multiple of 4."""
    return -length % 4


class _GltfBuilder:
    """Accumulates the glTF JSON document and its single binary buffer."""

    def __init__(self) -> None:
        self.binary = bytearray()
        self.doc: dict[str, Any] = {
            "asset": {"version": "2.0", "generator": GENERATOR},
            "scene": 0,
            "scenes": [{"nodes": []}],
            "nodes": [],
            "meshes": [],
            "materials": [],
            "accessors": [],
            "bufferViews": [],
            "buffers": [],
        }

    def add_view(self, data: bytes, target: int | None = None) -> int:
        """Append ``data`` on a 4-byte boundary as a new bufferView; return its index."""
        self.binary += b"\x00" * _pad4(len(self.binary))
        view: dict[str, Any] = {
            "buffer": 0,
            "byteOffset": len(self.binary),
            "byteLength": len(data),
        }
        if target is not None:
            view["target"] = target
        self.binary += data
        self.doc["bufferViews"].append(view)
        return len(self.doc["bufferViews"]) - 1

    def add_accessor(
        self,
        array: np.ndarray,
        target: int | None = None,
        normalized: bool = False,
        with_min_max: bool = False,
    ) -> int:
        """Store ``array`` (N, *element) in its own bufferView; return the accessor index.

        The element shape picks the type (``()`` SCALAR, ``(3,)`` VEC3, ``(4, 4)`` MAT4 ...)
        and the dtype the component type. MAT4 elements are given row-major (``m[i, j]``
        is row i, column j) and stored column-major as glTF requires.
        """
        array = np.asarray(array)
        element = tuple(array.shape[1:])
        if element == (4, 4):
            array = np.swapaxes(array, 1, 2)  # row-major in, column-major out
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
        accessor: dict[str, Any] = {
            "bufferView": self.add_view(data.tobytes(), target),
            "componentType": _COMPONENT_TYPES[array.dtype],
            "count": int(array.shape[0]),
            "type": _ELEMENT_TYPES[element],
        }
        if normalized:
            accessor["normalized"] = True
        if with_min_max:
            flat = array.reshape(array.shape[0], -1)
            # float32 -> Python float is exact, so the JSON holds the stored values exactly.
            accessor["min"] = [v.item() for v in flat.min(axis=0)]
            accessor["max"] = [v.item() for v in flat.max(axis=0)]
        self.doc["accessors"].append(accessor)
        return len(self.doc["accessors"]) - 1

    def add_node(self, node: dict[str, Any], root: bool = False) -> int:
        """Append a node; with ``root`` also list it in the scene. Return its index."""
        self.doc["nodes"].append(node)
        index = len(self.doc["nodes"]) - 1
        if root:
            self.doc["scenes"][0]["nodes"].append(index)
        return index

    def to_glb(self) -> bytes:
        """Serialize as GLB: 12-byte header, JSON chunk, BIN chunk (each 4-byte padded)."""
        self.binary += b"\x00" * _pad4(len(self.binary))
        self.doc["buffers"] = [{"byteLength": len(self.binary)}]
        doc = {key: value for key, value in self.doc.items() if value != []}
        json_bytes = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
        json_bytes += b" " * _pad4(len(json_bytes))
        bin_bytes = bytes(self.binary)
        total = 12 + 8 + len(json_bytes) + 8 + len(bin_bytes)
        return b"".join(
            [
                struct.pack("<III", _GLB_MAGIC, _GLB_VERSION, total),
                struct.pack("<II", len(json_bytes), _CHUNK_JSON),
                json_bytes,
                struct.pack("<II", len(bin_bytes), _CHUNK_BIN),
                bin_bytes,
            ]
        )


def _srgb_to_linear(colors: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 sRGB -> (N, 3) float32 linear RGB in [0, 1] (IEC 61966-2-1)."""
    c = colors.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return np.clip(linear, 0.0, 1.0).astype(np.float32)


def _add_material(builder: _GltfBuilder, mesh: MeshBundle) -> int:
    """Add the PBR material (and texture, image, sampler when textured); return its index."""
    pbr: dict[str, Any] = {"metallicFactor": 0.0, "roughnessFactor": 0.7}
    if mesh.texture is not None:
        view = builder.add_view(encode_png(mesh.texture))
        builder.doc["images"] = [
            {"bufferView": view, "mimeType": "image/png", "name": f"{mesh.name}_texture"}
        ]
        builder.doc["samplers"] = [
            {
                "magFilter": _LINEAR,
                "minFilter": _LINEAR_MIPMAP_LINEAR,
                "wrapS": _CLAMP_TO_EDGE,
                "wrapT": _CLAMP_TO_EDGE,
            }
        ]
        builder.doc["textures"] = [{"sampler": 0, "source": 0}]
        pbr["baseColorTexture"] = {"index": 0}
    elif mesh.vertex_colors is None:
        pbr["baseColorFactor"] = list(DEFAULT_BASE_COLOR)
    builder.doc["materials"].append(
        {"name": f"{mesh.name}_skin", "pbrMetallicRoughness": pbr, "doubleSided": True}
    )
    return len(builder.doc["materials"]) - 1


def _add_mesh(builder: _GltfBuilder, mesh: MeshBundle, with_skin: bool) -> int:
    """Add the mesh (one triangle primitive, split at UV seams); return the mesh index."""
    if mesh.uv is not None and mesh.uv_faces is not None:
        split = split_uv_seams(mesh.faces, mesh.uv_faces)
        vertex_index, faces = split.vertex_index, split.faces
        uv = mesh.uv[split.uv_index]
        texcoord = np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1).astype(np.float32)
        log.debug(
            "glTF: %d vertices split into %d at UV seams", mesh.num_vertices, len(vertex_index)
        )
    else:
        vertex_index = np.arange(mesh.num_vertices)
        faces, texcoord = mesh.faces, None

    attributes: dict[str, int] = {
        "POSITION": builder.add_accessor(
            mesh.vertices[vertex_index], _ARRAY_BUFFER, with_min_max=True
        ),
        "NORMAL": builder.add_accessor(mesh.vertex_normals()[vertex_index], _ARRAY_BUFFER),
    }
    if texcoord is not None:
        attributes["TEXCOORD_0"] = builder.add_accessor(texcoord, _ARRAY_BUFFER)
    if mesh.texture is None and mesh.vertex_colors is not None:
        attributes["COLOR_0"] = builder.add_accessor(
            _srgb_to_linear(mesh.vertex_colors[vertex_index]), _ARRAY_BUFFER
        )
    if with_skin:
        rig = mesh.rig
        if rig is None:
            raise ValueError("a skinned mesh needs MeshBundle.rig")
        joint_ids, weights = top_k_weights(rig.weights[vertex_index], k=4)
        joint_dtype = np.uint8 if rig.num_joints <= 256 else np.uint16
        attributes["JOINTS_0"] = builder.add_accessor(joint_ids.astype(joint_dtype), _ARRAY_BUFFER)
        attributes["WEIGHTS_0"] = builder.add_accessor(weights, _ARRAY_BUFFER)

    # 65535 is the primitive-restart value for unsigned short, so it may not be an index.
    index_dtype = np.uint16 if len(vertex_index) < 65535 else np.uint32
    indices = builder.add_accessor(faces.reshape(-1).astype(index_dtype), _ELEMENT_ARRAY_BUFFER)
    builder.doc["meshes"].append(
        {
            "name": mesh.name,
            "primitives": [
                {
                    "attributes": attributes,
                    "indices": indices,
                    "material": _add_material(builder, mesh),
                    "mode": _TRIANGLES,
                }
            ],
        }
    )
    return len(builder.doc["meshes"]) - 1


def _add_skeleton(builder: _GltfBuilder, rig: Rig) -> list[int]:
    """Add one node per joint (rest translations, children) and the skin; return node ids."""
    first = len(builder.doc["nodes"])
    node_ids = [first + j for j in range(rig.num_joints)]
    local = rig.local_rest_translations()
    for j in range(rig.num_joints):
        node: dict[str, Any] = {"name": rig.names[j], "translation": [v.item() for v in local[j]]}
        children = [node_ids[c] for c in np.flatnonzero(rig.parents == j)]
        if children:
            node["children"] = children
        builder.add_node(node, root=(j == rig.root))
    # Rest world transform of joint j is a translation by joints[j]; its inverse is -joints[j].
    inverse_bind = np.tile(np.eye(4, dtype=np.float32), (rig.num_joints, 1, 1))
    inverse_bind[:, :3, 3] = -rig.joints
    builder.doc["skins"] = [
        {
            "name": "armature",
            "joints": node_ids,
            "skeleton": node_ids[rig.root],
            "inverseBindMatrices": builder.add_accessor(inverse_bind),
        }
    ]
    return node_ids


def _add_animation(
    builder: _GltfBuilder, rig: Rig, animation: Animation, node_ids: list[int]
) -> None:
    """Add rotation channels for every joint and a translation channel for the root."""
    times = builder.add_accessor(animation.times, with_min_max=True)
    samplers: list[dict[str, Any]] = []
    channels: list[dict[str, Any]] = []

    def add_channel(values: np.ndarray, node: int, path: str) -> None:
        samplers.append(
            {"input": times, "output": builder.add_accessor(values), "interpolation": "LINEAR"}
        )
        channels.append({"sampler": len(samplers) - 1, "target": {"node": node, "path": path}})

    for j in range(rig.num_joints):
        quaternions = animation.rotations[:, j]
        quaternions = quaternions / np.linalg.norm(quaternions, axis=1, keepdims=True)
        add_channel(quaternions.astype(np.float32), node_ids[j], "rotation")
    if animation.root_translations is not None:
        root_positions = rig.local_rest_translations()[rig.root] + animation.root_translations
        add_channel(root_positions.astype(np.float32), node_ids[rig.root], "translation")
    builder.doc["animations"] = [
        {"name": animation.name, "samplers": samplers, "channels": channels}
    ]


def build_glb(mesh: MeshBundle) -> bytes:
    """Build a static, textured GLB of ``mesh`` (its rig and animation are ignored).

    Args:
        mesh: the mesh; see :class:`~core.export.bundle.MeshBundle` for shapes and units.

    Returns:
        The complete ``.glb`` file as bytes.
    """
    builder = _GltfBuilder()
    mesh_index = _add_mesh(builder, mesh, with_skin=False)
    builder.add_node({"name": mesh.name, "mesh": mesh_index}, root=True)
    return builder.to_glb()


def build_rigged_glb(mesh: MeshBundle, include_animation: bool = True) -> bytes:
    """Build a skinned GLB of ``mesh`` with its rig, and its animation when it has one.

    Args:
        mesh: the mesh with ``mesh.rig`` set; see :class:`~core.export.bundle.MeshBundle`.
        include_animation: write ``mesh.animation`` when present.

    Returns:
        The complete ``.glb`` file as bytes.

    Raises:
        ValueError: ``mesh.rig`` is ``None`` or a vertex has no positive skinning weight.
    """
    if mesh.rig is None:
        raise ValueError("a rigged export needs MeshBundle.rig")
    builder = _GltfBuilder()
    mesh_index = _add_mesh(builder, mesh, with_skin=True)
    # The skinned mesh node: a root node with no transform (glTF 2.0 spec, 3.7.3).
    builder.add_node({"name": mesh.name, "mesh": mesh_index, "skin": 0}, root=True)
    node_ids = _add_skeleton(builder, mesh.rig)
    if include_animation and mesh.animation is not None:
        _add_animation(builder, mesh.rig, mesh.animation, node_ids)
    return builder.to_glb()
