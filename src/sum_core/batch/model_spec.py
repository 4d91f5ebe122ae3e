"""The model of a batch job and how to run it, as one picklable value for the dask tasks."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from ..acceleration import compile_model
from ..device import resolve_device
from ..loading import resolve_model
from ..modeling import SamModel

# Serialises moving and compiling a model shared by the tasks of several threads.
_PREPARE_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    """Which model a batch task loads, and at which precision it runs.

    A registry name or a path is loaded by each process that runs tasks (once per process,
    through :func:`sum_core.loading.resolve_model`), so the spec stays small to send to
    ``dask.distributed`` workers.

    Attributes
    ----------
    model : str, path or SamModel
        Registry name, checkpoint path or loaded model (see :func:`sum_core.batch.segment_zarr`).
    precision : {"fp32", "bf16", "fp16"}
        Encoder precision (see :mod:`sum_core.acceleration`).
    compile : bool
        Compile the model with ``torch.compile`` (once per process).
    ais_decoder : bool
        Load the model with its AIS decoder (AIS jobs; see :func:`sum_core.loading.resolve_model`).
    """

    model: str | os.PathLike | SamModel
    precision: str = "fp32"
    compile: bool = False
    ais_decoder: bool = False

    def load(self, device: Any) -> SamModel:
        """The model on ``device`` in eval mode, compiled when asked (thread-safe)."""
        target = resolve_device(device)
        model = resolve_model(self.model, target, ais_decoder=True) if self.ais_decoder else resolve_model(
            self.model, target
        )
        with _PREPARE_LOCK:
            model = model.to(target).eval()
            if self.compile:
                compile_model(model, target)
        return model
