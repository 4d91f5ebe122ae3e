"""``sum-hq export bioimageio``: a BioImage.IO model package (format 0.5) of a SAM-family model.

The package (a zip) holds ``rdf.yaml``; ``weights.pt`` (the :class:`SamModel` state dict, the
``pytorch_state_dict`` weights, architecture :class:`~sum_core.export.package_model.SumPackageModel`)
and ``model.onnx`` (the same function as one ONNX graph); test inputs and outputs computed by the
model; ``cover.png``; ``README.md``; citations of SAM, HQ-SAM and SUM; the weights' licence.

Inputs: the image, clicks / box corners, SAM's 256×256 mask prompt and its has-mask flag. For a
model with an AIS decoder the outputs add ``ais_maps`` and ``instance_labels``: the labels come
from micro-sam's seeded watershed (:func:`sum_core.ais_postprocess.instances_from_distance_maps`),
which no ONNX graph computes. As in micro-sam's packages, whose PyTorch architecture runs the AIS
post-processing in its forward, the ``pytorch_state_dict`` weights then compute every output, and
``model.onnx`` (everything but the labels) is an attachment, not a weights entry: BioImage.IO
requires each weights format to produce every declared output. Without an AIS decoder,
``model.onnx`` is the package's ``onnx`` weights. Every file is listed with its sha256. It is
validated with ``bioimageio.spec`` (offline: every file is inside the package) before it is moved
to its final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
import yaml

from .. import zoo
from ..errors import InvalidInputError, SumError
from ..modeling import SamModel
from ..modeling.ais_decoder import AIS_CHANNELS
from .deps import require
from .onnx import DEFAULT_OPSET, export_graph, load_for_export
from .package_model import PACKAGE_INPUTS, PackageGraph, SumPackageModel, package_kwargs
from .target import check_target, staged

__all__ = ["CITATIONS", "RDF_NAME", "export_bioimageio", "sha256_of"]

RDF_NAME = "rdf.yaml"
#: The methods every package cites.
CITATIONS = [
    {"text": "Kirillov et al. Segment Anything. ICCV 2023", "doi": "10.48550/arXiv.2304.02643"},
    {"text": "Ke et al. Segment Anything in High Quality. NeurIPS 2023", "doi": "10.48550/arXiv.2306.01567"},
    {
        "text": "SUM: Uncertainty-aware Fine-tuning of Segmentation Foundation Models. NeurIPS 2024",
        "url": "https://openreview.net/forum?id=qNXRXUC90b",
    },
]
_SIDE = 1024


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_licence(licence: str | None, model: object) -> str:
    """The SPDX licence id: the given one, else the registry entry's when it is one."""
    spec = require("bioimageio.spec")
    from bioimageio.spec.model.v0_5 import LicenseId
    from pydantic import TypeAdapter, ValidationError

    if licence is None and isinstance(model, str) and model in zoo.list_models(decoders=True):
        licence = zoo.get_entry(model).licence
    if licence is None:
        raise InvalidInputError("licence: give the SPDX licence of the weights (--licence, e.g. Apache-2.0)")
    try:
        return str(TypeAdapter(LicenseId).validate_python(licence))
    except ValidationError:
        raise InvalidInputError(
            f"licence: {licence!r} is not an SPDX licence id (e.g. Apache-2.0, MIT, CC-BY-4.0); pass --licence "
            f"(bioimageio.spec {spec.__version__})"
        ) from None


def _check_name(name: str | None, model: object) -> str:
    """The package name: the given one (BioImage.IO's rule: 5-128 of letters, digits, ``_+- ()``), else
    ``napari-sum-hq <model>`` with other characters of the model's name replaced by ``_``."""
    require("bioimageio.spec")
    from typing import Annotated

    from bioimageio.spec.model.v0_5 import ModelDescr
    from pydantic import TypeAdapter, ValidationError

    if name is None:
        stem = model.config.model_type if isinstance(model, SamModel) else Path(model).stem
        name = "napari-sum-hq " + re.sub(r"[^A-Za-z0-9_+\- ()]", "_", stem)[:100]
    rule = ModelDescr.model_fields["name"]
    try:
        return TypeAdapter(Annotated[str, *rule.metadata]).validate_python(name)
    except ValidationError:
        raise InvalidInputError(
            f"name: {name!r} is not a BioImage.IO model name (5 to 128 letters, digits, spaces, '_', '+', '-', "
            "'(' or ')')"
        ) from None


def _test_inputs() -> dict[str, np.ndarray]:
    """A synthetic 1024×1024 RGB image (a bright disc on a noisy background) and a click on the disc."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:_SIDE, :_SIDE]
    disc = (rows - 400) ** 2 + (cols - 600) ** 2 < 180**2
    image = rng.normal(40, 10, (_SIDE, _SIDE)) + 150 * disc
    image = np.clip(image, 0, 255).astype(np.float32)
    low = _SIDE // 4  # SAM's mask prompt: logits of the disc at a quarter of the size, slightly too small
    rows, cols = np.mgrid[:low, :low]
    mask = np.where((rows - 100) ** 2 + (cols - 150) ** 2 < 40**2, 6.0, -6.0).astype(np.float32)
    return {
        "image": np.repeat(image[None, None], 3, axis=1),
        "point_coords": np.array([[[600.0, 400.0], [0.0, 0.0]]], np.float32),  # (x, y) + padding point
        "point_labels": np.array([[1.0, -1.0]], np.float32),
        "mask_input": mask[None, None],
        "has_mask_input": np.ones(1, np.float32),
    }


def _cover(image: np.ndarray, mask: np.ndarray, path: Path) -> None:
    """A 2:1 cover: the test image, and the image with the predicted mask in red."""
    from PIL import Image

    grey = image[0, 0].astype(np.uint8)[::4, ::4]
    overlay = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    inside = mask[0, 0][::4, ::4] > 0
    overlay[inside] = 0.5 * overlay[inside] + 0.5 * np.array([255.0, 0.0, 0.0])
    both = np.concatenate([np.repeat(grey[..., None], 3, axis=2), overlay.astype(np.uint8)], axis=1)
    Image.fromarray(both).save(path)


#: One image per call (the graphs decode one image's prompts).
_BATCH = {"type": "batch", "size": 1}


def _axes_image(channels: list[str], reference: bool, side: int = _SIDE) -> list[dict]:
    space = [
        {"type": "space", "id": axis, "size": {"tensor_id": "image", "axis_id": axis} if reference else side}
        for axis in ("y", "x")
    ]
    return [_BATCH, {"type": "channel", "channel_names": channels}] + space


def _tensor(name: str, axes: list[dict], description: str, files: dict[str, str], dtype: str = "float32",
            **extra) -> dict:  # fmt: skip
    return {
        "id": name,
        "description": description,
        "axes": axes,
        "test_tensor": {"source": f"test_{name}.npy", "sha256": files[f"test_{name}.npy"]},
        "data": {"type": dtype} | extra,
    }


def _rdf(model: SamModel, name: str, description: str, authors: list[str], licence: str, task: int | None,
         files: dict[str, str], outputs: list[str]) -> dict:  # fmt: skip
    """The package description (BioImage.IO model format 0.5); ``model.onnx`` is the ``onnx`` weights
    when it computes every output, else (``instance_labels``) an attachment."""
    kind = "SUM" if model.config.sum_tokens else "HQ-SAM" if model.config.hq else "SAM"
    point = {"type": "index", "id": "point", "size": {"min": 1, "step": 1}}
    point_ref = {"type": "index", "id": "point", "size": {"tensor_id": "point_coords", "axis_id": "point"}}
    inputs = [
        _tensor("image", _axes_image(["R", "G", "B"], False), "RGB image resized to long side 1024 and "
                "zero-padded to 1024x1024, values 0..255", files, range=[0, 255]),
        _tensor("point_coords", [_BATCH, point, {"type": "channel", "channel_names": ["x", "y"]}],
                "clicks (x, y) in the 1024 frame; append (0, 0) with label -1 when there is no box", files),
        _tensor("point_labels", [_BATCH, point_ref], "1 positive, 0 negative, 2/3 box corners, "
                "-1 padding", files),
        _tensor("mask_input", _axes_image(["mask"], False, _SIDE // 4), "SAM's mask prompt: logits in the 1024 "
                "frame at 1/4 size (e.g. an earlier low-res mask); zeros when unused", files),
        _tensor("has_mask_input", [{"type": "channel", "channel_names": ["has_mask"]}], "1: use mask_input, "
                "0: ignore it", files, range=[0, 1]),
    ]  # fmt: skip
    described = {
        "masks": (["mask"], "mask logits (threshold at 0)"),
        "scores": (["iou"], "predicted IoU"),
        "uncertainty": (["uncertainty"], "per-pixel uncertainty in [0, 1] (0 certain)"),
        "ais_maps": (list(AIS_CHANNELS), "AIS maps in 0..1 (foreground, centre and boundary distance)"),
        "instance_labels": (["instance"], "instances (0 background): micro-sam's seeded watershed of the "
                            "AIS maps, sum_core.ais_postprocess.instances_from_distance_maps"),
    }  # fmt: skip
    out = []
    for key in outputs:
        channels, text = described[key]
        axes = [_BATCH, {"type": "channel", "channel_names": channels}]
        dtype = "int32" if key == "instance_labels" else "float32"
        out.append(_tensor(key, axes if key == "scores" else _axes_image(channels, True), text, files, dtype))
    onnx = {"source": "model.onnx", "sha256": files["model.onnx"]}
    onnx_is_weights = "instance_labels" not in outputs
    return {
        "type": "model",
        "format_version": "0.5.4",
        "name": name,
        "description": description or f"{kind} {model.config.model_type} model exported by napari-sum-hq",
        "authors": [{"name": author} for author in authors],
        "cite": CITATIONS,
        "license": licence,
        "documentation": "README.md",
        "covers": ["cover.png"],
        "tags": ["segment-anything", "interactive-segmentation", "uncertainty", "2d", "microscopy"],
        "inputs": inputs,
        "outputs": out,
        "weights": {  # model.onnx is weights only when it computes every output
            "pytorch_state_dict": {
                "source": "weights.pt",
                "sha256": files["weights.pt"],
                "architecture": {
                    "callable": "SumPackageModel",
                    "import_from": "sum_core.export.package_model",
                    "kwargs": package_kwargs(model, task),
                },
                "pytorch_version": torch.__version__.split("+")[0],
            },
        }
        | ({"onnx": onnx | {"opset_version": DEFAULT_OPSET, "parent": "pytorch_state_dict"}}
           if onnx_is_weights else {}),
        "attachments": [] if onnx_is_weights else [onnx],
        "config": {"napari-sum-hq": {"model_type": model.config.model_type, "hq": model.config.hq,
                                     "sum_tokens": model.config.sum_tokens, "task": task}},
    }  # fmt: skip


def _readme(model: SamModel, outputs: list[str]) -> str:
    ais = "instance_labels" in outputs
    onnx = (
        "`model.onnx` (an attachment, not weights: it computes every output but `instance_labels`; label "
        "its `ais_maps` with micro-sam's seeded watershed, `sum_core.ais_postprocess."
        "instances_from_distance_maps(foreground, center, boundary)` with its default thresholds 0.5, "
        "smoothing 1.0 / 1.6)" if ais else "`model.onnx` (the onnx weights)"
    )
    return (
        f"# {model.config.model_type} segmentation model (napari-sum-hq)\n\n"
        "Prompted segmentation with per-pixel uncertainty (SAM / HQ-SAM / SUM)"
        + (", and automatic instance segmentation (AIS decoder + seeded watershed)" if ais else "") + ".\n\n"
        "Inputs: `image` (1x3x1024x1024 RGB, 0..255, the image resized to long side 1024 and zero-padded), "
        "`point_coords` (1xNx2, (x, y) in that frame), `point_labels` (1xN: 1 positive, 0 negative, 2/3 box "
        "corners, -1 padding; add the (0, 0) / -1 padding point when there is no box), `mask_input` "
        "(1x1x256x256 mask-prompt logits in the 1024 frame at a quarter of its size, e.g. an earlier "
        "low-resolution mask; zeros when unused) and `has_mask_input` (1: use it, 0: ignore it).\n\n"
        f"Outputs: {', '.join(f'`{o}`' for o in outputs)} at 1024x1024 (crop and resize back to the image)"
        + (". `instance_labels` does not depend on the prompts" if ais else "") + ".\n\n"
        "Load it in Python with `sum_core.load_model('package.zip')` (sha256 of the weights checked), or run "
        f"{onnx} with onnxruntime.\n\n"
        "# Validation\n\n"
        "The test outputs were computed by the exported model itself (napari-sum-hq) on a synthetic image "
        "(a bright disc, one click on it and a mask prompt); `model.onnx` reproduces them within 1e-4 of each "
        "output's scale. "
        "The uncertainty output follows sum_core.uncertainty (SAM / HQ-token disagreement for HQ-SAM and "
        "SUM, binary entropy for SAM). No accuracy on real data is claimed here.\n"
    )


def _validate(folder: Path) -> None:
    """Validate the package description with bioimageio.spec (all sources local: no network)."""
    spec = require("bioimageio.spec")
    descr = spec.load_description(folder / RDF_NAME, perform_io_checks=True)
    if not isinstance(descr, spec.ModelDescr):
        raise SumError(f"the BioImage.IO description did not validate:\n{descr.validation_summary.format()}")


def export_bioimageio(
    model: SamModel | str | os.PathLike,
    out: str | os.PathLike,
    *,
    authors: list[str],
    licence: str | None = None,
    name: str | None = None,
    description: str | None = None,
    task: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write a BioImage.IO model package (zip) of a model.

    Parameters
    ----------
    model : SamModel, str or PathLike
        A loaded model, a registry name (with its AIS decoder when the registry names one) or a
        checkpoint / package path (see :func:`~sum_core.export.onnx.load_for_export`).
    out : str or PathLike
        The ``.zip`` to write (under a temporary name, renamed when complete and valid).
    authors : list of str
        At least one author name.
    licence : str, optional
        SPDX licence id of the weights; default: the registry entry's, when it is one.
    name : str, optional
        The package's name (BioImage.IO: 5 to 128 letters, digits, spaces, ``_+-()``); default
        ``napari-sum-hq <model file or registry name>``.
    description : str, optional
        One line; default: a generated line.
    task : int
        SUM task the package decodes with (SUM models only).
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InvalidInputError
        A bad ``out``, no author, no valid licence or name, checked before the model is loaded.
    SumError
        bioimageio.spec or onnx missing, or the description did not validate.
    """
    named = isinstance(authors, (list, tuple)) and all(isinstance(a, str) and a.strip() for a in authors)
    if not named or not authors:
        raise InvalidInputError(f"authors: give at least one author name, got {authors!r}")
    licence = _check_licence(licence, model)
    label = _check_name(name, model)
    require("onnx")
    target = check_target(out, "out", folder=False, overwrite=overwrite, suffix=".zip")
    model = load_for_export(model)
    package = SumPackageModel(**json.loads(json.dumps(package_kwargs(model, task))))
    package.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()}, strict=True)
    outputs = package.output_names()
    inputs = _test_inputs()
    with torch.no_grad():
        results = package(*(torch.from_numpy(inputs[k]) for k in PACKAGE_INPUTS))
    tensors = inputs | {k: v.numpy() for k, v in zip(outputs, results)}
    with staged(target, folder=False) as temp_zip:
        folder = temp_zip.with_name(temp_zip.name + ".d")
        folder.mkdir()
        try:
            torch.save(package.state_dict(), folder / "weights.pt")
            export_graph(package, PackageGraph(package), "package", folder / "model.onnx", DEFAULT_OPSET)
            for key, value in tensors.items():
                np.save(folder / f"test_{key}.npy", value)
            _cover(inputs["image"], tensors["masks"], folder / "cover.png")
            (folder / "README.md").write_text(_readme(model, outputs))
            files = {p.name: sha256_of(p) for p in folder.iterdir()}
            rdf = _rdf(model, label, description, list(authors), licence, task, files, outputs)
            (folder / RDF_NAME).write_text(yaml.safe_dump(rdf, sort_keys=False))
            _validate(folder)
            with zipfile.ZipFile(temp_zip, "w", compression=zipfile.ZIP_STORED) as archive:
                for path in sorted(folder.iterdir()):
                    archive.write(path, path.name)
        finally:
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
    return target
