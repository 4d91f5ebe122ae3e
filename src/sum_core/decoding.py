"""Prompted decoding of one encoded window: prompts in, full-window masks + uncertainty out.

:func:`decode_window` is the one inference path from an :class:`~sum_core.modeling.ImageEmbedding`
and validated :class:`~sum_core.prompts.Prompts` to masks at the window's size: the
whole image for :class:`sum_core.Predictor` on images of one window, each visited tile for
:class:`sum_core.TiledPredictor`. It converts the prompts to the model frame
(:func:`sum_core.prompts.to_model_frame`), runs the model's decode step
(:meth:`sum_core.modeling.SamModel.decode`), picks plain SAM's best multimask candidate,
upscales each token once and computes the uncertainty map.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch

from . import uncertainty as unc
from .acceleration import uses_cuda_graphs
from .modeling import DecodedMasks, ImageEmbedding, SamModel
from .prediction import PredictOptions
from .prompts import ModelPrompts, Prompts, to_model_frame

__all__ = [
    "TOKEN_METHODS", "WindowMasks", "combine_tokens", "decode_prompts", "decode_window", "run_decoder",
    "token_uncertainty", "upscale",
]  # fmt: skip

#: Uncertainty methods computed from the upscaled SAM / HQ token logits alone (:func:`token_uncertainty`).
TOKEN_METHODS = ("disagreement", "entropy")


def combine_tokens(full_sam: torch.Tensor | None, full_hq: torch.Tensor | None, hq_token_only: bool) -> torch.Tensor:
    """The mask logits from the upscaled token logits: SAM alone (plain SAM), HQ alone
    (``hq_token_only``), else their sum (HQ-SAM). Upscaling is linear, so up(SAM) + up(HQ) is up(SAM + HQ).
    """
    if full_hq is None:
        return full_sam
    return full_hq if hq_token_only else full_sam + full_hq


def token_uncertainty(
    method: str, full_sam: torch.Tensor | None, full_hq: torch.Tensor | None, hq_token_only: bool
) -> torch.Tensor:
    """Per-pixel uncertainty of one of :data:`TOKEN_METHODS` from the upscaled token logits:
    ``"disagreement"`` of the SAM and HQ tokens, or the Bernoulli ``"entropy"`` of the token the
    mask is made of alone (HQ with ``hq_token_only``, else SAM)."""
    if method == "disagreement":
        return unc.disagreement(full_sam, full_hq)
    return unc.bernoulli_entropy(full_hq if full_hq is not None and hq_token_only else full_sam)


class WindowMasks(NamedTuple):
    """Masks of ``K`` objects at the window's size (torch tensors on the model's device).

    Attributes
    ----------
    logits : torch.Tensor
        float32 ``K×H×W``.
    scores : torch.Tensor
        float32 ``K`` predicted IoU.
    uncertainty : torch.Tensor
        float32 ``K×H×W`` in [0, 1].
    low_res_logits : torch.Tensor
        float32 ``K×1×L×L``.
    """

    logits: torch.Tensor
    scores: torch.Tensor
    uncertainty: torch.Tensor
    low_res_logits: torch.Tensor


def run_decoder(
    model: SamModel, image: ImageEmbedding, frame: ModelPrompts, task: int | None, multimask: bool, hq_token_only: bool
) -> DecodedMasks:
    """:meth:`SamModel.decode` for inference: model-frame prompts (one object per batch row) in,
    low-resolution masks out, without gradients; on CUDA graphs the outputs are copied (a
    graph's next replay overwrites them). Plain SAM with ``multimask`` keeps its 3 candidates."""
    cuda_graphs = uses_cuda_graphs(model)
    if cuda_graphs:
        torch.compiler.cudagraph_mark_step_begin()
    with torch.inference_mode():
        points = None if frame.point_coords is None else (frame.point_coords, frame.point_labels)
        decoded = model.decode(image, points, frame.boxes, frame.mask_input, task, multimask, hq_token_only)
    if cuda_graphs:
        decoded = DecodedMasks(*(None if t is None else t.clone() for t in decoded))
    return decoded


def decode_prompts(
    model: SamModel, image: ImageEmbedding, prompts: Prompts, options: PredictOptions
) -> DecodedMasks:
    """Validated (row, col) prompts -> one low-resolution mask per object (``C == 1``).

    Plain SAM with ``multimask`` keeps the candidate with the best predicted IoU (HQ models
    choose inside the decoder). Runs without gradients.
    """
    frame = to_model_frame(prompts, image.original_size, image.input_size, device=image.device)
    decoded = run_decoder(model, image, frame, options.task, options.multimask, options.hq_token_only)
    if model.config.hq or not options.multimask:
        return decoded
    with torch.inference_mode():
        logits, iou, sam_logits, hq_logits = decoded
        best = iou.argmax(dim=1)
        rows = torch.arange(iou.shape[0], device=iou.device)
        return DecodedMasks(logits[rows, best][:, None], iou[rows, best][:, None], sam_logits[rows, best][:, None], hq_logits)


def upscale(model: SamModel, image: ImageEmbedding, low_res: torch.Tensor) -> torch.Tensor:
    """``B×C×L×L`` low-resolution logits -> ``B×C×H×W`` logits at the window's size."""
    with torch.inference_mode():
        return model.postprocess_masks(low_res, image.input_size, image.original_size)


def decode_window(
    model: SamModel, image: ImageEmbedding, prompts: Prompts, options: PredictOptions
) -> WindowMasks:
    """Masks, scores and uncertainty of every object of ``prompts`` at the window's size.

    Parameters
    ----------
    model : SamModel
    image : ImageEmbedding
        The encoded window (``original_size`` is the window's size in pixels).
    prompts : Prompts
        Validated prompts in the window's (row, col) pixels.
    options : PredictOptions

    Returns
    -------
    WindowMasks
    """
    method = options.uncertainty_for(model.config.hq)
    logits, iou, sam_logits, hq_logits = decode_prompts(model, image, prompts, options)
    # Upscaling is linear, so the SAM + HQ sum is upscaled as up(SAM) + up(HQ): each token is
    # upscaled once and serves both the mask and the uncertainty map.
    hq = model.config.hq
    need_sam = not hq or not options.hq_token_only or method == "disagreement"
    full_sam = upscale(model, image, sam_logits) if need_sam else None
    full_hq = upscale(model, image, hq_logits) if hq else None
    full = combine_tokens(full_sam, full_hq, options.hq_token_only)
    if method in TOKEN_METHODS:
        unc_map = token_uncertainty(method, full_sam, full_hq, options.hq_token_only)
    else:
        unc_map = _ensemble(model, image, prompts, options)
    k = full.shape[0]
    return WindowMasks(
        logits=full[:, 0].float(),
        scores=iou[:, 0].float(),
        uncertainty=unc_map.reshape(k, *full.shape[-2:]).float(),
        low_res_logits=logits.float(),
    )


def _ensemble(model: SamModel, image: ImageEmbedding, prompts: Prompts, options: PredictOptions) -> torch.Tensor:
    members = unc.perturb_prompts(
        prompts.points, prompts.labels, prompts.boxes, options.ensemble_size, options.seed,
        image_shape=image.original_size,
    )  # fmt: skip
    logits = [
        decode_prompts(model, image, replace(prompts, points=points, boxes=boxes), options).logits
        for points, _, boxes in members
    ]
    return unc.ensemble_entropy(torch.stack([upscale(model, image, lg) for lg in logits]))
