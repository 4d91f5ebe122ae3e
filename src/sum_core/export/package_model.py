"""The model of a BioImage.IO package (its ``pytorch_state_dict`` architecture and its ONNX graph).

``sum_core.export.package_model:SumPackageModel`` is what a BioImage.IO consumer instantiates
(``architecture.import_from`` / ``callable`` / ``kwargs`` of the package) before loading the
package's weights, which are a plain :class:`SamModel` state dict (AIS decoder under
``ais_decoder.``). One call segments one 1024×1024 RGB image from clicks, box corners and a mask
prompt, through the same graph code as the ONNX decoder (:func:`sum_core.export.graphs.decode_graph`).
With an AIS decoder the call also labels the instances (:func:`sum_core.ais_postprocess.
instances_from_distance_maps`, micro-sam's seeded watershed, which is not a graph):
:class:`PackageGraph` is the traceable part that becomes the package's ONNX file.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import torch
from torch import nn

from ..ais_postprocess import instances_from_distance_maps
from ..modeling import AISDecoder, AISDecoderConfig, SamModel, ais_decoder_of, attach_ais_decoder, build_from_config
from ..modeling.config import ModelConfig
from .graphs import AisGraph, DecoderSettings, decode_graph

__all__ = ["PACKAGE_INPUTS", "PackageGraph", "SumPackageModel", "package_kwargs"]

#: The inputs of a package, in call order.
PACKAGE_INPUTS = ["image", "point_coords", "point_labels", "mask_input", "has_mask_input"]


def package_kwargs(model: SamModel, task: int | None) -> dict[str, Any]:
    """The ``architecture.kwargs`` (JSON values) that rebuild ``model`` as a :class:`SumPackageModel`."""
    decoder = ais_decoder_of(model)
    return {
        "config": asdict(model.config),
        "ais_decoder": None if decoder is None else asdict(decoder.config),
        "task": task if model.config.sum_tokens else None,
    }


class SumPackageModel(SamModel):
    """``(image, point_coords, point_labels, mask_input, has_mask_input) -> (masks, scores,
    uncertainty[, ais_maps, instance_labels])``.

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
    ``1×N`` (1 positive, 0 negative, 2 / 3 box corners, -1 padding), ``mask_input``
    ``1×1×L×L`` (``L = S / 4``) mask-prompt logits in that frame (SAM's low-resolution mask,
    e.g. an earlier ``low_res_masks``), ``has_mask_input`` ``(1,)``: 1 uses ``mask_input``, 0
    ignores it. Outputs at ``S×S``: ``masks`` ``1×1×S×S`` logits, ``scores`` ``1×1`` predicted
    IoU, ``uncertainty`` ``1×1×S×S`` in [0, 1], and for models with an AIS decoder ``ais_maps``
    ``1×3×S×S`` and ``instance_labels`` ``1×1×S×S`` int32 (0 background), micro-sam's default
    post-processing of the maps.
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

    def output_names(self) -> list[str]:
        """The names of :meth:`forward`'s outputs."""
        ais = ["ais_maps", "instance_labels"] if ais_decoder_of(self) is not None else []
        return ["masks", "scores", "uncertainty"] + ais

    def segment(self, image: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """The graph part of :meth:`forward`: every output but ``instance_labels``."""
        size = self.config.image_size
        embedding, early = self.image_encoder(self.preprocess(image))
        full = torch.tensor([float(size), float(size)])
        task = None if self.task is None else torch.tensor([self.task], dtype=torch.int64)
        masks, scores, _, uncertainty = decode_graph(
            self, DecoderSettings(), embedding, early if self.config.hq else None, point_coords, point_labels,
            mask_input, has_mask_input.reshape(1), full, task,
        )  # fmt: skip
        if ais_decoder_of(self) is None:
            return masks, scores, uncertainty
        return masks, scores, uncertainty, AisGraph(self)(embedding, full)

    def forward(self, image: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """Segment; see the class notes for the tensors."""
        outputs = self.segment(image, point_coords, point_labels, mask_input, has_mask_input)
        if ais_decoder_of(self) is None:
            return outputs
        maps = outputs[3][0].detach().cpu().numpy()
        labels = instances_from_distance_maps(maps[0], maps[1], maps[2])
        return outputs + (torch.from_numpy(labels.astype("int32"))[None, None],)


class PackageGraph(nn.Module):
    """:meth:`SumPackageModel.segment` as a module to trace: the package's ONNX file."""

    input_names = PACKAGE_INPUTS

    def __init__(self, package: SumPackageModel) -> None:
        super().__init__()
        self.package = package
        self.output_names = package.output_names()[:4]  # instance_labels is not a graph

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """:meth:`SumPackageModel.segment`."""
        return self.package.segment(*inputs)
