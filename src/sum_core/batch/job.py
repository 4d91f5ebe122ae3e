"""``segment_zarr``: resumable batch segmentation of an image or stack into a zarr v3 group."""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from pathlib import Path
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import dask
import numpy as np
import zarr
from dask.base import get_scheduler
from dask.callbacks import Callback
from dask.delayed import Delayed
from dask.system import CPU_COUNT
from tqdm.auto import tqdm

from ..acceleration import check_compile, check_precision
from ..ais import AisOptions
from ..auto_options import AutoOptions
from ..automatic import check_mode, model_for_mode
from ..device import resolve_device
from ..embedding_cache import data_hash
from ..encoding import weights_hash
from ..errors import DamagedTargetError, InvalidInputError, check_cancel
from ..modeling import SamModel
from ..prediction import PredictOptions
from ..sources import fixed_normalization
from ..tiling import tile_grid
from ..validation import check_bool, check_options
from ..zoo import DEFAULT_MODEL, registry
from . import ais_stages, auto, ngff, ngff_image, prompted
from .integrity import find_damage, record_damage, settle
from .model_spec import ModelSpec
from .objects import TABLE_INFO
from .prompts_table import check_prompts, read_prompts_table
from .volume import open_volume
from .lock import LockHold, location, target_lock
from .writer import SEQUENTIAL_IDS, axes_attributes, check_apart, check_target, no_space_left, open_target

# Options always recorded in an automatic job's signature (the others only when not at their
# default, so targets written before they were options keep their signature).
_SIGNED_OPTIONS = ("points_per_side", "pred_iou_thresh", "stability_thresh", "box_nms_thresh", "min_area")
# Options that do not change the result (never part of the signature).
_UNSIGNED_OPTIONS = ("points_per_batch",)
_MODES = ("auto", "ais", "amg", "prompts")
_FINISHED = "batch-finished"  # not "sum-hq-...": progress counts only the units of work


def segment_zarr(
    source: Any,
    target: Any,
    mode: str = "auto",
    prompts: str | os.PathLike | None = None,
    model: str | os.PathLike | SamModel = DEFAULT_MODEL,
    tile_shape: int | tuple[int, int] | None = None,
    halo: int | tuple[int, int] | None = None,
    axis: str | int | None = None,
    key: str | None = None,
    overwrite: bool = False,
    scheduler: Any = None,
    device: str | None = None,
    progress: bool = True,
    *,
    options: AutoOptions | PredictOptions | None = None,
    precision: str = "fp32",
    compile: bool = False,
    cancel: threading.Event | None = None,
    repair: bool = False,
    on_progress: Callable[[float, int], None] | None = None,
    channel: int | Sequence[int] | None = None,
    format: str = "zarr",
) -> zarr.Group:
    """Segment a 2D image, 3D stack or time series slice by slice into a zarr v3 group.

    The target group gets ``labels`` (uint32) and ``uncertainty`` (float16, in [0, 1]) with the
    source's shape (without a channel axis), chunked one slice by one tile, with the source's axis
    names (``dimension_names``) and physical pixel size (attributes ``scale`` and ``units``, see
    :func:`sum_core.batch.writer.axes_attributes`). Each plane is cut
    by the package's one size rule, :func:`sum_core.tiling.tile_grid`, with the model's input
    size. Work is scheduled with dask. AMG: per plane, one task per tile (segmentation of the
    tile's window, encoded as one image), one cross-tile NMS task and one task per output chunk
    (painting). AIS: per plane, one task per tile (the decoder maps of its inner block), one
    object task per output chunk, one numbering task and one task per output chunk (painting,
    uncertainty); the result equals :func:`sum_core.automatic.auto_segment` with ``mode="ais"``
    on each plane (see :mod:`sum_core.batch.ais_stages`). Prompts mode: one task per slice. Every
    mode writes a per-object table (predicted IoU, stability, area, mean and boundary uncertainty of
    each object: :func:`sum_core.batch.object_table`, :mod:`sum_core.batch.objects`). Memory is bounded
    by the tile and chunk size, never a whole plane (AIS: except an object whose foreground
    region spans more than a tile, whose maps are read whole).

    **Modes**: ``"ais"`` (the model's AIS decoder, options :class:`~sum_core.ais_options.AisOptions`),
    ``"amg"`` (SAM's point grid, :class:`~sum_core.auto_options.AutoOptions`), ``"auto"`` (the
    rule of :func:`~sum_core.automatic.auto_segment`: the mode of the options given, else AIS
    when the model carries an AIS decoder, else AMG; the signature records the mode decided) and
    ``"prompts"`` (one object per prompt of a table).

    **Label ids** are unique over the whole volume. Automatic modes: sequential, ``1..N`` over
    the volume without gaps: plane ``s`` holds ``offset_s + 1 .. offset_s + n_s``, where ``n_s``
    is its number of objects (the target's ``counts`` array) and ``offset_s`` the sum of the
    earlier planes' counts; within a plane, the order of :func:`~sum_core.automatic.auto_segment`
    (AIS: its ids on the plane plus ``offset_s``; AMG: larger masks first). The same job gives the
    same ids, also when resumed or repaired. Each plane is planned independently; its chunks are
    painted once the planes before it are planned. Targets of versions before sequential ids
    (``id_stride`` in the ``sum_hq_batch`` attributes: plane ``s`` numbered from
    ``s * id_stride + 1``) resume and verify with their rule. Prompts mode: the table's
    ``object_id``.

    **Formats**: ``"zarr"`` (the default): the target group holds ``labels`` and ``uncertainty`` as
    above. ``"ome-zarr"``: the target is an OME-Zarr (NGFF 0.5) label image: multiscale labels
    (the parent image's number of levels), the uncertainty as its own multiscale image, colours,
    per-object properties and the source image; for an OME-Zarr source, the target
    ``<image>/labels/<name>`` writes it inside the image, touching nothing but that group and the
    ``labels`` listing (see :mod:`sum_core.batch.ngff`). For another source, a local target path
    becomes a new OME-Zarr image holding a copy of the image (the channels the model sees) and the
    label image ``<target>/labels/sum-hq`` (the group returned).

    **Resuming**: every unit of work sets its flag in ``done/`` after writing its data, so
    rerunning the same call after an interruption (error, Ctrl+C, cancel, killed process)
    redoes only unfinished units. The job signature (source, axis, mode, options, tiling,
    model, prompt table) is stored in the attributes; a target holding anything else is
    refused unless ``overwrite=True``. A completed target is returned without recomputation.
    An error, ``KeyboardInterrupt`` or ``cancel`` stops the job only once its running tasks have
    ended (they stop at their next cancel check): with the default threads scheduler no task
    writes the target after this function has raised and released the target's lock (a second
    ``KeyboardInterrupt`` while it waits leaves at once, keeping the lock: it is taken over once
    this process has ended).
    A full disk stops the job with a :class:`~sum_core.errors.SumError`: free space and rerun
    to resume.

    **Integrity**: each output chunk's checksum is recorded when it is written
    (:mod:`sum_core.batch.writer`). When a job resumes or returns a completed target, the
    target is read back and checked (:mod:`sum_core.batch.integrity`; about the cost of reading
    the output once): a deleted or altered chunk, an unreadable flag or intermediate record,
    or missing array metadata raises, naming what is damaged; ``repair=True`` then redoes only
    the damaged slices (in automatic mode the whole planes holding them).
    :func:`sum_core.batch.verify_target` checks a target without running a job.

    **Safety**: a target that is, contains or lies inside the source is refused, with or without
    ``overwrite``, and so is a zarr array or a non-empty folder that is not provably a target of
    ours (another program's data; see :func:`sum_core.batch.writer.check_target`): only a target
    of ours is ever cleared. While the job runs it holds a lock file in a folder target
    (:func:`sum_core.batch.lock.target_lock`): a second job on the same target is refused; the
    lock of a killed job is taken over (with a warning) when the job is rerun.

    Parameters
    ----------
    source : str, path, zarr array/group, dask or numpy array
        Image or stack (see :func:`sum_core.sources.open_image`).
    target : str, path or zarr store
        The zarr v3 group to write (created if missing).
    mode : {"auto", "ais", "amg", "prompts"}
        Automatic segmentation of everything (see **Modes**), or one object per prompt of a table.
    prompts : str or path, optional
        CSV prompt table (prompts mode), see :mod:`sum_core.batch.prompts_table`.
    model : str, path or SamModel
        Registry name, checkpoint path or loaded model. Resolved once here (for its input
        size); each process running tasks resolves a name or path once
        (:func:`sum_core.loading.resolve_model`).
    tile_shape, halo : int or (int, int), optional
        Tiling of each plane, see :func:`sum_core.tiling.tile_grid`.
    axis : str or int, optional
        Slice axis by name (OME-Zarr / zarr dimension names) or index; needed for 4D+ sources.
    key : str, optional
        Array inside a zarr group.
    format : {"zarr", "ome-zarr"}
        The layout of the target (see **Formats**); part of the job signature when ``"ome-zarr"``.
    channel : int or sequence of 3 int, optional
        Channels of a source with a channel axis fed to the model (see
        :func:`sum_core.batch.volume.open_volume`): None for all (1, 3 or 4 of them), one index
        (as grayscale) or three (as R, G, B). Part of the job signature when given.
    overwrite : bool
        Replace a target of another job, or start a damaged target of this job again (instead
        of raising; ``repair`` redoes only its damaged slices). An intact target of this job is
        resumed (or returned) as without it.
    scheduler : str, callable or dask.distributed.Client, optional
        Passed to :func:`dask.compute` (default ``"threads"``).
    device : str, optional
        Torch device (default: best available).
    progress : bool
        Progress bar with ETA (local dask schedulers; none with a ``dask.distributed`` client,
        whose tasks local callbacks do not see).
    options : AisOptions, AutoOptions or PredictOptions, optional
        AIS: :class:`~sum_core.ais_options.AisOptions`; AMG: :class:`~sum_core.auto_options.AutoOptions`
        (with ``mode="auto"`` their type chooses the mode); prompts mode:
        :class:`~sum_core.prediction.PredictOptions`; default: the mode's defaults. Part of the
        job signature.
    precision : {"fp32", "bf16", "fp16"}
        Encoder precision (see :mod:`sum_core.acceleration`); part of the job signature
        (a job is resumed at the precision it started with).
    compile : bool
        Compile the model with ``torch.compile`` (once per process).
    cancel : threading.Event, optional
        Local schedulers only: checked before each task, between decoder batches of a tile
        and between the tiles of an object; raises :class:`sum_core.errors.Cancelled` when
        set (the finished units stay done: rerun to resume).
    repair : bool
        Redo the damaged slices of a target of this job instead of refusing it (see
        **Integrity**; warns naming the slices redone).
    on_progress : callable, optional
        Local schedulers only: ``on_progress(done, total)`` with ``total`` the tasks of this run
        and ``done`` (a float, never decreasing) the finished tasks plus, in AMG mode with the
        threads or synchronous scheduler, the fraction of each running tile's decoder batches
        (so a one-tile image moves too); called once with ``0`` when the tasks start. The
        ``progress`` bar shows the same count.

    Returns
    -------
    zarr.Group
        The completed target group.

    Raises
    ------
    InvalidInputError
        Bad mode, options (or options of the other automatic mode; AIS of a model known to have
        no AIS decoder), ``overwrite`` / ``progress`` / ``repair`` (not bool), ``on_progress`` (not
        callable, or with dask.distributed), ``scheduler``
        (not a dask scheduler name, callable or client), axis, tiling, prompts (also outside the
        volume or not UTF-8) or target (a file, a folder that cannot be created, a read-only or
        foreign target or zarr array, one overlapping the source, or one another job is writing); all checked
        before the model is loaded. A target of another job (compared once the model is known).
    DamagedTargetError
        A damaged target, without ``repair`` (an ``InvalidInputError``).
    SumError
        No space left on the target's disk (or quota): free space and rerun to resume.
    Cancelled
        ``cancel`` was set.
    """
    if not isinstance(mode, str) or mode not in _MODES:
        raise InvalidInputError(
            f"mode must be one of {_MODES} ('auto': AIS when the model has an AIS decoder, else AMG; 'prompts': one "
            f"object per prompt of a table), got {mode!r}"
        )
    if mode == "prompts":
        options = check_options(options, PredictOptions, "options (mode='prompts')")
    else:
        mode = check_mode(mode, options, model)  # the mode rule of auto_segment; "auto" may wait for the model
    target_device = resolve_device(device)
    check_precision(precision, target_device)
    check_compile(compile)
    overwrite, progress = check_bool(overwrite, "overwrite"), check_bool(progress, "progress")
    repair = check_bool(repair, "repair")
    if (mode == "prompts") != (prompts is not None):
        raise InvalidInputError("prompts: give a prompt table exactly when mode='prompts'")
    if cancel is not None and not _in_this_process(scheduler):
        raise InvalidInputError(
            "cancel: only the threads and synchronous dask schedulers can be cancelled (not processes or "
            "dask.distributed: their tasks cannot see this process's event)"
        )
    if on_progress is not None and (not callable(on_progress) or not _is_local(scheduler)):
        raise InvalidInputError(
            "on_progress must be a callable (done, total) or None, and needs a local dask scheduler (dask.distributed "
            f"tasks are not seen by this process), got {type(on_progress).__name__} with scheduler {scheduler!r}"
        )
    _check_scheduler(scheduler)
    format = ngff.check_format(format)
    volume = open_volume(source, key=key, axis=axis, channel=channel)
    inside = ngff.labels_inside(source, key, target) if format == "ome-zarr" else None
    image = ngff_image.image_folder(source, key, target) if format == "ome-zarr" and inside is None else None
    if format == "ome-zarr":
        ngff.check_layout(volume)
    check_apart(source, target, None if inside is None else location(target))  # before anything is written
    if image is not None:  # a new OME-Zarr image holding a copy of the source and the label image
        ngff_image.check_image_folder(image)
        target, inside = image / "labels" / ngff_image.IMAGE_LABEL, (image, ngff_image.IMAGE_LABEL)
    if tile_shape is not None or halo is not None:
        tile_grid(volume.plane_shape, tile_shape=tile_shape, halo=halo)  # a bad tiling fails before loading
    object_prompts, table_hash = [], None
    if mode == "prompts":
        object_prompts, table_hash = read_prompts_table(prompts)
        check_prompts(object_prompts, volume.n_slices, volume.plane_shape)
    check_target(target, overwrite)  # what no job may write, before a folder or lock is made
    with target_lock(target) as hold, no_space_left(target):  # one job writes a target at a time
        if mode == "prompts":
            spec = ModelSpec(model, precision, compile)
            loaded = spec.load(target_device)  # loaded once per process, kept
        else:  # loaded with its AIS decoder for AIS
            loaded, mode = model_for_mode(
                model, mode, lambda ais: ModelSpec(model, precision, compile, ais).load(target_device)
            )
            spec = ModelSpec(model, precision, compile, mode == "ais")
            options = check_options(options, AisOptions if mode == "ais" else AutoOptions, f"options (mode={mode!r})")
        grid = tile_grid(volume.plane_shape, loaded.config.image_size, tile_shape, halo)
        signature = _signature(volume, mode, options, table_hash, grid, model, loaded, precision, channel)
        info = {"ids": SEQUENTIAL_IDS if mode != "prompts" else None, "axes": list(volume.out_names), TABLE_INFO: True}
        if format == "ome-zarr":
            signature["format"] = format
            info.update(ngff.info(ngff.level_planes(volume, source, key)))
        names = volume.out_names if format == "zarr" else tuple(a["name"] for a in ngff.ngff_axes(volume))
        layout = (signature, info, volume.out_shape, volume.out_chunks(grid.tile_shape), names)
        # AMG targets of versions before the AIS mode signed the mode "auto"; they resume as AMG.
        aliases = ({**signature, "mode": "auto"},) if mode == "amg" else ()
        attributes = axes_attributes(volume.scale, volume.units)
        out = open_target(target, *layout, overwrite=overwrite, aliases=aliases, attributes=attributes)
        try:
            settle(out, find_damage(out, repair), repair)
            settle(out, record_damage(out), repair)
        except DamagedTargetError as damaged:
            if not overwrite:
                raise
            warnings.warn(f"target: starting {target} again (overwrite=True), it was damaged: {damaged}", stacklevel=2)
            out = open_target(target, *layout, overwrite=True, restart=True, attributes=attributes)
        if out.info.get("complete"):
            if inside is not None:
                ngff.list_label(*inside)  # a job killed before its listing was updated
            return out.group
        normalization = fixed_normalization(volume.planes)
        stop = _Stop(cancel) if _threaded(scheduler) else cancel
        reporter = _Progress(progress and _is_local(scheduler), on_progress)
        within = reporter.within if _in_this_process(scheduler) else None
        if mode == "amg":
            graph = _auto_tasks(out, volume, grid, normalization, spec, device, options, stop, within)
        elif mode == "ais":
            graph = _ais_tasks(out, volume, grid, normalization, spec, device, options, stop)
        else:
            graph = _prompt_tasks(out, volume, grid, object_prompts, normalization, spec, device, options, stop)
        if format == "ome-zarr":
            ngff.create_levels(out, volume, volume.out_chunks(grid.tile_shape))
            graph.update(ngff.level_tasks(out, volume, _plane_tasks(graph)))
        if image is not None:
            image_group = ngff_image.create_image(out, image, volume, volume.out_chunks(grid.tile_shape))
            graph.update(ngff_image.image_tasks(out, image_group, volume))
        with reporter, _CancelBeforeTasks(cancel):
            _run(graph, scheduler, stop, hold)
        if mode == "ais":
            ais_stages.write_objects_table(out, volume.n_slices)
        elif mode == "amg":
            auto.write_objects_table(out, volume, cancel)
        else:
            prompted.write_objects_table(out, volume.n_slices)
        attributes = None
        if format == "ome-zarr":
            name = inside[1] if inside is not None else Path(str(location(target) or "labels")).name
            ids = ngff.object_ids(out, mode, [p.object_id for p in object_prompts])
            label_image, uncertainty_image = ngff.metadata(out, volume, name, source, key, ids, image)
            out.group["uncertainty"].attrs["ome"] = uncertainty_image
            attributes = {"ome": label_image}
        if image is not None:
            ngff_image.finish_image(image_group, volume, [tuple(p) for p in out.info["planes"]])
        out.finish(attributes)
        if inside is not None:
            ngff.list_label(*inside)
    return out.group


def _plane_tasks(graph: dict[str, Any]) -> dict[int, list[str]]:
    """The keys of the level-0 output tasks (chunks, prompts slices) of each plane in ``graph``."""
    planes: dict[int, list[str]] = {}
    for key in graph:
        if key.startswith(("sum-hq-chunk-", "sum-hq-slice-")):
            planes.setdefault(int(key.split("-")[3]), []).append(key)
    return planes


def _signature(volume, mode, options, table_hash, grid, model, loaded, precision, channel) -> dict[str, Any]:
    """The job signature stored in (and compared with) the target's attributes."""
    signature = {
        "source": {"identity": volume.identity, "shape": list(volume.array.shape),
                   "dtype": str(np.dtype(volume.array.dtype)), "data": data_hash(volume.array)},
        "axis": None if volume.slice_axis is None else volume.names[volume.slice_axis],
        "mode": mode,
        "options": _signed_options(options),
        "prompts": table_hash,
        "tiling": {"tile_shape": list(grid.tile_shape), "halo": list(grid.halo)},
        "model": _model_identity(model, loaded),
    }
    if precision != "fp32":  # fp32 jobs keep the signature they had before precisions existed
        signature["precision"] = precision
    if channel is not None:  # jobs on all channels keep the signature they had before channel=
        signature["channel"] = [int(c) for c in np.atleast_1d(channel)]
    if mode == "prompts" and volume.channel_axis is not None:
        # Prompts jobs read a source with channels through its planes (the channel choice honoured) since
        # this key exists; an earlier partial target read all channels and must not be resumed into.
        signature["reads"] = "planes"
    return signature


def _check_scheduler(scheduler: Any) -> None:
    """Refuse what :func:`dask.compute` would not take as a scheduler, before any work.

    Raises
    ------
    InvalidInputError
        Naming the value and what dask accepts.
    """
    if scheduler is None:
        return
    try:
        get_scheduler(scheduler=scheduler)
    except (ValueError, RuntimeError) as err:
        raise InvalidInputError(
            f"scheduler: {scheduler!r} is not usable ({err}); give a dask scheduler name, a callable or a "
            "dask.distributed Client"
        ) from None


def _signed_options(options: AutoOptions | PredictOptions) -> dict[str, Any]:
    """The options recorded in the job signature: those that change the result.

    AMG jobs always record :data:`_SIGNED_OPTIONS`, other options only when not at their
    default; AIS jobs record every option; prompts jobs record the options that are not at their default (``{}`` by default).
    """
    values = {k: v for k, v in dataclasses.asdict(options).items() if k not in _UNSIGNED_OPTIONS}
    defaults = dataclasses.asdict(type(options)())
    always = _SIGNED_OPTIONS if isinstance(options, AutoOptions) else ()
    if isinstance(options, AisOptions):  # new with the AIS mode: every option is recorded
        always = tuple(values)
    return {k: v for k, v in values.items() if k in always or v != defaults[k]}


def _auto_tasks(out, volume, grid, normalization, spec, device, options, cancel, within) -> dict[str, Any]:
    """The task graph of an AMG job: per plane, tile tasks, one plan task and chunk tasks.

    ``within(key)`` (or None) gives a tile task's ``on_batch``: its progress within the tile.

    One plain dict for the whole job: per-task ``dask.delayed`` objects would each carry a
    graph of all their dependencies (every chunk task of a plane all the plane's tile tasks),
    which grows with the square of the number of tiles.
    """
    n_slices, n_tiles = volume.n_slices, len(grid)
    for stage, shape in (("tile", (n_slices, n_tiles)), ("plan", (n_slices,)), ("chunk", (n_slices, n_tiles))):
        out.create_flags(stage, shape)
    if out.id_stride is None:
        out.create_counts(n_slices)
    tiles_done, plans_done, chunks_done = out.flags("tile"), out.flags("plan"), out.flags("chunk")
    graph: dict[str, Any] = {}
    plans: dict[int, list[str]] = {}
    for s in range(n_slices):
        if chunks_done[s].all():
            continue
        plan = plans[s] = []
        if not plans_done[s]:
            tiles = []
            for t in range(n_tiles):
                if not tiles_done[s, t]:
                    tiles.append(f"sum-hq-tile-{s}-{t}")
                    on_batch = within(tiles[-1]) if within is not None else None
                    graph[tiles[-1]] = (
                        auto.run_tile, out, volume, grid, s, t, normalization, spec, device, options, cancel, on_batch
                    )
            plan.append(f"sum-hq-plan-{s}")
            graph[plan[0]] = (auto.run_plan, out, grid, s, options.box_nms_thresh, *tiles)
        for t in range(n_tiles):
            if not chunks_done[s, t]:
                graph[f"sum-hq-chunk-{s}-{t}"] = (auto.run_chunk, out, volume, grid, s, t, _offset_key(s), *plan)
    return {**graph, **_offset_tasks(out, plans)}


def _offset_key(slice_index: int) -> str:
    """The task giving the id offset of a plane (not "sum-hq-...": progress counts only the units of work)."""
    return f"ids-offset-{slice_index}"


def _offset_tasks(out, plans: dict[int, list[str]]) -> dict[str, Any]:
    """The chain of id offsets up to the last plane with pending chunks (``plans``: its plan task, if
    any, per such plane): plane ``s``'s offset waits for the plans of the planes before it
    (:func:`sum_core.batch.auto.id_offset`)."""
    if not plans:
        return {}
    graph: dict[str, Any] = {_offset_key(0): 0}
    for s in range(1, max(plans) + 1):
        graph[_offset_key(s)] = (auto.id_offset, out, s - 1, _offset_key(s - 1), *plans.get(s - 1, ()))
    return graph


def _ais_tasks(out, volume, grid, normalization, spec, device, options, cancel) -> dict[str, Any]:
    """The task graph of an AIS job: per plane, tile tasks, object tasks (after all the plane's tiles: a
    unit may reach anywhere), one plan task and chunk tasks (see :mod:`sum_core.batch.ais_stages`)."""
    n_slices, n_tiles = volume.n_slices, len(grid)
    for stage, shape in (("tile", (n_slices, n_tiles)), ("objects", (n_slices, n_tiles)), ("plan", (n_slices,)),
                         ("chunk", (n_slices, n_tiles))):
        out.create_flags(stage, shape)
    tiles_done, objects_done = out.flags("tile"), out.flags("objects")
    plans_done, chunks_done = out.flags("plan"), out.flags("chunk")
    if out.id_stride is None:
        out.create_counts(n_slices)
    graph: dict[str, Any] = {}
    plans: dict[int, list[str]] = {}
    for s in range(n_slices):
        if chunks_done[s].all():
            continue
        ais_stages.create_maps(out, s, grid)
        tiles = []
        for t in np.nonzero(~tiles_done[s])[0].tolist():
            tiles.append(f"sum-hq-tile-{s}-{t}")
            graph[tiles[-1]] = (ais_stages.run_tile, out, volume, grid, s, t, normalization, spec, device, cancel)
        ready = f"maps-ready-{s}"  # not "sum-hq-...": progress counts only the units of work
        graph[ready] = (_finished, *tiles)
        plan = plans[s] = []
        if not plans_done[s]:
            objects = []
            for t in np.nonzero(~objects_done[s])[0].tolist():
                objects.append(f"sum-hq-objects-{s}-{t}")
                graph[objects[-1]] = (ais_stages.run_objects, out, grid, s, t, options, cancel, ready)
            plan.append(f"sum-hq-plan-{s}")
            graph[plan[0]] = (ais_stages.run_plan, out, grid, s, *objects)
        for t in np.nonzero(~chunks_done[s])[0].tolist():
            graph[f"sum-hq-chunk-{s}-{t}"] = (
                ais_stages.run_chunk, out, volume, grid, s, t, options, _offset_key(s), ready, *plan
            )
    return {**graph, **_offset_tasks(out, plans)}


def _prompt_tasks(out, volume, grid, object_prompts, normalization, spec, device, options, cancel) -> dict[str, Any]:
    """The task graph of a prompts job: one task per slice with prompts."""
    out.create_flags("slice", (volume.n_slices,))
    done = out.flags("slice")
    by_slice: dict[int, list] = {}
    for p in object_prompts:
        by_slice.setdefault(p.slice_index, []).append(p)
    return {
        f"sum-hq-slice-{s}": (
            prompted.run_slice, out, volume, grid, s, by_slice[s], normalization, spec, device, options, cancel
        )
        for s in sorted(by_slice) if not done[s]
    }


def _run(graph: dict[str, Any], scheduler: Any, stop: Any, hold: LockHold) -> None:
    """Compute every task of ``graph`` (the final key is not a ``sum-hq-`` task).

    With the threads scheduler the tasks run on a pool of this call: on any exception (a task's
    error, ``KeyboardInterrupt``, :class:`~sum_core.errors.Cancelled`) ``stop`` is set, queued
    tasks are dropped and the running ones are waited for (dask returns at the first exception,
    its other tasks still writing), so none writes after this function has raised. A second
    exception while waiting (Ctrl+C again) leaves at once and keeps the target's lock (``hold``).
    Other schedulers (processes, a callable, dask.distributed) get no such wait: after a failed
    job, let their workers go idle before rerunning with ``overwrite`` or ``repair``.
    """
    graph = {**graph, _FINISHED: (_finished, *graph)}
    if not _threaded(scheduler):
        dask.compute(Delayed(_FINISHED, graph), scheduler=scheduler)
        return
    pool = ThreadPoolExecutor(dask.config.get("num_workers", None) or CPU_COUNT, thread_name_prefix="sum-hq-batch")
    try:
        dask.compute(Delayed(_FINISHED, graph), scheduler="threads", pool=pool)
    except BaseException:
        stop.set()
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        except BaseException:
            hold.keep()  # tasks may still write: the lock stays until this process ends
            raise
        raise
    pool.shutdown(wait=True)


_PROCESS_SCHEDULERS = ("processes", "multiprocessing")


def _in_this_process(scheduler: Any) -> bool:
    """Whether the tasks of ``scheduler`` run in this process (threads or synchronous), seeing its objects."""
    return _is_local(scheduler) and scheduler not in _PROCESS_SCHEDULERS


def _threaded(scheduler: Any) -> bool:
    """Whether ``scheduler`` is dask's threads scheduler (the default), whose pool :func:`_run` owns."""
    return scheduler is None or scheduler in ("threads", "threading")


class _Stop:
    """The cancel check of a job's tasks: set by :func:`_run` on any exception, or when the caller's
    ``cancel`` event is set."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self._cancel = cancel
        self._stopped = threading.Event()

    def set(self) -> None:
        self._stopped.set()

    def is_set(self) -> bool:
        return self._stopped.is_set() or (self._cancel is not None and self._cancel.is_set())


def _is_local(scheduler: Any) -> bool:
    """Whether ``scheduler`` is a local dask scheduler, whose tasks the progress callbacks see."""
    if scheduler is None:
        return True
    if isinstance(scheduler, str):
        return scheduler not in ("distributed", "dask.distributed")
    return callable(scheduler) and getattr(scheduler, "__module__", "").startswith("dask.")


def _finished(*_results: Any) -> None:
    return None


def _model_identity(model: str | os.PathLike | SamModel, loaded: SamModel) -> str:
    """The registry name (registry files are hash-checked, so a name is one set of weights), or
    else the hash of the loaded weights (:func:`sum_core.encoding.weights_hash`, computed once per
    model state): a checkpoint file retrained in place is another model, never resumed into.
    """
    if isinstance(model, str):
        try:
            if model in registry():
                return f"name:{model}"
        except InvalidInputError:
            pass  # a malformed SUM_HQ_MODELS file: the model was resolved as a local file
    return f"weights:{weights_hash(loaded)}"


class _CancelBeforeTasks(Callback):
    """Raises :class:`sum_core.errors.Cancelled` before the next task once ``cancel`` is set."""

    def __init__(self, cancel: threading.Event | None) -> None:
        super().__init__()
        self._cancel = cancel

    def _pretask(self, key, dsk, state) -> None:
        check_cancel(self._cancel)


class _Progress(Callback):
    """The job's progress over its ``sum-hq-`` tasks, for local dask schedulers: a tqdm bar (with
    ETA, when ``bar``) and ``on_progress(done, total)``.

    ``done`` is the finished tasks plus the fraction each running task reported through
    :meth:`within` (AMG tiles: decoder batches); it never decreases (a task's fraction is at most
    the 1 its end counts). Thread-safe: tasks report from the scheduler's threads.
    """

    def __init__(self, bar: bool, on_progress: Callable[[float, int], None] | None) -> None:
        super().__init__()
        self._bar_enabled, self._on_progress = bar, on_progress
        self._lock = threading.Lock()
        self._running: dict[str, float] = {}
        self._finished = 0
        self._total = 0
        self._done = 0.0
        self._bar: tqdm | None = None

    def within(self, key: str) -> Callable[[int, int], None]:
        """The ``on_batch(done, total)`` of task ``key``: its fraction ``done / total`` so far."""
        return partial(self._within, key)

    def _within(self, key: str, done: int, total: int) -> None:
        with self._lock:
            self._running[key] = min(done / total, 1.0) if total > 0 else 0.0
            self._report()

    def _start_state(self, dsk, state) -> None:
        with self._lock:
            self._total = sum(1 for key in dsk if _is_task(key))
            self._bar = tqdm(total=self._total, desc="sum-hq batch", unit="task", disable=not self._bar_enabled)
            self._report()

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if _is_task(key):
            with self._lock:
                self._running.pop(key, None)
                self._finished += 1
                self._report()

    def _finish(self, dsk, state, errored) -> None:
        if self._bar is not None:
            self._bar.close()

    def _report(self) -> None:
        """Show the count (under the lock); never lower than the last one shown."""
        done = max(self._done, min(self._finished + sum(self._running.values()), self._total))
        if self._bar is not None:  # whole tasks shown as integers ("27/27"), fractions to 2 decimals
            self._bar.n = int(done) if float(done).is_integer() else round(done, 2)
            self._bar.update(0)  # displays at tqdm's rate, as update(n) would
        self._done = done
        if self._on_progress is not None:
            self._on_progress(done, self._total)


def _is_task(key: Any) -> bool:
    """Whether ``key`` is a unit of work of a job (what progress counts)."""
    return isinstance(key, str) and key.startswith("sum-hq-")
