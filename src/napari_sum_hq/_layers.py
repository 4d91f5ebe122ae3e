"""The napari layers the interactive widget works with, aligned with one image, and the
window-sized writes it makes to them.

**Per-image layers.** Every image gets its own layers, named ``<image> point prompts``,
``<image> box prompts``, ``<image> current object``, ``<image> uncertainty``, ``<image>
committed objects`` and (once a click is suggested) ``<image> suggested click`` (the automatic
widget's ``<image> auto labels`` follow the same rule), so the prompts and results of one image
are never reused for another and no ``[1]`` copies pile up. Every layer is created with the image's
``scale`` and ``translate`` (over the spatial axes, the RGB channel axis excluded), so the data
coordinates of the prompt layers are the image's
pixel coordinates and the result layers overlay the image exactly. A layer that already
exists under the expected name, type and shape is adopted (e.g. an existing segmentation
renamed ``<image> committed objects`` can be refined), one the user deleted is recreated.

**Colours.** Committed objects keep napari's random cyclic colours (a distinct colour per id);
the current, uncommitted objects are all drawn in :data:`CURRENT_COLOR`, so what is not yet
committed is told apart at a glance.

The result layers are numpy arrays of the image's full (stack) shape created with
``np.zeros``: the operating system maps their pages lazily, so only the pages a result is
written to take memory. Results are written, cleared and committed by window only
(:class:`Windows` remembers what was written where), and commits go through
``Labels.data_setitem``, so napari's own undo history (Ctrl+Z on the layer) holds them.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Layer, Points, Shapes
from napari.utils.colormaps import DirectLabelColormap
from sum_core.tiling import Region

from ._session import ObjectPiece, SliceKey, UncertaintyPiece
from ._uncertainty_style import UNCERTAINTY_STYLE

POINTS_NAME = "point prompts"
BOXES_NAME = "box prompts"
CURRENT_NAME = "current object"
UNCERTAINTY_NAME = "uncertainty"
COMMITTED_NAME = "committed objects"
SUGGESTION_NAME = "suggested click"

#: Point-prompt kinds (value of the ``label`` feature) and their colours.
POSITIVE, NEGATIVE = 1, 0
#: Diameter of a point prompt on the screen, in screen pixels, at every zoom.
MARKER_SCREEN_PX = 12
POINT_COLORS = {POSITIVE: "green", NEGATIVE: "red"}
#: The suggested click is a star (prompts are discs), larger than a prompt, in the colour of its kind.
SUGGESTION_SYMBOL, SUGGESTION_SCREEN_PX = "star", 20
#: Width of a box prompt's outline on the screen, in screen pixels, at every zoom.
BOX_EDGE_SCREEN_PX = 2

#: Colour of every current (uncommitted) object.
CURRENT_COLOR = "yellow"


def spatial_shape(image: Image) -> tuple[int, ...]:
    """Shape of the image without its RGB(A) channel axis (full resolution)."""
    data = image.data[0] if image.multiscale else image.data
    return tuple(data.shape[:-1] if image.rgb else data.shape)


def _alignment(image: Image) -> dict:
    ndim = len(spatial_shape(image))
    return {"scale": tuple(image.scale[-ndim:]), "translate": tuple(image.translate[-ndim:])}


class AnnotationLayers:
    """Get-or-create access to the prompt and result layers of one image.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer holding the image (held weakly).
    image : napari.layers.Image
        The image being segmented.
    on_prompt_layer : callable, optional
        Called with each prompt layer (points, boxes) when it is created or
        adopted, e.g. to bind keys on it. An attribute: a new widget sets its own.
    on_result_layer : callable, optional
        Called with each result Labels layer (current, committed) when it is created or
        adopted, e.g. to follow its edits.
    """

    def __init__(
        self,
        viewer,
        image: Image,
        on_prompt_layer: Callable[[Layer], None] | None = None,
        on_result_layer: Callable[[Labels, bool], None] | None = None,
    ) -> None:
        self._viewer = weakref.ref(viewer)
        self.image = image
        self.shape = spatial_shape(image)
        self.on_prompt_layer = on_prompt_layer
        self._on_result_layer = on_result_layer
        self._layers: dict[str, Layer] = {}
        self._box_edges: ScreenEdgeWidth | None = None

    @property
    def viewer(self):
        """The viewer (None once it is gone)."""
        return self._viewer()

    def name(self, kind: str) -> str:
        """The layer name of ``kind`` (e.g. :data:`POINTS_NAME`) for this image."""
        return f"{self.image.name} {kind}"

    @property
    def ndim(self) -> int:
        """Number of spatial axes of the image (2 for a plane, 3 for a stack...)."""
        return len(self.shape)

    def owned(self) -> list[Layer]:
        """The layers created or adopted so far."""
        return list(self._layers.values())

    def existing(self, name: str) -> Layer | None:
        """Return the layer of kind ``name`` if it is (still) in the viewer, else ``None``."""
        layer = self._layers.get(name)
        viewer = self.viewer
        return layer if layer is not None and viewer is not None and layer in viewer.layers else None

    def prompt_layers(self) -> list[Layer]:
        """The point and box layers still in the viewer."""
        return [layer for name in (POINTS_NAME, BOXES_NAME) if (layer := self.existing(name)) is not None]

    def raise_above_image(self) -> None:
        """Move this image's layers that lie below it to the top of the layer list (same order)."""
        layers = self.viewer.layers
        below = [layer for layer in self.owned() if layer in layers and layers.index(layer) < layers.index(self.image)]
        for layer in below:
            layers.move(layers.index(layer), len(layers))

    def points(self) -> Points:
        """Point prompts: feature ``label`` 1 positive (green) / 0 negative (red)."""
        return self._get(POINTS_NAME, Points, lambda: self._new_points(POINTS_NAME, MARKER_SCREEN_PX))

    def suggestion(self) -> Points:
        """The suggested next click (at most one point): a star, feature ``label`` coloured as the prompts'."""
        return self._get(SUGGESTION_NAME, Points, lambda: self._new_points(SUGGESTION_NAME, SUGGESTION_SCREEN_PX,
                                                                           symbol=SUGGESTION_SYMBOL))

    def boxes(self) -> Shapes:
        """Box prompts: every rectangle is one box."""
        return self._get(BOXES_NAME, Shapes, self._new_boxes)

    def current(self) -> Labels:
        """The objects segmented from the current prompts (ids 1..K, one per box), all in
        :data:`CURRENT_COLOR`."""
        colormap = DirectLabelColormap(color_dict={None: CURRENT_COLOR, 0: "transparent"})
        return self._get(CURRENT_NAME, Labels, lambda: self._new_labels(CURRENT_NAME, np.uint16, colormap=colormap))

    def uncertainty(self) -> Image:
        """Per-pixel uncertainty of the current objects, in [0, 1]."""
        return self._get(UNCERTAINTY_NAME, Image, self._new_uncertainty)

    def committed(self) -> Labels:
        """Accepted objects, one id each."""
        return self._get(COMMITTED_NAME, Labels, lambda: self._new_labels(COMMITTED_NAME, np.uint32))

    def _get(self, name: str, kind: type, create: Callable[[], Layer]) -> Layer:
        layer = self.existing(name)
        if layer is None:
            adopted = self._adopt(name, kind)
            layer = adopted or create()
            self._layers[name] = layer
            if kind is Shapes:
                self._box_edges = ScreenEdgeWidth(self.viewer, layer, BOX_EDGE_SCREEN_PX)
            if name in (POINTS_NAME, BOXES_NAME) and self.on_prompt_layer is not None:
                self.on_prompt_layer(layer)
            if kind is Labels and self._on_result_layer is not None:
                self._on_result_layer(layer, adopted is None)
        return layer

    def _adopt(self, name: str, kind: type) -> Layer | None:
        name = self.name(name)
        if name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        if not isinstance(layer, kind) or layer.ndim != self.ndim:
            return None
        if isinstance(layer, Points) and "label" not in layer.features:
            return None
        if isinstance(layer, (Labels, Image)) and tuple(layer.data.shape) != self.shape:
            return None
        return layer

    def _marker_size(self) -> float:
        return max(3.0, max(self.shape[-2:]) / 60)

    def _new_points(self, kind: str, screen_px: int, **style) -> Points:
        with warnings.catch_warnings():
            # integer 0/1 labels are categorical on purpose (colour cycle)
            warnings.filterwarnings("ignore", message=".*looks like categorical.*")
            return self.viewer.add_points(
                np.empty((0, self.ndim)),
                ndim=self.ndim,
                name=self.name(kind),
                features=pd.DataFrame({"label": pd.Series([], dtype=int)}),
                feature_defaults={"label": POSITIVE},
                face_color="label",
                face_color_cycle=POINT_COLORS,
                border_color="white",
                size=self._marker_size(),
                # the same size on the screen at every zoom (napari 0.9 has no screen-pixel size option)
                canvas_size_limits=(screen_px, screen_px),
                **style,
                **_alignment(self.image),
            )

    def _new_boxes(self) -> Shapes:
        return self.viewer.add_shapes(
            None,
            ndim=self.ndim,
            name=self.name(BOXES_NAME),
            shape_type="rectangle",
            edge_color="yellow",
            face_color="transparent",
            **_alignment(self.image),
        )  # edge width: ScreenEdgeWidth (set by _get)

    def _new_labels(self, name: str, dtype: type, **kwargs) -> Labels:
        return self.viewer.add_labels(
            np.zeros(self.shape, dtype=dtype), name=self.name(name), **kwargs, **_alignment(self.image)
        )

    def _new_uncertainty(self) -> Image:
        return self.viewer.add_image(
            np.zeros(self.shape, dtype=np.float32),
            name=self.name(UNCERTAINTY_NAME),
            **UNCERTAINTY_STYLE,
            **_alignment(self.image),
        )


def add_point(layer: Points, coords: np.ndarray, label: int) -> None:
    """Add one point of kind ``label`` (:data:`POSITIVE` / :data:`NEGATIVE`) to a point-prompt layer, whatever
    kind its next point has; ``coords`` in the layer's data coordinates."""
    layer.add(np.asarray(coords, dtype=float)[None])
    features = layer.features.copy()
    features.loc[features.index[-1], "label"] = label
    layer.features = features
    layer.refresh_colors()


class ScreenEdgeWidth:
    """Keeps the outlines of a Shapes layer ``screen_px`` wide on the screen at every zoom.

    napari (0.5 - 0.9) draws a shape's edge in data units, so it scales with the zoom (a box
    outline of 25 px on a 6000 px image is 2.5 screen px zoomed out and 50 px zoomed in), and,
    unlike Points (``canvas_size_limits``), Shapes have no screen-size option. This sets the
    width of every shape, and of the next one drawn, to ``screen_px / (zoom * scale)`` whenever
    the camera zooms. The camera holds this object's method weakly: the owner keeps it alive.

    Parameters
    ----------
    viewer : napari.Viewer
    layer : napari.layers.Shapes
        Held weakly.
    screen_px : float
        The outline's width on the screen.
    """

    def __init__(self, viewer, layer: Shapes, screen_px: float) -> None:
        scene = getattr(viewer, "scene", None)  # napari 0.9 moved the camera there (viewer.camera: deprecated)
        self._camera = viewer.camera if scene is None else scene.camera
        self._layer = weakref.ref(layer)
        self.screen_px = screen_px
        self._camera.events.zoom.connect(self.update)
        self.update()

    def width(self) -> float:
        """The edge width in the layer's data units that is ``screen_px`` on the screen now."""
        layer = self._layer()
        pixel = abs(float(layer.scale[-1])) if layer is not None else 1.0
        return self.screen_px / (self._camera.zoom * pixel)

    def update(self, _event=None) -> None:
        """Set every shape's edge width and the next shape's to :meth:`width`."""
        layer = self._layer()
        if layer is None:
            return
        width = self.width()
        layer.current_edge_width = width
        if layer.nshapes:
            layer.edge_width = width


# --------------------------------------------------------------------------- windows


def _union(a: Region, b: Region) -> Region:
    return Region(min(a.row0, b.row0), min(a.col0, b.col0), max(a.row1, b.row1), max(a.col1, b.col1))


class Windows:
    """Where a layer holds something since it was last cleared: one bounding box per slice."""

    def __init__(self) -> None:
        self._boxes: dict[SliceKey, Region] = {}

    def add(self, slice_key: SliceKey, region: Region) -> None:
        """Grow the slice's box to cover ``region``."""
        known = self._boxes.get(slice_key)
        self._boxes[slice_key] = region if known is None else _union(known, region)

    def items(self) -> list[tuple[SliceKey, Region]]:
        """``(slice key, region)`` pairs."""
        return list(self._boxes.items())

    def pop(self, slice_key: SliceKey) -> Region | None:
        """Forget the window of one slice and return it (None if it had none)."""
        return self._boxes.pop(slice_key, None)

    def clear(self) -> None:
        """Forget every window."""
        self._boxes.clear()

    def __bool__(self) -> bool:
        return bool(self._boxes)


def edited_windows(atoms: Iterable, ndim: int) -> list[tuple[SliceKey, Region]]:
    """The ``(slice key, region)`` windows a napari Labels edit touched.

    ``atoms`` is the value of a ``Labels.events.paint`` event: napari's history atoms, either
    a masked-paint atom whose first field is the tuple of slices of its bounding box, or a
    ``data_setitem`` triple whose first field is the tuple of index arrays.
    """
    windows = []
    lead = ndim - 2
    for atom in atoms:
        where = atom[0]
        if all(isinstance(part, slice) for part in where):
            rows, cols = where[-2], where[-1]
            region = Region(rows.start, cols.start, rows.stop, cols.stop)
            ranges = [np.arange(part.start, part.stop) for part in where[:lead]]
            keys = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, lead) if lead else [()]
        else:
            index = [np.asarray(part).ravel() for part in where]
            if index[0].size == 0:
                continue
            rows, cols = index[-2], index[-1]
            region = Region(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
            keys = np.unique(np.stack(index[:lead], -1), axis=0) if lead else [()]
        windows.extend((tuple(int(i) for i in key), region) for key in keys)
    return windows


def write_objects(layer: Labels, pieces: Iterable[ObjectPiece], windows: Windows) -> None:
    """Write objects into their windows of ``layer`` (id = the piece's index); no refresh."""
    for piece in pieces:
        view = layer.data[piece.slice_key + piece.region.slices]
        view[piece.mask] = piece.index
        windows.add(piece.slice_key, piece.region)


def write_uncertainty(layer: Image, piece: UncertaintyPiece, windows: Windows) -> None:
    """Write an uncertainty window into ``layer``; no refresh."""
    layer.data[piece.slice_key + piece.region.slices] = piece.values
    windows.add(piece.slice_key, piece.region)


def clear_windows(layer: Layer | None, windows: Windows) -> None:
    """Zero the windows of ``layer`` written since the last clear; no refresh."""
    if layer is not None:
        for key, region in windows.items():
            layer.data[key + region.slices] = 0
    windows.clear()


def clear_slice(layer: Layer | None, windows: Windows, slice_key: SliceKey) -> None:
    """Zero the window of one slice of ``layer`` and forget it; no refresh."""
    region = windows.pop(slice_key)
    if layer is not None and region is not None:
        layer.data[slice_key + region.slices] = 0
