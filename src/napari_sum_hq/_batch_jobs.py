"""Worker functions of the automatic and batch widgets (no Qt widgets, no napari layers).

Both run :func:`sum_core.batch.segment_zarr` with dask's synchronous scheduler, relaying its
``on_progress`` (finished tasks: a tile, a plane's NMS plan or watershed, an output chunk, or a
slice in prompts mode; plus, in AMG mode, the decoder batches done in the running tile, so a
one-tile image moves too) as :data:`PROGRESS_STEPS` steps of the job, and with the job's cancel
event: a cancel stops the running tile (between two decoder batches in AMG
mode, an object between two tiles in prompts mode) and the job before its next task, leaving a
job that resumes when it is run again.

:func:`many_job` runs :func:`sum_core.batch.segment_many` (a folder of images, one target each)
the same way, its bar moving over all the files.

Which automatic mode a model allows (AIS needs an AIS decoder) is decided by ``sum_core``'s one
mode rule (:func:`sum_core.automatic.model_for_mode`): :func:`registry_decoder` answers for a
registry name from its entry, without downloading anything (GUI thread); :func:`decoder_mode`
loads a checkpoint file in a worker to look for a decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._jobs import CancelToken, ProgressRelay
from ._session import ModelChoice

#: The columns of the Labels layer ``features`` of automatic and batch results (the batch object table's
#: columns, :data:`sum_core.batch.objects.COLUMNS`); napari's ``index`` is the label id.
FEATURE_COLUMNS = ("index", "slice", "area", "predicted_iou", "stability", "mean_uncertainty", "boundary_uncertainty")
#: Label ids are uint32: a result whose ids would reach this is refused, never wrapped.
ID_LIMIT = 2**32
#: A job's progress is relayed as ``(steps done, PROGRESS_STEPS)``: per mille of its tasks, so the
#: fractions of running tiles show (the relay carries integers).
PROGRESS_STEPS = 1000


def registry_decoder(source: str) -> bool | None:
    """Whether the registry model ``source`` has an AIS decoder; ``None`` when it is not a registry name.

    Reads the registry entry only (nothing is downloaded or loaded): cheap enough for the GUI thread.

    Raises
    ------
    InvalidInputError
        A malformed ``SUM_HQ_MODELS`` file.
    """
    from sum_core import zoo

    return zoo.has_decoder(source)


def decoder_mode(choice: ModelChoice) -> str:
    """``"ais"`` when the chosen model carries an AIS decoder, else ``"amg"`` (loads a file: worker only).

    The model is resolved once (:func:`sum_core.loading.resolve_model`), so the job that follows
    reuses it.

    Raises
    ------
    SumError
        The model cannot be located or loaded.
    """
    from sum_core.automatic import model_for_mode
    from sum_core.loading import resolve_model

    def load(ais_decoder: bool) -> Any:
        return resolve_model(choice.source, choice.torch_device, ais_decoder=ais_decoder)

    return model_for_mode(choice.source, "auto", load)[1]


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
    tiling and ``options``). Progress goes to ``relay`` as ``(steps done, PROGRESS_STEPS)``.
    """
    from sum_core.batch import segment_zarr

    def relay_progress(done: float, total: int) -> None:
        relay.progressed.emit(int(PROGRESS_STEPS * done / total) if total else 0, PROGRESS_STEPS)

    segment_zarr(
        source, target, model=choice.source, device=choice.torch_device,
        scheduler="sync", progress=False, cancel=token.event, on_progress=relay_progress, **kwargs,
    )  # fmt: skip
    return target


def batch_job_with_features(
    source: Any, target: Any, choice: ModelChoice, token: CancelToken, relay: ProgressRelay, **kwargs: Any
) -> tuple[Any, Any]:
    """:func:`batch_job`, then the target's object table as layer features (None for a target of an earlier
    version without one)."""
    batch_job(source, target, choice, token, relay, **kwargs)
    return target, target_features(target)


def target_features(target: Any) -> Any:
    """:func:`layer_features` of a finished target, None when it has no object table (AMG and prompts
    targets written by earlier versions)."""
    import zarr

    group = target if isinstance(target, zarr.Group) else zarr.open_group(target, mode="r", zarr_format=3)
    return layer_features(group) if "objects" in group else None


def many_job(
    sources: Any,
    out_dir: Any,
    choice: ModelChoice,
    token: CancelToken,
    relay: ProgressRelay,
    on_file: Any = None,
    on_files: Any = None,
    **kwargs: Any,
) -> tuple[Any, list]:
    """Run (or resume) a ``segment_many`` job over a folder, glob pattern or list file; return
    ``(out_dir, results)`` (one :class:`sum_core.batch.FileResult` per file).

    Progress goes to ``relay`` as ``(steps done, PROGRESS_STEPS)`` over all the files (a file's
    share moving with its tasks); ``on_files(files_done, n_files)`` when a file starts or ends and
    ``on_file(result)`` when it ends (a Qt signal's ``emit``: called from the worker thread).
    ``kwargs`` go to every :func:`sum_core.batch.segment_zarr` call.
    """
    from sum_core.batch import segment_many

    def relay_progress(files_done: int, n_files: int, done: float, total: int) -> None:
        within = done / total if total else 0.0
        relay.progressed.emit(int(PROGRESS_STEPS * (files_done + within) / n_files), PROGRESS_STEPS)
        if not total and on_files is not None:
            on_files(files_done, n_files)

    results = segment_many(
        sources, out_dir, model=choice.source, device=choice.torch_device, scheduler="sync", progress=False,
        cancel=token.event, on_progress=relay_progress, on_file=on_file, **kwargs,
    )  # fmt: skip
    return out_dir, results


def layer_features(target: Any, id_offset: int = 0, slice_offset: int = 0) -> Any:
    """The per-object table of a finished target (any mode) as napari Labels ``features``.

    Parameters
    ----------
    target : path, zarr store or zarr.Group
        A completed target with a table (:func:`sum_core.batch.object_table`).
    id_offset, slice_offset : int
        Added to the label ids and slice indices (a plane segmented alone, see :func:`auto_job`).

    Returns
    -------
    pandas.DataFrame
        One row per object, columns :data:`FEATURE_COLUMNS`: ``index`` (the label id, napari's key),
        ``slice``, ``area``, ``predicted_iou`` and ``stability`` (NaN for AIS), ``mean_uncertainty``,
        ``boundary_uncertainty``.
    """
    import pandas as pd
    from sum_core.batch import object_table

    table = object_table(target)
    return pd.DataFrame({
        "index": table["label"] + np.uint32(id_offset),
        "slice": table["slice"] + slice_offset,
        **{name: table[name] for name in FEATURE_COLUMNS[2:]},
    })  # fmt: skip


@dataclass(frozen=True)
class AutoResult:
    """What :func:`auto_job` hands back to the GUI thread.

    Attributes
    ----------
    labels : np.ndarray
        uint32, the image's shape without channels; ids unique over the stack.
    uncertainty : np.ndarray
        float32 in [0, 1], same shape.
    features : pandas.DataFrame
        One row per object, columns :data:`FEATURE_COLUMNS` (napari's Labels ``features`` layout;
        ``index`` is the label id as in ``labels``).
    mode : str
        ``"ais"`` or ``"amg"``.
    n_objects : int
        Objects in ``labels``.
    """

    labels: np.ndarray
    uncertainty: np.ndarray
    features: Any
    mode: str
    n_objects: int


def next_free_id(labels: np.ndarray, key: tuple[int, ...]) -> int:
    """One more than the largest id of ``labels`` outside the slice ``labels[key]`` (1 when empty).

    Read slice by slice (no copy of the stack); called on the GUI thread when a result is written, so
    the layer is read as it is then (never from a worker while the user may edit it).
    """
    lead = labels.shape[: len(key)]
    largest = 0
    for index in np.ndindex(*lead):
        if index != tuple(key):
            largest = max(largest, int(np.max(labels[index], initial=0)))
    return largest + 1


def moved_ids(result: AutoResult, first_id: int) -> AutoResult:
    """``result`` with its ids ``1..N`` moved to start at ``first_id`` (labels and the features' ``index``).

    Raises
    ------
    InvalidInputError
        The moved ids would not fit uint32 labels (reach :data:`ID_LIMIT`): refused rather than wrapped.
    """
    from sum_core.errors import InvalidInputError

    offset = int(first_id) - 1
    if offset == 0:
        return result
    largest = int(result.labels.max(initial=0))
    if largest and offset + largest >= ID_LIMIT:
        raise InvalidInputError(
            f"labels: the new objects would get ids up to {offset + largest}, beyond the largest uint32 id "
            f"{ID_LIMIT - 1} (the layer's other slices already use ids up to {offset}); relabel the layer "
            "(e.g. make its ids consecutive) or write the result into a new layer"
        )
    labels = result.labels.copy()
    labels[labels > 0] += np.uint32(offset)
    features = result.features.copy()
    features["index"] = (features["index"].astype(np.int64) + offset).astype(np.uint32)
    return AutoResult(labels, result.uncertainty, features, result.mode, result.n_objects)


def auto_job(
    image: Any,
    stack_axis: int | None,
    choice: ModelChoice,
    token: CancelToken,
    relay: ProgressRelay,
    mode: str,
    options: Any,
    tile_shape: int | None = None,
    halo: int | None = None,
    slice_index: int = 0,
) -> AutoResult:
    """Automatic segmentation of an image or stack (numpy or dask) into memory, tile by tile.

    The same computation as :func:`sum_core.automatic.auto_segment` with ``mode`` (``"ais"`` or
    ``"amg"``), run as a ``segment_zarr`` job into an in-memory zarr store so it can report
    progress per tile. Ids are ``1..N`` (over the stack); the rows' ``slice`` is ``slice_index``
    (``image`` being one slice of a stack). Moving the ids of a slice after those of the layer's
    other slices (:func:`moved_ids`, :func:`next_free_id`) is the GUI thread's, when it writes the
    result: the worker never reads the layer.

    Raises
    ------
    InvalidInputError
        Bad options, or ``mode="ais"`` with a model that has no AIS decoder.
    """
    import zarr

    store = zarr.storage.MemoryStore()
    batch_job(
        image, store, choice, token, relay,
        mode=mode, axis=stack_axis, options=options, tile_shape=tile_shape, halo=halo,
    )  # fmt: skip
    group = zarr.open_group(store, mode="r")
    features = layer_features(group, 0, slice_index)
    labels = np.asarray(group["labels"])
    return AutoResult(labels, np.asarray(group["uncertainty"], dtype=np.float32), features, mode, len(features))
