"""Resumable batch segmentation of large images and stacks into zarr v3 (``sum-hq batch``).

:func:`segment_zarr` segments a 2D image, a 3D stack or a time series slice by slice, tile by
tile, with dask, writing ``labels`` and ``uncertainty`` arrays into a zarr v3 group; an
interrupted job resumes where it stopped, and a damaged target is found and repaired
(:func:`verify_target` checks one against its recorded checksums). :func:`read_prompts_table`
reads the CSV prompt tables of the prompts mode; :func:`object_table` reads the per-object table
(area and AIS uncertainty of every object) that AIS jobs write with the labels.
:func:`segment_many` runs one such job per image of a folder, glob pattern or list file into an
output folder, with a summary table (``summary.csv``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
# Names load on first use: reading a target (results exports, the napari reader and widgets) must not
# import torch, which only the segmentation itself needs.
_LAZY = {
    "DamagedTargetError": "..errors",
    "FileResult": ".many",
    "ObjectPrompt": ".prompts_table",
    "object_table": ".objects",
    "read_prompts_table": ".prompts_table",
    "segment_many": ".many",
    "segment_zarr": ".job",
    "verify_target": ".integrity",
}

if TYPE_CHECKING:  # pragma: no cover
    from ..errors import DamagedTargetError
    from .integrity import verify_target
    from .job import segment_zarr
    from .many import FileResult, segment_many
    from .objects import object_table
    from .prompts_table import ObjectPrompt, read_prompts_table

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
