"""Synthetic people: hand skeletons that differ from the template the way real hands do.

The model's 10-D shape space is mostly overall size, so shape-space subjects all share the
template's proportions. Real people differ in the proportions themselves: finger and phalanx
lengths vary *independently of overall size*, and so does the palm's width-to-length ratio.
:func:`sample_person_skeleton` draws such a skeleton (21 rest keypoints, the base model's rest
frame) as log-normal factors on the base's segments:

* **overall size**, sigma :data:`SIGMA_SIZE` = 5 %: adult hand-length standard deviations are
  about 8-10 mm on means of 175-195 mm (e.g. the US Army ANSUR II survey, Gordon et al. 2014).
* **finger length at a given size**, one factor per finger (its three phalanges together),
  sigma :data:`SIGMA_FINGER` = 4 %: Chatzioglou, Pinar & Govsa (2024, Anat. Cell Biol.
  57(2):172-182; 51 adults) report finger lengths with coefficients of variation of 6.4-8.1 %
  (thumb 49.5 +- 5.5 mm, index 63.9 +- 4.1, middle 70.7 +- 5.2, ring 65.5 +- 4.8, little
  53.3 +- 4.3). Part of that is overall size; with a correlation of about 0.85 between a
  finger's length and the hand's (our assumption, not their figure) the size-free part is
  about 7 % x sqrt(1 - 0.85^2) = 3.7 %.
* **each phalanx within its finger**, sigma :data:`SIGMA_SEGMENT` = 4 %: Buryanov & Kotiuk
  (2010, "Proportions of hand segments", Int. J. Morphol. 28(3):755-758) measured the
  phalanges of real hands and found their proportions vary between people and follow no fixed
  rule (such as the Fibonacci ratios once claimed). We cite them for that finding; the 4 %
  is our choice, inside the 4-6 % band of the team's skeleton prior
  (:data:`core.model.skeleton.SIGMA_BONE`).
* **palm width-to-length ratio**, sigma :data:`SIGMA_PALM_WIDTH` = 4.5 %: the spread of hand
  breadth over hand length in adult surveys (ANSUR II, as above) is about 4-5 % (our reading).
* **palm length** (wrist to the knuckles, the metacarpals) at a given size, sigma
  :data:`SIGMA_PALM_LENGTH` = 3 %, and the thumb's base moved within the palm by
  :data:`SIGMA_THUMB_BASE` = 4 % of the palm length (our choices; the thumb's carpometacarpal
  position varies visibly between hands).

Every factor is clipped at 2.5 sigma. Bone *directions* stay the base's (the rest pose keeps
its joint axes). :func:`person_layers` turns a skeleton into the model layers the synthetic
renderer draws (:func:`core.model.personal.personal_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.keypoints import BONES, Keypoint

SIGMA_SIZE = 0.05
SIGMA_FINGER = 0.04
SIGMA_SEGMENT = 0.04
SIGMA_PALM_WIDTH = 0.045
SIGMA_PALM_LENGTH = 0.03
SIGMA_THUMB_BASE = 0.04
_CLIP = 2.5

#: The keypoints of each finger's chain (thumb first), proximal to tip; the first is the
#: segment's root on the palm.
FINGERS: tuple[tuple[int, ...], ...] = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
#: The palm points the wrist carries (thumb CMC and the four MCPs).
PALM_POINTS: tuple[int, ...] = (1, 5, 9, 13, 17)


@dataclass(frozen=True)
class PersonFactors:
    """The log-normal factors of one synthetic person (all 1.0: the base skeleton).

    Attributes:
        size: overall scale. palm_width: across-palm scale of the palm points (model z).
        palm_length: scale of the palm points along the hand (model x).
        finger: (5,) per-finger length factors (thumb first). segment: (20,) per-bone factors
            (child order of :data:`core.keypoints.BONES`; 1.0 for the palm's five bones).
        thumb_base: (3,) thumb CMC displacement in base palm lengths.
    """

    size: float
    palm_width: float
    palm_length: float
    finger: np.ndarray
    segment: np.ndarray
    thumb_base: np.ndarray


def _lognormal(rng: np.random.Generator, sigma: float, n: int | None = None) -> np.ndarray | float:
    z = np.clip(rng.standard_normal(n), -_CLIP, _CLIP)
    return np.exp(sigma * z)


def sample_person_factors(rng: np.random.Generator, size: bool = True) -> PersonFactors:
    """Draw one person's factors (module docstring); ``size=False`` keeps the base's size."""
    segment = np.asarray(_lognormal(rng, SIGMA_SEGMENT, 20), dtype=np.float64)
    segment[[c - 1 for p, c in BONES if p == Keypoint.WRIST]] = 1.0
    return PersonFactors(
        size=float(_lognormal(rng, SIGMA_SIZE)) if size else 1.0,
        palm_width=float(_lognormal(rng, SIGMA_PALM_WIDTH)),
        palm_length=float(_lognormal(rng, SIGMA_PALM_LENGTH)),
        finger=np.asarray(_lognormal(rng, SIGMA_FINGER, 5), dtype=np.float64),
        segment=segment,
        thumb_base=SIGMA_THUMB_BASE * np.clip(rng.standard_normal(3), -_CLIP, _CLIP) * np.array([1.0, 0.5, 1.0]),
    )


def person_skeleton(base_keypoints: np.ndarray, f: PersonFactors) -> np.ndarray:
    """(21, 3) the skeleton of ``f`` from the base rest keypoints (model frame: x along the
    hand from the wrist, z across the palm, y out of the palm plane; metres)."""
    base = np.asarray(base_keypoints, dtype=np.float64)
    if base.shape != (21, 3):
        raise ValueError(f"expected (21, 3) base keypoints, got {base.shape}")
    wrist = base[Keypoint.WRIST]
    palm_len = float(np.linalg.norm(base[Keypoint.MIDDLE_MCP] - wrist))
    out = base.copy()
    # The palm: its points about the wrist, stretched along (x) and across (z) the hand.
    for k in PALM_POINTS:
        d = base[k] - wrist
        out[k] = wrist + d * np.array([f.palm_length, 1.0, f.palm_width])
    out[Keypoint.THUMB_CMC] += f.thumb_base * palm_len
    # The fingers: base bone directions, lengths scaled per finger and per phalanx.
    for finger, chain in enumerate(FINGERS):
        for a, b in zip(chain[:-1], chain[1:]):
            out[b] = out[a] + (base[b] - base[a]) * f.finger[finger] * f.segment[b - 1]
    return wrist + (out - wrist) * f.size


def sample_person_skeleton(base_keypoints: np.ndarray, rng: np.random.Generator, size: bool = True) -> np.ndarray:
    """(21, 3) a random person's rest skeleton (see the module docstring)."""
    return person_skeleton(base_keypoints, sample_person_factors(rng, size))


def person_layers(base_right, skeleton: np.ndarray) -> dict:
    """``{"right": HandModel, "left": HandModel}`` of the personal model of a right-hand
    ``skeleton`` (the left is its mirror image), for :func:`core.synth.render.render_hand_sample`."""
    from core.model import HandModel
    from core.model.data import mirror_model
    from core.model.personal import personal_model

    right = personal_model(base_right, skeleton)
    return {"right": HandModel(right), "left": HandModel(mirror_model(right))}


#: Standard deviation of a synthetic person's finger thickness change (radius, per finger),
#: metres. Adult finger breadths at the PIP joint vary by about 1.1 mm (SD) on 18-21 mm
#: (ANSUR II, as above), about 0.55 mm of radius, partly with overall size (which the skeleton
#: already scales); we use 0.8 mm so the benchmark's effect is measurable (our choice).
SIGMA_FINGER_THICKNESS = 0.0008
#: ... of the palm's thickness change (each face of the palm), metres: hand thickness at the
#: metacarpals varies by about 2 mm (SD) on 27-30 mm (ANSUR II, our reading), 1 mm a side.
SIGMA_PALM_THICKNESS = 0.001
#: Laplacian smoothing passes over the per-region thickness field.
_SURFACE_SMOOTHING = 10


def sample_person_surface(model, rng: np.random.Generator, betas: np.ndarray | None = None) -> np.ndarray:
    """(V, 3) a random person's surface offsets (metres, ``model``'s rest frame): a thickness
    change along the rest normals, one per finger (:data:`SIGMA_FINGER_THICKNESS`) and one for
    the palm (:data:`SIGMA_PALM_THICKNESS`), blended by the skinning weights, smoothed over the
    mesh, zero at the fingertip vertices (those are the skeleton's). ``model``: the person's
    personal model without a surface (:func:`core.model.personal.personal_model`)."""
    import torch

    from core.model import HandModel
    from core.refine.mesh import MeshTopology, laplacian, vertex_normals

    layer = HandModel(model, dtype=torch.float64)
    b = None if betas is None else torch.as_tensor(betas, dtype=torch.float64)[None]
    with torch.no_grad():
        rest = layer.rest(b).vertices
        normals = vertex_normals(rest, layer.faces)[0].numpy()
    per_joint = np.zeros(16)
    per_joint[0] = SIGMA_PALM_THICKNESS * np.clip(rng.standard_normal(), -_CLIP, _CLIP)
    # MANO joint chains of index, middle, pinky, ring, thumb (1-3, 4-6, 7-9, 10-12, 13-15).
    for chain in range(5):
        per_joint[1 + 3 * chain: 4 + 3 * chain] = SIGMA_FINGER_THICKNESS * np.clip(rng.standard_normal(), -_CLIP, _CLIP)
    d = np.asarray(model.weights, dtype=np.float64) @ per_joint
    topo = MeshTopology.from_faces(model.faces, model.num_vertices)
    tips = np.asarray(model.tip_vertex_ids)
    for _ in range(_SURFACE_SMOOTHING):
        d[tips] = 0.0
        d = d - 0.5 * laplacian(torch.as_tensor(d)[None, :, None], topo)[0, :, 0].numpy()
    d[tips] = 0.0
    return d[:, None] * normals
