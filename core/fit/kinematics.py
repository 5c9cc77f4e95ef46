"""Fast keypoints: forward kinematics of 16 joints plus the 5 skinned fingertip vertices.

The fitting terms need only the 21 keypoints, never the full mesh, so this module
precomputes the joint regressor applied to the shape space and the five fingertip
vertices' shape, pose-corrective and skinning data. It reproduces :class:`HandModel`'s
keypoints exactly (``tests/test_fit.py`` checks it against the full smplx forward pass) at a
fraction of the cost: a handful of small batched tensor ops per call.
"""

from __future__ import annotations

import torch

from core.keypoints import MANO21_TO_MEDIAPIPE
from core.model.data import HandModelData
from core.rotations import axis_angle_to_matrix

#: Joints of each kinematic level below the wrist (MCP-level, PIP-level, DIP-level), MANO order.
LEVELS = ((1, 4, 7, 10, 13), (2, 5, 8, 11, 14), (3, 6, 9, 12, 15))


class KeypointModel(torch.nn.Module):
    """Keypoints of a hand model without skinning the mesh.

    Args:
        data: the hand model.
        dtype, device: of the buffers and outputs.
    """

    def __init__(self, data: HandModelData, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        f64 = torch.float64
        v0 = torch.as_tensor(data.v_template, dtype=f64)
        sd = torch.as_tensor(data.shapedirs, dtype=f64)
        reg = torch.as_tensor(data.j_regressor, dtype=f64)
        tips = torch.as_tensor(data.tip_vertex_ids)
        self.register_buffer("j0", (reg @ v0).to(dtype))  # (16, 3)
        self.register_buffer("jdirs", torch.einsum("jv,vcs->jcs", reg, sd).to(dtype))  # (16, 3, S)
        self.register_buffer("tip0", v0[tips].to(dtype))  # (5, 3)
        self.register_buffer("tipdirs", sd[tips].to(dtype))  # (5, 3, S)
        self.register_buffer("tip_posedirs", torch.as_tensor(data.posedirs)[tips].to(dtype))  # (5, 3, 135)
        self.register_buffer("tip_weights", torch.as_tensor(data.weights)[tips].to(dtype))  # (5, 16)
        self.register_buffer("order", torch.as_tensor(MANO21_TO_MEDIAPIPE))
        self.has_posedirs = bool(data.posedirs[data.tip_vertex_ids].any())
        self.parents = tuple(int(p) for p in data.parents)
        self.to(device)

    @property
    def num_betas(self) -> int:
        return int(self.jdirs.shape[-1])

    def rest_joints(self, betas: torch.Tensor) -> torch.Tensor:
        """(B, 16, 3) joints of the flat rest pose for shapes (B, S)."""
        return self.j0 + torch.einsum("jcs,bs->bjc", self.jdirs, betas)

    def forward(self, pose: torch.Tensor, betas: torch.Tensor,
                transl: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pose the keypoints.

        Args:
            pose: (B, 48) axis-angle, radians (global rotation first).
            betas: (B, S) shape.
            transl: (B, 3) metres, or None.

        Returns:
            keypoints (B, 21, 3) in MediaPipe order and the global joint rotations (B, 16, 3, 3).
        """
        b = pose.shape[0]
        rot = axis_angle_to_matrix(pose.reshape(b, 16, 3))
        joints = self.rest_joints(betas)
        tips = self.tip0 + torch.einsum("tcs,bs->btc", self.tipdirs, betas)
        if self.has_posedirs:
            eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
            feat = (rot[:, 1:] - eye).reshape(b, 135)
            tips = tips + torch.einsum("tcp,bp->btc", self.tip_posedirs, feat)

        # Forward kinematics level by level (5 joints at a time).
        g_rot = [rot[:, 0]]
        g_pos = [joints[:, 0]]
        glob_r = {0: rot[:, 0]}
        glob_p = {0: joints[:, 0]}
        for level in LEVELS:
            idx = list(level)
            par = [self.parents[j] for j in idx]
            pr = torch.stack([glob_r[p] for p in par], dim=1)  # (B, 5, 3, 3)
            pp = torch.stack([glob_p[p] for p in par], dim=1)  # (B, 5, 3)
            bone = joints[:, idx] - joints[:, par]
            r = pr @ rot[:, idx]
            p = pp + (pr @ bone[..., None])[..., 0]
            for k, j in enumerate(idx):
                glob_r[j] = r[:, k]
                glob_p[j] = p[:, k]
        del g_rot, g_pos
        G = torch.stack([glob_r[j] for j in range(16)], dim=1)  # (B, 16, 3, 3)
        P = torch.stack([glob_p[j] for j in range(16)], dim=1)  # (B, 16, 3)
        # Skinning transforms of the tips: v' = sum_j w_j (G_j (v - J_j) + P_j).
        local = tips[:, None] - joints[:, :, None]  # (B, 16, 5, 3)
        moved = torch.einsum("bjcd,bjtd->bjtc", G, local) + P[:, :, None]
        tip_pos = torch.einsum("tj,bjtc->btc", self.tip_weights, moved)
        kp = torch.cat([P, tip_pos], dim=1)[:, self.order]
        if transl is not None:
            kp = kp + transl[:, None]
        return kp, G
