"""Frame capture: cameras, video files, image folders, globs, sessions, synchronized rigs.

Public API::

    open_source(spec, intrinsics=None, fov_deg=None) -> FrameSource
    open_multi_source(specs, tolerance_s=None, intrinsics=None, fov_deg=None) -> SynchronizedSource
    Frame, FrameSet                      frozen records (RGB uint8 images, seconds, Intrinsics)
    FrameSource and its kinds            CameraSource, VideoFileSource, ImageSequenceSource,
                                         ArraySource, SessionSource
    SessionRecorder                      record a session folder; open_source(folder) replays it
"""

from core.capture.frame import Frame, FrameSet
from core.capture.multi import SynchronizedSource
from core.capture.open import (
    DEMO_CLIP_PATH,
    SourceSpec,
    open_demo,
    open_multi_source,
    open_source,
    open_spec,
    parse_spec,
    resolve_spec,
)
from core.capture.session import (
    SESSION_FORMAT,
    SessionRecorder,
    SessionSource,
    is_session_folder,
    read_session_results,
)
from core.capture.sources import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    ArraySource,
    CameraSource,
    FrameSource,
    ImageSequenceSource,
    IntrinsicsSpec,
    VideoFileSource,
    opencv_image_to_rgb,
)

__all__ = [
    "DEMO_CLIP_PATH",
    "IMAGE_EXTENSIONS",
    "SESSION_FORMAT",
    "VIDEO_EXTENSIONS",
    "ArraySource",
    "CameraSource",
    "Frame",
    "FrameSet",
    "FrameSource",
    "ImageSequenceSource",
    "IntrinsicsSpec",
    "SessionRecorder",
    "SessionSource",
    "SourceSpec",
    "SynchronizedSource",
    "VideoFileSource",
    "is_session_folder",
    "open_demo",
    "open_multi_source",
    "open_spec",
    "parse_spec",
    "open_source",
    "opencv_image_to_rgb",
    "read_session_results",
    "resolve_spec",
]
