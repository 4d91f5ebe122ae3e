"""The model of a BioImage.IO package (its ``pytorch_state_dict`` architecture and its ONNX graph).

``sum_core.export.package_model:SumPackageModel`` is what a BioImage.IO consumer instantiates
(``architecture.import_from`` / ``callable`` / ``kwargs`` of the package) before loading the
package's weights, which are a plain :class:`SamModel` state dict (AIS decoder under
``ais_decoder.``). One call segments one 1024×1024 RGB image from clicks, through the same graph
code as the ONNX decoder (:func:`sum_core.export.graphs.decode_graph`).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import torch

from ..modeling import AISDecoder, AISDecoderConfig, SamModel, ais_decoder_of, attach_ais_decoder, build_from_config
from ..modeling.config import ModelConfig
from .graphs import AisGraph, DecoderSettings, decode_graph

__all__ = ["SumPackageModel", "package_kwargs"]


def package_kwargs(model: SamModel, task: int | None) -> dict[str, Any]:
    """The ``architecture.kwargs`` (JSON values) that rebuild ``model`` as a :class:`SumPackageModel`."""
    decoder = ais_decoder_of(model)
    return {
        "config": asdict(model.config),
        "ais_decoder": None if decoder is None else asdict(decoder.config),
        "task": task if model.config.sum_tokens else None,
    }


class SumPackageModel(SamModel):
    """``(image, point_coords, point_labels) -> (masks, scores, uncertainty[, ais_maps])``.

    Parameters
    ----------
    config : dict
        :class:`ModelConfig` fields (lists for tuples, as in the package's YAML).
    ais_decoder : dict or None
        :class:`AISDecoderConfig` fields when the model has an AIS decoder.
    task : int or None
        SUM task of the decoder (SUM models only).

    Notes
    -----
    Inputs: ``image`` ``1×3×S×S`` float32 RGB in 0..255 (the image resized to long side ``S`` =
    1024 and zero-padded), ``point_coords`` ``1×N×2`` (x, y) in that frame, ``point_labels``
    ``1×N`` (1 positive, 0 negative, 2 / 3 box corners, -1 padding). Outputs at ``S×S``:
    ``masks`` ``1×1×S×S`` logits, ``scores`` ``1×1`` predicted IoU, ``uncertainty`` ``1×1×S×S``
    in [0, 1], and for models with an AIS decoder ``ais_maps`` ``1×3×S×S``.
    """

    def __init__(self, config: dict, ais_decoder: dict | None = None, task: int | None = None) -> None:
        names = {f.name for f in fields(ModelConfig)}
        model_config = ModelConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in names}
        )
        built = build_from_config(model_config)
        super().__init__(model_config, built.image_encoder, built.prompt_encoder, built.mask_decoder)
        if ais_decoder is not None:
            attach_ais_decoder(self, AISDecoder(AISDecoderConfig(**ais_decoder)))
        self.task = task
        self.eval()

    def forward(
        self, image: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Segment; see the class notes for the tensors."""
        size = self.config.image_size
        embedding, early = self.image_encoder(self.preprocess(image))
        full = torch.tensor([float(size), float(size)])
        low = 4 * self.config.embedding_size
        task = None if self.task is None else torch.tensor([self.task], dtype=torch.int64)
        masks, scores, _, uncertainty = decode_graph(
            self, DecoderSettings(), embedding, early if self.config.hq else None, point_coords, point_labels,
            torch.zeros(1, 1, low, low), torch.zeros(1), full, task,
        )  # fmt: skip
        if ais_decoder_of(self) is None:
            return masks, scores, uncertainty
        return masks, scores, uncertainty, AisGraph(self)(embedding, full)
