"""The napari layers the interactive widget works with, aligned with one image.

Every layer is created with the image's ``scale`` and ``translate`` (over the
spatial axes, the RGB channel axis excluded), so the data coordinates of the
prompt layers are the image's pixel coordinates and the result layers overlay
the image exactly. A layer that already exists under the expected name, type
and shape is adopted (e.g. an existing segmentation renamed
``committed objects`` can be refined), one the user deleted is recreated.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Layer, Points, Shapes

POINTS_NAME = "point prompts"
BOXES_NAME = "box prompts"
CURRENT_NAME = "current object"
UNCERTAINTY_NAME = "uncertainty"
COMMITTED_NAME = "committed objects"

#: Chunk side of the lazy (zarr-backed) uncertainty layer of large images.
LAZY_CHUNK = 512

#: Point-prompt kinds (value of the ``label`` feature) and their colours.
POSITIVE, NEGATIVE = 1, 0
POINT_COLORS = {POSITIVE: "green", NEGATIVE: "red"}


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
        The viewer holding the image.
    image : napari.layers.Image
        The image being segmented.
    on_prompt_layer : callable, optional
        Called with each prompt layer (points, boxes) when it is created or
        adopted, e.g. to bind keys on it.
    lazy_results : bool
        Back the uncertainty layer with a chunked in-memory zarr array (only
        the chunks written hold memory), for large images.
    """

    def __init__(
        self,
        viewer,
        image: Image,
        on_prompt_layer: Callable[[Layer], None] | None = None,
        lazy_results: bool = False,
    ) -> None:
        self.viewer = viewer
        self.image = image
        self.lazy_results = lazy_results
        self.shape = spatial_shape(image)
        self._on_prompt_layer = on_prompt_layer
        self._layers: dict[str, Layer] = {}

    @property
    def ndim(self) -> int:
        """Number of spatial axes of the image (2 for a plane, 3 for a stack...)."""
        return len(self.shape)

    def owned(self) -> list[Layer]:
        """The layers created or adopted so far."""
        return list(self._layers.values())

    def existing(self, name: str) -> Layer | None:
        """Return the layer ``name`` if it is (still) in the viewer, else ``None``."""
        layer = self._layers.get(name)
        return layer if layer is not None and layer in self.viewer.layers else None

    def points(self) -> Points:
        """Point prompts: feature ``label`` 1 positive (green) / 0 negative (red)."""
        return self._get(POINTS_NAME, Points, self._new_points)

    def boxes(self) -> Shapes:
        """Box prompts: every rectangle is one box."""
        return self._get(BOXES_NAME, Shapes, self._new_boxes)

    def current(self) -> Labels:
        """The object segmented from the current prompts."""
        return self._get(CURRENT_NAME, Labels, lambda: self._new_labels(CURRENT_NAME, np.uint16))

    def uncertainty(self) -> Image:
        """Per-pixel uncertainty of the current object, in [0, 1]."""
        return self._get(UNCERTAINTY_NAME, Image, self._new_uncertainty)

    def committed(self) -> Labels:
        """Accepted objects, one id each."""
        return self._get(COMMITTED_NAME, Labels, lambda: self._new_labels(COMMITTED_NAME, np.uint32))

    def _get(self, name: str, kind: type, create: Callable[[], Layer]) -> Layer:
        layer = self.existing(name)
        if layer is None:
            layer = self._adopt(name, kind) or create()
            self._layers[name] = layer
            if kind in (Points, Shapes) and self._on_prompt_layer is not None:
                self._on_prompt_layer(layer)
        return layer

    def _adopt(self, name: str, kind: type) -> Layer | None:
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

    def _new_points(self) -> Points:
        with warnings.catch_warnings():
            # integer 0/1 labels are categorical on purpose (colour cycle)
            warnings.filterwarnings("ignore", message=".*looks like categorical.*")
            return self.viewer.add_points(
                np.empty((0, self.ndim)),
                ndim=self.ndim,
                name=POINTS_NAME,
                features=pd.DataFrame({"label": pd.Series([], dtype=int)}),
                feature_defaults={"label": POSITIVE},
                face_color="label",
                face_color_cycle=POINT_COLORS,
                border_color="white",
                size=self._marker_size(),
                **_alignment(self.image),
            )

    def _new_boxes(self) -> Shapes:
        return self.viewer.add_shapes(
            None,
            ndim=self.ndim,
            name=BOXES_NAME,
            shape_type="rectangle",
            edge_color="yellow",
            face_color="transparent",
            edge_width=self._marker_size() / 4,
            **_alignment(self.image),
        )

    def _new_labels(self, name: str, dtype: type) -> Labels:
        return self.viewer.add_labels(np.zeros(self.shape, dtype=dtype), name=name, **_alignment(self.image))

    def _new_uncertainty(self) -> Image:
        if self.lazy_results:
            import zarr

            chunks = (1,) * (self.ndim - 2) + tuple(min(n, LAZY_CHUNK) for n in self.shape[-2:])
            data = zarr.create_array(
                zarr.storage.MemoryStore(), shape=self.shape, chunks=chunks, dtype="float32", fill_value=0.0
            )
        else:
            data = np.zeros(self.shape, dtype=np.float32)
        return self.viewer.add_image(
            data,
            name=UNCERTAINTY_NAME,
            colormap="magma",
            contrast_limits=(0.0, 1.0),
            blending="additive",
            opacity=0.7,
            **_alignment(self.image),
        )
