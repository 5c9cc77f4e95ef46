"""The hand as a chain of rigid bone segments: the form the fitting works in.

The 21 keypoints (MediaPipe order) hang off 20 segments, one per bone of the keypoint tree
(``core.keypoints.BONES``). Segment ``s`` runs from keypoint ``parent(s)`` to ``child(s)``
and turns with the global rotation ``G[a(s)]`` of the model joint at its parent keypoint (the
wrist's rotation for the five segments leaving the wrist). With the wrist at ``t``::

    keypoint_k = t + sum over segments s on the path wrist -> k of  G[a(s)] @ b_s(beta)

where ``b_s(beta) = b0_s + bdirs_s @ beta`` is the segment in the flat rest pose. This is
exactly the model's forward kinematics, fingertips included when they are skinned rigidly to
their distal joint (the open hand's are; MANO's nearly so). Because every keypoint is a sum
of rotated constant vectors, the Jacobian with respect to a small rotation ``delta_a``
applied as ``G[a] <- G[a] @ exp(delta_a)`` is ``-G[a] @ skew(b_s)`` per segment: closed form,
a few batched tensor ops.
"""

from __future__ import annotations

import torch

from core.fit.kinematics import KeypointModel
from core.keypoints import BONES, MANO_JOINT_TO_KEYPOINT, MANO_PARENTS, NUM_JOINTS

#: Keypoint -> the model joint whose rotation turns the segment leaving it (None for tips).
_KEYPOINT_JOINT = {kp: j for j, kp in enumerate(MANO_JOINT_TO_KEYPOINT)}


class Skeleton(torch.nn.Module):
    """Segment data of one hand model (see the module docstring).

    Buffers:
        seg_joint: (20,) joint index a(s) of each segment.
        incidence: (21, 20) 1 where segment s lies on the path wrist -> keypoint k.
        inc_joint: (21, 20, 16) incidence spread to the rotating joint of each segment.
        b0: (20, 3) rest segments at the mean shape, metres. bdirs: (20, 3, S).
        parents: (16,) MANO tree.
    """

    def __init__(self, kp_model: KeypointModel) -> None:
        super().__init__()
        dtype, device = kp_model.j0.dtype, kp_model.j0.device
        s = kp_model.num_betas
        # Rest keypoints are linear in beta: evaluate at 0 and at each unit beta.
        eye = torch.cat([torch.zeros(1, s), torch.eye(s)]).to(device=device, dtype=dtype)
        zero_pose = torch.zeros(s + 1, 48, device=device, dtype=dtype)
        rest, _ = kp_model(zero_pose, eye)
        parents = [p for p, _ in BONES]
        children = [c for _, c in BONES]
        segs = rest[:, children] - rest[:, parents]  # (S+1, 20, 3)
        self.register_buffer("b0", segs[0])
        self.register_buffer("bdirs", (segs[1:] - segs[0]).permute(1, 2, 0).contiguous())
        seg_joint = torch.tensor([_KEYPOINT_JOINT[p] for p in parents], device=device)
        self.register_buffer("seg_joint", seg_joint)
        inc = torch.zeros(21, 20, dtype=dtype, device=device)
        for s_idx, (_, c) in enumerate(BONES):
            inc[c, s_idx] = 1.0
        # Propagate down the tree: keypoint k's path = its parent's path + its own segment.
        for p, c in BONES:
            if p != 0:
                inc[c] = inc[c] + inc[p]
        self.register_buffer("incidence", inc)
        sel = torch.nn.functional.one_hot(seg_joint, NUM_JOINTS).to(dtype)  # (20, 16)
        self.register_buffer("inc_joint", inc[:, :, None] * sel[None])  # (21, 20, 16)
        self.register_buffer("parents", torch.tensor(MANO_PARENTS, device=device))

    def segments(self, betas: torch.Tensor) -> torch.Tensor:
        """(B, 20, 3) rest segments for shapes (B, S)."""
        return self.b0 + torch.einsum("sck,bk->bsc", self.bdirs, betas)

    def keypoints(self, G: torch.Tensor, t: torch.Tensor, segs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints from global rotations.

        Args:
            G: (B, 16, 3, 3) global joint rotations (camera frame).
            t: (B, 3) wrist position, metres.
            segs: (B, 20, 3) rest segments.

        Returns:
            keypoints (B, 21, 3) and the rotated segments (B, 20, 3).
        """
        rotated = (G[:, self.seg_joint] @ segs[..., None])[..., 0]
        return t[:, None] + self.incidence @ rotated, rotated
