"""Profiles: validation, atomic save, load, list, rename, delete; the calibrate command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError
from core.profile_io import (
    delete_profile,
    list_profiles,
    load_profile,
    profiles_dir,
    rename_profile,
    save_profile,
)


def _doc(name: str = "Ann", **over) -> dict:
    doc = {
        "format": "handtwin-profile", "version": 1, "name": name, "handedness": "right",
        "model": {"name": "open hand", "sha256": "ab" * 32},
        "shape": [0.1] * 10, "hand_length_mm": 186.5, "hand_width_mm": 45.2,
        "bone_lengths_mm": [30.0] * 20, "scale_source": "prior",
        "frames": [{"source": "demo", "frame": 3, "confidence": 0.5, "weight": 1.0}],
        "texture": None, "created": "2026-01-01T00:00:00+00:00",
    }
    doc.update(over)
    return doc


def test_save_load_roundtrip(tmp_path: Path) -> None:
    path = save_profile(tmp_path / "sub" / "ann.json", _doc(texture="ann.png"))
    assert not list(path.parent.glob("*.part")) and not list(path.parent.glob(".*"))
    p = load_profile(path)
    assert p.name == "Ann" and p.handedness == "right" and p.scale_source == "prior"
    assert p.shape.shape == (10,) and p.shape.dtype == np.float32 and p.bone_lengths_mm.shape == (20,)
    assert p.texture == path.parent / "ann.png" and p.frames[0]["frame"] == 3
    assert p.shape.tolist() == pytest.approx([0.1] * 10)


@pytest.mark.parametrize("change, message", [
    ({"format": "other"}, "not a HandTwin profile"),
    ({"version": 99}, "unsupported profile version"),
    ({"name": ""}, "'name'"),
    ({"handedness": "both hands"}, "'handedness'"),
    ({"shape": [float("nan")] * 10}, "'shape'"),
    ({"shape": "0.1"}, "'shape'"),
    ({"hand_length_mm": -3}, "'hand_length_mm'"),
    ({"bone_lengths_mm": [30.0] * 19}, "'bone_lengths_mm'"),
    ({"scale_source": "guess"}, "'scale_source'"),
    ({"frames": [{"source": "demo"}]}, "'frames'"),
    ({"texture": "/etc/passwd"}, "'texture'"),
    ({"texture": "../x.png"}, "'texture'"),
    ({"model": "open"}, "'model'"),
])
def test_malformed_profiles_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        save_profile(tmp_path / "p.json", _doc(**change))
    (tmp_path / "p.json").write_text(json.dumps(_doc(**change)))
    with pytest.raises(InputError, match=message):
        load_profile(tmp_path / "p.json")
    assert not (tmp_path / "q.json").exists()


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_profile(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(InputError, match="not valid JSON"):
        load_profile(tmp_path / "bad.json")


def test_list_rename_delete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDTWIN_HOME", str(tmp_path))
    folder = profiles_dir()
    assert folder == tmp_path / "profiles"
    save_profile(folder / "ann.json", _doc("Ann", texture="ann.png"))
    (folder / "ann.png").write_bytes(b"png")
    save_profile(folder / "bob.json", _doc("Bob"))
    (folder / "broken.json").write_text("{}")
    assert [p.name for p in list_profiles()] == ["Ann", "Bob"]
    new = rename_profile("Ann", "Ann's left")
    assert new == folder / "ann-s-left.json" and not (folder / "ann.json").exists()
    assert load_profile(new).name == "Ann's left" and load_profile(new).texture == folder / "ann.png"
    with pytest.raises(InputError, match="already exists"):
        rename_profile("Bob", "Ann's left")
    with pytest.raises(InputError, match="no profile"):
        rename_profile("Carol", "X")
    delete_profile(new)
    assert not new.exists() and not (folder / "ann.png").exists()
    delete_profile("Bob", folder)
    assert list_profiles(folder) == []


def test_calibrate_command_writes_a_valid_profile(tmp_path: Path) -> None:
    """Synthetic frames with known intrinsics through the real detector and the CLI."""
    import cv2

    from core.camera import rgb_to_bgr
    from core.synth.render import SynthSettings, default_layers, render_hand_sample
    from main import main

    rng = np.random.default_rng(11)
    layers = default_layers()
    K = np.array([[300.0, 0, 127.5], [0, 300.0, 127.5], [0, 0, 1]])
    betas = np.array([0.5, -0.5] + [0.0] * 8, np.float32)
    for i in range(4):
        s = render_hand_sample(rng, layers, SynthSettings(supersample=1, back_facing=0.0, max_tilt_deg=15),
                               betas=betas, K=K)
        cv2.imwrite(str(tmp_path / f"f{i}.png"), rgb_to_bgr(s.image))
    (tmp_path / "K.json").write_text(json.dumps({"K": K.tolist()}))
    out = tmp_path / "me.json"
    code = main(["calibrate", str(tmp_path / "*.png"), "--out", str(out), "--intrinsics", str(tmp_path / "K.json"),
                 "--frames", "3", "--hand-length-mm", "190", "--name", "Me"])
    assert code == 0
    p = load_profile(out)
    assert p.name == "Me" and p.scale_source == "hand_length" and p.hand_length_mm == pytest.approx(190.0, abs=0.05)
    assert 1 <= len(p.frames) <= 3 and sum(f["weight"] for f in p.frames) == pytest.approx(1.0, abs=1e-3)
    assert main(["calibrate", str(tmp_path / "*.png"), "--out", str(tmp_path / "x.txt")]) == 2
    assert main(["calibrate", str(tmp_path / "*.png"), "--out", str(out), "--hand-length-mm", "190",
                 "--aruco-sheet", "s.json"]) == 2


def test_calibrate_warns_when_fewer_frames_than_asked_were_usable(tmp_path: Path, capsys) -> None:
    """A right-hand clip calibrated with --side left wrote a 'left' profile from one stray
    detection without a word beyond '1 of 1 candidate frames'; the summary now warns."""
    import cv2

    from core.camera import rgb_to_bgr
    from core.synth.render import SynthSettings, default_layers, render_hand_sample
    from main import main

    rng = np.random.default_rng(5)
    layers = default_layers()
    K = np.array([[300.0, 0, 127.5], [0, 300.0, 127.5], [0, 0, 1]])
    for i in range(2):
        s = render_hand_sample(rng, layers, SynthSettings(supersample=1, back_facing=0.0, max_tilt_deg=15), K=K)
        cv2.imwrite(str(tmp_path / f"f{i}.png"), rgb_to_bgr(s.image))
    out = tmp_path / "me.json"
    args = ["calibrate", str(tmp_path / "*.png"), "--out", str(out), "--fov", "50", "--no-surface"]
    assert main(args + ["--frames", "5", "--name", "   "]) == 0  # a blank name was refused after the work
    used = len(load_profile(out).frames)
    assert load_profile(out).name == "me"
    lines = capsys.readouterr().out.splitlines()
    assert 1 <= used <= 2
    assert lines[1].startswith(f"warning: only {used} of the 5 frames asked for (--frames) showed a usable")
    assert main(args + ["--frames", str(used)]) == 0
    assert "warning" not in capsys.readouterr().out
    out.unlink()
    assert main(args + ["--side", "left"]) == 2  # rendered right hands: the error names the side asked for
    assert "no usable left hand in the 2 frames" in capsys.readouterr().err and not out.exists()
