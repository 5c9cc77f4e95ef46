"""The real-data 2D evaluation measures what ``track`` gives a user on a photo.

The real-photo tests are opt-in: they need ``../shared/data`` (real labelled photos that are
never copied into the repository) and skip cleanly without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.camera import assumed_intrinsics, project

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ONEHAND = SHARED_DATA / "mmpose_hand_testdata" / "onehand10k"

needs_data = pytest.mark.skipif(not ONEHAND.exists(), reason="no ../shared/data (real labelled photos)")


@needs_data
def test_data_folder_is_the_shared_one() -> None:
    from core.tools.evaluate_fit import DEFAULT_DATA

    assert DEFAULT_DATA.resolve() == SHARED_DATA.resolve()


@needs_data
def test_labelled_fit_is_tracks_fit(tmp_path: Path) -> None:
    """The evaluated hand of a photo is the hand ``track`` writes for it: same camera (no EXIF:
    the default field of view across the portrait photo's long side), same side, same keypoints
    to float rounding."""
    from core.engine import Engine, EngineSettings
    from core.tools.cli_track import run_track
    from core.tools.evaluate_fit import _coco_hands, track_labelled_photo

    item = next(i for i in _coco_hands(ONEHAND) if i.name == "33.jpg")
    photo = ONEHAND / item.name
    with Engine(EngineSettings(detector_mode="static", detector_process=False)) as engine:
        frame, _, hand = track_labelled_photo(engine, photo, item)
    assert hand is not None
    assert frame.intrinsics_source == "assumed"
    assert frame.height > frame.width
    K = assumed_intrinsics(frame.width, frame.height).K
    np.testing.assert_allclose(frame.intrinsics.K, K)
    out = tmp_path / "t.jsonl"
    run_track(str(photo), out, progress=False)
    line = json.loads(out.read_text().splitlines()[0])
    mp = hand.detection.keypoints_2d
    tracked = min(line["hands"], key=lambda h: np.abs(np.asarray(h["keypoints_2d"]) - mp).max())
    assert tracked["handedness"] == hand.side
    cam = line["camera"]
    Kt = np.array([[cam["fx"], 0, cam["cx"]], [0, cam["fy"], cam["cy"]], [0, 0, 1.0]])
    np.testing.assert_allclose(Kt, K, atol=1e-3)
    np.testing.assert_allclose(project(np.asarray(tracked["joints_3d"]), Kt), hand.final_keypoints_2d, atol=0.05)


def test_leave_one_set_out_chooses_on_the_other_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each held-out set gets the setting with the lowest fit - MediaPipe on the other sets."""
    from core.tools import evaluate_fit as ef

    # setting -> set -> (fit, MediaPipe): "a" is best on freihand and panoptic, "b" on onehand10k
    fake = {"a": {"freihand": (10.0, 11.0), "onehand10k": (12.0, 10.0), "panoptic": (4.0, 4.5)},
            "b": {"freihand": (11.5, 11.0), "onehand10k": (10.0, 10.0), "panoptic": (4.6, 4.5)}}

    def evaluate_2d(data_dir, detail=False, fit=None):
        return {s: {"fit_2d_px": f, "mediapipe_2d_px": m} for s, (f, m) in fake[fit].items()}

    monkeypatch.setattr(ef, "evaluate_2d", evaluate_2d)
    out = ef.leave_one_set_out({"a": "a", "b": "b"}, Path("unused"))
    assert out["grid"]["b"] == {"freihand": 11.5, "onehand10k": 10.0, "panoptic": 4.6}
    # freihand held out: on onehand10k + panoptic, a's gap (2.0 - 0.5) / 2 > b's (0 + 0.1) / 2
    assert out["held_out_freihand"] == {"chosen": "b", "fit_2d_px": 11.5, "default_fit_2d_px": 10.0,
                                        "mediapipe_2d_px": 11.0}
    assert out["held_out_onehand10k"]["chosen"] == "a"  # -1.0 -0.5 against +0.5 +0.1
    assert out["held_out_panoptic"]["chosen"] == "b"  # -1.0 +2.0 against +0.5 +0.0
