"""Fits placed at the depth a depth camera measures (RGB-D sources, :mod:`core.capture.rgbd`).

A monocular fit knows the hand's image, not its distance: its depth follows from the hand's
assumed size (the shape prior, or a profile). A registered depth map measures the distance.
:func:`align_fit_to_depth` compares the fitted mesh's visible surface with the map over the
hand's pixels (:func:`core.render.depth.compare_mesh_depth`, medians, so stray background
pixels at the silhouette's edge do not count) and moves the hand onto it:

* free shape: the whole hand is scaled about the camera centre by ``k = 1 + offset / depth``,
  which leaves every pixel of its image where it was (a point ``X`` and ``k X`` project alike):
  the translation becomes metric and the shape's size follows it
  (:func:`core.personalize.scale.pin_scale`);
* a profile's fixed shape (its size is known): the hand moves along the ray through its wrist
  to the measured depth; its image then grows or shrinks a little, which the refinement's
  depth, silhouette and keypoint terms settle.

The refinement then uses the same map as its depth term (paper 003, Eq. 7).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from core.fit import HandFit
from core.model import HandModel
from core.render.depth import DepthComparison, compare_mesh_depth

log = logging.getLogger(__name__)

__all__ = ["DepthAlignment", "align_fit_to_depth", "fit_mesh", "rescale_fit"]

#: Largest size change a depth map may make to a free-shape fit (a factor outside this range
#: means the map and the colour image disagree: wrong registration or units).
MAX_DEPTH_RESCALE = 1.6


@dataclass(frozen=True)
class DepthAlignment:
    """What :func:`align_fit_to_depth` did to one hand.

    Attributes:
        before: the fit's surface against the map (None: no pixel to compare).
        factor: the size factor applied (free shape), 1.0 when only translated or untouched.
        shift_m: how far the wrist moved in depth, metres (0 when untouched).
    """

    before: DepthComparison | None
    factor: float = 1.0
    shift_m: float = 0.0


def fit_mesh(layer: HandModel, fit: HandFit) -> np.ndarray:
    """(V, 3) float32 vertices of a fit, camera frame, metres."""
    import torch

    dev = next(iter(layer.buffers())).device
    with torch.no_grad():
        out = layer(*(torch.as_tensor(np.asarray(a, np.float32), device=dev)[None]
                      for a in (fit.pose, fit.betas, fit.transl)))
    return out.vertices[0].cpu().numpy().astype(np.float32)


def align_fit_to_depth(fitter, layer: HandModel, fit: HandFit, keypoints_2d: np.ndarray, K: np.ndarray,
                       image_size: tuple[int, int], depth: np.ndarray, mask: np.ndarray | None = None,
                       fixed_shape: bool = False, min_pixels: int = 30) -> tuple[HandFit, DepthAlignment]:
    """The fit moved onto a registered depth map (see the module docstring).

    Args:
        fitter: the :class:`~core.fit.TailorFitter` that made the fit (its ``compose``).
        layer: the fit's hand model layer (its side). fit: a perspective fit.
        keypoints_2d: (21, 2) the detected keypoints, pixels (for the reprojection error).
        K: (3, 3) the colour camera. image_size: (width, height).
        depth: (H, W) float metres on the image's pixels, 0 unknown.
        mask: the hand's segmentation (H, W), or None (the rendered silhouette alone).
        fixed_shape: the shape is a profile's (translate only).
        min_pixels: fewer compared pixels leave the fit as it is.

    Returns:
        (the moved fit, what was done). The fit is returned unchanged when the map does not
        cover enough of the hand or asks for an implausible size change.
    """
    if fit.projection != "perspective":
        return fit, DepthAlignment(None)
    cmp = compare_mesh_depth(fit_mesh(layer, fit), layer.data.faces, K, depth, mask, max_side=48)
    if cmp is None or cmp.pixels < min_pixels or not cmp.rendered_m > 0:
        return fit, DepthAlignment(cmp)
    factor = 1.0 + cmp.offset_m / cmp.rendered_m
    shift = cmp.offset_m if fixed_shape else None
    moved, done = rescale_fit(fitter, layer, fit, factor, keypoints_2d, K, image_size, shift)
    return moved, DepthAlignment(cmp, *done) if moved is not fit else DepthAlignment(cmp)


def rescale_fit(fitter, layer: HandModel, fit: HandFit, factor: float, keypoints_2d: np.ndarray, K: np.ndarray,
                image_size: tuple[int, int], shift_m: float | None = None) -> tuple[HandFit, tuple[float, float]]:
    """The fit scaled about the camera centre by ``factor`` (its image unchanged, its size and
    distance times ``factor``), or, with ``shift_m`` (a fixed shape), moved that far in depth
    along its wrist's ray instead.

    Returns:
        (the new fit, (size factor applied, wrist depth change in metres)); the fit itself and
        (1, 0) when the change is implausible (a factor outside 1/:data:`MAX_DEPTH_RESCALE` to
        :data:`MAX_DEPTH_RESCALE`, or a wrist that would reach the camera).
    """
    Kd = np.asarray(K, dtype=np.float64)
    wrist = np.asarray(fit.keypoints_3d[0], dtype=np.float64)
    u, v = Kd[0, 0] * wrist[0] / wrist[2] + Kd[0, 2], Kd[1, 1] * wrist[1] / wrist[2] + Kd[1, 2]
    betas = fit.betas
    if shift_m is not None:
        z = wrist[2] + shift_m
        if not z > 0.02:
            return fit, (1.0, 0.0)
        factor = 1.0
    else:
        if not 1.0 / MAX_DEPTH_RESCALE <= factor <= MAX_DEPTH_RESCALE:
            log.debug("a measured depth asks to scale the hand by %.2f; left as fitted", factor)
            return fit, (1.0, 0.0)
        from core.personalize.scale import pin_scale

        betas = pin_scale(layer, fit.betas, factor)
        z = wrist[2] * factor
    moved = fitter.compose(fit.side, fit.pose, betas, np.array([u, v, math.log(Kd[0, 0] / z)]), Kd,
                           image_size, keypoints_2d, fit.iterations)
    return moved, (float(factor), float(z - wrist[2]))
