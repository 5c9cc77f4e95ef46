"""The hand model layer: smplx's MANO layer over a :class:`HandModelData`.

smplx does the linear blend skinning with shape and pose blend shapes; this layer feeds it
our model data (open hand or MANO), appends the five fingertip vertices to its 16 joints and
returns the 21 keypoints in MediaPipe order. Batched, differentiable, CPU or CUDA.

Pose is ``(B, 48)`` axis-angle: the global rotation (about the wrist joint) followed by 15
joint rotations, relative to the flat rest pose, radians, as in smplx. Shape is ``(B, S)``
with ``beta ~ N(0, I)``. Translation ``(B, 3)`` is added after posing, metres.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass

import numpy as np
import smplx
import torch
from smplx.utils import Struct

from core.keypoints import MANO21_TO_MEDIAPIPE, Keypoint
from core.model.data import HandModelData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HandOutput:
    """Result of a forward pass, model (or camera) frame, metres.

    Attributes:
        vertices: (B, V, 3) float posed mesh vertices.
        joints: (B, 16, 3) float joints in MANO order.
        keypoints: (B, 21, 3) float keypoints in MediaPipe order (joints + fingertip vertices).
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    keypoints: torch.Tensor

    def detach(self) -> "HandOutput":
        return HandOutput(self.vertices.detach(), self.joints.detach(), self.keypoints.detach())


class HandModel(torch.nn.Module):
    """A differentiable hand model (buffers only; parameters belong to the caller).

    Args:
        data: the model arrays (:func:`core.model.load_model_data`).
        device: torch device for the buffers.
        dtype: floating type of the buffers and outputs.
    """

    def __init__(
        self,
        data: HandModelData,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.data = data
        kintree = np.stack([data.parents, np.arange(len(data.parents))]).astype(np.int64)
        struct = Struct(
            v_template=data.v_template,
            f=data.faces,
            shapedirs=data.shapedirs,
            posedirs=data.posedirs,
            J_regressor=data.j_regressor,
            weights=data.weights,
            kintree_table=kintree,
            hands_components=data.hands_components,
            hands_mean=data.hands_mean,
        )
        # smplx prints (not logs) a warning about MANO's 10 shape components; keep it quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            self.mano = self._make_mano(data, struct, dtype)
        self.register_buffer("tip_ids", torch.as_tensor(data.tip_vertex_ids, dtype=torch.long))
        self.register_buffer("mp_order", torch.as_tensor(MANO21_TO_MEDIAPIPE, dtype=torch.long))
        self.register_buffer("faces", torch.as_tensor(data.faces, dtype=torch.long))
        self.to(device)

    @staticmethod
    def _make_mano(data: HandModelData, struct: Struct, dtype: torch.dtype) -> smplx.MANO:
        return smplx.MANO(
            model_path=data.source,
            data_struct=struct,
            is_rhand=data.side == "right",
            use_pca=False,
            flat_hand_mean=True,
            num_betas=data.num_betas,
            create_global_orient=False,
            create_hand_pose=False,
            create_betas=False,
            create_transl=False,
            create_body_pose=False,
            dtype=dtype,
        )

    @property
    def num_betas(self) -> int:
        return self.data.num_betas

    @property
    def side(self) -> str:
        return self.data.side

    def _batch(self, *tensors: torch.Tensor | None) -> int:
        sizes = {t.shape[0] for t in tensors if t is not None}
        if len(sizes) > 1:
            raise ValueError(f"inconsistent batch sizes {sorted(sizes)}")
        return sizes.pop() if sizes else 1

    def forward(
        self,
        pose: torch.Tensor | None = None,
        betas: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
    ) -> HandOutput:
        """Pose and shape the hand.

        Args:
            pose: (B, 48) axis-angle, radians; None for the flat rest pose.
            betas: (B, S) shape coefficients; None for the mean shape.
            transl: (B, 3) translation in metres; None for none.
        """
        buf = self.mano.shapedirs
        b = self._batch(pose, betas, transl)
        if pose is None:
            pose = buf.new_zeros(b, 48)
        if pose.ndim != 2 or pose.shape[1] != 48:
            raise ValueError(f"pose must be (B, 48), got {tuple(pose.shape)}")
        if betas is None:
            betas = buf.new_zeros(b, self.num_betas)
        if betas.ndim != 2 or betas.shape[1] != self.num_betas:
            raise ValueError(f"betas must be (B, {self.num_betas}), got {tuple(betas.shape)}")
        out = self.mano(
            betas=betas, global_orient=pose[:, :3], hand_pose=pose[:, 3:], transl=transl
        )
        vertices, joints = out.vertices, out.joints
        keypoints = torch.cat([joints, vertices[:, self.tip_ids]], dim=1)[:, self.mp_order]
        return HandOutput(vertices=vertices, joints=joints, keypoints=keypoints)

    def rest(self, betas: torch.Tensor | None = None) -> HandOutput:
        """The shape-only rest mesh: flat pose, no translation. betas: (B, S) or None."""
        return self.forward(None, betas, None)

    def measures(self, betas: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hand length and width in metres at the given shapes (docs/ARCHITECTURE.md, "Hand measures").

        Length: wrist to middle fingertip, width: index MCP to ring MCP, flat rest pose.

        Returns:
            (length (B,), width (B,)), metres.
        """
        return hand_measures(self.rest(betas).keypoints)


def hand_measures(rest_keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand length and width from rest-pose keypoints (B, 21, 3) in MediaPipe order, metres."""
    kp = rest_keypoints
    length = (kp[:, Keypoint.MIDDLE_TIP] - kp[:, Keypoint.WRIST]).norm(dim=-1)
    width = (kp[:, Keypoint.RING_MCP] - kp[:, Keypoint.INDEX_MCP]).norm(dim=-1)
    return length, width
