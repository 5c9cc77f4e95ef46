"""Face-pixel pairing by per-face bounding boxes (shared by the hard and soft rasterizers).

A face only interacts with the pixels whose centres lie inside its screen-space bounding box,
grown by a margin (the cull radius for the soft rasterizer, 0 for the hard one). These helpers
list those (face, pixel) pairs with a handful of vectorized ops, no Python loop over faces or
pixels. Faces of a batch are flattened as ``b * F + f`` and pixels as ``b * H * W + y * W + x``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PixelBoxes:
    """Inclusive integer pixel ranges of each face's (grown) bounding box, clipped to the image.

    Attributes:
        x0, x1: (BF,) int64 first and last column; empty when ``x0 > x1``.
        y0, y1: (BF,) int64 first and last row; empty when ``y0 > y1``.
    """

    x0: Tensor
    y0: Tensor
    x1: Tensor
    y1: Tensor


@dataclass(frozen=True)
class Pairs:
    """A list of (face, pixel) pairs.

    Attributes:
        face: (N,) int64 flattened face index ``b * F + f``.
        pix: (N,) int64 flattened pixel index ``b * H * W + y * W + x``.
        x, y: (N,) float pixel-centre coordinates (column, row), the dtype of the vertices.
    """

    face: Tensor
    pix: Tensor
    x: Tensor
    y: Tensor


def pixel_boxes(tri: Tensor, margin: float, height: int, width: int) -> PixelBoxes:
    """Pixel ranges whose centres lie within ``margin`` px of each face's bounding box.

    Args:
        tri: (BF, 3, 2) projected face corners in pixels (detached is fine).
        margin: growth of the box on every side, pixels, >= 0.
        height, width: image size.
    """
    c0, c1, c2 = tri.unbind(1)  # (BF, 2) each; slices are faster than amin over dim 1
    lo = torch.minimum(torch.minimum(c0, c1), c2) - margin  # (BF, 2)
    hi = torch.maximum(torch.maximum(c0, c1), c2) + margin
    # Clamp in float first so huge or non-finite coordinates cannot overflow int64; NaN
    # corners give empty boxes.
    bound = float(max(height, width) + 1)
    lo = torch.ceil(torch.nan_to_num(lo, nan=bound).clamp(-1.0, bound)).long()
    hi = torch.floor(torch.nan_to_num(hi, nan=-1.0).clamp(-1.0, bound)).long()
    return PixelBoxes(
        x0=lo[:, 0].clamp(min=0),
        y0=lo[:, 1].clamp(min=0),
        x1=hi[:, 0].clamp(max=width - 1),
        y1=hi[:, 1].clamp(max=height - 1),
    )


def box_pairs(
    boxes: PixelBoxes,
    height: int,
    width: int,
    faces_per_batch: int,
    dtype: torch.dtype,
    face_subset: Tensor | None = None,
) -> Pairs:
    """Every (face, pixel) pair with the pixel centre inside the face's box.

    Args:
        boxes: per-face pixel ranges, faces flattened as ``b * F + f``.
        height, width: image size.
        faces_per_batch: F, to recover the batch index of a flattened face.
        dtype: float dtype of the returned pixel coordinates.
        face_subset: optional (M,) int64 flattened face indices to pair (others skipped).

    Returns:
        The pairs, grouped by face, pixels of a face in row-major order.
    """
    x0, y0, x1, y1 = boxes.x0, boxes.y0, boxes.x1, boxes.y1
    faces = face_subset
    if faces is not None:
        x0, y0, x1, y1 = x0[faces], y0[faces], x1[faces], y1[faces]
    box_w = (x1 - x0 + 1).clamp(min=0)
    counts = box_w * (y1 - y0 + 1).clamp(min=0)
    total = int(counts.sum())
    device = x0.device
    if faces is None:
        faces = torch.arange(counts.shape[0], device=device)
    owner = torch.repeat_interleave(torch.arange(counts.shape[0], device=device), counts,
                                    output_size=total)  # (N,) row into the (subset) boxes
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=device) - starts[owner]
    w = box_w[owner]
    px = x0[owner] + torch.remainder(local, w)
    py = y0[owner] + torch.div(local, w, rounding_mode="floor")
    face = faces[owner]
    batch = torch.div(face, faces_per_batch, rounding_mode="floor")
    pix = (batch * height + py) * width + px
    return Pairs(face=face, pix=pix, x=px.to(dtype), y=py.to(dtype))
