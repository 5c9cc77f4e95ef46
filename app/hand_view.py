"""The 3D hand view: a pyvistaqt ``QtInteractor`` showing the hand mesh and its skeleton.

All VTK mutation happens here, on the GUI thread.
"""

from __future__ import annotations

import numpy as np
import pyvista as pv
from pyvistaqt import QtInteractor
from PySide6.QtWidgets import QWidget

from core.keypoints import BONES

SKIN_RGB = (0.91, 0.74, 0.64)


def faces_to_vtk(faces: np.ndarray) -> np.ndarray:
    """(F, 3) triangles -> VTK's flat cell array [3, a, b, c, 3, ...]."""
    f = np.asarray(faces, dtype=np.int64)
    return np.hstack([np.full((len(f), 1), 3, dtype=np.int64), f]).ravel()


def skeleton_polydata(keypoints: np.ndarray) -> pv.PolyData:
    """Lines along the 20 bones of the 21 keypoints (MediaPipe order)."""
    lines = np.array([[2, p, c] for p, c in BONES], dtype=np.int64).ravel()
    return pv.PolyData(np.asarray(keypoints, dtype=np.float32), lines=lines)


class HandView(QtInteractor):
    """Orbitable view of one hand mesh, with wireframe and skeleton toggles."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.set_background("#20242b", top="#3a4250")
        self._mesh: pv.PolyData | None = None
        self._skeleton: pv.PolyData | None = None
        self._mesh_actor = None
        self._skel_actors: list = []
        self.show_skeleton = True
        self.wireframe = False
        self._camera_frame = False
        self.add_axes(line_width=2)

    def set_hand(self, vertices: np.ndarray, faces: np.ndarray, keypoints: np.ndarray, camera_frame: bool = False) -> None:
        """Show a new hand, or update the vertices in place when the topology is unchanged.

        Args:
            vertices: (V, 3) metres; faces: (F, 3); keypoints: (21, 3) metres.
            camera_frame: the points are in the OpenCV camera frame (look from the camera)
                rather than the model frame.
        """
        if camera_frame != self._camera_frame:
            self._camera_frame = camera_frame
            self.clear_actors()
        if self._mesh is not None and self._mesh.n_points == len(vertices):
            self._mesh.points = np.asarray(vertices, dtype=np.float32)
            self._mesh.compute_normals(inplace=True, cell_normals=False, split_vertices=False)
            self._skeleton.points = np.asarray(keypoints, dtype=np.float32)
            self.render()
            return
        self.clear_actors()
        self._mesh = pv.PolyData(np.asarray(vertices, dtype=np.float32), faces_to_vtk(faces))
        self._mesh.compute_normals(inplace=True, cell_normals=False, split_vertices=False)
        self._mesh_actor = self.add_mesh(
            self._mesh, color=SKIN_RGB, smooth_shading=True, specular=0.2,
            show_edges=self.wireframe, edge_color="#5a4a40", name="hand",
        )
        self._skeleton = skeleton_polydata(keypoints)
        self._skel_actors = [
            self.add_mesh(self._skeleton, color="#e8553e", line_width=3, name="bones"),
            self.add_points(self._skeleton, color="#ffd166", point_size=9,
                            render_points_as_spheres=True, name="joints"),
        ]
        self._apply_visibility()
        self.reset_view()
        self.render()

    def reset_view(self) -> None:
        """Model frame: look at the back of the hand, fingers up (fingers +x, palm -y).
        Camera frame: look from the camera (OpenCV: z forward, y down)."""
        if self._camera_frame:
            # The live hand is centred at the origin (about 0.2 m across): look from the camera.
            self.camera_position = [(0.0, 0.0, -0.45), (0.0, 0.0, 0.0), (0.0, -1.0, 0.0)]
            self.reset_camera_clipping_range()
        else:
            self.view_vector((0.15, 1.0, 0.35), viewup=(1.0, 0.0, 0.0))
            self.reset_camera()

    def clear_actors(self) -> None:
        for name in ("hand", "bones", "joints"):
            self.remove_actor(name, render=False)
        self._mesh = None

    def set_wireframe(self, on: bool) -> None:
        self.wireframe = on
        if self._mesh_actor is not None:
            self._mesh_actor.GetProperty().SetEdgeVisibility(on)
            self.render()

    def set_skeleton_visible(self, on: bool) -> None:
        self.show_skeleton = on
        self._apply_visibility()
        self.render()

    def _apply_visibility(self) -> None:
        for actor in self._skel_actors:
            actor.SetVisibility(self.show_skeleton)
        if self._mesh_actor is not None:
            # See the skeleton through a translucent skin.
            self._mesh_actor.GetProperty().SetOpacity(0.55 if self.show_skeleton else 1.0)
