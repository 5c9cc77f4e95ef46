"""The real-data 2D evaluation measures what ``track`` gives a user on a photo.

Opt-in: it needs ``../shared/data`` (real labelled photos that are never copied into the
repository) and skips cleanly without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.camera import intrinsics_from_fov, project

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ONEHAND = SHARED_DATA / "mmpose_hand_testdata" / "onehand10k"

pytestmark = pytest.mark.skipif(not ONEHAND.exists(), reason="no ../shared/data (real labelled photos)")


def test_data_folder_is_the_shared_one() -> None:
    from core.tools.evaluate_fit import DEFAULT_DATA

    assert DEFAULT_DATA.resolve() == SHARED_DATA.resolve()


def test_labelled_fit_is_tracks_fit(tmp_path: Path) -> None:
    """The evaluated hand of a photo is the hand ``track`` writes for it: same camera (no EXIF:
    the default field of view), same side, same keypoints to float rounding."""
    from core.camera import DEFAULT_FOV_DEG
    from core.engine import Engine, EngineSettings
    from core.tools.cli_track import run_track
    from core.tools.evaluate_fit import _coco_hands, track_labelled_photo

    item = next(i for i in _coco_hands(ONEHAND) if i.name == "33.jpg")
    photo = ONEHAND / item.name
    with Engine(EngineSettings(detector_mode="static", detector_process=False)) as engine:
        frame, _, hand = track_labelled_photo(engine, photo, item)
    assert hand is not None
    assert frame.intrinsics_source == "assumed"
    K = intrinsics_from_fov(DEFAULT_FOV_DEG, frame.width, frame.height).K
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
