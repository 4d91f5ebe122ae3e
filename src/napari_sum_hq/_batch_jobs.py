"""Worker functions of the automatic and batch widgets (no Qt widgets, no napari layers).

Both run :func:`sum_core.batch.segment_zarr` with dask's synchronous scheduler, under a
:class:`~napari_sum_hq._jobs.TaskProgress` callback (one progress step per finished task: a
tile, a plane's NMS plan, an output chunk, or a slice in prompts mode) and with the job's
cancel event: a cancel stops the running tile between two decoder batches (an object between
two tiles in prompts mode) and the job before its next task, leaving a job that resumes when
it is run again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sum_core.auto_options import AutoOptions

from ._jobs import CancelToken, ProgressRelay, TaskProgress
from ._session import ModelChoice


def split_options(values: dict[str, Any]) -> tuple[AutoOptions, dict[str, Any]]:
    """The automatic options and the tiling (``tile_shape``, ``halo``) of a widget's form values.

    Raises
    ------
    InvalidInputError
        An option out of range or unknown.
    """
    values = dict(values)
    tiling = {"tile_shape": values.pop("tile_shape", None), "halo": values.pop("halo", None)}
    return AutoOptions.from_dict(values), tiling


def batch_job(
    source: Any,
    target: Any,
    choice: ModelChoice,
    token: CancelToken,
    relay: ProgressRelay,
    **kwargs: Any,
) -> Any:
    """Run (or resume) one ``segment_zarr`` job; return ``target``.

    ``kwargs`` go to :func:`sum_core.batch.segment_zarr` (mode, prompts, axis, overwrite,
    tiling and ``options``).
    """
    from sum_core.batch import segment_zarr

    with TaskProgress(relay):
        segment_zarr(
            source, target, model=choice.source, device=choice.torch_device,
            scheduler="sync", progress=False, cancel=token.event, **kwargs,
        )  # fmt: skip
    return target


def auto_job(
    image: np.ndarray,
    stack_axis: int | None,
    choice: ModelChoice,
    token: CancelToken,
    relay: ProgressRelay,
    options: AutoOptions,
    tile_shape: int | None = None,
    halo: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Automatic segmentation of an in-memory image or stack, tile by tile.

    The same computation as :func:`sum_core.automatic.auto_segment` (equal up to the label
    numbering), run as a ``segment_zarr`` job into an in-memory zarr store so it can report
    progress per tile.

    Returns
    -------
    labels : np.ndarray
        uint32, the image's shape without channels; ids unique over the stack.
    uncertainty : np.ndarray
        float32 in [0, 1], same shape.
    """
    import zarr

    store = zarr.storage.MemoryStore()
    batch_job(
        image, store, choice, token, relay,
        mode="auto", axis=stack_axis, options=options, tile_shape=tile_shape, halo=halo,
    )  # fmt: skip
    group = zarr.open_group(store, mode="r")
    return np.asarray(group["labels"]), np.asarray(group["uncertainty"], dtype=np.float32)
