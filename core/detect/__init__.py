"""Hand detection: MediaPipe's hand landmarker (Tasks API, shipped model bundles) behind a typed wrapper.

Public API::

    HandDetector(max_hands=2, mode="video" | "static", min_detection_confidence=0.5,
                 min_tracking_confidence=0.5, model_complexity=1, mirrored_input=False,
                 tiles=False)
        .detect(image_rgb, timestamp_s=None) -> tuple[Detection, ...]
    Detection      frozen: handedness, score, keypoints_2d (21, 2) px, keypoints_z (21,),
                   world_landmarks (21, 3) m, image_size (W, H)
    swap_handedness(h) -> str
"""

from core.detect.mediapipe_hands import Detection, HandDetector, swap_handedness

__all__ = ["Detection", "HandDetector", "swap_handedness"]
