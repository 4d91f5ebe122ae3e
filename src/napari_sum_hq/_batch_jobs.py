"""Worker functions of the automatic and batch widgets (no Qt widgets, no napari layers).

Both run :func:`sum_core.batch.segment_zarr` under a :class:`~napari_sum_hq._jobs.TaskProgress`
callback with dask's synchronous scheduler: progress is one step per finished task (a tile,
a plane's NMS plan, an output chunk, or a slice in prompts mode) and a cancel stops before
the next task, leaving a job that resumes when it is run again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._jobs import CancelToken, ProgressRelay, TaskProgress
from ._session import ModelChoice


def batch_job(
    source: Any,
    target: str,
    choice: ModelChoice,
    token: CancelToken,
    relay: ProgressRelay,
    **kwargs: Any,
) -> str:
    """Run (or resume) one ``segment_zarr`` job; return ``target``.

    ``kwargs`` go to :func:`sum_core.batch.segment_zarr` (mode, prompts, axis, overwrite,
    tiling and the automatic options).
    """
    from sum_core.batch import segment_zarr

    with TaskProgress(token, relay):
        segment_zarr(
            source, target, model=choice.source, device=choice.torch_device,
            scheduler="sync", progress=False, **kwargs,
        )  # fmt: skip
    return target


def auto_job(
    image: np.ndarray,
    stack_axis: int | None,
    choice: ModelChoice,
    token: CancelToken,
    relay: ProgressRelay,
    **options: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Automatic segmentation of an in-memory image or stack, tile by tile.

    The same computation as :func:`sum_core.automatic.auto_segment` (equal up to the label
    numbering), run as a ``segment_zarr`` job into an in-memory zarr store so it can report
    progress and be cancelled between tiles.

    Returns
    -------
    labels : np.ndarray
        uint32, the image's shape without channels; ids unique over the stack.
    uncertainty : np.ndarray
        float32 in [0, 1], same shape.
    """
    import zarr

    store = zarr.storage.MemoryStore()
    batch_job(image, store, choice, token, relay, mode="auto", axis=stack_axis, **options)
    group = zarr.open_group(store, mode="r")
    return np.asarray(group["labels"]), np.asarray(group["uncertainty"], dtype=np.float32)
