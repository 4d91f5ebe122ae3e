"""``sum-hq export``: a segmentation result's objects for other tools, or a model for use outside Python.

Two forms share the command (``sum-hq export --help`` shows both):

- ``sum-hq export RESULT --to geojson|imagej-roi|coco|csv|ome-zarr [OUT | -o OUT]``: the objects of a
  result, or the result as an OME-Zarr label image (:func:`sum_core.results.export_result`);
- ``sum-hq export onnx MODEL OUT`` / ``sum-hq export bioimageio MODEL OUT.zip``: a model.

The first word after ``export`` names a model export when it is ``onnx`` or ``bioimageio``, and the
result to export otherwise (a result stored under one of those names is given as ``./onnx``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


RESULT_FORM = "result"  # the hidden sub-command of the result form


class _AnyName:
    """The sub-commands' names as argparse checks a first word against them (before the action runs):
    any word passes; the action tells commands and results apart."""

    def __init__(self, names: dict[str, argparse.ArgumentParser]) -> None:
        self._names = names

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Any:
        return iter(self._names)


class _CommandOrResult(argparse._SubParsersAction):
    """Sub-commands where any first word that names none is the RESULT of the result form."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.choices = _AnyName(self._name_parser_map)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if values and values[0] not in self._name_parser_map.keys():
            values = [RESULT_FORM, *_positionals_first(self._name_parser_map[RESULT_FORM], values)]
        super().__call__(parser, namespace, values, option_string)


def _positionals_first(parser: argparse.ArgumentParser, values: list[str]) -> list[str]:
    """``values`` with the positional words (RESULT, OUT) moved before the options, so that OUT may follow
    them (``RESULT --to ome-zarr OUT``: argparse takes positionals only up to the first option)."""
    takes_value = {name for action in parser._actions if action.option_strings and action.nargs != 0
                   for name in action.option_strings}
    words, options, pending = [], [], False
    for value in values:
        if pending:
            options.append(value)
            pending = False
        elif value.startswith("-") and value != "-":
            options.append(value)
            pending = value in takes_value
        else:
            words.append(value)
    return [*words, *options]


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``export`` (the result form and the model sub-commands) to the ``sum-hq`` sub-commands."""
    parser = subparsers.add_parser(
        "export",
        help="export a result's objects (GeoJSON, ImageJ ROI zip, COCO, CSV), the result as OME-Zarr labels, or a "
        "model (ONNX, BioImage.IO)",
        usage="%(prog)s RESULT --to {geojson,imagej-roi,coco,csv,ome-zarr} [OUT | -o OUT] [options]\n"
        "       %(prog)s onnx MODEL OUT [options]\n"
        "       %(prog)s bioimageio MODEL OUT.zip --author NAME [options]",
        description="Export the objects of a segmentation result for QuPath, Fiji, COCO tools or a table, "
        "or a model for use outside Python. The first word after `export` names a model export when it is "
        "`onnx` or `bioimageio`, and the result to export otherwise (give a result stored under one of "
        "those names as ./onnx). Every export is checked before any work, written under a temporary name "
        "and renamed when complete; an existing target is replaced only with --overwrite.",
        epilog="RESULT form: RESULT is a `sum-hq batch` target, an OME-Zarr label image, or a TIFF / zarr "
        "array of labels (an uncertainty map with --uncertainty). It is read window by window (bounded "
        "memory). Options: sum-hq export RESULT --help. Model forms (need `pip install "
        "napari-sum-hq[export]`): sum-hq export onnx --help, sum-hq export bioimageio --help.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=lambda args: _print_help(parser))
    commands = parser.add_subparsers(title="model exports", metavar="{onnx,bioimageio}", action=_CommandOrResult)
    _add_result_parser(commands)

    onnx = commands.add_parser(
        "onnx",
        prog="sum-hq export onnx",
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
        prog="sum-hq export bioimageio",
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


def _add_result_parser(commands: argparse._SubParsersAction) -> None:
    """The result form (a sub-command without help: it is reached by a RESULT that names no command)."""
    from ..results.choices import FORMATS, OBJECT_TYPES

    result = commands.add_parser(
        RESULT_FORM,
        prog="sum-hq export",
        usage="%(prog)s RESULT --to {geojson,imagej-roi,coco,csv,ome-zarr} [OUT | -o OUT] [options]",
        description="Export the objects of a segmentation result, one per object and slice: QuPath GeoJSON "
        "(polygons with holes on pixel corners, measurements incl. uncertainty), an ImageJ ROI zip (Fiji's "
        "ROI Manager; position = slice + 1, name = id), COCO JSON (RLE masks, one image per slice) or a CSV "
        "object table (id, slice, bbox, centroid, area, score, mean and boundary uncertainty); or the result "
        "itself as an OME-Zarr (NGFF 0.5) label image folder (a pyramid of levels, the uncertainty as a "
        "multiscale image inside, per-object properties).",
    )
    result.add_argument("result", metavar="RESULT",
                        help="a sum-hq batch target, an OME-Zarr label image, or a TIFF / zarr array of labels")
    result.add_argument("--to", required=True, choices=list(FORMATS), help="the format")
    result.add_argument("out_path", nargs="?", type=Path, metavar="OUT", help="the file or folder to write (as -o)")
    result.add_argument("-o", "--out", type=Path, metavar="OUT",
                        help="the file to write, or the .ome.zarr folder (default: beside RESULT, e.g. "
                        "cells_objects.csv, cells.geojson, cells_rois.zip, cells_coco.json, cells_labels.ome.zarr)")
    result.add_argument("--uncertainty", metavar="MAP",
                        help="a TIFF / zarr array of per-pixel uncertainty for a RESULT without its own")
    result.add_argument("--slice-axis", type=int, metavar="AXIS",
                        help="the axis holding the planes of a 3D RESULT (default: as recorded, else 0)")
    result.add_argument("--object-type", default="detection", choices=OBJECT_TYPES,
                        help="GeoJSON: QuPath's object type (default detection)")
    result.add_argument("--classification", metavar="NAME",
                        help="GeoJSON: QuPath classification of every object; COCO: the category name")
    result.add_argument("--band-width", type=int, default=2, metavar="PX",
                        help="half-width of the boundary band of the per-object uncertainty (default 2)")
    result.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    result.add_argument("--no-progress", action="store_true", help="no progress bar")
    result.set_defaults(func=run_result)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_result(args: argparse.Namespace) -> int:
    """``sum-hq export RESULT --to FORMAT [OUT]``: print the file written."""
    from ..errors import InvalidInputError
    from ..results import default_output, export_result, open_result

    if args.out is not None and args.out_path is not None:
        raise InvalidInputError(f"out: given twice ({args.out_path} and -o {args.out}); give one")
    out = args.out if args.out is not None else args.out_path
    result = open_result(args.result, args.uncertainty, slice_axis=args.slice_axis)
    path = export_result(
        result,
        default_output(args.result, args.to) if out is None else out,
        to=args.to,
        overwrite=args.overwrite,
        object_type=args.object_type,
        classification=args.classification,
        band_width=args.band_width,
        progress=not args.no_progress,
    )
    print(path)
    return 0


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
