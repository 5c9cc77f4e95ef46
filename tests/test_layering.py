"""The import graph keeps the layers of docs/ARCHITECTURE.md ("Layers").

- ``core/`` never imports the GUI stack (Qt, pyvista, VTK) or ``app``; the app may import core.
- Inside ``core/`` every module belongs to one unit of :data:`LAYERS` and imports only its own
  unit or units of lower layers: the shared convention modules at the bottom, then the stage
  packages, then :mod:`core.engine`, then the tooling (:mod:`core.tools`: commands, benchmarks,
  evaluations, build scripts). No stage imports the engine or the tooling.

The graph is read from the sources (``ast``): every ``import`` and ``from ... import``, at module
level or inside functions and ``TYPE_CHECKING`` blocks, relative imports resolved, and
``importlib.import_module("core...")`` calls with a literal name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("PySide6", "PyQt5", "PyQt6", "pyvista", "pyvistaqt", "vtk", "vtkmodules", "app")

#: Lowest first. A module may import its own unit and the units of lower layers; units of one
#: layer are peers and do not import each other. Every module under core/ must fall in a unit.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core.errors",),
    ("core.inputs",),
    ("core.outputs",),
    ("core.camera", "core.keypoints", "core.mirror", "core.rotations", "core.metrics", "core.threads",
     "core.progress", "core.native", "core.native_logs", "core.procstat"),
    ("core.model",),
    ("core.profile_io", "core.render", "core.capture"),
    ("core.segment",),
    ("core.detect",),  # above segment: its task-bundle builder packs the segmentation model (core.segment.methods)
    # scene_focal: a moving camera's focal length from its background (images and the camera only)
    ("core.tracking", "core.fit", "core.scene_focal"),
    ("core.refine",),
    ("core.texture",),
    ("core.synth",),
    ("core.personalize",),
    # metric_depth: fits placed at a depth camera's distance; focal: a stream's focal length by
    # the calibration's bundle adjustment
    ("core.export", "core.metric_depth", "core.focal"),
    ("core.engine",),
    ("core.stereo",),  # a calibrated pair: an engine per view, hands fused across them
    ("core.tools",),
)
STAGES = ("core.model", "core.render", "core.capture", "core.segment", "core.detect", "core.fit", "core.refine",
          "core.texture", "core.synth", "core.personalize", "core.export")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every module the file at ``path`` imports."""
    return imports_of(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_of(source: str, name: str, is_package: bool = False) -> set[str]:
    """Every module the source of module ``name`` imports (absolute names; ``from a import b``
    gives ``a`` and ``a.b``)."""
    tree = ast.parse(source, filename=name)
    package = name if is_package else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    return names


def unit_of(module: str) -> str | None:
    """The unit of :data:`LAYERS` a ``core`` module falls in (longest prefix), or None."""
    best = None
    for layer in LAYERS:
        for unit in layer:
            if (module == unit or module.startswith(unit + ".")) and (best is None or len(unit) > len(best)):
                best = unit
    return best


def layer_of(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def core_sources() -> list[Path]:
    return sorted((ROOT / "core").rglob("*.py"))


def import_graph() -> dict[str, set[str]]:
    """core module -> the core modules it imports (names that are not modules stay as written)."""
    return {module_name(p): {m for m in imported_modules(p) if m == "core" or m.startswith("core.")}
            for p in core_sources()}


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, imports in sorted(graph.items()):
        unit = unit_of(module)
        if unit is None:
            if module != "core":
                out.append(f"{module} is in no unit of LAYERS (place it in tests/test_layering.py and the docs)")
            continue
        for target in sorted(imports):
            target_unit = unit_of(target)
            if target_unit is None or target_unit == unit:
                continue  # `from core import x` gives "core"; x itself is checked as "core.x"
            if target.rpartition(".")[0] in imports and unit_of(target.rpartition(".")[0]) == target_unit:
                continue  # `from a import b`: a is reported already
            if layer_of(target_unit) >= layer_of(unit):
                out.append(f"{module} ({unit}) imports {target} ({target_unit}), which is not below it")
    return out


def test_core_sources_do_not_import_the_gui_stack() -> None:
    offenders = []
    for path in core_sources():
        for name in imported_modules(path):
            if name.split(".")[0] in FORBIDDEN:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_every_core_module_imports_only_what_lies_below_it() -> None:
    violations = layering_violations(import_graph())
    assert not violations, "\n".join(violations)


def test_no_stage_package_imports_the_engine_or_the_tooling() -> None:
    offenders = [f"{module} imports {target}" for module, imports in sorted(import_graph().items())
                 if unit_of(module) in STAGES
                 for target in sorted(imports) if unit_of(target) in ("core.engine", "core.tools")]
    assert not offenders, "\n".join(offenders)


def test_the_stage_packages_are_layered() -> None:
    for stage in STAGES:
        assert unit_of(stage) == stage, stage


@pytest.mark.parametrize("source, expected", [
    ("from core.engine import Engine\n", "core.engine"),
    ("def f():\n    from core.tools.bench import run_benchmarks\n", "core.tools.bench"),
    ("from ..engine import Engine\n", "core.engine"),
    ("from .. import engine\n", "core.engine"),
    ("import importlib\nimportlib.import_module('core.tools')\n", "core.tools"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import core.engine\n", "core.engine"),
])
def test_the_checker_sees_every_kind_of_import(source: str, expected: str) -> None:
    """Each form of import, written in a stage module, is found and reported as a violation."""
    imports = imports_of(source, "core.fit._probe")
    assert expected in imports
    violations = layering_violations({"core.fit._probe": {m for m in imports if m.startswith("core")}})
    assert any(f"imports {expected} " in v for v in violations), violations


def test_the_checker_allows_lower_layers_and_its_own_unit() -> None:
    graph = {"core.fit._probe": imports_of("from core.model import load_model_data\nfrom . import solver\n"
                                           "import core.errors\n", "core.fit._probe")}
    assert {"core.model", "core.fit.solver", "core.errors"} <= graph["core.fit._probe"]
    assert layering_violations(graph) == []


def test_importing_core_loads_no_gui_module() -> None:
    code = (
        "import importlib, pkgutil, sys, core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'core.'):\n"
        "    if m.name.endswith('build_open_hand'): continue\n"
        "    importlib.import_module(m.name)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
