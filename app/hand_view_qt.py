"""The 3D hand view on a hardware OpenGL driver: a pyvistaqt ``QtInteractor``.

With a GPU driver a render takes a millisecond or two, so rendering on the GUI thread, as
pyvistaqt's interactor does, costs nothing and gives its native interaction. With software
OpenGL (llvmpipe under Xvfb, VMs) a render takes 27-58 ms and would block the window as long:
there :func:`app.hand_view.make_hand_view` picks the threaded :class:`app.hand_view.HandView`
instead. Both have the same methods.

All VTK mutation happens here, on the GUI thread. A model with UV coordinates is shown split
at its UV seams (one VTK point per vertex and UV pair) so a skin texture can be applied;
normals come from the unsplit mesh, so the seams do not show in the shading.
"""

from __future__ import annotations

import time

import numpy as np
import pyvista as pv
from PySide6.QtWidgets import QWidget
from pyvistaqt import QtInteractor
from vtkmodules.vtkRenderingCore import vtkRenderer

from app.hand_view import (
    LIVE_DISTANCE_M,
    SKIN_RGB,
    MeshViewState,
    fit_view_angle,
    hand_polydata,
    model_view,
    skeleton_actors,
    skeleton_polydata,
    texture_image,
)
from core.export import vertex_normals


class InteractorHandView(MeshViewState, QtInteractor):
    """Orbitable view of one hand mesh, with wireframe, skeleton and texture toggles, rendered
    on the GUI thread (hardware OpenGL)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, multi_samples=0, auto_update=False)
        # A software OpenGL (llvmpipe under Xvfb, VMs) pays per pixel: no MSAA, no gradient, no
        # translucency. The skeleton is drawn in an overlay layer on top of the opaque skin.
        self.ren_win.SetMultiSamples(0)
        self.set_background("#262b33")
        self._overlay = vtkRenderer()
        self._overlay.SetLayer(1)
        self._overlay.InteractiveOff()
        self._overlay.SetActiveCamera(self.renderer.GetActiveCamera())
        self.ren_win.SetNumberOfLayers(2)
        self.ren_win.AddRenderer(self._overlay)
        self._init_state()
        self._skeleton: pv.PolyData | None = None
        self._mesh_actor = None
        self._skel_actors: list = []
        self._texture: pv.Texture | None = None
        self._texture_size: tuple[int, int] | None = None
        self.ren_win.AddObserver("EndEvent", self._count_render)
        self.add_axes(line_width=2)

    def _count_render(self, *_: object) -> None:
        self.renders += 1
        self.render_times.append(time.perf_counter())

    # ----------------------------------------------------------------- content

    def set_hand(
        self,
        vertices: np.ndarray,
        faces: np.ndarray,
        keypoints: np.ndarray,
        camera_frame: bool = False,
        uv: np.ndarray | None = None,
        uv_faces: np.ndarray | None = None,
        normals: np.ndarray | None = None,
    ) -> None:
        """Show a new hand, or update the vertices in place when the topology is unchanged.

        Args:
            vertices: (V, 3) metres; faces: (F, 3); keypoints: (21, 3) metres.
            camera_frame: the points are in the OpenCV camera frame (look from the camera)
                rather than the model frame.
            uv, uv_faces: (T, 2) texture coordinates and (F, 3) faces into them, for a texture.
            normals: (V, 3) unit vertex normals when the caller has them, else computed here.
        """
        vertices = np.asarray(vertices, dtype=np.float32)
        if camera_frame != self._camera_frame:
            self._camera_frame = camera_frame
            self.clear_actors()
        if self._same_topology(vertices, faces, uv, uv_faces):
            self._mesh.points = self._split_points(vertices)
            if normals is None:
                normals = vertex_normals(vertices, self._faces)
            self._mesh.point_data["Normals"] = self._split_points(normals)
            self._skeleton.points = np.asarray(keypoints, dtype=np.float32)
            self._skeleton.Modified()
            self._count_update()
            return
        self.clear_actors()
        self._keep_topology(faces, uv_faces)
        if normals is None:
            normals = vertex_normals(vertices, self._faces)
        self._mesh, self._vertex_index = hand_polydata(vertices, self._faces, normals, uv, uv_faces)
        self._mesh_actor = self.add_mesh(
            self._mesh, color=SKIN_RGB, smooth_shading=True, specular=0.2,
            show_edges=self.wireframe, edge_color="#5a4a40", name="hand",
        )
        self._apply_texture()
        self._skeleton = skeleton_polydata(keypoints)
        self._overlay.RemoveAllViewProps()
        self._skel_actors = skeleton_actors(self._overlay, self._skeleton)
        self._apply_visibility()
        self.reset_view()
        self._count_update()

    def _count_update(self) -> None:
        # One render per update: schedule a paint (paintGL renders) instead of rendering now
        # and again in the paint that VTK's frame event schedules.
        QWidget.update(self)
        self.updates += 1
        self.update_times.append(time.perf_counter())

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Nothing to wait for: this view renders on the GUI thread (same API as HandView)."""
        return True

    def stop_rendering(self) -> None:
        """Nothing to stop: no render thread (same API as HandView)."""

    @property
    def textured(self) -> bool:
        return self._texture is not None and self._vertex_index is not None and self.show_texture

    def set_texture(self, image: np.ndarray | None) -> None:
        """(S, S, 3) uint8 skin texture (top row first, UV origin bottom-left), or None.

        An update of the same size replaces the pixels of the existing texture in place.
        """
        if image is None:
            self._texture = None
        else:
            data = texture_image(image)
            w, h = data.dimensions[:2]
            if self._texture is None or self._texture_size != (w, h):
                self._texture = pv.Texture()
                self._texture.InterpolateOn()
            self._texture.SetInputDataObject(data)
            self._texture_size = (w, h)
        self._apply_texture()
        QWidget.update(self)  # painted with the next frame, not rendered twice now

    def set_texture_visible(self, on: bool) -> None:
        self.show_texture = on
        self._apply_texture()
        self.render()

    def _apply_texture(self) -> None:
        actor = self._mesh_actor
        if actor is None:
            return
        if self.textured:
            actor.texture = self._texture
            actor.GetProperty().SetColor(1.0, 1.0, 1.0)
        else:
            actor.texture = None
            actor.GetProperty().SetColor(*SKIN_RGB)

    # ----------------------------------------------------------------- view

    def reset_view(self) -> None:
        """Model frame: look at the back of the hand, fingers up (fingers +x, palm -y).
        Camera frame: look from the camera (OpenCV: z forward, y down)."""
        if self._camera_frame:
            # The live hand is centred at the origin (about 0.2 m across): look from the camera.
            self.camera_position = [(0.0, 0.0, -LIVE_DISTANCE_M), (0.0, 0.0, 0.0), (0.0, -1.0, 0.0)]
            self.reset_camera_clipping_range()
        else:
            vector, up = model_view(None if self._skeleton is None else np.asarray(self._skeleton.points))
            self.view_vector(vector, viewup=up)
            self.reset_camera()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().resizeEvent(event)
        fit_view_angle(self.renderer.GetActiveCamera(), self.width(), self.height())

    def clear_actors(self) -> None:
        self.remove_actor("hand", render=False)
        self._overlay.RemoveAllViewProps()
        self._skel_actors = []
        self._mesh = None
        self._mesh_actor = None
        self._faces = None
        self._uv_faces = None

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

