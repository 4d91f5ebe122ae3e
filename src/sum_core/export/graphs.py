"""The exported graphs: thin ``nn.Module`` wrappers around the library's own modules.

Each wrapper only arranges inputs and outputs in SAM's published ONNX interface; the math is the
library's: the image encoder, :meth:`PromptEncoder.embed_points` / :meth:`~PromptEncoder.embed_masks`,
the one decode step :meth:`SamModel.decode_embedded`, :meth:`SamModel.postprocess_masks` and the
uncertainty maps of :mod:`sum_core.uncertainty` chosen as :func:`sum_core.decoding.decode_window`
chooses them. Plain torch: exporting them needs ``torch.onnx`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..decoding import combine_tokens, token_uncertainty
from ..errors import InvalidInputError
from ..modeling import SamModel, ais_decoder_of
from ..prediction import PredictOptions

__all__ = ["AisGraph", "DecoderGraph", "DecoderSettings", "EncoderGraph", "decode_graph", "resized_size"]


@dataclass(frozen=True)
class DecoderSettings:
    """What an exported decoder computes (fixed in the graph).

    Attributes
    ----------
    multimask : bool
        HQ / SUM: the best of SAM tokens 1..3 instead of token 0; plain SAM: 3 candidates
        (``C = 3``) instead of 1.
    hq_token_only : bool
        HQ / SUM: the HQ-token logits alone instead of SAM + HQ.
    uncertainty : str
        ``"auto"``, ``"disagreement"`` or ``"entropy"`` (as :class:`sum_core.PredictOptions`;
        the prompt-perturbation ensemble needs several decoder runs and is not a graph).
    """

    multimask: bool = False
    hq_token_only: bool = False
    uncertainty: str = "auto"

    def method(self, model: SamModel) -> str:
        """The uncertainty definition for ``model`` (:meth:`PredictOptions.uncertainty_for`).

        Raises
        ------
        InvalidInputError
            For the ensemble, or what the model cannot honour (plain SAM with
            ``"disagreement"`` or ``hq_token_only``).
        """
        if self.uncertainty == "ensemble":
            raise InvalidInputError(
                "uncertainty='ensemble' decodes several perturbed prompts and cannot be one exported "
                "graph; use 'auto', 'disagreement' or 'entropy'"
            )
        options = PredictOptions(
            multimask=self.multimask, hq_token_only=self.hq_token_only, uncertainty=self.uncertainty
        )
        return options.uncertainty_for(model.config.hq)


def resized_size(original_size: torch.Tensor, target: int) -> torch.Tensor:
    """``(h, w)`` int64 of an image of ``original_size`` (2 values) resized to long side ``target``.

    :func:`sum_core.image.preprocess_shape` in tensor form (float64, ``floor(x + 0.5)``), for a
    graph whose image size is an input.
    """
    size = original_size.to(torch.float64)
    scaled = size * (target / size.max())
    return torch.clamp(torch.floor(scaled + 0.5), min=1).to(torch.int64)


def decode_graph(
    model: SamModel,
    settings: DecoderSettings,
    embedding: torch.Tensor,
    early: torch.Tensor | None,
    point_coords: torch.Tensor,
    point_labels: torch.Tensor,
    mask_input: torch.Tensor,
    has_mask_input: torch.Tensor,
    original_size: torch.Tensor,
    task: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAM's ONNX decoder interface on the library's decode step.

    Parameters
    ----------
    model : SamModel
    settings : DecoderSettings
    embedding : torch.Tensor
        ``1×256×E×E`` image embedding.
    early : torch.Tensor or None
        ``1×E×E×C`` early encoder feature (HQ / SUM), fused here into the HQ features.
    point_coords : torch.Tensor
        ``B×N×2`` (x, y) in the encoder frame; the caller appends SAM's (0, 0) / -1 padding
        point when there is no box, and gives a box as two points labelled 2 and 3.
    point_labels : torch.Tensor
        ``B×N`` float labels (1, 0, 2, 3, -1).
    mask_input : torch.Tensor
        ``B×1×L×L`` (or ``1×1×L×L``) mask-prompt logits; zeros when unused.
    has_mask_input : torch.Tensor
        ``(1,)`` float: 1 uses ``mask_input``, 0 the no-mask embedding.
    original_size : torch.Tensor
        ``(2,)`` float ``(H, W)`` of the image.
    task : torch.Tensor or None
        ``(1,)`` int64 SUM task (0, 1, 2); None for models without SUM tables.

    Returns
    -------
    masks, iou_predictions, low_res_masks, uncertainty : torch.Tensor
        ``B×C×H×W`` logits, ``B×C``, ``B×C×L×L`` logits, ``B×C×H×W`` in [0, 1].
    """
    method = settings.method(model)
    encoder = model.prompt_encoder
    batch = point_coords.shape[0]
    sparse = encoder.embed_points(point_coords, point_labels, pad=False)
    has_mask = has_mask_input.reshape(-1, 1, 1, 1)
    dense = has_mask * encoder.embed_masks(mask_input, batch) + (1 - has_mask) * encoder.embed_masks(None, batch)
    hq_features = model.mask_decoder.hq_features(embedding, early) if model.config.hq else None
    task_index = None if task is None else task.reshape(())
    decoded = model.decode_embedded(
        embedding, hq_features, sparse, dense, task_index, settings.multimask, settings.hq_token_only
    )
    original = original_size.to(torch.int64)
    input_size = resized_size(original_size, model.config.image_size)
    # As decode_window: each token is upscaled once and serves the mask and the uncertainty.
    full_sam = model.postprocess_masks(decoded.sam_logits, input_size, original)
    full_hq = model.postprocess_masks(decoded.hq_logits, input_size, original) if model.config.hq else None
    masks = combine_tokens(full_sam, full_hq, settings.hq_token_only)
    uncertainty = token_uncertainty(method, full_sam, full_hq, settings.hq_token_only)
    return masks, decoded.iou, decoded.logits, uncertainty


class EncoderGraph(nn.Module):
    """``image`` (``B×3×S×S``, :meth:`SamModel.preprocess` output) -> ``image_embeddings``
    (``B×256×E×E``) and, for HQ / SUM models, ``early_features`` (``B×E×E×C``)."""

    input_names = ["image"]

    def __init__(self, model: SamModel) -> None:
        super().__init__()
        self.model = model
        self.output_names = ["image_embeddings"] + (["early_features"] if model.config.hq else [])

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Run the image encoder."""
        embedding, early = self.model.image_encoder(image)
        return (embedding, early) if self.model.config.hq else embedding


class DecoderGraph(nn.Module):
    """Prompt encoder + mask decoder + upscaling + uncertainty (:func:`decode_graph`).

    Inputs, in order: ``image_embeddings``, ``early_features`` (HQ / SUM), ``point_coords``,
    ``point_labels``, ``mask_input``, ``has_mask_input``, ``orig_im_size``, ``task`` (SUM).
    Outputs: ``masks``, ``iou_predictions``, ``low_res_masks``, ``uncertainty``.
    """

    output_names = ["masks", "iou_predictions", "low_res_masks", "uncertainty"]

    def __init__(self, model: SamModel, settings: DecoderSettings) -> None:
        super().__init__()
        settings.method(model)  # refuse what the model cannot honour before tracing
        self.model = model
        self.settings = settings
        hq, sum_tokens = model.config.hq, model.config.sum_tokens
        self.input_names = (
            ["image_embeddings"]
            + (["early_features"] if hq else [])
            + ["point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]
            + (["task"] if sum_tokens else [])
        )

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Decode; ``inputs`` in the order of :attr:`input_names`."""
        named = dict(zip(self.input_names, inputs))
        return decode_graph(
            self.model,
            self.settings,
            named["image_embeddings"],
            named.get("early_features"),
            named["point_coords"],
            named["point_labels"],
            named["mask_input"],
            named["has_mask_input"],
            named["orig_im_size"],
            named.get("task"),
        )


class AisGraph(nn.Module):
    """``image_embeddings`` (``B×256×E×E``) and ``orig_im_size`` (``(2,)`` float) -> ``ais_maps``
    (``B×3×H×W``: foreground, centre distance, boundary distance in 0..1), as
    :func:`sum_core.modeling.decode_ais_maps` (decoder, then :meth:`SamModel.postprocess_masks`)."""

    input_names = ["image_embeddings", "orig_im_size"]
    output_names = ["ais_maps"]

    def __init__(self, model: SamModel) -> None:
        super().__init__()
        if ais_decoder_of(model) is None:
            raise InvalidInputError(f"the {model.config.model_type} model has no AIS decoder to export")
        self.model = model

    def forward(self, image_embeddings: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """Decode the three AIS maps at the image's size."""
        maps = ais_decoder_of(self.model)(image_embeddings)
        input_size = resized_size(orig_im_size, self.model.config.image_size)
        return self.model.postprocess_masks(maps, input_size, orig_im_size.to(torch.int64))
