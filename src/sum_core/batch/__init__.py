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

from .integrity import verify_target
from .job import segment_zarr
from .many import FileResult, segment_many
from .objects import object_table
from .prompts_table import ObjectPrompt, read_prompts_table
from ..errors import DamagedTargetError

__all__ = [
    "DamagedTargetError",
    "FileResult",
    "ObjectPrompt",
    "object_table",
    "read_prompts_table",
    "segment_many",
    "segment_zarr",
    "verify_target",
]
