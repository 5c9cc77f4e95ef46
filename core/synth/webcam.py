"""What a real webcam calibration session does to its frames, sampled per frame.

The clean synthetic renders (:mod:`core.synth.render`) are all well lit, sharp, centred hands
facing the camera, so a calibration's frames are about equally good and their errors are the
ones they share. A user waving a hand at a webcam gives frames that differ: some blurred by
motion, noisy in dim light, the hand far away or partly out of the picture, the palm seen
edge-on, a finger hidden behind an object. :func:`sample_conditions` draws one frame's
conditions, each independently with the probabilities below (our choices, for a laptop webcam
at 30 fps indoors; the ranges are the renderer's 256 px image's), :func:`render_settings`
places the hand accordingly and :func:`apply_conditions` degrades the rendered image before the
detector sees it:

* **far away** (p :data:`P_FAR` = 0.25): the hand spans 14-30 % of the image's smaller side
  (an arm's length from a 640 x 480 webcam: 70-150 px) instead of 35-75 %.
* **edge-on** (p :data:`P_EDGE_ON` = 0.2): the palm tilted 60-85 degrees from facing the camera
  instead of 0-60 (bones foreshortened, fingers overlapping).
* **cut by the border** (p :data:`P_CUT` = 0.2): the hand's centre 10-45 % of the hand's length
  from a random image border, so up to about 40 % of the hand (fingertips or wrist) is out of
  the frame; MediaPipe extrapolates those keypoints.
* **motion blur** (p :data:`P_MOTION` = 0.35): a line kernel of 3-16 px in a random direction
  (a hand moving 0.2-1 m/s during a 1/60 s exposure).
* **defocus** (p :data:`P_DEFOCUS` = 0.1): Gaussian blur, sigma 1-2.5 px.
* **lighting**: dim (p :data:`P_DIM` = 0.25: gain 0.3-0.6, sensor noise sigma 6-14 grey
  levels, as a webcam's high gain gives), over-exposed (p :data:`P_BRIGHT` = 0.1: gain 1.4-1.9,
  clipped highlights, noise 1-3) or normal (gain 0.85-1.15, noise 1-4).
* **occluders** (p :data:`P_OCCLUDED` = 0.2): one or two discs or boxes over the hand (a cup, the
  other hand's fingers), each 10-35 % of the hand's size.
* **JPEG compression** at quality 40-95 (every frame; webcams stream MJPEG).

Wrong detections are not drawn: they happen by themselves when MediaPipe meets the frames above
(fingers swapped under occlusion, a hand hallucinated from a blurred one), which is what the
calibration's robust loss and the confidence predictor are for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from core.synth.render import SynthSettings

P_FAR = 0.25
P_EDGE_ON = 0.2
P_CUT = 0.2
P_MOTION = 0.35
P_DEFOCUS = 0.1
P_DIM = 0.25
P_BRIGHT = 0.1
P_OCCLUDED = 0.2

#: Column names of :meth:`WebcamConditions.record` (and ``SynthFrames.conditions``).
CONDITION_NAMES: tuple[str, ...] = ("far", "edge_on", "cut", "motion_px", "defocus_sigma", "gain", "noise_std",
                                    "occluded_fraction", "jpeg_quality")


@dataclass(frozen=True)
class WebcamConditions:
    """One frame's capture conditions (module docstring).

    Attributes:
        fill: the hand's length over the image's smaller side. tilt_deg: (min, max) tilt of the
            palm away from facing the camera, degrees. centre_px: where the hand's centre is
            placed (None: the renderer's jittered centre). far, edge_on: which draws these were.
        motion_px: motion blur length, px (0: none). motion_deg: its direction.
        defocus_sigma: Gaussian blur sigma, px (0: none). gain: exposure factor.
        noise_std: sensor noise sigma, grey levels. occluders: how many (0-2).
        jpeg_quality: the frame's JPEG quality.
    """

    fill: float
    tilt_deg: tuple[float, float]
    centre_px: tuple[float, float] | None
    far: bool
    edge_on: bool
    motion_px: float
    motion_deg: float
    defocus_sigma: float
    gain: float
    noise_std: float
    occluders: int
    jpeg_quality: int

    def record(self, occluded_fraction: float) -> np.ndarray:
        """(len(CONDITION_NAMES),) float32 summary of the frame, with the occluded fraction of
        the hand that :func:`apply_conditions` measured."""
        return np.array([self.far, self.edge_on, self.centre_px is not None, self.motion_px, self.defocus_sigma,
                         self.gain, self.noise_std, occluded_fraction, self.jpeg_quality], np.float32)


def sample_conditions(rng: np.random.Generator, image_size: tuple[int, int]) -> WebcamConditions:
    """Draw one frame's conditions (module docstring) for an image of ``image_size`` (w, h)."""
    w, h = image_size
    far = bool(rng.random() < P_FAR)
    fill = float(rng.uniform(0.14, 0.3) if far else rng.uniform(0.35, 0.75))
    edge_on = bool(rng.random() < P_EDGE_ON)
    tilt = (60.0, 85.0) if edge_on else (0.0, 60.0)
    centre = None
    if rng.random() < P_CUT:
        length_px = fill * min(w, h)
        d = float(rng.uniform(0.1, 0.45)) * length_px
        along = float(rng.uniform(0.2, 0.8))
        side = int(rng.integers(4))
        centre = ((d, along * (h - 1)), (w - 1 - d, along * (h - 1)),
                  (along * (w - 1), d), (along * (w - 1), h - 1 - d))[side]
    motion = float(rng.uniform(3.0, 16.0)) if rng.random() < P_MOTION else 0.0
    motion_deg = float(rng.uniform(0.0, 180.0))
    defocus = float(rng.uniform(1.0, 2.5)) if rng.random() < P_DEFOCUS else 0.0
    light = rng.random()
    if light < P_DIM:
        gain, noise = float(rng.uniform(0.3, 0.6)), float(rng.uniform(6.0, 14.0))
    elif light < P_DIM + P_BRIGHT:
        gain, noise = float(rng.uniform(1.4, 1.9)), float(rng.uniform(1.0, 3.0))
    else:
        gain, noise = float(rng.uniform(0.85, 1.15)), float(rng.uniform(1.0, 4.0))
    occluders = int(rng.integers(1, 3)) if rng.random() < P_OCCLUDED else 0
    quality = int(rng.integers(40, 96))
    return WebcamConditions(fill, tilt, centre, far, edge_on, motion, motion_deg, defocus, gain, noise, occluders,
                            quality)


def render_settings(settings: SynthSettings, cond: WebcamConditions) -> SynthSettings:
    """``settings`` with the hand's size and tilt of ``cond`` (pass ``cond.centre_px`` to the
    renderer's ``centre_px``)."""
    return dataclasses.replace(settings, fill=(cond.fill, cond.fill), min_tilt_deg=cond.tilt_deg[0],
                               max_tilt_deg=cond.tilt_deg[1])


def paint_occluders(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, count: int) -> float:
    """Draw ``count`` random discs or boxes over the hand's ``mask`` (H, W) bool into ``img``
    (H, W, 3) float32, in place; each 10-35 % of the hand's size (square root of its area).
    Returns the fraction of the hand's pixels they cover."""
    import cv2

    if count <= 0 or not mask.any():
        return 0.0
    ys, xs = np.nonzero(mask)
    occ = np.zeros(mask.shape, np.uint8)
    for _ in range(count):
        j = int(rng.integers(len(ys)))
        r = float(np.sqrt(mask.sum()) * rng.uniform(0.1, 0.35))
        colour = rng.uniform(0, 255, 3).tolist()
        centre = (int(xs[j]), int(ys[j]))
        if rng.random() < 0.5:
            cv2.circle(img, centre, int(r), colour, -1)
            cv2.circle(occ, centre, int(r), 1, -1)
        else:
            p1 = (int(xs[j] + r * rng.uniform(0.5, 2)), int(ys[j] + r * rng.uniform(0.3, 1.5)))
            cv2.rectangle(img, centre, p1, colour, -1)
            cv2.rectangle(occ, centre, p1, 1, -1)
    return float((occ.astype(bool) & mask).sum() / max(mask.sum(), 1))


def motion_kernel(length_px: float, angle_deg: float) -> np.ndarray:
    """(n, n) float32 line kernel of about ``length_px`` pixels at ``angle_deg``, summing to 1."""
    import cv2

    n = max(3, int(round(length_px)) | 1)
    kernel = np.zeros((n, n), np.float32)
    kernel[n // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), float(angle_deg), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (n, n))
    return kernel / max(float(kernel.sum()), 1e-6)


def apply_conditions(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray,
                     cond: WebcamConditions) -> tuple[np.ndarray, float]:
    """Degrade a rendered (H, W, 3) uint8 ``image`` (hand ``mask`` (H, W) bool) by ``cond``:
    occluders (in the scene, so blurred with it), motion blur, defocus, exposure and sensor
    noise, JPEG. Returns the image and the occluded fraction of the hand."""
    import cv2

    img = image.astype(np.float32)
    occluded = paint_occluders(rng, img, mask, cond.occluders)
    if cond.motion_px > 0:
        img = cv2.filter2D(img, -1, motion_kernel(cond.motion_px, cond.motion_deg))
    if cond.defocus_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), cond.defocus_sigma)
    img = img * cond.gain + rng.normal(0.0, cond.noise_std, img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, cond.jpeg_quality])
    if ok:
        out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out, occluded
