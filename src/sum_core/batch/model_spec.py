"""The model of a batch job and how to run it, as one picklable value for the dask tasks."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..modeling import SamModel


@dataclass(frozen=True)
class ModelSpec:
    """Which model a batch task loads, and at which precision it runs.

    Attributes
    ----------
    model : str, path or SamModel
        Registry name, checkpoint path or loaded model (see :func:`sum_core.batch.segment_zarr`).
    precision : {"fp32", "bf16", "fp16"}
        Passed to :class:`sum_core.Predictor`.
    compile : bool
        Passed to :class:`sum_core.Predictor` (the model is compiled once per process).
    """

    model: str | os.PathLike | SamModel
    precision: str = "fp32"
    compile: bool = False
