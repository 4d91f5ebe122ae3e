"""Headless segmentation with SAM, HQ-SAM and SUM models, with per-pixel uncertainty maps.

Public API (imported lazily, so ``import sum_core`` does not load torch):

- :func:`segment` — one call: image + clicks/box -> :class:`Prediction`.
- :class:`Predictor` — encode once, prompt many times.
- :func:`embed`, :class:`TiledPredictor`, :func:`open_image` — huge images (tiles, zarr embedding cache,
  objects followed across tiles); :func:`propagate` — follow an object through a 3D/time stack.
- :func:`load_model`, :func:`build_model`, :func:`register_model`, :func:`list_models`.

Never imports napari or Qt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes
from .errors import Cancelled, CheckpointError, DownloadError, HashMismatchError, InvalidInputError, SumError

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "segment": ".api",
    "Predictor": ".predictor",
    "Prediction": ".prediction",
    "PredictOptions": ".prediction",
    "TiledPrediction": ".prediction",
    "ImageEmbedding": ".modeling",
    "load_model": ".loading",
    "resolve_model": ".loading",
    "build_model": ".modeling",
    "SamModel": ".modeling",
    "register_model": ".zoo",
    "list_models": ".zoo",
    "DEFAULT_MODEL": ".zoo",
    "Normalization": ".image",
    "embed": ".tiled_embedding",
    "TiledPredictor": ".tiled_predictor",
    "propagate": ".propagation",
    "auto_segment": ".automatic",
    "AutoOptions": ".auto_options",
    "AisOptions": ".ais_options",
    "open_image": ".sources",
    "suggest_click": ".suggest",
}

if TYPE_CHECKING:  # pragma: no cover
    from .ais_options import AisOptions
    from .api import segment
    from .auto_options import AutoOptions
    from .automatic import auto_segment
    from .image import Normalization
    from .loading import load_model, resolve_model
    from .modeling import ImageEmbedding, SamModel, build_model
    from .prediction import PredictOptions, Prediction, TiledPrediction
    from .predictor import Predictor
    from .propagation import propagate
    from .sources import open_image
    from .tiled_embedding import embed
    from .tiled_predictor import TiledPredictor
    from .zoo import DEFAULT_MODEL, list_models, register_model


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "Cancelled",
    "CheckpointError",
    "DownloadError",
    "HashMismatchError",
    "InvalidInputError",
    "SumError",
    "__version__",
    *_LAZY,
]
