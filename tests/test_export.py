"""Tests of core.export: OBJ/MTL/PNG, GLB (plain, rigged, animated), PLY, atomic writing.

Everything runs on a small synthetic "finger": an open tube along +y with a UV seam, a
non-square texture, and a 5-joint chain with dense skinning weights. The GLB files are also
checked with the Khronos glTF validator when it is installed (see ``_validator_command``).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import trimesh

from core import outputs as outputs_module
from core.errors import ExportError
from core.export import (
    Animation,
    MeshBundle,
    Rig,
    build_glb,
    build_obj,
    build_ply,
    build_rigged_glb,
    export_mesh,
    matrices_to_quaternions,
    quaternions_to_matrices,
    split_uv_seams,
    top_k_weights,
    write_atomic,
    write_bundle,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
VALIDATOR_DIR = REPO_ROOT / "tools" / "gltf-validator"

TEXTURE_HEIGHT, TEXTURE_WIDTH = 16, 32  # non-square, to catch swapped axes
AROUND, RINGS, LENGTH_M, RADIUS_M = 8, 6, 0.08, 0.01
JOINT_YS = np.linspace(0.0, LENGTH_M, 5)


# --------------------------------------------------------------------------- fixtures


def _tube_mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An open tube along +y: vertices (48, 3), faces (80, 3), uv (54, 2), uv_faces (80, 3).

    UV column AROUND repeats column 0 at u = 1, so the tube has a seam (T != V).
    """
    angles = 2 * np.pi * np.arange(AROUND) / AROUND
    ys = np.linspace(0.0, LENGTH_M, RINGS)
    vertices = np.array(
        [[RADIUS_M * np.cos(a), y, -RADIUS_M * np.sin(a)] for y in ys for a in angles],
        dtype=np.float32,
    )
    uv = np.array(
        [
            [k / AROUND, 0.05 + 0.9 * i / (RINGS - 1)]
            for i in range(RINGS)
            for k in range(AROUND + 1)
        ],
        dtype=np.float32,
    )
    faces, uv_faces = [], []
    for i in range(RINGS - 1):
        for k in range(AROUND):
            a, b = i * AROUND + k, i * AROUND + (k + 1) % AROUND
            c, d = a + AROUND, b + AROUND
            ta, tb = i * (AROUND + 1) + k, i * (AROUND + 1) + k + 1
            tc, td = ta + AROUND + 1, tb + AROUND + 1
            faces += [[a, b, d], [a, d, c]]  # counter-clockwise seen from outside
            uv_faces += [[ta, tb, td], [ta, td, tc]]
    return vertices, np.array(faces), uv, np.array(uv_faces)


def _texture() -> np.ndarray:
    """(16, 32, 3) uint8: red grows with u, green with v (origin bottom-left), blue fixed."""
    rows = np.linspace(255, 0, TEXTURE_HEIGHT)[:, None] * np.ones((1, TEXTURE_WIDTH))
    cols = np.ones((TEXTURE_HEIGHT, 1)) * np.linspace(0, 255, TEXTURE_WIDTH)[None, :]
    return np.stack([cols, rows, np.full_like(cols, 90)], axis=2).astype(np.uint8)


def _rig(vertices: np.ndarray) -> Rig:
    """A 5-joint chain along +y with Gaussian weights over all 5 joints (so top-4 matters)."""
    joints = np.stack([np.zeros(5), JOINT_YS, np.zeros(5)], axis=1)
    weights = np.exp(-((vertices[:, 1:2] - JOINT_YS[None, :]) ** 2) / (2 * 0.015**2))
    return Rig(
        joints=joints,
        parents=np.array([-1, 0, 1, 2, 3]),
        names=("base", "knuckle", "middle", "distal", "tip"),
        weights=weights,
    )


def _rotation(axis: str, angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about the x, y or z axis."""
    c, s = np.cos(angle), np.sin(angle)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def _animation(frames: int = 5) -> Animation:
    """Fingers curling about x while the whole chain turns about y and drifts in x."""
    times = 0.1 * np.arange(frames)
    matrices = np.zeros((frames, 5, 3, 3))
    for n in range(frames):
        matrices[n, 0] = _rotation("y", 0.4 * n)
        for j in range(1, 5):
            matrices[n, j] = _rotation("x", 0.25 * n)
    translations = np.stack([0.01 * np.arange(frames), np.zeros(frames), np.zeros(frames)], axis=1)
    return Animation.from_matrices(times, matrices, translations)


@pytest.fixture
def mesh() -> MeshBundle:
    """The textured, rigged, animated test tube."""
    vertices, faces, uv, uv_faces = _tube_mesh()
    rng = np.random.default_rng(0)
    return MeshBundle(
        vertices=vertices,
        faces=faces,
        uv=uv,
        uv_faces=uv_faces,
        texture=_texture(),
        vertex_colors=rng.integers(0, 256, size=(len(vertices), 3), dtype=np.uint8),
        rig=_rig(vertices),
        animation=_animation(),
        name="finger",
    )


# --------------------------------------------------------------------------- helpers


def _match_vertices(loaded: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Index of the original vertex at each loaded position (merges seam splits); exact."""
    lookup = {tuple(np.float32(p)): i for i, p in enumerate(original)}
    assert len(lookup) == len(original), "test mesh must have distinct vertex positions"
    return np.array([lookup[tuple(np.float32(p))] for p in loaded])


def _single_geometry(loaded: trimesh.Trimesh | trimesh.Scene) -> trimesh.Trimesh:
    """The one mesh inside what trimesh.load returned."""
    if isinstance(loaded, trimesh.Scene):
        geometries = list(loaded.geometry.values())
        assert len(geometries) == 1
        return geometries[0]
    return loaded


def _parse_glb(data: bytes) -> tuple[dict, bytes]:
    """Split a GLB into its JSON document and BIN chunk, checking the container layout."""
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_length, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_length % 4 == 0
    doc = json.loads(data[20 : 20 + json_length])
    bin_length, bin_type = struct.unpack_from("<II", data, 20 + json_length)
    assert bin_type == 0x004E4942 and bin_length % 4 == 0
    binary = data[28 + json_length : 28 + json_length + bin_length]
    assert 28 + json_length + bin_length == len(data)
    return doc, binary


def _read_accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    """An accessor's data as numpy (MAT4 returned row-major as (N, 4, 4))."""
    accessor = doc["accessors"][index]
    view = doc["bufferViews"][accessor["bufferView"]]
    dtype = {5126: "<f4", 5121: "u1", 5123: "<u2", 5125: "<u4"}[accessor["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}[accessor["type"]]
    start = view["byteOffset"] + accessor.get("byteOffset", 0)
    values = np.frombuffer(binary, dtype=dtype, count=accessor["count"] * width, offset=start)
    if accessor["type"] == "MAT4":
        return values.reshape(-1, 4, 4).transpose(0, 2, 1)
    return values.reshape(accessor["count"], width) if width > 1 else values


def _validator_command() -> list[str]:
    """The command that runs tools/gltf-validator/validate.js, or skip the test."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("glTF validator not run: `node` is not on PATH")
    if not (VALIDATOR_DIR / "node_modules" / "gltf-validator").is_dir():
        pytest.skip(
            "glTF validator not run: the npm package is not installed "
            "(run `npm ci --prefix tools/gltf-validator`)"
        )
    return [node, str(VALIDATOR_DIR / "validate.js")]


def _validate(paths: list[Path]) -> list[dict]:
    """Run the Khronos validator on ``paths``; return one report per file."""
    result = subprocess.run(
        _validator_command() + [str(p) for p in paths],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return [entry["report"] for entry in json.loads(result.stdout)["results"]]


# --------------------------------------------------------------------------- bundle


def test_bundle_copies_and_freezes_inputs(mesh: MeshBundle) -> None:
    vertices = np.zeros((3, 3))
    bundle = MeshBundle(vertices=vertices, faces=[[0, 1, 2]])
    vertices[0, 0] = 5.0
    assert bundle.vertices[0, 0] == 0.0 and bundle.vertices.dtype == np.float32
    with pytest.raises(ValueError):
        bundle.vertices[0, 0] = 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"faces": [[0, 1, 3]]}, "faces must index vertices"),
        ({"uv": np.zeros((4, 2))}, "uv has 4 rows"),
        ({"texture": np.zeros((2, 2, 3), np.uint8)}, "texture needs uv"),
        ({"vertex_colors": np.zeros((2, 3), np.uint8)}, "vertex_colors must have shape"),
        ({"name": "my hand"}, "may hold only"),
    ],
)
def test_bundle_rejects_bad_input(kwargs: dict, message: str) -> None:
    args = {"vertices": np.eye(3), "faces": [[0, 1, 2]], **kwargs}
    with pytest.raises(ValueError, match=message):
        MeshBundle(**args)


def test_rig_rejects_cycles_and_two_roots() -> None:
    with pytest.raises(ValueError, match="exactly one root"):
        Rig(np.zeros((2, 3)), [-1, -1], ("a", "b"), np.ones((1, 2)))
    with pytest.raises(ValueError, match="cycle"):
        Rig(np.zeros((3, 3)), [-1, 2, 1], ("a", "b", "c"), np.ones((1, 3)))


def test_split_uv_seams_makes_one_uv_per_vertex(mesh: MeshBundle) -> None:
    split = split_uv_seams(mesh.faces, mesh.uv_faces)
    # The seam column of every ring is duplicated: V + RINGS split vertices.
    assert len(split.vertex_index) == mesh.num_vertices + RINGS
    np.testing.assert_array_equal(split.vertex_index[split.faces], mesh.faces)
    np.testing.assert_array_equal(split.uv_index[split.faces], mesh.uv_faces)


def test_top_k_weights_keeps_four_largest_and_sums_to_one() -> None:
    weights = np.array([[0.1, 0.5, 0.05, 0.2, 0.15], [0.0, 0.0, 2.0, 0.0, 0.0]])
    joints, kept = top_k_weights(weights)
    np.testing.assert_array_equal(joints[0], [1, 3, 4, 0])
    np.testing.assert_allclose(kept[0], np.array([0.5, 0.2, 0.15, 0.1]) / 0.95, rtol=1e-6)
    np.testing.assert_array_equal(joints[1], [2, 0, 0, 0])
    np.testing.assert_array_equal(kept[1], [1.0, 0.0, 0.0, 0.0])
    assert kept.dtype == np.float32
    np.testing.assert_array_equal(kept.sum(axis=1, dtype=np.float32), 1.0)
    with pytest.raises(ValueError, match="no positive skinning weight"):
        top_k_weights(np.zeros((1, 3)))


def test_quaternion_round_trip_including_half_turns() -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=(200, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    matrices = np.concatenate(
        [quaternions_to_matrices(q), [_rotation(a, np.pi) for a in "xyz"], [np.eye(3)]]
    )
    recovered = quaternions_to_matrices(matrices_to_quaternions(matrices))
    np.testing.assert_allclose(recovered, matrices, atol=1e-12)
    # x, y, z, w order: a quarter turn about z is (0, 0, sin 45, cos 45).
    np.testing.assert_allclose(
        matrices_to_quaternions(_rotation("z", np.pi / 2)), [0, 0, np.sqrt(0.5), np.sqrt(0.5)]
    )
    with pytest.raises(ValueError, match="orthonormal"):
        matrices_to_quaternions(np.diag([1.0, 1.0, -1.0]))


# --------------------------------------------------------------------------- OBJ


def test_obj_loads_in_trimesh_with_uvs_and_texture(mesh: MeshBundle, tmp_path: Path) -> None:
    files = build_obj(mesh)
    assert list(files) == ["finger.obj", "finger.mtl", "finger.png"]
    written = write_bundle(tmp_path, files)
    assert [p.name for p in written] == list(files)

    loaded = _single_geometry(trimesh.load(tmp_path / "finger.obj"))
    assert loaded.visual.uv is not None and len(loaded.visual.uv) == len(loaded.vertices)
    assert loaded.visual.material.image.size == (TEXTURE_WIDTH, TEXTURE_HEIGHT)


def test_obj_round_trip(mesh: MeshBundle, tmp_path: Path) -> None:
    write_bundle(tmp_path, build_obj(mesh))
    loaded = _single_geometry(trimesh.load(tmp_path / "finger.obj", process=False))
    original = _match_vertices(loaded.vertices, mesh.vertices)
    np.testing.assert_array_equal(original[loaded.faces], mesh.faces)
    # OBJ is text: 9 significant digits give back every float32 exactly.
    np.testing.assert_array_equal(loaded.vertices.astype(np.float32), mesh.vertices[original])
    # Every (vertex, uv) pair trimesh produced exists in the input (no flips, no mix-ups).
    pairs = {
        (v, tuple(mesh.uv[t]))
        for v, t in zip(mesh.faces.ravel(), mesh.uv_faces.ravel(), strict=True)
    }
    assert {
        (v, tuple(np.float32(uv))) for v, uv in zip(original, loaded.visual.uv, strict=True)
    } <= pairs


# --------------------------------------------------------------------------- GLB


def test_glb_layout_and_accessors(mesh: MeshBundle) -> None:
    doc, binary = _parse_glb(build_glb(mesh))
    assert doc["asset"] == {"version": "2.0", "generator": "HandTwin"}
    assert doc["buffers"] == [{"byteLength": len(binary)}]
    assert all(view["byteOffset"] % 4 == 0 for view in doc["bufferViews"])
    primitive = doc["meshes"][0]["primitives"][0]
    position = doc["accessors"][primitive["attributes"]["POSITION"]]
    values = _read_accessor(doc, binary, primitive["attributes"]["POSITION"])
    assert position["min"] == values.min(axis=0).tolist()
    assert position["max"] == values.max(axis=0).tolist()
    material = doc["materials"][primitive["material"]]
    assert material["pbrMetallicRoughness"]["baseColorTexture"] == {"index": 0}
    assert doc["images"][0]["mimeType"] == "image/png"
    assert "COLOR_0" not in primitive["attributes"]  # the texture wins over vertex colours
    normals = _read_accessor(doc, binary, primitive["attributes"]["NORMAL"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    radial = values * np.array([1, 0, 1], np.float32)
    assert np.all(np.sum(normals * radial, axis=1) > 0), "normals must point outwards"


def test_glb_loads_in_trimesh_and_round_trips(mesh: MeshBundle, tmp_path: Path) -> None:
    export_mesh(tmp_path / "finger.glb", mesh)
    loaded = _single_geometry(trimesh.load(tmp_path / "finger.glb"))
    assert loaded.visual.uv is not None
    image = loaded.visual.material.baseColorTexture
    assert image.size == (TEXTURE_WIDTH, TEXTURE_HEIGHT)
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), mesh.texture)

    raw = _single_geometry(trimesh.load(tmp_path / "finger.glb", process=False))
    original = _match_vertices(raw.vertices, mesh.vertices)
    assert len(raw.vertices) == mesh.num_vertices + RINGS  # split at the seam
    np.testing.assert_array_equal(original[raw.faces], mesh.faces)
    assert set(original) == set(range(mesh.num_vertices))
    # trimesh flips glTF's v back to the bottom-left origin, so each loaded (vertex, uv) pair
    # must be one of the input's (up to float32 rounding of 1 - (1 - v)), and all must occur.
    pairs = {(v, t) for v, t in zip(mesh.faces.ravel(), mesh.uv_faces.ravel(), strict=True)}
    found = set()
    for vertex, uv in zip(original, raw.visual.uv, strict=True):
        candidates = [t for v, t in pairs if v == vertex]
        distances = np.abs(mesh.uv[candidates] - uv).max(axis=1)
        assert distances.min() < 1e-6, f"vertex {vertex}: uv {uv} is not one of its UVs"
        found.add((vertex, candidates[int(distances.argmin())]))
    assert found == pairs


def test_glb_without_texture_uses_vertex_colors(mesh: MeshBundle) -> None:
    plain = MeshBundle(vertices=mesh.vertices, faces=mesh.faces, vertex_colors=mesh.vertex_colors)
    doc, binary = _parse_glb(build_glb(plain))
    attributes = doc["meshes"][0]["primitives"][0]["attributes"]
    colors = _read_accessor(doc, binary, attributes["COLOR_0"])
    assert colors.shape == (mesh.num_vertices, 3) and colors.min() >= 0 and colors.max() <= 1
    assert "images" not in doc and "TEXCOORD_0" not in attributes


def _pose_from_glb(doc: dict, binary: bytes, frame: int) -> np.ndarray:
    """Skin the GLB's own vertices at an animation frame, following glTF's skinning rules."""
    primitive = doc["meshes"][0]["primitives"][0]
    positions = _read_accessor(doc, binary, primitive["attributes"]["POSITION"]).astype(np.float64)
    joint_ids = _read_accessor(doc, binary, primitive["attributes"]["JOINTS_0"]).astype(int)
    weights = _read_accessor(doc, binary, primitive["attributes"]["WEIGHTS_0"]).astype(np.float64)
    skin = doc["skins"][0]
    inverse_bind = _read_accessor(doc, binary, skin["inverseBindMatrices"]).astype(np.float64)

    local = {}
    for index, node in enumerate(doc["nodes"]):
        local[index] = {
            "translation": np.array(node.get("translation", [0, 0, 0]), float),
            "rotation": np.array(node.get("rotation", [0, 0, 0, 1]), float),
        }
    animation = doc["animations"][0]
    for channel in animation["channels"]:
        sampler = animation["samplers"][channel["sampler"]]
        values = _read_accessor(doc, binary, sampler["output"])[frame]
        local[channel["target"]["node"]][channel["target"]["path"]] = values.astype(float)

    parent = {c: p for p, node in enumerate(doc["nodes"]) for c in node.get("children", [])}

    def world(index: int) -> np.ndarray:
        matrix = np.eye(4)
        matrix[:3, :3] = quaternions_to_matrices(local[index]["rotation"])
        matrix[:3, 3] = local[index]["translation"]
        return world(parent[index]) @ matrix if index in parent else matrix

    skin_matrices = np.stack(
        [world(n) @ ibm for n, ibm in zip(skin["joints"], inverse_bind, strict=True)]
    )
    blended = np.einsum("vk,vkij->vij", weights, skin_matrices[joint_ids])
    return np.einsum("vij,vj->vi", blended, np.c_[positions, np.ones(len(positions))])[:, :3]


def test_rigged_glb_structure_and_skinning(mesh: MeshBundle) -> None:
    doc, binary = _parse_glb(build_rigged_glb(mesh))
    rig = mesh.rig
    assert rig is not None and mesh.animation is not None
    skin = doc["skins"][0]
    mesh_node = next(n for n in doc["nodes"] if "skin" in n)
    assert not {"translation", "rotation", "scale", "matrix"} & set(mesh_node)
    scene_roots = doc["scenes"][0]["nodes"]
    assert doc["nodes"].index(mesh_node) in scene_roots and skin["skeleton"] in scene_roots
    assert [doc["nodes"][n]["name"] for n in skin["joints"]] == list(rig.names)
    np.testing.assert_allclose(
        doc["nodes"][skin["joints"][2]]["translation"], [0, 0.02, 0], atol=1e-7
    )
    inverse_bind = _read_accessor(doc, binary, skin["inverseBindMatrices"])
    np.testing.assert_allclose(inverse_bind[:, :3, 3], -rig.joints)

    attributes = doc["meshes"][0]["primitives"][0]["attributes"]
    assert doc["accessors"][attributes["JOINTS_0"]]["componentType"] == 5121
    weights = _read_accessor(doc, binary, attributes["WEIGHTS_0"])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    assert len(doc["animations"][0]["channels"]) == rig.num_joints + 1

    # Independent linear blend skinning straight from the inputs must match the file.
    split = split_uv_seams(mesh.faces, mesh.uv_faces)
    joint_ids, kept = top_k_weights(rig.weights[split.vertex_index])
    frame = 3
    rotations = quaternions_to_matrices(mesh.animation.rotations[frame])
    world = np.zeros((rig.num_joints, 4, 4))
    skinning = np.zeros((rig.num_joints, 4, 4))
    for j in range(rig.num_joints):  # parents come first in this chain
        local = np.eye(4)
        local[:3, :3] = rotations[j]
        local[:3, 3] = rig.local_rest_translations()[j]
        if j == rig.root:
            local[:3, 3] += mesh.animation.root_translations[frame]
        world[j] = local if j == rig.root else world[rig.parents[j]] @ local
        unbind = np.eye(4)
        unbind[:3, 3] = -rig.joints[j]
        skinning[j] = world[j] @ unbind
    vertices = np.c_[mesh.vertices[split.vertex_index], np.ones(len(split.vertex_index))]
    expected = np.einsum("vk,vkij,vj->vi", kept, skinning[joint_ids], vertices)[:, :3]
    np.testing.assert_allclose(_pose_from_glb(doc, binary, frame), expected, atol=1e-6)
    assert np.abs(expected - mesh.vertices[split.vertex_index]).max() > 0.01  # it really moves


def test_rigged_glb_loads_in_trimesh(mesh: MeshBundle, tmp_path: Path) -> None:
    export_mesh(tmp_path / "rigged.glb", mesh, rigged=True)
    loaded = _single_geometry(trimesh.load(tmp_path / "rigged.glb"))
    assert loaded.visual.uv is not None
    assert loaded.visual.material.baseColorTexture.size == (TEXTURE_WIDTH, TEXTURE_HEIGHT)


def test_glb_files_pass_khronos_validator(mesh: MeshBundle, tmp_path: Path) -> None:
    _validator_command()  # skip early, before building anything
    untextured = MeshBundle(
        vertices=mesh.vertices, faces=mesh.faces, vertex_colors=mesh.vertex_colors
    )
    paths = {
        "plain.glb": build_glb(mesh),
        "rigged.glb": build_rigged_glb(mesh, include_animation=False),
        "animated.glb": build_rigged_glb(mesh),
        "untextured.glb": build_glb(untextured),
    }
    for name, data in paths.items():
        write_atomic(tmp_path / name, data)
    reports = _validate([tmp_path / name for name in paths])
    for name, report in zip(paths, reports, strict=True):
        issues = report["issues"]
        errors = [m for m in issues["messages"] if m["severity"] == 0]
        assert issues["numErrors"] == 0, f"{name}: {errors}"
        warnings = [m for m in issues["messages"] if m["severity"] == 1]
        assert issues["numWarnings"] == 0, f"{name}: {warnings}"
    assert reports[2]["info"]["animationCount"] == 1
    assert reports[1]["info"]["hasSkins"] is True


# --------------------------------------------------------------------------- PLY


def test_ply_loads_with_vertex_colors_and_round_trips(mesh: MeshBundle, tmp_path: Path) -> None:
    export_mesh(tmp_path / "finger.ply", mesh)
    assert (
        (tmp_path / "finger.ply").read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    )
    loaded = trimesh.load(tmp_path / "finger.ply", process=False)
    np.testing.assert_array_equal(loaded.vertices, mesh.vertices)
    np.testing.assert_array_equal(loaded.faces, mesh.faces)
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], mesh.vertex_colors)
    np.testing.assert_allclose(loaded.vertex_normals, mesh.vertex_normals(), atol=1e-6)


def test_ply_samples_texture_when_there_are_no_vertex_colors(
    mesh: MeshBundle, tmp_path: Path
) -> None:
    textured = MeshBundle(
        vertices=mesh.vertices,
        faces=mesh.faces,
        uv=mesh.uv,
        uv_faces=mesh.uv_faces,
        texture=mesh.texture,
    )
    write_atomic(tmp_path / "t.ply", build_ply(textured))
    colors = trimesh.load(tmp_path / "t.ply", process=False).visual.vertex_colors[:, :3].astype(int)
    # Green encodes v (high at the top of the image = high v): it must grow along the tube.
    ring_green = colors[:, 1].reshape(RINGS, AROUND).mean(axis=1)
    assert np.all(np.diff(ring_green) > 0)
    assert np.all(colors[:, 2] == 90)


# --------------------------------------------------------------------------- writing


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_atomic_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and _leftovers(tmp_path) == ["a.bin"]


def test_missing_folder_raises_export_error(mesh: MeshBundle, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        export_mesh(tmp_path / "nope" / "finger.glb", mesh)
    with pytest.raises(ExportError, match="does not exist"):
        write_bundle(tmp_path / "nope", {"a.txt": b"x"})
    assert _leftovers(tmp_path) == []


def test_target_that_is_a_folder_raises_export_error(mesh: MeshBundle, tmp_path: Path) -> None:
    (tmp_path / "finger.glb").mkdir()
    with pytest.raises(ExportError, match="is a folder"):
        export_mesh(tmp_path / "finger.glb", mesh)
    assert _leftovers(tmp_path) == ["finger.glb"]
    assert _leftovers(tmp_path / "finger.glb") == []


def test_folder_that_is_a_file_raises_export_error(mesh: MeshBundle, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ExportError, match="not a folder"):
        export_mesh(tmp_path / "file" / "finger.ply", mesh)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="permission bits do not stop root (or this platform has no POSIX permissions)",
)
def test_read_only_folder_raises_export_error(mesh: MeshBundle, tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ExportError, match="read-only"):
            export_mesh(folder / "finger.obj", mesh)
        assert _leftovers(folder) == []
    finally:
        folder.chmod(0o755)


def test_permission_denied_is_reported_as_read_only(
    mesh: MeshBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulates a read-only folder, so the message is checked even when running as root."""

    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(outputs_module.tempfile, "mkstemp", refuse)
    with pytest.raises(ExportError, match="read-only"):
        export_mesh(tmp_path / "finger.glb", mesh)
    assert _leftovers(tmp_path) == []


def test_failed_write_leaves_no_partial_file(
    mesh: MeshBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after some bytes hit the disk (here: fsync of the 2nd OBJ file) cleans up."""
    real_fsync = os.fsync
    calls = []

    def flaky_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    (tmp_path / "finger.obj").write_bytes(b"previous export")
    monkeypatch.setattr(outputs_module.os, "fsync", flaky_fsync)
    with pytest.raises(ExportError, match="No space left"):
        export_mesh(tmp_path / "finger.obj", mesh)
    assert _leftovers(tmp_path) == ["finger.obj"]
    assert (tmp_path / "finger.obj").read_bytes() == b"previous export"


def test_export_mesh_dispatch_and_errors(mesh: MeshBundle, tmp_path: Path) -> None:
    written = export_mesh(tmp_path / "My Hand.obj", mesh)
    assert [p.name for p in written] == ["My Hand.obj", "My_Hand.mtl", "My_Hand.png"]
    assert b"mtllib My_Hand.mtl" in written[0].read_bytes()
    assert b"map_Kd My_Hand.png" in written[1].read_bytes()
    with pytest.raises(ExportError, match="unknown format"):
        export_mesh(tmp_path / "hand.stl", mesh)
    with pytest.raises(ExportError, match="needs a .glb"):
        export_mesh(tmp_path / "hand.ply", mesh, rigged=True)
    unrigged = MeshBundle(vertices=mesh.vertices, faces=mesh.faces)
    with pytest.raises(ExportError, match="skeleton"):
        export_mesh(tmp_path / "hand.glb", unrigged, rigged=True)
