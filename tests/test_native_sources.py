"""The C kernels' sources: files shipped with their packages, assembled by core.native.kernel_source."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from core import native
from core.fit import _native as fit_native
from core.refine import _fused_native
from core.refine import _native as refine_native
from core.render import _native as render_native
from core.texture import _native as texture_native

ROOT = Path(__file__).resolve().parents[1]
MODULES = (render_native, refine_native, _fused_native, fit_native, texture_native)


def needs_compiler() -> str:
    cc = native.compiler()
    if cc is None:
        pytest.skip("no C compiler")
    return cc


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_source_is_files_with_line_directives(module) -> None:
    text = module.source()
    blocks = re.split(r'^#line 1 "(.*)"\n', text, flags=re.M)
    assert blocks[0] == ""  # nothing before the first file
    for path, block in zip(blocks[1::2], blocks[2::2]):
        file = Path(path)
        assert file.is_file() and file.suffix in (".c", ".h")
        assert file.is_relative_to(ROOT / "core")
        # substitutions keep the lines, so the block's line n is the file's line n
        if not (file.name == "refine_real.c" and module is _fused_native):
            assert block.count("\n") == file.read_text(encoding="utf-8").count("\n")
    assert len(blocks) >= 3


def test_kernel_files_are_package_data() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["*"]
    for file in (ROOT / "core").rglob("*"):
        if file.suffix in (".c", ".h"):
            assert any(file.match(p) for p in patterns), file


def test_substitutions_must_keep_lines(tmp_path: Path) -> None:
    (tmp_path / "k.c").write_text("int f(void) { return VALUE; }\n", encoding="utf-8")
    anchor = str(tmp_path / "mod.py")
    assert native.kernel_source(anchor, "k.c", [("VALUE", "7")]).endswith("return 7; }\n")
    with pytest.raises(ValueError, match="lines"):
        native.kernel_source(anchor, "k.c", [("VALUE", "7\n")])
    with pytest.raises(native.NativeUnavailableError, match="missing"):
        native.kernel_source(anchor, "absent.c")


def test_compiler_errors_name_the_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cc = needs_compiler()
    monkeypatch.setenv(native.CACHE_ENV_VAR, str(tmp_path / "cache"))
    (tmp_path / "good.c").write_text("int good(void) { return 1; }\n", encoding="utf-8")
    (tmp_path / "bad.c").write_text("/* one */\n/* two */\nint bad(void) { return nope; }\n",
                                    encoding="utf-8")
    anchor = str(tmp_path / "mod.py")
    text = native.kernel_source(anchor, "good.c") + native.kernel_source(anchor, "bad.c")
    with pytest.raises(native.NativeUnavailableError) as info:
        native.build("diag", text, cc)
    assert f"{tmp_path / 'bad.c'}:3:" in str(info.value)


def test_editing_a_file_rebuilds_its_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs_compiler()
    monkeypatch.setenv(native.CACHE_ENV_VAR, str(tmp_path / "cache"))
    source = tmp_path / "k.c"
    source.write_text("int value(void) { return VALUE; }\n", encoding="utf-8")

    def declare(lib: ctypes.CDLL) -> None:
        lib.value.argtypes, lib.value.restype = [], ctypes.c_int

    library = native.NativeLibrary("edit", lambda: native.kernel_source(str(tmp_path / "m.py"), "k.c",
                                                                         [("VALUE", "1")]), declare)
    assert library.require().value() == 1
    source.write_text("int value(void) { return VALUE + 1; }\n", encoding="utf-8")
    library.reset()
    assert library.require().value() == 2
    assert len(list((tmp_path / "cache" / "kernels").glob("edit-*"))) == 2
