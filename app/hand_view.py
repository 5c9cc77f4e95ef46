"""The 3D hand view: the hand mesh and its skeleton, rendered by VTK off the GUI thread.

A render of this view takes 10-60 ms with software OpenGL (llvmpipe under Xvfb, VMs), more
with load on the CPU; done on the GUI thread, as a pyvistaqt ``QtInteractor`` does, that
blocked the window as long. So each :class:`HandView` renders in its own thread into an
off-screen VTK window, and the widget only blits the last image (about 1 ms). Mouse input
goes to a VTK trackball interactor in that thread: the view orbits (left drag), pans (middle
or shift-left drag) and zooms (wheel, right drag) as pyvista's views do.

Threads: after construction, every VTK object that can touch OpenGL (render, resize, replace
data or textures, remove props) is used by the render thread only. The GUI thread hands it
work as commands, run in order before the next render, and per-frame data in one-slot
mailboxes (mesh points, texture: the latest wins, so a slow render never makes a queue grow).
It sets plain property flags (visibility, edges) itself, and never waits for a render except
in :meth:`HandView.render` and :meth:`HandView.wait_idle`.

A model with UV coordinates is shown split at its UV seams (one VTK point per vertex and UV
pair) so a skin texture can be applied; normals come from the unsplit mesh, so the seams do
not show in the shading.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pyvista as pv
from PySide6.QtCore import QCoreApplication, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QWidget
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonCore import vtkUnsignedCharArray
from vtkmodules.vtkFiltersGeneral import vtkVertexGlyphFilter
from vtkmodules.vtkInteractionStyle import vtkInteractorStyleTrackballCamera
from vtkmodules.vtkInteractionWidgets import vtkOrientationMarkerWidget
from vtkmodules.vtkRenderingCore import (
    vtkActor,
    vtkLight,
    vtkPolyDataMapper,
    vtkRenderer,
    vtkRenderWindow,
    vtkTexture,
)
from vtkmodules.vtkRenderingUI import vtkGenericRenderWindowInteractor

# isort: off
import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL render window)
import vtkmodules.vtkRenderingFreeType  # noqa: F401  (axis labels)
# isort: on

from core.export import split_uv_seams, vertex_normals
from core.keypoints import BONES, Keypoint

if TYPE_CHECKING:
    from app.hand_view_qt import InteractorHandView

log = logging.getLogger(__name__)

SKIN_RGB = (0.91, 0.74, 0.64)
BACKGROUND_RGB = (0x26 / 255, 0x2B / 255, 0x33 / 255)
#: Side of the texture shown live (the captured one is larger; the export keeps it all).
DISPLAY_TEXTURE_SIZE = 512
#: Renders per second at most (mouse moves and frames arriving faster are merged).
MAX_RENDER_FPS = 40.0
#: How far from a live hand (centred at the origin) the view looks, metres: with the 30 degree
#: view angle across the narrower side, a spread hand of about 0.25 m fits.
LIVE_DISTANCE_M = 0.48

_UNSET = object()
#: Held around every OpenGL use of VTK (context creation, render, finalize) in any thread:
#: Mesa's software driver shares per-screen state between the contexts of one process, and
#: two views (the main one and the calibration panel's) creating, rendering and destroying
#: contexts at once in their own threads crashed now and then (about 1 run in 10 of the GUI
#: tests). One view at a time costs nothing: they never need to render at the same instant.
GL_LOCK = threading.RLock()


def faces_to_vtk(faces: np.ndarray) -> np.ndarray:
    """(F, 3) triangles -> VTK's flat cell array [3, a, b, c, 3, ...]."""
    f = np.asarray(faces, dtype=np.int64)
    return np.hstack([np.full((len(f), 1), 3, dtype=np.int64), f]).ravel()


def model_view(keypoints: np.ndarray | None) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(view vector, view up) showing a hand in the model frame from its back, fingers up.

    A right hand's fingers point along +x (palm -y); a left hand is its mirror image across
    x = 0 (:mod:`core.mirror`), fingers along -x, so its view is mirrored too: fingers up and
    its thumb on its own side (the fixed +x view-up showed a left hand upside down)."""
    sign = 1.0
    if keypoints is not None and len(keypoints) > Keypoint.MIDDLE_MCP:
        kp = np.asarray(keypoints, dtype=np.float64)
        sign = 1.0 if kp[Keypoint.MIDDLE_MCP, 0] >= kp[Keypoint.WRIST, 0] else -1.0
    return (0.15 * sign, 1.0, 0.35), (sign, 0.0, 0.0)


def fit_view_angle(camera: Any, width: int, height: int) -> None:
    """Apply the camera's view angle across the pane's narrower side. VTK applies it vertically,
    so in a pane taller than wide (the 3D view at 1280 x 720) a live hand wider than tall,
    fingers sideways or the thumb out, was cut off at the sides."""
    camera.SetUseHorizontalViewAngle(bool(width < height))


def skeleton_polydata(keypoints: np.ndarray) -> pv.PolyData:
    """Lines along the 20 bones of the 21 keypoints (MediaPipe order)."""
    lines = np.array([[2, p, c] for p, c in BONES], dtype=np.int64).ravel()
    return pv.PolyData(np.array(keypoints, dtype=np.float32), lines=lines)  # a copy: updated in place


def skeleton_actors(renderer: vtkRenderer, skeleton: pv.PolyData) -> list[vtkActor]:
    """The skeleton's bones (red lines) and joints (yellow dots), added to ``renderer``."""
    actors = []
    for colour, lines in (("#e8553e", True), ("#ffd166", False)):
        mapper = vtkPolyDataMapper()
        if lines:
            mapper.SetInputData(skeleton)
        else:
            glyphs = vtkVertexGlyphFilter()
            glyphs.SetInputData(skeleton)
            mapper.SetInputConnection(glyphs.GetOutputPort())
        actor = vtkActor()
        actor.SetMapper(mapper)
        prop = actor.GetProperty()
        prop.SetColor(pv.Color(colour).float_rgb)
        if lines:
            prop.SetLineWidth(3)
        else:
            prop.SetPointSize(9)
            prop.SetRenderPointsAsSpheres(True)
        renderer.AddActor(actor)
        actors.append(actor)
    return actors


def hand_polydata(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray,
                  uv: np.ndarray | None, uv_faces: np.ndarray | None) -> tuple[pv.PolyData, np.ndarray | None]:
    """The hand mesh for VTK, with its normals; with ``uv``, split at the UV seams.

    Returns:
        (the mesh, its own copy of the points; (P,) the model vertex of each point, or None
        when the mesh is not split).
    """
    faces = np.asarray(faces, dtype=np.int64)
    index = None
    if uv is not None and uv_faces is not None:
        split = split_uv_seams(faces, uv_faces)
        index = split.vertex_index
        mesh = pv.PolyData(vertices[index], faces_to_vtk(split.faces))
        mesh.active_texture_coordinates = np.asarray(uv, np.float32)[split.uv_index]
    else:
        mesh = pv.PolyData(vertices.copy(), faces_to_vtk(faces))
    points_normals = np.asarray(normals, dtype=np.float32)
    mesh.point_data["Normals"] = np.array(points_normals if index is None else points_normals[index])
    mesh.point_data.active_normals_name = "Normals"
    return mesh, index


def texture_image(image: np.ndarray) -> pv.ImageData:
    """(S, S, 3) uint8 texture (top row first) as VTK image data for a live view (bottom row
    first, at most :data:`DISPLAY_TEXTURE_SIZE` texels a side: uploads cost)."""
    if image.shape[0] > DISPLAY_TEXTURE_SIZE:
        image = cv2.resize(image, (DISPLAY_TEXTURE_SIZE, DISPLAY_TEXTURE_SIZE), interpolation=cv2.INTER_AREA)
    img = np.ascontiguousarray(np.flipud(image))
    h, w = img.shape[:2]
    data = pv.ImageData(dimensions=(w, h, 1))
    data.point_data["rgb"] = img.reshape(-1, 3)
    return data


def _rate(times: deque[float], window_s: float) -> float:
    """Events per second among ``times`` (perf_counter seconds) in the last ``window_s``."""
    now = time.perf_counter()
    recent = [t for t in list(times) if now - t <= window_s]
    if len(recent) < 2 or recent[-1] <= recent[0]:
        return 0.0
    return (len(recent) - 1) / (recent[-1] - recent[0])


class MeshViewState:
    """What both 3D views (:class:`HandView`, the threaded one, and
    :class:`app.hand_view_qt.InteractorHandView`) keep of the shown hand on the GUI side,
    and what they answer from it. A mixin: the view's ``__init__`` calls :meth:`_init_state`."""

    def _init_state(self) -> None:
        self._mesh: pv.PolyData | None = None
        self._faces: np.ndarray | None = None
        self._uv_faces: np.ndarray | None = None
        self._vertex_index: np.ndarray | None = None  # split point -> model vertex
        self._camera_frame = False
        self.show_skeleton = True
        self.wireframe = False
        self.show_texture = True
        self.update_times: deque[float] = deque(maxlen=120)
        self.updates = 0
        #: Renders done, and when the last ones finished (perf_counter seconds).
        self.renders = 0
        self.render_times: deque[float] = deque(maxlen=120)

    def _same_topology(self, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray | None,
                       uv_faces: np.ndarray | None) -> bool:
        """Whether a new hand can reuse the shown mesh (only its points move): the same faces
        and UV faces (a left hand's are the right's mirrored, so equal counts are not enough)."""
        return (self._mesh is not None and self._faces is not None and len(self._faces) == len(faces)
                and (self._vertex_index is None) == (uv is None or uv_faces is None)
                and int(self._faces.max()) + 1 == len(vertices)
                and np.array_equal(self._faces, faces)
                and (self._vertex_index is None or np.array_equal(self._uv_faces, uv_faces)))

    def _keep_topology(self, faces: np.ndarray, uv_faces: np.ndarray | None) -> None:
        self._faces = np.asarray(faces, dtype=np.int64)
        self._uv_faces = None if uv_faces is None else np.asarray(uv_faces, dtype=np.int64)

    def _split_points(self, values: np.ndarray) -> np.ndarray:
        """Per-vertex values of the model, repeated onto the mesh split at UV seams."""
        values = np.asarray(values, dtype=np.float32)
        return values if self._vertex_index is None else values[self._vertex_index]

    def update_rate(self, window_s: float = 2.0) -> float:
        """Mesh updates per second over the last ``window_s`` seconds."""
        return _rate(self.update_times, window_s)

    def render_rate(self, window_s: float = 2.0) -> float:
        """Renders per second over the last ``window_s`` seconds."""
        return _rate(self.render_times, window_s)

    @property
    def num_model_vertices(self) -> int:
        """Vertices of the model shown (before the split at UV seams); 0 when none."""
        if self._mesh is None or self._faces is None:
            return 0
        return int(self._faces.max()) + 1

    @property
    def has_mesh(self) -> bool:
        return self._mesh is not None and self._mesh.n_points > 0


class _Scene:
    """The VTK scene of one :class:`HandView`.

    Built on the GUI thread (no OpenGL is touched before the first render); from then on its
    methods run in the view's render thread, except the plain property setters the view
    documents as safe.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self.ren_win = vtkRenderWindow()
        self.ren_win.SetOffScreenRendering(1)
        # Software OpenGL pays per pixel: no multisampling, an opaque skin, one light.
        self.ren_win.SetMultiSamples(0)
        self.ren_win.SetNumberOfLayers(2)
        self.ren_win.SetSize(*size)
        self.renderer = vtkRenderer()
        self.renderer.SetBackground(*BACKGROUND_RGB)
        self.renderer.SetLayer(0)
        fit_view_angle(self.renderer.GetActiveCamera(), *size)
        light = vtkLight()
        light.SetLightTypeToHeadlight()
        self.renderer.AddLight(light)
        self.renderer.SetAutomaticLightCreation(False)
        self.ren_win.AddRenderer(self.renderer)
        # The skeleton is drawn in a second layer, on top of the opaque skin.
        self.overlay = vtkRenderer()
        self.overlay.SetLayer(1)
        self.overlay.InteractiveOff()
        self.overlay.SetActiveCamera(self.renderer.GetActiveCamera())
        self.ren_win.AddRenderer(self.overlay)

        self.mesh = pv.PolyData()
        self.mapper = vtkPolyDataMapper()
        self.mapper.SetInputData(self.mesh)
        self.mapper.ScalarVisibilityOff()
        self.mesh_actor = vtkActor()
        self.mesh_actor.SetMapper(self.mapper)
        prop = self.mesh_actor.GetProperty()
        prop.SetColor(*SKIN_RGB)
        prop.SetInterpolationToPhong()
        prop.SetSpecular(0.2)
        prop.SetSpecularPower(30.0)
        prop.SetEdgeColor(*pv.Color("#5a4a40").float_rgb)
        self.mesh_actor.VisibilityOff()
        self.renderer.AddActor(self.mesh_actor)

        self.skeleton = skeleton_polydata(np.zeros((21, 3), np.float32))
        self.skel_actors = skeleton_actors(self.overlay, self.skeleton)
        for actor in self.skel_actors:
            actor.VisibilityOff()

        self.texture = vtkTexture()
        self.texture.InterpolateOn()
        self.texture_size: tuple[int, int] | None = None
        self.interactor: vtkGenericRenderWindowInteractor | None = None
        self._axes = None
        self._pixels = vtkUnsignedCharArray()

    # -- render thread -------------------------------------------------------------------

    def start(self) -> None:
        """Interactor and orientation axes (they render, so in the render thread)."""
        iren = vtkGenericRenderWindowInteractor()
        iren.SetRenderWindow(self.ren_win)
        iren.SetInteractorStyle(vtkInteractorStyleTrackballCamera())
        iren.EnableRenderOff()  # the render thread renders, once per batch of events
        iren.Initialize()
        iren.SetSize(*self.size)
        self.interactor = iren
        axes = vtkOrientationMarkerWidget()
        axes.SetOrientationMarker(pv.create_axes_marker(line_width=2))  # pyvista's add_axes marker
        axes.SetInteractor(iren)
        axes.SetViewport(0.0, 0.0, 0.2, 0.2)
        axes.SetEnabled(1)
        axes.InteractiveOff()
        self._axes = axes

    def resize(self, size: tuple[int, int]) -> None:
        self.size = size
        self.ren_win.SetSize(*size)
        fit_view_angle(self.renderer.GetActiveCamera(), *size)
        if self.interactor is not None:
            self.interactor.SetSize(*size)

    def set_mesh(self, mesh: pv.PolyData, keypoints: np.ndarray) -> None:
        self.mesh = mesh
        self.mapper.SetInputData(mesh)
        self.mesh_actor.SetVisibility(mesh.n_points > 0)
        self.update_points(None, None, keypoints)

    def update_points(self, points: np.ndarray | None, normals: np.ndarray | None,
                      keypoints: np.ndarray | None) -> None:
        """Write new positions into the VTK arrays in place (no new arrays per frame)."""
        if points is not None and len(points) == self.mesh.n_points:
            self.mesh.points[:] = points
            self.mesh.GetPoints().Modified()
            if normals is not None:
                self.mesh.point_data["Normals"][:] = normals
                self.mesh.GetPointData().GetArray("Normals").Modified()
            self.mesh.Modified()
        if keypoints is not None:
            self.skeleton.points[:] = keypoints
            self.skeleton.GetPoints().Modified()
            self.skeleton.Modified()

    def set_texture_image(self, data: pv.ImageData | None, shown: bool) -> None:
        if data is not None:
            self.texture.SetInputDataObject(data)
            dims = data.dimensions
            self.texture_size = (dims[0], dims[1])
        self.show_texture(shown and self.texture_size is not None)

    def show_texture(self, on: bool) -> None:
        if on:
            self.mesh_actor.SetTexture(self.texture)
            self.mesh_actor.GetProperty().SetColor(1.0, 1.0, 1.0)
        else:
            self.mesh_actor.SetTexture(None)
            self.mesh_actor.GetProperty().SetColor(*SKIN_RGB)

    def reset_view(self, camera_frame: bool) -> None:
        """Model frame: look at the back of the hand, fingers up (fingers +x, palm -y).
        Camera frame: look from the camera (OpenCV: z forward, y down)."""
        camera = self.renderer.GetActiveCamera()
        if camera_frame:
            # The live hand is centred at the origin (about 0.2 m across): look from the camera.
            camera.SetFocalPoint(0.0, 0.0, 0.0)
            camera.SetPosition(0.0, 0.0, -LIVE_DISTANCE_M)
            camera.SetViewUp(0.0, -1.0, 0.0)
            self.renderer.ResetCameraClippingRange()
        else:
            centre = np.asarray(self.mesh.center if self.mesh.n_points else (0.0, 0.0, 0.0))
            vector, up = model_view(np.asarray(self.skeleton.points) if self.mesh.n_points else None)
            direction = np.array(vector)
            camera.SetFocalPoint(*centre)
            camera.SetPosition(*(centre + direction / np.linalg.norm(direction)))
            camera.SetViewUp(*up)
            self.renderer.ResetCamera()

    def mouse(self, kind: str, button: str, x: int, y: int, ctrl: bool, shift: bool) -> None:
        """Replay one mouse event on the trackball interactor (x, y: pixels from the top left)."""
        iren = self.interactor
        if iren is None:
            return
        iren.SetEventInformationFlipY(int(x), int(y), int(ctrl), int(shift))
        if kind == "move":
            iren.MouseMoveEvent()
        elif kind == "wheel":
            (iren.MouseWheelForwardEvent if button == "forward" else iren.MouseWheelBackwardEvent)()
        else:
            name = {"left": "LeftButton", "middle": "MiddleButton", "right": "RightButton"}[button]
            getattr(iren, f"{name}{'Press' if kind == 'press' else 'Release'}Event")()

    def render(self) -> np.ndarray:
        """Render; returns (H, W, 4) uint8 bytes B, G, R, A, top row first."""
        self.ren_win.Render()
        w, h = self.ren_win.GetSize()
        self.ren_win.GetRGBACharPixelData(0, 0, w - 1, h - 1, 0, self._pixels)
        rgba = vtk_to_numpy(self._pixels).reshape(h, w, 4)
        return cv2.cvtColor(cv2.flip(rgba, 0), cv2.COLOR_RGBA2BGRA)

    def finalize(self) -> None:
        """Release every OpenGL resource, then the context, in this (the render) thread.

        The VTK objects themselves are destroyed later, wherever Python drops them (often the
        GUI thread, at a garbage collection): by then none may hold a texture, buffer or
        shader of a context that is gone, or their destructors would reach into it.
        """
        if self._axes is not None:
            self._axes.SetEnabled(0)
            self._axes.SetInteractor(None)
            self._axes = None
        self.mesh_actor.SetTexture(None)
        self.texture.ReleaseGraphicsResources(self.ren_win)
        for renderer in (self.renderer, self.overlay):
            renderer.RemoveAllViewProps()  # releases each prop's graphics resources
        self.ren_win.Finalize()
        self.interactor = None

    def drop(self) -> None:
        """Let go of every VTK object, in this (the render) thread, so that each is destroyed
        by the thread that used it rather than at some later garbage collection elsewhere."""
        for name in list(vars(self)):
            if name != "size":
                setattr(self, name, None)


class HandView(MeshViewState, QWidget):
    """Orbitable view of one hand mesh, with wireframe, skeleton and texture toggles.

    Signals: ``frame_ready()`` (internal: the render thread has a new image).
    """

    frame_ready = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setMinimumSize(160, 120)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setToolTip("Drag to orbit, shift-drag or middle-drag to pan, wheel to zoom; R resets the view")
        self._scene = _Scene(self._device_size())
        self._init_state()  # GUI-side bookkeeping of what is shown
        self._has_texture = False
        self.error: str | None = None
        # Mailboxes to the render thread.
        self._mail = threading.Lock()
        self._wake = threading.Event()
        self._commands: list[Callable[[_Scene], None]] = []
        self._points: tuple | None = None
        self._texture_data: object = _UNSET
        self._stopping = False
        self._requested = 0  # render requests made, and the last one a finished render covered
        self._done = 0
        self._done_cond = threading.Condition(self._mail)
        self._image: np.ndarray | None = None
        self._qimage: QImage | None = None
        self._qimage_data: np.ndarray | None = None  # the pixels self._qimage wraps
        self.frame_ready.connect(self._take_image, Qt.ConnectionType.QueuedConnection)
        self._thread = threading.Thread(target=self._run, name="handtwin-hand-view", daemon=True)
        self._thread.start()
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.stop_rendering)
        self._command(lambda s: s.reset_view(False))

    # ----------------------------------------------------------------- compatibility

    @property
    def interactor(self) -> QWidget:
        """The widget to put in a layout (this view; the name of pyvistaqt's interactor)."""
        return self

    @property
    def _mesh_actor(self) -> vtkActor:
        return self._scene.mesh_actor

    @property
    def _skel_actors(self) -> list[vtkActor]:
        return (self._scene.skel_actors or []) if self._mesh is not None else []

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
        """Show a new hand, or move the shown one when the topology is unchanged.

        Never waits for a render: a new position replaces one not yet rendered.

        Args:
            vertices: (V, 3) metres; faces: (F, 3); keypoints: (21, 3) metres.
            camera_frame: the points are in the OpenCV camera frame (look from the camera)
                rather than the model frame.
            uv, uv_faces: (T, 2) texture coordinates and (F, 3) faces into them, for a texture.
            normals: (V, 3) unit vertex normals when the caller has them (the tracking worker
                computes them off the GUI thread), else computed here.
        """
        vertices = np.asarray(vertices, dtype=np.float32)
        keypoints = np.array(keypoints, dtype=np.float32)
        same = camera_frame == self._camera_frame and self._same_topology(vertices, faces, uv, uv_faces)
        if normals is None:
            normals = vertex_normals(vertices, faces)
        if same:
            with self._mail:
                self._points = (self._split_points(vertices), self._split_points(normals), keypoints)
            self._count_update()
            return
        self._camera_frame = camera_frame
        self._keep_topology(faces, uv_faces)
        mesh, self._vertex_index = hand_polydata(vertices, self._faces, normals, uv, uv_faces)
        self._mesh = mesh  # its points are updated in place later
        textured = self.textured

        def install(scene: _Scene) -> None:
            scene.set_mesh(mesh, keypoints)
            scene.show_texture(textured)
            scene.reset_view(camera_frame)

        with self._mail:
            self._points = None  # positions of the old topology
        self._command(install)
        self._apply_flags()
        self._count_update()

    def _count_update(self) -> None:
        self.updates += 1
        self.update_times.append(time.perf_counter())
        self._request_render()

    @property
    def textured(self) -> bool:
        return self._has_texture and self._vertex_index is not None and self.show_texture

    def set_texture(self, image: np.ndarray | None) -> None:
        """(S, S, 3) uint8 skin texture (top row first, UV origin bottom-left), or None.

        Shown with the next render; a texture not yet shown is replaced by a newer one.
        """
        self._has_texture = image is not None
        with self._mail:  # converted in the render thread (a resize, a flip, VTK image data):
            self._texture_data = image  # each step took the GIL back on the GUI thread
        self._request_render()

    def set_texture_visible(self, on: bool) -> None:
        self.show_texture = on
        textured = self.textured
        self._command(lambda s: s.show_texture(textured))

    # ----------------------------------------------------------------- view

    def reset_view(self) -> None:
        """Frame the hand again (from the camera for a live hand, else the back of the hand)."""
        camera_frame = self._camera_frame
        self._command(lambda s: s.reset_view(camera_frame))

    def clear_actors(self) -> None:
        """Show no hand."""
        self._mesh = None
        self._faces = None
        self._uv_faces = None
        self._vertex_index = None
        empty = pv.PolyData()
        with self._mail:
            self._points = None
        self._command(lambda s: s.set_mesh(empty, None))
        self._apply_flags()

    def set_wireframe(self, on: bool) -> None:
        self.wireframe = on
        self._apply_flags()
        self._request_render()

    def set_skeleton_visible(self, on: bool) -> None:
        self.show_skeleton = on
        self._apply_flags()
        self._request_render()

    def _apply_flags(self) -> None:
        # Plain property flags: safe to set from the GUI thread (no OpenGL involved).
        if self._scene.mesh_actor is None:  # rendering has stopped: the scene is gone
            return
        self._scene.mesh_actor.GetProperty().SetEdgeVisibility(self.wireframe)
        for actor in self._scene.skel_actors:
            actor.SetVisibility(self.show_skeleton and self._mesh is not None)

    # ----------------------------------------------------------------- rendering

    def _device_size(self) -> tuple[int, int]:
        ratio = self.devicePixelRatioF()
        return max(1, round(self.width() * ratio)), max(1, round(self.height() * ratio))

    def _command(self, command: Callable[[_Scene], None]) -> None:
        with self._mail:
            self._commands.append(command)
        self._request_render()

    def _request_render(self) -> None:
        with self._mail:
            self._requested += 1
        self._wake.set()

    def render(self, timeout_s: float = 5.0) -> bool:
        """Render now and show the result (waits for the render thread); False on timeout."""
        self._request_render()
        done = self.wait_idle(timeout_s)
        self._take_image()
        self.repaint()
        return done

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything asked of the render thread so far is rendered."""
        with self._mail:
            target = self._requested
            return self._done_cond.wait_for(
                lambda: self._done >= target or self._stopping or self.error is not None, timeout_s)

    def stop_rendering(self) -> None:
        """End the render thread (it releases its OpenGL context); idempotent."""
        with self._mail:
            self._stopping = True
            self._done_cond.notify_all()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5.0)
            if self._thread.is_alive():
                log.warning("the 3D view's render thread did not stop in time")

    def _run(self) -> None:
        scene = self._scene
        try:
            with GL_LOCK:
                scene.start()
            min_interval = 1.0 / MAX_RENDER_FPS
            last = 0.0
            while True:
                self._wake.wait()
                wait = last + min_interval - time.perf_counter()
                if wait > 0:  # merge what arrives within one frame's time
                    time.sleep(wait)
                with self._mail:
                    self._wake.clear()
                    if self._stopping:
                        break
                    commands, self._commands = self._commands, []
                    points, self._points = self._points, None
                    texture, self._texture_data = self._texture_data, _UNSET
                    covered = self._requested
                with GL_LOCK:
                    for command in commands:
                        command(scene)
                    if points is not None:
                        scene.update_points(*points)
                    if texture is not _UNSET:
                        scene.set_texture_image(None if texture is None else texture_image(texture), self.textured)
                    last = time.perf_counter()
                    image = scene.render()
                now = time.perf_counter()
                with self._mail:
                    self._image = image
                    self._done = covered
                    self.renders += 1
                    self.render_times.append(now)
                    self._done_cond.notify_all()
                self.frame_ready.emit()
        except Exception as exc:  # noqa: BLE001 - the window stays usable without its 3D view
            log.exception("the 3D view stopped rendering")
            with self._mail:
                self.error = f"The 3D view stopped: {exc}"
                self._done_cond.notify_all()
            try:
                self.frame_ready.emit()
            except RuntimeError:  # the widget is gone
                pass
        finally:
            try:
                with GL_LOCK:
                    scene.finalize()
                    scene.drop()
            except Exception:  # noqa: BLE001
                log.debug("finalizing the render window failed", exc_info=True)

    def _take_image(self) -> None:
        with self._mail:
            image, self._image = self._image, None
        if image is not None:
            h, w = image.shape[:2]
            self._qimage = QImage(image.data, w, h, 4 * w, QImage.Format.Format_RGB32)
            self._qimage.setDevicePixelRatio(self.devicePixelRatioF())
            self._qimage_data = image
        self.update()

    # ----------------------------------------------------------------- Qt events

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        p = QPainter(self)
        if self._qimage is None or self.error is not None:
            p.fillRect(self.rect(), QColor.fromRgbF(*BACKGROUND_RGB))
            if self.error is not None:
                p.setPen(QColor("#9aa4b2"))
                p.drawText(self.rect().adjusted(20, 20, -20, -20),
                           Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.error)
            return
        size = self._qimage.deviceIndependentSize()
        if abs(size.width() - self.width()) < 1 and abs(size.height() - self.height()) < 1:
            p.drawImage(QPointF(0, 0), self._qimage)
        else:  # resized, the render for the new size is on its way
            p.drawImage(QRectF(self.rect()), self._qimage)

    def resizeEvent(self, event) -> None:  # noqa: N802
        size = self._device_size()
        self._command(lambda s: s.resize(size))
        super().resizeEvent(event)

    def _mouse(self, kind: str, event, button: str = "") -> None:
        ratio = self.devicePixelRatioF()
        pos = event.position()
        mods = event.modifiers()
        ctrl = bool(mods & Qt.KeyboardModifier.ControlModifier)
        shift = bool(mods & Qt.KeyboardModifier.ShiftModifier)
        x, y = pos.x() * ratio, pos.y() * ratio
        self._command(lambda s: s.mouse(kind, button, x, y, ctrl, shift))
        event.accept()

    _BUTTONS = {Qt.MouseButton.LeftButton: "left", Qt.MouseButton.MiddleButton: "middle",
                Qt.MouseButton.RightButton: "right"}

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if event.button() in self._BUTTONS:
            self._mouse("press", event, self._BUTTONS[event.button()])

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if event.button() in self._BUTTONS:
            self._mouse("release", event, self._BUTTONS[event.button()])

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if event.buttons() != Qt.MouseButton.NoButton:  # a drag; plain moves change nothing
            self._mouse("move", event)

    def wheelEvent(self, event) -> None:  # noqa: N802
        delta = event.angleDelta().y()
        if delta:
            ratio = self.devicePixelRatioF()
            pos = event.position()
            x, y = pos.x() * ratio, pos.y() * ratio
            direction = "forward" if delta > 0 else "backward"
            self._command(lambda s: s.mouse("wheel", direction, x, y, False, False))
        event.accept()

    def closeEvent(self, event) -> None:  # noqa: N802
        self.stop_rendering()
        super().closeEvent(event)

    def close(self) -> bool:
        self.stop_rendering()
        return super().close()


#: Environment variable choosing the 3D view: "auto" (default), "thread" or "interactor".
VIEW_ENV_VAR = "HANDTWIN_VIEW"
_SOFTWARE_GL = ("llvmpipe", "softpipe", "swrast", "swiftshader", "software rasterizer")
_software_gl: bool | None = None


def software_opengl() -> bool:
    """Whether VTK renders with a software OpenGL driver here (probed once, off-screen).

    Mesa's llvmpipe/softpipe (Xvfb, most VMs, no GPU) and SwiftShader count as software.
    When the probe itself fails, software is assumed (the threaded view works with either).
    """
    global _software_gl
    if _software_gl is None:
        try:
            with GL_LOCK:
                win = vtkRenderWindow()
                win.SetOffScreenRendering(1)
                win.SetSize(8, 8)
                win.Render()
                caps = (win.ReportCapabilities() or "").lower().splitlines()
                win.Finalize()
            renderer = next((line for line in caps if line.startswith("opengl renderer string")), "")
            _software_gl = not renderer or any(name in renderer for name in _SOFTWARE_GL)
            log.info("3D view: OpenGL renderer is %s", "software" if _software_gl else "hardware")
        except Exception:  # noqa: BLE001 - any failure of the probe: take the safe view
            log.exception("3D view: could not probe the OpenGL driver; assuming software")
            _software_gl = True
    return _software_gl


def make_hand_view(parent: QWidget | None = None) -> "HandView | InteractorHandView":
    """The 3D hand view for this machine.

    Software OpenGL: :class:`HandView`, which renders in its own thread (a render there takes
    27-58 ms, which would block the GUI thread as long). Hardware OpenGL: pyvistaqt's
    ``QtInteractor`` (:class:`app.hand_view_qt.InteractorHandView`), which renders on the GUI
    thread in a millisecond or two. ``$HANDTWIN_VIEW`` = "thread" or "interactor" forces one.
    """
    import os

    choice = os.environ.get(VIEW_ENV_VAR, "auto").strip().lower()
    if choice not in ("auto", "thread", "interactor"):
        log.warning("%s=%r is not auto, thread or interactor; using auto", VIEW_ENV_VAR, choice)
        choice = "auto"
    if choice == "interactor" or (choice == "auto" and not software_opengl()):
        from app.hand_view_qt import InteractorHandView

        return InteractorHandView(parent)
    return HandView(parent)
