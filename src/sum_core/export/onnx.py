"""``sum-hq export onnx``: the encoder, the prompt decoder and the AIS decoder as ONNX graphs.

Written into one folder (see :func:`export_onnx`):

- ``encoder.onnx``: ``image`` ``B×3×1024×1024`` float32, the normalised, zero-padded input of
  :meth:`SamModel.preprocess` (``(rgb - mean) / std`` of the image resized to long side 1024,
  then padded bottom/right with zeros) -> ``image_embeddings`` ``B×256×64×64`` and, for HQ-SAM /
  SUM, ``early_features`` ``B×64×64×C`` (the first global-attention block). Dynamic ``batch``.
- ``decoder.onnx``: SAM's ONNX decoder interface (``segment_anything.utils.onnx.SamOnnxModel``):
  ``image_embeddings`` ``1×256×64×64``, [HQ/SUM] ``early_features`` ``1×64×64×C``,
  ``point_coords`` ``B×N×2`` float32 (x, y) in the 1024 frame, ``point_labels`` ``B×N`` float32
  (1 positive, 0 negative, 2 / 3 box corners, -1 padding: append a (0, 0) / -1 point when there
  is no box), ``mask_input`` ``B×1×256×256`` float32 (zeros when unused), ``has_mask_input``
  ``(1,)`` float32, ``orig_im_size`` ``(2,)`` float32 (H, W), [SUM] ``task`` ``(1,)`` int64 (0, 1, 2)
  -> ``masks`` ``B×C×H×W`` logits, ``iou_predictions`` ``B×C``, ``low_res_masks`` ``B×C×256×256``
  logits, ``uncertainty`` ``B×C×H×W`` in [0, 1]. ``C`` is 1, or 3 for plain SAM exported with
  ``multimask``. Dynamic ``num_prompts`` (B), ``num_points`` (N), ``height`` / ``width``.
- ``ais_decoder.onnx`` (models with an AIS decoder): ``image_embeddings`` ``B×256×64×64``,
  ``orig_im_size`` ``(2,)`` -> ``ais_maps`` ``B×3×H×W``.
- ``sum_hq_onnx.json``: the manifest (opset, model, settings, every input and output with its
  shape and dynamic axes).

The graphs are traced from :mod:`sum_core.export.graphs` (the library's own modules) with
``torch.onnx.export`` and checked with ``onnx.checker`` (``full_check``).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import InvalidInputError
from .. import zoo
from ..loading import load_model
from ..modeling import SamModel, ais_decoder_of
from .deps import require
from .symbolics import two_pass_instance_norm
from .graphs import AisGraph, DecoderGraph, DecoderSettings, EncoderGraph
from .target import check_target, staged

__all__ = ["DEFAULT_OPSET", "MANIFEST", "OnnxExport", "export_onnx", "export_graph", "load_for_export"]

#: ONNX opset of the exported graphs (LayerNormalization needs 17).
DEFAULT_OPSET = 17
MANIFEST = "sum_hq_onnx.json"
_FILES = (MANIFEST, "encoder.onnx", "decoder.onnx", "ais_decoder.onnx")
_FORMAT = "sum-hq onnx export 1"


@dataclass(frozen=True)
class OnnxExport:
    """Paths of an ONNX export.

    Attributes
    ----------
    folder, manifest, encoder, decoder : Path
    ais_decoder : Path or None
        None when the model has no AIS decoder.
    """

    folder: Path
    manifest: Path
    encoder: Path
    decoder: Path
    ais_decoder: Path | None


def _example_inputs(model: SamModel, graph: torch.nn.Module, role: str) -> dict[str, torch.Tensor]:
    """Example inputs of a graph: 2 prompts of 3 points, a 2-image batch (encoder), a 600×800 image;
    one image and one prompt for a package's whole-model graph."""
    config = model.config
    e, low = config.embedding_size, 4 * config.embedding_size
    early = (1, e, e, config.early_feature_dim)
    prompts = 1 if role == "package" else 2
    examples = {
        "image": torch.zeros(2 if role == "encoder" else 1, 3, config.image_size, config.image_size),
        "image_embeddings": torch.zeros(1, config.prompt_embed_dim, e, e),
        "early_features": torch.zeros(early),
        "point_coords": torch.tensor([[[10.0, 20.0], [300.0, 400.0], [0.0, 0.0]]] * prompts),
        "point_labels": torch.tensor([[1.0, 0.0, -1.0]] * prompts),
        "mask_input": torch.zeros(prompts, 1, low, low),
        "has_mask_input": torch.zeros(1),
        "orig_im_size": torch.tensor([600.0, 800.0]),
        "task": torch.tensor([1], dtype=torch.int64),
    }
    return {name: examples[name] for name in graph.input_names}


_DYNAMIC = {
    "image": {0: "batch"},
    "image_embeddings@encoder": {0: "batch"},
    "early_features@encoder": {0: "batch"},
    "point_coords": {0: "num_prompts", 1: "num_points"},
    "point_labels": {0: "num_prompts", 1: "num_points"},
    "mask_input": {0: "num_prompts"},
    "masks": {0: "num_prompts", 2: "height", 3: "width"},
    "iou_predictions": {0: "num_prompts"},
    "low_res_masks": {0: "num_prompts"},
    "uncertainty": {0: "num_prompts", 2: "height", 3: "width"},
    "image@package": {},  # a package's whole-model graph: one 1024×1024 image, N clicks
    "point_coords@package": {1: "num_points"},
    "point_labels@package": {1: "num_points"},
    "mask_input@package": {},
    "masks@package": {},
    "uncertainty@package": {},
    "scores@package": {},
    "ais_maps@package": {},
    "image_embeddings@ais": {},  # batch 1: torch-em's channel crop needs static shapes
    "ais_maps": {2: "height", 3: "width"},
}


def _dynamic_axes(names: list[str], role: str) -> dict[str, dict[int, str]]:
    """The dynamic axes of a graph's inputs and outputs (a ``name@role`` entry wins over ``name``)."""
    axes = {}
    for name in names:
        dynamic = _DYNAMIC.get(f"{name}@{role}", _DYNAMIC.get(name))
        if dynamic:
            axes[name] = dynamic
    return axes


def export_graph(model: SamModel, graph: torch.nn.Module, role: str, path: Path, opset: int) -> dict:
    """Trace one graph to ``path``, check it with ``onnx.checker`` and describe its inputs and outputs.

    Returns
    -------
    dict
        ``{"inputs": {name: [dims]}, "outputs": {...}}`` with dynamic dimensions named.
    """
    onnx = require("onnx")
    graph.eval()  # the exporter restores the wrapper's mode afterwards, recursively: keep it eval
    inputs = _example_inputs(model, graph, role)
    names_in = list(inputs)
    names_out = list(graph.output_names)
    dynamic = _dynamic_axes(names_in + names_out, role)
    with torch.no_grad(), warnings.catch_warnings(), two_pass_instance_norm():
        # The TorchScript-based exporter: the dynamo one needs onnxscript and cannot trace the
        # data-dependent crop of postprocess_masks with dynamic image sizes.
        warnings.simplefilter("ignore", (DeprecationWarning, torch.jit.TracerWarning, UserWarning))
        torch.onnx.export(
            graph,
            tuple(inputs.values()),
            str(path),
            input_names=names_in,
            output_names=names_out,
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path), load_external_data=False)

    def dims(values) -> dict[str, list]:
        return {
            v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values
        }

    return {"file": path.name, "inputs": dims(proto.graph.input), "outputs": dims(proto.graph.output)}


def load_for_export(model: SamModel | str | os.PathLike) -> SamModel:
    """The model to export: ``model`` itself, or loaded on the CPU with every decoder it has.

    A registry name whose entry names an AIS decoder (``"vit_b_lm"``) is loaded with it (fetched
    and hash-checked by :mod:`sum_core.zoo`); a checkpoint or package brings the decoder it holds.
    """
    if isinstance(model, SamModel):
        return model
    return load_model(model, device="cpu", ais_decoder=bool(zoo.has_decoder(model)))


def export_onnx(
    model: SamModel | str | os.PathLike,
    out: str | os.PathLike,
    *,
    multimask: bool = False,
    hq_token_only: bool = False,
    uncertainty: str = "auto",
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
) -> OnnxExport:
    """Export a model's encoder, prompt decoder (and AIS decoder) as ONNX graphs into a folder.

    Parameters
    ----------
    model : SamModel, str or PathLike
        A loaded model, a registry name (with its AIS decoder when the registry names one) or a
        checkpoint / BioImage.IO package path (:func:`load_for_export`).
    out : str or PathLike
        The folder to create. Written under a temporary name and renamed when complete.
    multimask, hq_token_only, uncertainty
        What the decoder graph computes (:class:`~sum_core.export.graphs.DecoderSettings`).
    opset : int
        ONNX opset (>= 17).
    overwrite : bool
        Replace an existing export of ours at ``out``.

    Returns
    -------
    OnnxExport

    Raises
    ------
    InvalidInputError
        A bad ``out`` (see :func:`~sum_core.export.target.check_target`), opset or settings,
        checked before the model is loaded.
    SumError
        ``onnx`` is not installed.
    """
    require("onnx")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < DEFAULT_OPSET:
        raise InvalidInputError(f"opset: expected an integer >= {DEFAULT_OPSET}, got {opset!r}")
    settings = DecoderSettings(multimask, hq_token_only, uncertainty)
    target = check_target(out, "out", folder=True, overwrite=overwrite, ours=_FILES)
    model = load_for_export(model)
    settings.method(model)
    device, training = model.pixel_mean.device, model.training
    try:
        return _export(model.to("cpu").eval(), target, settings, opset)
    finally:  # the caller's model is left as it was given
        model.to(device).train(training)


def _export(model: SamModel, target: Path, settings: DecoderSettings, opset: int) -> OnnxExport:
    graphs = {"encoder": EncoderGraph(model), "decoder": DecoderGraph(model, settings)}
    if ais_decoder_of(model) is not None:
        graphs["ais"] = AisGraph(model)
    files = {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "ais": "ais_decoder.onnx"}
    with staged(target, folder=True, ours=_FILES) as temp:
        described = {
            role: export_graph(model, graph, role, temp / files[role], opset) for role, graph in graphs.items()
        }
        config = model.config
        manifest = {
            "format": _FORMAT,
            "opset": opset,
            "model": {"model_type": config.model_type, "hq": config.hq, "sum_tokens": config.sum_tokens},
            "image_size": config.image_size,
            "decoder_settings": asdict(settings) | {"uncertainty_method": settings.method(model)},
            "graphs": described,
        }
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    ais = target / files["ais"] if "ais" in graphs else None
    return OnnxExport(target, target / MANIFEST, target / files["encoder"], target / files["decoder"], ais)
