"""Qt-free helpers of the interactive widget's large-image path.

An image is *large* when a plane is more than :data:`LARGE_IMAGE_SIDE` pixels on a side,
or when the layer's data is not an in-memory numpy array (dask, zarr, a multiscale
pyramid...). Large images are segmented with :class:`sum_core.TiledPredictor`: setting the
image encodes nothing, a prompt encodes only the tiles its object reaches, and the result
comes back as a window (:class:`sum_core.TiledPrediction`) that is pasted into the layers.

Embedding cache: with a cache folder set in the widget, tile embeddings are kept in a zarr
store ``<folder>/<layer name>-<data hash>-<weights hash>.zarr`` (name sanitised to
``[A-Za-z0-9_.-]``, both hashes cut to 12 hex digits; the data hash is
:func:`sum_core.embedding_cache.data_hash`, exact for numpy and sampled for lazy arrays, the
weights hash :func:`sum_core.tiled_embedding.weights_hash`). Reopening the same image with
the same model reuses the encoded tiles; another image or model gets its own store.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from ._session import ENCODE_STEPS, EncodeResult, ModelChoice, SliceKey

#: Planes with a side longer than this many pixels use the tiled predictor.
LARGE_IMAGE_SIDE = 2048


def is_large(data: Any, plane_shape: tuple[int, ...]) -> bool:
    """Whether an image goes through the tiled predictor.

    Parameters
    ----------
    data : array-like
        The layer data (level 0 of a multiscale image).
    plane_shape : tuple of int
        Spatial shape of the image (no channel axis); the last two axes are a plane.
    """
    return max(plane_shape[-2:]) > LARGE_IMAGE_SIDE or not isinstance(data, np.ndarray)


def cache_path(folder: str | Path, layer_name: str, data: Any, model: Any) -> Path:
    """The embedding-cache store of one image and model (see the module docstring)."""
    from sum_core.embedding_cache import data_hash
    from sum_core.tiled_embedding import weights_hash

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", layer_name).strip("._") or "image"
    data_part = data_hash(data).split(":")[-1][:12]
    weights_part = weights_hash(model).split(":")[-1][:12]
    return Path(folder) / f"{name}-{data_part}-{weights_part}.zarr"


def tiled_encode_steps(
    choice: ModelChoice,
    model: Any,
    data: Any,
    stack_axis: int | None,
    cache_folder: str | None,
    layer_name: str,
) -> Generator[str, None, EncodeResult]:
    """Load the model if needed and bind a :class:`sum_core.TiledPredictor` to the image.

    Same protocol as :func:`napari_sum_hq._session.encode_steps`, but no tile is encoded:
    the returned predictor (stored under slice key ``()``) serves every slice.

    Parameters
    ----------
    choice : ModelChoice
        Model source and device.
    model : SamModel or None
        Already loaded model for ``choice``; ``None`` loads it here.
    data : array-like
        The whole image or stack (read lazily, tile by tile).
    stack_axis : int or None
        Slice axis of a stack; None for a 2D image.
    cache_folder : str or None
        Folder of the zarr embedding cache; None keeps embeddings in memory.
    layer_name : str
        Name of the image layer (part of the cache path).
    """
    yield ENCODE_STEPS[0]
    if model is None:
        from sum_core.loading import load_model

        model = load_model(choice.source, device=choice.torch_device)
    yield ENCODE_STEPS[1]
    from sum_core.tiled_predictor import TiledPredictor

    cache = None
    if cache_folder:
        cache = cache_path(cache_folder, layer_name, data, model)
        cache.parent.mkdir(parents=True, exist_ok=True)
    predictor = TiledPredictor(model, cache=cache, device=choice.torch_device)
    predictor.set_image(data, stack_axis=stack_axis)
    yield ENCODE_STEPS[2]
    return EncodeResult(choice, model, (), predictor)


def tiled_predict(predictor: Any, slice_key: SliceKey, points, labels, boxes, task: int, uncertainty: str):
    """Run :meth:`sum_core.TiledPredictor.predict` for the prompts of one slice (worker thread).

    Raises
    ------
    sum_core.errors.InvalidInputError
        More than one box (the tiled predictor segments one object per call).
    """
    from sum_core.errors import InvalidInputError

    if len(boxes) > 1:
        raise InvalidInputError(
            f"box prompts: large images are segmented one object at a time, got {len(boxes)} boxes on this slice"
        )
    return predictor.predict(
        points=points if len(points) else None,
        labels=labels if len(points) else None,
        box=boxes[0] if len(boxes) else None,
        task=task,
        uncertainty=uncertainty,
        slice_index=slice_key[0] if slice_key else 0,
    )
