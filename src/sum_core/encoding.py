"""The one encode path: uint8 RGB pixels -> :class:`~sum_core.modeling.ImageEmbedding`.

Every consumer encodes through :func:`encode` (whole images in the predictor, tile
windows in the tiled embeddings and automatic segmentation, batches in training), so the
preprocessing (SAM's ``ResizeLongestSide``, normalisation, zero padding), the precision
(``torch.autocast``, see :mod:`sum_core.acceleration`) and the HQ features are the same
everywhere.

The weights' identity (:func:`weights_hash`) is computed once per model and state: it is
memoised on the model and recomputed only when a parameter or buffer was replaced or
modified in place (training).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import torch

from .acceleration import autocast, check_compile, check_precision, compile_model
from .device import resolve_device
from .errors import InvalidInputError
from .image import resize_longest_side
from .modeling import ImageEmbedding, SamModel

__all__ = ["encode", "encode_image", "model_name", "prepare_model", "to_pixels", "weights_hash"]


def prepare_model(
    model: SamModel, device: str | torch.device | None, precision: str, compile: bool
) -> tuple[SamModel, torch.device, str]:
    """Ready a model for inference: checked, on ``device`` (default CUDA, MPS, CPU), in eval mode,
    compiled in place when asked (:func:`sum_core.acceleration.compile_model`).

    Returns
    -------
    (SamModel, torch.device, str)
        The model, the resolved device and the checked precision.

    Raises
    ------
    InvalidInputError
        Not a ``SamModel``, an unknown or unsupported precision, ``compile=True`` without a compiler.
    """
    if not isinstance(model, SamModel):
        raise InvalidInputError(
            f"model must be a sum_core SamModel (from sum_core.load_model), got {type(model).__name__}"
        )
    check_compile(compile)
    target = resolve_device(device)
    precision = check_precision(precision, target)
    model = model.to(target).eval()
    if compile:
        compile_model(model, target)
    return model, target, precision


def to_pixels(image: np.ndarray, encoder_size: int) -> torch.Tensor:
    """An ``(H, W, 3)`` uint8 image resized to the encoder (long side ``encoder_size``),
    as a ``1×3×h×w`` uint8 tensor (SAM's ``ResizeLongestSide``, byte-identical)."""
    resized = resize_longest_side(image, encoder_size)
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))[None]


def encode(
    model: SamModel,
    pixels: Sequence[torch.Tensor],
    original_sizes: Sequence[tuple[int, int]],
    precision: str = "fp32",
    hq_features: bool = True,
) -> list[ImageEmbedding]:
    """Encode a batch of resized images in one encoder call.

    Gradients follow the caller's mode (wrap in ``torch.inference_mode()`` for inference;
    training calls it with gradients when the encoder is trained).

    Parameters
    ----------
    model : SamModel
    pixels : sequence of torch.Tensor
        ``1×3×h×w`` (or ``3×h×w``) RGB values 0..255 (uint8 or float), long side at most the
        model's image size (see :func:`to_pixels`); any device (moved to the model's).
    original_sizes : sequence of (int, int)
        ``(H, W)`` of each image before resizing.
    precision : {"fp32", "bf16", "fp16"}
        Encoder autocast precision; embeddings are returned as float32.
    hq_features : bool
        Compute the HQ features once here (inference). False leaves them to the decode
        step (training, where they take gradients).

    Returns
    -------
    list of ImageEmbedding
        One per image, batch dimension 1.
    """
    if len(pixels) != len(original_sizes) or not pixels:
        raise InvalidInputError(
            f"pixels, original_sizes: need the same non-zero count, got {len(pixels)} and {len(original_sizes)}"
        )
    device = model.pixel_mean.device
    size = model.config.image_size
    batch, input_sizes = [], []
    for x in pixels:
        x = x if x.dim() == 4 else x[None]
        if x.shape[1] != 3 or max(x.shape[-2:]) > size:
            raise InvalidInputError(
                f"pixels: expected 1×3×h×w with h, w <= {size}, got {tuple(x.shape)} (see to_pixels)"
            )
        input_sizes.append((int(x.shape[-2]), int(x.shape[-1])))
        batch.append(model.preprocess(x.to(device, non_blocking=True).float()))
    with autocast(device, precision):
        embeddings, early = model.image_encoder(torch.cat(batch))
    embeddings = embeddings.float()
    early = early.float() if model.config.hq else None
    fused = None
    if hq_features and model.config.hq:
        fused = model.mask_decoder.hq_features(embeddings, early)
    return [
        ImageEmbedding(
            embedding=embeddings[i : i + 1],
            early=None if early is None else early[i : i + 1],
            hq_features=None if fused is None else fused[i : i + 1],
            input_size=input_sizes[i],
            original_size=(int(original_sizes[i][0]), int(original_sizes[i][1])),
        )
        for i in range(len(batch))
    ]


def encode_image(model: SamModel, image: np.ndarray, precision: str = "fp32") -> ImageEmbedding:
    """Encode one ``(H, W, 3)`` uint8 image (see :func:`sum_core.image.prepare_image`)
    for inference (no gradients, HQ features included)."""
    pixels = to_pixels(image, model.config.image_size)
    with torch.inference_mode():
        return encode(model, [pixels], [image.shape[:2]], precision)[0]


def _state_fingerprint(model: SamModel) -> tuple:
    """Identity of the current tensors and their in-place versions (cheap)."""
    return tuple(
        (name, t.data_ptr(), _version(t), tuple(t.shape), str(t.dtype))
        for name, t in model.state_dict(keep_vars=True).items()
    )


def _version(tensor: torch.Tensor) -> int:
    try:
        return tensor._version
    except RuntimeError:  # inference tensors keep no version (and cannot change outside inference)
        return -1


def weights_hash(model: SamModel) -> str:
    """BLAKE2b of the model's state dict (names, dtypes, shapes and values), ``"blake2b:<hex>"``.

    Computed once per model and state: memoised on the model, recomputed only when a
    tensor was replaced or changed in place (so the same weights loaded from a registry
    name or a file share caches, and a job hashes its weights once).
    """
    fingerprint = _state_fingerprint(model)
    memo = getattr(model, "_weights_hash_memo", None)
    if memo is not None and memo[0] == fingerprint:
        return memo[1]
    h = hashlib.blake2b(digest_size=20)
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    value = f"blake2b:{h.hexdigest()}"
    object.__setattr__(model, "_weights_hash_memo", (fingerprint, value))
    return value


def model_name(model: SamModel) -> str:
    """Architecture name used in cache signatures, e.g. ``"vit_b-hq"``."""
    config = model.config
    return config.model_type + ("-hq" if config.hq else "") + ("-sum" if config.sum_tokens else "")
