"""One-call segmentation for notebooks: :func:`segment`."""

from __future__ import annotations

from collections import OrderedDict
from os import PathLike

import numpy as np
import torch

from .acceleration import check_precision
from .device import resolve_device
from .errors import InvalidInputError
from .loading import load_model
from .modeling import SamModel
from .predictor import Prediction, Predictor, UncertaintyMethod
from .zoo import DEFAULT_MODEL

# Loaded models by (name or path, device), so repeated calls do not reload weights.
_MODELS: OrderedDict[tuple[str, str], SamModel] = OrderedDict()
_MAX_CACHED_MODELS = 2


def segment(
    image: np.ndarray,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    model: str | PathLike | SamModel = DEFAULT_MODEL,
    uncertainty: UncertaintyMethod = "disagreement",
    task: int = 1,
    multimask: bool = False,
    hq_token_only: bool = False,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    compile: bool = False,
) -> Prediction:
    """Segment one object of ``image`` from clicks and/or a box.

    Parameters
    ----------
    image : np.ndarray
        2D grayscale (H, W) or RGB/RGBA (H, W, 3|4), any real dtype.
    points : array-like, optional
        (N, 2) clicks as (row, col) image pixels.
    labels : array-like, optional
        (N,) 1 positive / 0 negative; default: every click positive.
    box : array-like, optional
        (4,) (row0, col0, row1, col1), or (K, 4) for K objects.
    model : str, path or SamModel
        Registry name (see ``sum-hq models list``), checkpoint path, or a loaded
        model. Names and paths are loaded once and kept between calls.
    uncertainty : {"disagreement", "entropy", "ensemble"}
        Uncertainty map, see :meth:`sum_core.Predictor.predict`. Plain SAM
        models have no HQ token: use "entropy" or "ensemble" with them.
    task : {0, 1, 2}
        SUM task prompt (0 anything, 1 object, 2 entity).
    multimask, hq_token_only : bool
        Decoder output selection, see :meth:`sum_core.Predictor.predict`.
    device : str or torch.device, optional
        Default: CUDA, then MPS, then CPU.
    precision : {"fp32", "bf16", "fp16"}
        Model precision, see :class:`sum_core.Predictor` (``"bf16"``: CUDA or CPU,
        ``"fp16"``: CUDA only).
    compile : bool
        Compile the model with ``torch.compile`` (see :class:`sum_core.Predictor`); pays
        off over many calls with the same model (names are loaded once and stay compiled).

    Returns
    -------
    Prediction
        ``mask``, ``score``, ``logits``, ``low_res_logits`` and ``uncertainty``.

    Examples
    --------
    >>> from skimage import data  # doctest: +SKIP
    >>> pred = segment(data.coins(), points=[[120, 60]])  # doctest: +SKIP
    >>> pred.mask.sum(), float(pred.uncertainty.max())  # doctest: +SKIP
    """
    if points is not None and labels is None:
        labels = np.ones(len(np.atleast_2d(np.asarray(points))), dtype=np.int64)
    if points is None and box is None:
        raise InvalidInputError("give at least one prompt: points=(N, 2) (row, col) clicks and/or box")
    check_precision(precision, resolve_device(device))  # before loading the model
    predictor = Predictor(_resolve_model(model, device), device=device, precision=precision, compile=compile)
    predictor.set_image(image)
    return predictor.predict(
        points=points,
        labels=labels,
        box=box,
        uncertainty=uncertainty,
        task=task,
        multimask=multimask,
        hq_token_only=hq_token_only,
    )


def _resolve_model(model: str | PathLike | SamModel, device) -> SamModel:
    if isinstance(model, SamModel):
        return model
    if not isinstance(model, (str, PathLike)):
        raise InvalidInputError(
            f"model must be a registry name, a checkpoint path or a SamModel, got {type(model).__name__}"
        )
    key = (str(model), str(device))
    if key not in _MODELS:
        _MODELS[key] = load_model(model, device=device)
        while len(_MODELS) > _MAX_CACHED_MODELS:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(key)
    return _MODELS[key]
