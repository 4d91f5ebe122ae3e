"""``sum-hq export onnx | bioimageio``: publish a model as ONNX graphs or a BioImage.IO package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``export`` and its sub-commands to the ``sum-hq`` sub-commands."""
    parser = subparsers.add_parser(
        "export",
        help="export a model as ONNX graphs or a BioImage.IO model package",
        description="Export a model for use outside Python (needs `pip install napari-sum-hq[export]`). "
        "The target is checked before the model is loaded, written under a temporary name and renamed "
        "when complete; an existing target is replaced only with --overwrite (a folder only when it is an "
        "earlier ONNX export of sum-hq).",
    )
    parser.set_defaults(func=lambda args: _print_help(parser))
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    onnx = commands.add_parser(
        "onnx",
        help="encoder, prompt decoder (SAM's ONNX interface + uncertainty) and AIS decoder graphs",
        description="Write encoder.onnx, decoder.onnx (SAM's ONNX decoder interface, with early_features "
        "and task inputs for HQ-SAM / SUM and an uncertainty output), ais_decoder.onnx (models with an AIS "
        "decoder) and sum_hq_onnx.json (opset, inputs, outputs, dynamic axes) into the folder OUT.",
    )
    onnx.add_argument("model", metavar="MODEL", help="registry name, checkpoint or BioImage.IO package")
    onnx.add_argument("out", type=Path, metavar="OUT", help="folder to create")
    onnx.add_argument("--multimask", action="store_true",
                      help="HQ / SUM: best of the 3 multimask tokens; plain SAM: return 3 candidates")
    onnx.add_argument("--hq-token-only", action="store_true", help="HQ / SUM: the HQ token's mask alone")
    onnx.add_argument("--uncertainty", default="auto", choices=["auto", "disagreement", "entropy"],
                      help="uncertainty output (default auto: disagreement for HQ-SAM / SUM, entropy for SAM)")
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    onnx.add_argument("--overwrite", action="store_true", help="replace an earlier export at OUT")
    onnx.set_defaults(func=run_onnx)

    bio = commands.add_parser(
        "bioimageio",
        help="a BioImage.IO model package (format 0.5) with state-dict and ONNX weights",
        description="Write a BioImage.IO model package (zip): pytorch_state_dict and onnx weights of the "
        "whole model (1024x1024 RGB image + clicks -> masks, scores, uncertainty, and the AIS maps when "
        "the model has an AIS decoder), test tensors computed by the model, a cover image, documentation, "
        "citations (SAM, HQ-SAM, SUM) and the licence; validated with bioimageio.spec before it is moved "
        "to OUT.",
    )
    bio.add_argument("model", metavar="MODEL", help="registry name, checkpoint or BioImage.IO package")
    bio.add_argument("out", type=Path, metavar="OUT", help="package to write (.zip)")
    bio.add_argument("--name", help="model name (default: the model's file or registry name)")
    bio.add_argument("--author", action="append", default=[], required=True, metavar="NAME",
                     help="author (repeatable; at least one)")
    bio.add_argument("--licence", "--license", dest="licence",
                     help="SPDX licence of the weights (default: the registry entry's)")
    bio.add_argument("--description", help="one-line description")
    bio.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    bio.set_defaults(func=run_bioimageio)
    return parser


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_onnx(args: argparse.Namespace) -> int:
    """``sum-hq export onnx``: print the folder written."""
    from ..export import export_onnx

    result = export_onnx(
        args.model,
        args.out,
        multimask=args.multimask,
        hq_token_only=args.hq_token_only,
        uncertainty=args.uncertainty,
        opset=args.opset,
        overwrite=args.overwrite,
    )
    print(result.folder)
    return 0


def run_bioimageio(args: argparse.Namespace) -> int:
    """``sum-hq export bioimageio``: print the package written."""
    from ..export import export_bioimageio

    path = export_bioimageio(
        args.model,
        args.out,
        name=args.name,
        authors=args.author,
        licence=args.licence,
        description=args.description,
        overwrite=args.overwrite,
    )
    print(path)
    return 0
