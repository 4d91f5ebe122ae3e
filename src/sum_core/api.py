"""One-call segmentation for notebooks: :func:`segment`."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np
import torch

from .acceleration import check_precision
from .device import resolve_device
from .errors import InvalidInputError
from .image import Normalization
from .loading import resolve_model
from .modeling import SamModel
from .prediction import PredictOptions, Prediction, UncertaintyMethod
from .predictor import Predictor
from .prompts import mask_logits, validate_prompts
from .sources import image_planes
from .tiling import tile_grid
from .validation import check_bool
from .zoo import DEFAULT_MODEL


def segment(
    image: Any,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    model: str | PathLike | SamModel = DEFAULT_MODEL,
    uncertainty: UncertaintyMethod = "auto",
    task: int = 1,
    multimask: bool = False,
    hq_token_only: bool = False,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    compile: bool = False,
    normalization: Normalization | None = None,
    mask_input: np.ndarray | None = None,
    tile_shape: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
) -> Prediction:
    """Segment objects of ``image`` from clicks, boxes and/or a mask; full-size results at any size.

    Parameters
    ----------
    image : array-like or path
        2D grayscale (H, W) or RGB/RGBA (H, W, 3|4), any real dtype, any size (numpy, dask,
        zarr or a file path; images larger than the encoder are tiled, see
        :class:`sum_core.Predictor`).
    points : array-like, optional
        (N, 2) clicks as (row, col) image pixels.
    labels : array-like, optional
        (N,) 1 positive / 0 negative; default: every click positive.
    box : array-like, optional
        (4,) (row0, col0, row1, col1), or (K, 4) for K objects.
    model : str, path or SamModel
        Registry name (see ``sum-hq models list``), checkpoint path, or a loaded
        model. Names and paths are loaded once and kept between calls
        (:func:`sum_core.loading.resolve_model`).
    uncertainty : {"auto", "disagreement", "entropy", "ensemble"}
        Uncertainty map, see :class:`sum_core.prediction.PredictOptions` (``"auto"``:
        disagreement for HQ-SAM / SUM, entropy for plain SAM).
    task : {0, 1, 2}
        SUM task prompt (0 anything, 1 object, 2 entity).
    multimask, hq_token_only : bool
        Decoder output selection, see :class:`sum_core.prediction.PredictOptions`.
    device : str or torch.device, optional
        Default: CUDA, then MPS, then CPU.
    precision : {"fp32", "bf16", "fp16"}
        Encoder precision, see :class:`sum_core.Predictor`.
    compile : bool
        Compile the model with ``torch.compile`` (see :class:`sum_core.Predictor`).
    normalization : Normalization, optional
        Intensity window for non-uint8 images (default: 0.5 / 99.5 percentiles).
    mask_input : array-like, optional
        Full-size ``(H, W)`` mask or logits as a mask prompt.
    tile_shape, halo : int or (int, int), optional
        Tiling, see :func:`sum_core.tiling.tile_grid`: by default an image larger than the
        encoder is cut into windows of at most the encoder size (no downscaling);
        ``tile_shape=image.shape[:2]`` encodes it as one downscaled window (SAM's behaviour).

    Returns
    -------
    Prediction
        ``masks``, ``logits``, ``uncertainties`` ``(K, H, W)`` and ``scores`` ``(K,)``;
        ``mask`` / ``uncertainty`` / ``score`` for the single object when ``K == 1``.

    Raises
    ------
    InvalidInputError
        Bad image, prompts or options, found before the model is loaded or anything is encoded.

    Examples
    --------
    >>> import numpy as np
    >>> from sum_core import build_model, segment
    >>> image = np.zeros((1040, 1392), np.uint16); image[900:960, 1300:1380] = 3000
    >>> pred = segment(image, points=[[930, 1340]], model=build_model("vit_tiny", image_size=256), device="cpu")
    >>> pred.mask.shape, pred.masks.shape
    ((1040, 1392), (1, 1040, 1392))
    """
    options = PredictOptions(multimask, hq_token_only, task, uncertainty)
    compile = check_bool(compile, "compile")
    if points is None and box is None and mask_input is None:
        raise InvalidInputError("give at least one prompt: points=(N, 2) (row, col) clicks, box and/or mask_input")
    planes = image_planes(image)  # a numpy image is checked in full here, before the model loads
    plane_shape = planes.plane_shape
    if points is not None or labels is not None or box is not None:  # a mask prompt may come alone
        validate_prompts(points, labels, box, image_shape=plane_shape, default_positive=True)
    low_res = _check_mask_input(mask_input, plane_shape)
    target = resolve_device(device)
    check_precision(precision, target)  # before loading the model
    sam_model = resolve_model(model, target)
    options.uncertainty_for(sam_model.config.hq)  # before encoding
    if low_res:
        config = sam_model.config
        size = config.low_res_size
        if np.shape(mask_input) != (1, size, size) or len(tile_grid(plane_shape, config.image_size, tile_shape, halo)) > 1:
            raise InvalidInputError(
                f"mask_input: (1, {size}, {size}) low-resolution logits fit only an image encoded as one window; "
                f"give full-size {tuple(plane_shape)} logits or a bool mask, got shape {np.shape(mask_input)}"
            )
    predictor = Predictor(sam_model, device=target, precision=precision, compile=compile)
    predictor.set_image(planes.image, normalization, tile_shape=tile_shape, halo=halo)
    return predictor.predict(
        points=points, labels=labels, box=box, mask_input=mask_input, multimask=multimask,
        hq_token_only=hq_token_only, task=task, uncertainty=uncertainty,
    )  # fmt: skip


def _check_mask_input(mask_input: Any, plane_shape: tuple[int, int]) -> bool:
    """Check a mask prompt's shape before any model work; True for low-resolution logits."""
    if mask_input is None:
        return False
    shape = np.shape(mask_input)
    if len(shape) == 3 and shape[0] == 1 and shape[1] == shape[2]:
        return True
    if shape != tuple(plane_shape):
        raise InvalidInputError(
            f"mask_input: expected full-size {tuple(plane_shape)} logits or a bool mask (or (1, L, L) "
            f"low-resolution logits), got shape {shape}"
        )
    mask_logits(mask_input)  # finite numbers or a bool mask
    return False
