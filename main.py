#!/usr/bin/env python3
"""HandTwin: the single entry point for the GUI and the command line.

    python main.py                      the GUI (camera 0, or the bundled demo without a camera)
    python main.py gui [--source SRC] [--profile P] [--screenshot PNG --quit-after S]
    python main.py track SRC --out R.jsonl [...]
    python main.py calibrate SRC --out P.json [...]
    python main.py export (--profile P | SRC) --out FILE.{obj,glb,ply} [...]
    python main.py bench [--json]
    python main.py model-info [--json] [--model PATH]
    python main.py calib-camera IMAGES --out K.json

Errors that HandTwin raises on purpose print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import typing
from typing import Callable

log = logging.getLogger("handtwin")

# MediaPipe's C++ side logs through glog/TFLite; keep its info chatter off the terminal.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
# FFmpeg's own lines ("[mjpeg @ 0x...] overread 8", "[video4linux2,v4l2 @ ...] Cannot open video
# device") repeat what HandTwin reports in its own words (a video that stops decoding, a camera
# that does not open): quiet (-8, AV_LOG_QUIET) unless the environment says otherwise.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
# HandTwin's NumPy work is small arrays, where OpenBLAS's threads never pay and busy-wait for
# milliseconds after each call, keeping a second core spinning (core.threads). Set before
# NumPy loads; an explicit setting in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


class _Parser(argparse.ArgumentParser):
    """argparse with HandTwin's one-line errors: a mistyped argument is one ``handtwin: error:``
    line (pointing at the command's --help) and status 2, not the usage block first."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"handtwin: error: {message} (see: {self.prog} --help)\n")


def _add_camera_args(p: argparse.ArgumentParser, intrinsics: bool = True) -> None:
    """--intrinsics, --fov and --weak-perspective: the camera of SRC (one of them at most)."""
    if intrinsics:
        p.add_argument("--intrinsics", metavar="F", help="camera intrinsics of SRC: JSON {fx, fy, cx, cy} or {K: 3x3} "
                                                         "(calib-camera writes one), or .npy of shape (3, 3), or "
                                                         "(N, 3, 3) for one per frame")
    p.add_argument("--fov", metavar="DEG", type=float, help="horizontal field of view of SRC, 1 to 179 degrees")
    p.add_argument("--weak-perspective", action="store_true",
                   help="without --intrinsics or --fov, fit with weak perspective instead of assuming a "
                        "perspective camera (a photo's EXIF focal length, else a 70 degree field of view)")


def _add_rgbd_args(p: argparse.ArgumentParser) -> None:
    """--depth and --depth-intrinsics: a depth stream registered to SRC (an RGB-D source)."""
    p.add_argument("--depth", metavar="D", help="depth of SRC: a depth video, a folder or glob of 16-bit PNGs "
                                                  "(frame i to frame i); needs --depth-intrinsics")
    p.add_argument("--depth-intrinsics", metavar="DC.json",
                   help="the depth camera: fx, fy, cx, cy (or K), depth_scale_m [, depth_offset_m, R, T]")


def _add_stereo_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--stereo", metavar="SRC2", help=f"second, calibrated camera of the same scene ({what})")
    p.add_argument("--stereo-calib", metavar="S.json", help="the camera pair: {K1, K2, R, T (m)}")


def _add_refine_arg(p: argparse.ArgumentParser) -> None:
    """--refine N: silhouette refinement iterations per hand (0: off), with the depth term of an
    RGB-D source and the second view's silhouette of a calibrated pair (``track``, ``export``)."""
    p.add_argument("--refine", metavar="N", type=int, default=0,
                   help="refine each hand for N iterations against its silhouette (and the depth of an RGB-D "
                        "source, the second view of a stereo pair); default 0: off")


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", default=None,
                   help="MANO_RIGHT.pkl/MANO_LEFT.pkl, a folder holding them, or a MANO-layout "
                        ".npz (default: $HANDTWIN_MODEL, else the bundled open hand)")


_SRC_HELP = "a camera index (0), demo, a video file, an image folder or a glob"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="handtwin", description="Personal 3D hand scanner and tracker.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("gui", help="the desktop app (default)")
    p.add_argument("--source", default=None, help="camera index, 'demo', video, folder or glob, or a source spec "
                   "(SRC|depth=D|depth-intrinsics=F, SRC|SRC2|stereo-calib=S)")
    p.add_argument("--profile", default=None, help="hand profile JSON to load")
    p.add_argument("--screenshot", metavar="PNG", default=None, help="save a screenshot of the window")
    p.add_argument("--quit-after", metavar="S", type=float, default=None, help="quit after S seconds")
    p.add_argument("--stats", metavar="JSON", default=None,
                   help="with --quit-after: write the session's fps and longest GUI-thread block here")
    p.add_argument("--no-realtime", dest="realtime", action="store_false", default=None,
                   help="play video files as fast as tracking goes, not at their frame rate (this run only)")
    _add_camera_args(p)
    _add_model_arg(p)

    p = sub.add_parser("track", help="per-frame hand meshes, one JSON line per frame")
    p.add_argument("source", metavar="SRC", help=_SRC_HELP)
    p.add_argument("--out", required=True, metavar="R.jsonl", help="the results, one JSON line per frame")
    _add_camera_args(p)
    p.add_argument("--profile", metavar="P", help="hand profile JSON (calibrate): track that person's own hand")
    _add_refine_arg(p)
    p.add_argument("--max-hands", metavar="N", type=int, default=2, help="hands to track at most, 1 to 4 (default 2)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the fit and refinement run (default auto: CUDA when there is one)")
    _add_rgbd_args(p)
    _add_stereo_args(p, "each hand fused from both views into SRC's camera")
    _add_model_arg(p)

    p = sub.add_parser("calibrate", help="a hand profile from automatically chosen frames")
    p.add_argument("source", metavar="SRC", help=_SRC_HELP)
    p.add_argument("--out", required=True, metavar="P.json", help="the profile to write")
    p.add_argument("--frames", metavar="K", type=int, default=20,
                   help="frames to calibrate from, 1 to 200 (default 20)")
    _add_camera_args(p)
    p.add_argument("--hand-length-mm", metavar="L", type=float, help="measured hand length (scale: hand_length)")
    p.add_argument("--aruco-sheet", metavar="SHEET.json",
                   help="hand laid flat on this printed ArUco/ChArUco sheet (scale: aruco)")
    _add_stereo_args(p, "scale: stereo")
    _add_rgbd_args(p)
    p.add_argument("--name", help="profile name (default: the file name)")
    p.add_argument("--side", choices=("auto", "right", "left"), default="auto", help="hand to calibrate")
    p.add_argument("--no-surface", action="store_true",
                   help="skip the surface offsets (fitted to the frames' silhouettes by default)")
    _add_model_arg(p)

    p = sub.add_parser("export", help="a personalized textured mesh")
    p.add_argument("source", metavar="SRC", nargs="?", help="track this source and capture the texture")
    p.add_argument("--profile", metavar="P",
                   help="hand profile JSON: its shape and texture (with SRC: the base texture)")
    p.add_argument("--out", required=True, metavar="FILE", help="FILE.obj, FILE.glb or FILE.ply")
    p.add_argument("--pose", default="rest", help="rest | frame:N (a tracked frame of SRC)")
    p.add_argument("--rigged", action="store_true", help="skinned GLB (joints, inverse bind matrices, weights)")
    p.add_argument("--animate", action="store_true", help="with --rigged and SRC: the recorded motion as an animation")
    p.add_argument("--texture-size", metavar="PX", type=int, default=1024, help="texture side in texels (default 1024)")
    _add_camera_args(p)
    _add_rgbd_args(p)
    _add_stereo_args(p, "each hand fused from both views into SRC's camera")
    _add_refine_arg(p)
    p.add_argument("--max-frames", metavar="N", type=int, default=None, help="use at most N frames of SRC")
    p.add_argument("--force", action="store_true",
                   help="replace existing NAME.mtl / NAME.png / NAME.profile.json that this export did not write")
    _add_model_arg(p)

    p = sub.add_parser("bench", help="stage timings on this machine")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--only", nargs="*", help="run only these benchmarks")
    p.add_argument("--plots", metavar="DIR", default=None, help="also write the benchmarks' plots (PNG) here")
    p.add_argument("--soak-s", metavar="S", type=float, default=None,
                   help="length of the GUI soak (--only soak), seconds (default 1200)")

    p = sub.add_parser("model-info", help="the hand model in use")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--side", choices=("right", "left"), default="right")
    _add_model_arg(p)

    p = sub.add_parser("calib-camera", help="camera intrinsics from checkerboard/ChArUco images")
    p.add_argument("images", metavar="IMAGES", help="folder or glob of calibration images")
    p.add_argument("--out", required=True, metavar="K.json", help="the intrinsics to write (for --intrinsics)")
    p.add_argument("--pattern", choices=("checkerboard", "charuco"), default="checkerboard",
                   help="the printed board (default checkerboard)")
    p.add_argument("--cols", type=int, default=9, help="inner corners (checkerboard) or squares (ChArUco) across")
    p.add_argument("--rows", type=int, default=6, help="inner corners (checkerboard) or squares (ChArUco) down")
    p.add_argument("--square-mm", type=float, default=25.0, help="square size in millimetres")
    return parser


def cmd_model_info(args: argparse.Namespace) -> int:
    from core.model.info import format_model_info, model_info

    info = model_info(args.model, args.side)
    print(json.dumps(info, indent=2) if args.json else format_model_info(info))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from core.tools.bench import run_benchmarks

    results = run_benchmarks(args.only, plots_dir=args.plots, soak_s=args.soak_s)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        width = max(len(k) for k in results)
        for key, value in results.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _check_display() -> None:
    """Refuse to start the GUI where Qt has no screen to open a window on (Qt would abort)."""
    from core.errors import InputError

    headless = sys.platform.startswith("linux") and not any(
        os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
    if headless:
        raise InputError("no display to open the window on (DISPLAY and WAYLAND_DISPLAY are not set): run it "
                         "on a desktop, under `xvfb-run -a`, or with QT_QPA_PLATFORM=offscreen; track, calibrate "
                         "and export need no display")


def cmd_gui(args: argparse.Namespace) -> int:
    if args.quit_after is not None:  # NaN stopped the window with a traceback, a negative quit at once
        from core.inputs import check_number

        check_number(args.quit_after, "--quit-after", 0.1, 10 ** 6, "s")
    _check_display()
    if args.intrinsics:  # a file named on the command line is checked before the window opens
        from core.camera import load_intrinsics

        load_intrinsics(args.intrinsics)
    from app.gui import run_gui

    return run_gui(
        source=args.source, profile=args.profile, model=args.model,
        screenshot=args.screenshot, quit_after=args.quit_after,
        intrinsics=args.intrinsics, fov_deg=args.fov, weak_perspective=args.weak_perspective,
        stats=args.stats, realtime=args.realtime,
    )


def cmd_track(args: argparse.Namespace) -> int:
    from core.tools.cli_track import run_track

    summary = run_track(
        args.source, args.out, intrinsics=args.intrinsics, fov_deg=args.fov, profile=args.profile,
        refine=args.refine, max_hands=args.max_hands, device=args.device, model=args.model,
        weak_perspective=args.weak_perspective, depth=args.depth, depth_camera=args.depth_intrinsics,
        stereo=args.stereo, stereo_calib=args.stereo_calib,
    )
    print(summary.format())
    return 0


def cmd_calib_camera(args: argparse.Namespace) -> int:
    from core.tools.cli_calib_camera import run_calib_camera

    print(run_calib_camera(args.images, args.out, args.pattern, args.cols, args.rows, args.square_mm))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from core.tools.cli_calibrate import run_calibrate

    return run_calibrate(args)


def cmd_export(args: argparse.Namespace) -> int:
    from core.tools.cli_export import run_export

    return run_export(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "gui": cmd_gui,
    "model-info": cmd_model_info,
    "bench": cmd_bench,
    "track": cmd_track,
    "calibrate": cmd_calibrate,
    "export": cmd_export,
    "calib-camera": cmd_calib_camera,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        args = parser.parse_args(["gui"] + (argv if argv is not None else sys.argv[1:]))
    from core.errors import HandTwinError
    from core.outputs import Terminated, interrupt_on_signals

    if args.command != "gui":  # SIGTERM / SIGHUP clean up like Ctrl+C (temporary files, shared memory)
        interrupt_on_signals()
    try:
        return COMMANDS[args.command](args)
    except HandTwinError as exc:
        print(f"handtwin: error: {exc}", file=sys.stderr)
        return 2
    except Terminated as exc:
        print(f"handtwin: terminated by signal {exc.signum}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("handtwin: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout's reader went away (`| head`): no traceback, like other tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more to flush into the closed pipe at exit
        os.close(devnull)
        return 141  # 128 + SIGPIPE, as a shell reports a pipeline's early reader


if __name__ == "__main__":
    from core.native_logs import filter_native_logs

    filter_native_logs()  # MediaPipe's native start-up notes stay off the terminal (not under tests)
    sys.exit(main())
