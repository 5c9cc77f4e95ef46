"""``calib-camera``: intrinsics from photos of a checkerboard or ChArUco board."""

from __future__ import annotations

import glob
from pathlib import Path

from core.camera import CharucoPattern, CheckerboardPattern, calibrate_camera, save_intrinsics
from core.capture import IMAGE_EXTENSIONS
from core.errors import InputError


def list_images(spec: str) -> list[Path]:
    """Image files of a folder (sorted by name) or a glob."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        files = sorted(Path(p) for p in glob.glob(spec))
    if not files:
        raise InputError(f"no calibration images in {spec}")
    return files


def run_calib_camera(
    images: str,
    out: str | Path,
    pattern: str = "checkerboard",
    cols: int = 9,
    rows: int = 6,
    square_mm: float = 25.0,
) -> str:
    """Calibrate, write ``out`` (intrinsics JSON, atomically) and return a one-line summary.

    Raises:
        InputError: a board size out of range, unreadable or oversized images, too few boards.
        ExportError: ``out`` is a folder, one of the images, or its folder is missing or
            read-only (checked before any image is read).
    """
    from core.inputs import check_int, check_number
    from core.outputs import check_output

    paths = list_images(images)
    out = check_output(out, paths)
    check_int(cols, "--cols", 2, 100)
    check_int(rows, "--rows", 2, 100)
    check_number(square_mm, "--square-mm", 0.1, 1000.0, "mm")
    board = (
        CheckerboardPattern(inner_cols=cols, inner_rows=rows, square_m=square_mm / 1000)
        if pattern == "checkerboard"
        else CharucoPattern(squares_x=cols, squares_y=rows, square_m=square_mm / 1000, marker_m=0.75 * square_mm / 1000)
    )
    result = calibrate_camera(paths, board)
    save_intrinsics(out, result.intrinsics)
    k = result.intrinsics
    return (
        f"calibrated from {len(result.used_images)} images: fx {k.fx:.1f}, fy {k.fy:.1f}, "
        f"cx {k.cx:.1f}, cy {k.cy:.1f} px, RMS {result.rms_px:.3f} px; wrote {out}"
    )
