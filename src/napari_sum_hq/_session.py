"""Qt-free model and embedding state of the interactive widget.

Nothing here imports torch or ``sum_core``'s model code at import time: the
heavy imports happen inside :func:`encode_steps`, which runs in a worker thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Device choices offered by the widget; "auto" lets ``sum_core`` pick CUDA, MPS or CPU.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")

#: Steps yielded by :func:`encode_steps` (used as the progress-bar total).
ENCODE_STEPS: tuple[str, ...] = ("Loading model", "Computing image embedding", "Done")

SliceKey = tuple[int, ...]


@dataclass(frozen=True)
class ModelChoice:
    """Which model to run, and where.

    Attributes
    ----------
    source : str
        Registry name (``sum_core.zoo.list_models()``) or checkpoint path.
    device : str
        One of :data:`DEVICES`.
    """

    source: str
    device: str = "auto"

    @property
    def torch_device(self) -> str | None:
        """Device string for ``sum_core`` (``None`` = automatic choice)."""
        return None if self.device == "auto" else self.device


@dataclass
class EncodeResult:
    """What a finished encode hands back to the GUI thread."""

    choice: ModelChoice
    model: Any
    slice_key: SliceKey
    predictor: Any


def encode_steps(
    choice: ModelChoice, model: Any, image: np.ndarray, slice_key: SliceKey
) -> Generator[str, None, EncodeResult]:
    """Load the model if needed and encode one image slice, step by step.

    Meant to run in a :func:`napari.qt.threading.thread_worker`: each ``yield``
    is a point where a cancelled worker stops, and the GUI thread receives the
    :class:`EncodeResult` only when the generator returns. Nothing here
    touches napari or Qt.

    Parameters
    ----------
    choice : ModelChoice
        Model source and device.
    model : SamModel or None
        Already loaded model for ``choice``; ``None`` loads it here.
    image : np.ndarray
        2D gray ``(H, W)`` or RGB(A) ``(H, W, C)`` slice to encode.
    slice_key : tuple of int
        Index of the slice in the stack (empty for a 2D image).

    Yields
    ------
    str
        Name of the step about to run (one of :data:`ENCODE_STEPS`).

    Returns
    -------
    EncodeResult
        The model and a new ``sum_core`` predictor holding the embedding.
    """
    yield ENCODE_STEPS[0]
    if model is None:
        from sum_core.loading import load_model

        model = load_model(choice.source, device=choice.torch_device)
    yield ENCODE_STEPS[1]
    from sum_core.predictor import Predictor

    predictor = Predictor(model, device=choice.torch_device)
    predictor.set_image(image)
    yield ENCODE_STEPS[2]
    return EncodeResult(choice, model, slice_key, predictor)


class EmbeddingCache:
    """The loaded model and the encoded slices of the current image (LRU).

    Parameters
    ----------
    max_slices : int
        How many encoded slices of a stack are kept (each holds an image
        embedding of a few MB).
    """

    def __init__(self, max_slices: int = 8) -> None:
        self.max_slices = max_slices
        self.choice: ModelChoice | None = None
        self.model: Any = None
        self._predictors: OrderedDict[SliceKey, Any] = OrderedDict()

    def model_for(self, choice: ModelChoice) -> Any:
        """Return the loaded model if it matches ``choice``, else ``None``."""
        return self.model if choice == self.choice else None

    def predictor(self, slice_key: SliceKey) -> Any:
        """Return the predictor of an encoded slice, or ``None``."""
        predictor = self._predictors.get(slice_key)
        if predictor is not None:
            self._predictors.move_to_end(slice_key)
        return predictor

    def store(self, result: EncodeResult) -> None:
        """Keep a finished encode (a different model drops all older slices)."""
        if result.choice != self.choice:
            self.clear()
            self.choice, self.model = result.choice, result.model
        self._predictors[result.slice_key] = result.predictor
        self._predictors.move_to_end(result.slice_key)
        while len(self._predictors) > self.max_slices:
            self._predictors.popitem(last=False)

    def clear_slices(self) -> None:
        """Forget the embeddings (new image), keep the model."""
        self._predictors.clear()

    def clear(self) -> None:
        """Forget the model and the embeddings (new model or device)."""
        self._predictors.clear()
        self.choice = None
        self.model = None
