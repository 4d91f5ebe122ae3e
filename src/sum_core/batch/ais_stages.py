"""AIS mode of a batch job, in four resumable stages per plane, equal to ``auto_segment(mode="ais")``.

:func:`sum_core.automatic.auto_segment` with ``mode="ais"`` holds the plane's three decoder maps and
runs ONE seeded watershed over them (:mod:`sum_core.ais`). A batch job gives the same labels (ids
included, up to the plane's id offset) and the same uncertainty (within float16 rounding) with
memory bounded by a tile, in four stages:

1. **tile** (one task per tile): the tile's outer window is encoded and decoded, and only the
   tile's *inner* block of the three raw maps is stored (:func:`sum_core.ais.tile_maps`, the
   same step as ``auto_segment``) in ``work/s<slice>/maps`` (float32 ``3×H×W``, one chunk per
   tile's inner region), its checksum in ``work/s<slice>/maps_checksums``.
2. **objects** (one task per output chunk = tile inner region): the maps of the chunk grown by a
   margin are smoothed and thresholded (:func:`sum_core.ais_postprocess.seed_maps`). The
   watershed floods 4-connected inside the foreground mask from seeds inside it, so the objects
   of one 8-connected component of the mask (a *unit*) depend only on the maps inside the unit
   plus the smoothing radius ``r = ceil(3 sigma)`` (:func:`~sum_core.ais_postprocess.flood`).
   The mask is trusted where the window reaches ``max(r, band)`` px beyond (or the window edge
   is the image edge, where the mirrored border is the image's own); a unit is *owned* by the
   chunk holding its first pixel in raster order. A unit that may be owned but touches the
   trusted border is seen cut: the window grows to its box plus the margin and the step is
   redone (worst case: a unit spanning the plane reads the whole plane's maps). The owned
   units are flooded (``min_size`` applied), and each object is stored cropped to its box with
   the raster position of its seed's first pixel (the ordering key) and its scores
   (:func:`sum_core.object_scores.object_scores`: the window covers its boundary band).
3. **plan** (one task per plane): the plane's objects ordered by their seed key get the ids
   ``1..N``, exactly ``auto_segment``'s numbering (raster order of the seeds); N is recorded
   (:func:`sum_core.batch.auto.plane_ids`).
4. **chunk** (one task per output chunk, once the planes before it are planned): the planned
   objects overlapping the chunk are painted with their ids moved after those of the planes before
   (:func:`sum_core.batch.auto.paint`, the painter of both modes; :func:`sum_core.batch.auto.id_offset`)
   and the chunk's uncertainty is computed from its raw maps (:func:`sum_core.ais.maps_uncertainty`,
   pixel-local).

When the job completes, the per-object table (:mod:`sum_core.batch.objects`) is written from the
plans (with the same offsets), then the work records (maps included) are dropped.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any

import numpy as np
from scipy import ndimage

from ..ais import AisOptions, maps_uncertainty, tile_maps
from ..ais_postprocess import flood, seed_maps, smoothing_radius
from ..object_scores import object_scores
from ..errors import check_cancel
from ..image import Normalization
from ..tiling import Region, TileGrid
from .auto import Unpacked, id_offset, paint, plane_ids
from .memory import release_freed_memory
from .model_spec import ModelSpec
from .objects import slice_rows, write_table
from .volume import Volume
from .writer import Target, chunk_checksum

#: Half-width of the boundary band of the per-object table (``object_scores``' default).
BAND_WIDTH = 2
# Pixels read beyond what is trusted, so that a unit reaching a little past it needs no regrowth.
_SLACK = 32


def maps_name(slice_index: int) -> str:
    """The work array holding the raw maps of one plane."""
    return f"work/s{slice_index}/maps"


def create_maps(target: Target, slice_index: int, grid: TileGrid) -> None:
    """Create a plane's maps array (one chunk per tile inner region) and its checksums, unless they exist."""
    name = maps_name(slice_index)
    if name in target.group:
        return
    target.group.create_array(
        f"{name}_checksums", shape=(len(grid),), dtype="uint64", chunks=(1,), fill_value=0, overwrite=True
    )
    target.group.create_array(
        name, shape=(3, *grid.shape), dtype="float32", chunks=(3, *grid.tile_shape), fill_value=0
    )


def run_tile(
    target: Target,
    volume: Volume,
    grid: TileGrid,
    slice_index: int,
    tile_index: int,
    normalization: Normalization | None,
    model: ModelSpec,
    device: Any,
    cancel: threading.Event | None = None,
) -> None:
    """Stage 1: decode one tile window and store its inner block of the raw maps, then its checksum."""
    check_cancel(cancel)
    tile = grid[tile_index]
    block = tile_maps(model.load(device), volume.planes, slice_index, tile, normalization, model.precision)
    target.group[maps_name(slice_index)][(slice(None),) + tile.inner.slices] = block
    target.group[f"{maps_name(slice_index)}_checksums"][tile_index] = chunk_checksum(block)
    del block
    release_freed_memory()
    target.mark_done("tile", (slice_index, tile_index))


def run_objects(
    target: Target, grid: TileGrid, slice_index: int, tile_index: int, options: AisOptions,
    cancel: threading.Event | None = None, *_maps_ready: Any,
) -> None:
    """Stage 2: the objects whose units this chunk owns, with their seed keys and scores."""
    chunk = grid[tile_index].inner
    maps = target.group[maps_name(slice_index)]
    trust = max(smoothing_radius(options.foreground_smoothing), smoothing_radius(options.distance_smoothing),
                BAND_WIDTH)
    window = _clip(_grown(chunk, trust + _SLACK), grid.shape)
    while True:
        check_cancel(cancel)
        found = _owned_units(maps[(slice(None),) + window.slices], window, chunk, trust, grid.shape, options)
        if isinstance(found, Region):  # a unit is cut: read more and redo
            window = _clip(_union(window, _grown(found, trust + _SLACK)), grid.shape)
            continue
        break
    block, inputs, owned = found
    labels = flood(inputs.heights, inputs.seeds & owned, owned, options.min_size)
    target.put(f"s{slice_index}/o{tile_index}", _objects(labels, inputs.seeds, block, window, grid.shape, options))
    target.mark_done("objects", (slice_index, tile_index))


def _owned_units(block: np.ndarray, window: Region, chunk: Region, trust: int, shape: tuple[int, int],
                 options: AisOptions) -> tuple[np.ndarray, Any, np.ndarray] | Region:
    """The maps, watershed inputs and mask of the units ``chunk`` owns in ``window``; or, when a unit that
    may be owned is cut by the trusted region's border, the box (global) of the cut units."""
    kwargs = {k: v for k, v in asdict(options).items() if k != "min_size"}
    inputs = seed_maps(block[0], block[1], block[2], **kwargs)
    trusted = _trusted(window, trust, shape)
    mask = np.zeros_like(inputs.mask)
    mask[trusted.slices] = inputs.mask[trusted.slices]
    units, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    local = Region(chunk.row0 - window.row0, chunk.col0 - window.col0, chunk.row1 - window.row0,
                   chunk.col1 - window.col0)
    # Units with a pixel in a row above the chunk start before it: never owned, whatever their extent.
    candidates = np.setdiff1d(np.unique(units[local.slices]), np.unique(units[: local.row0]))
    candidates = candidates[candidates > 0]
    edges = _edge_labels(units, window, trusted, shape)
    cut = np.intersect1d(candidates, edges)
    if len(cut):
        boxes = ndimage.find_objects(np.where(np.isin(units, cut), units, 0))
        rows = [b[0] for b in boxes if b is not None]
        cols = [b[1] for b in boxes if b is not None]
        return Region(window.row0 + min(s.start for s in rows), window.col0 + min(s.start for s in cols),
                      window.row0 + max(s.stop for s in rows), window.col0 + max(s.stop for s in cols))
    ids, first = np.unique(units.ravel(), return_index=True)
    first_rows, first_cols = np.divmod(first, units.shape[1])
    inside = ((first_rows >= local.row0) & (first_rows < local.row1) & (first_cols >= local.col0)
              & (first_cols < local.col1) & (ids > 0))
    return block, inputs, np.isin(units, ids[inside])


def _objects(labels: np.ndarray, seeds: np.ndarray, block: np.ndarray, window: Region, shape: tuple[int, int],
             options: AisOptions) -> dict[str, np.ndarray]:
    """The record of a chunk's objects: seed keys, global inclusive boxes, cropped masks, scores."""
    n = int(labels.max())
    seeded = np.where(seeds, labels, 0).ravel()
    ids, first = np.unique(seeded, return_index=True)
    first = first[ids > 0]
    rows, cols = np.divmod(first, labels.shape[1])
    keys = (rows + window.row0).astype(np.int64) * shape[1] + (cols + window.col0)
    boxes = ndimage.find_objects(labels, max_label=n)
    scores = object_scores(labels, maps_uncertainty(block, options), band_width=BAND_WIDTH)
    return {
        "key": keys.astype(np.int64),
        "box": np.array([(b[0].start + window.row0, b[1].start + window.col0, b[0].stop - 1 + window.row0,
                          b[1].stop - 1 + window.col0) for b in boxes], dtype=np.int64).reshape(-1, 4),
        "mask": np.concatenate([(labels[b] == k).ravel() for k, b in enumerate(boxes, start=1)]
                               or [np.zeros(0, bool)]),
        "area": scores.area,
        "mean_uncertainty": scores.mean_uncertainty,
        "boundary_uncertainty": scores.boundary_uncertainty,
    }


_SUMMARY = ("key", "box", "area", "mean_uncertainty", "boundary_uncertainty")


def run_plan(target: Target, grid: TileGrid, slice_index: int, *_objects: Any) -> None:
    """Stage 3: the plane's objects in raster order of their seeds get the ids ``1..N`` (see
    :func:`sum_core.batch.auto.plane_ids`)."""
    parts = [target.get(f"s{slice_index}/o{t}") for t in range(len(grid))]
    columns = {name: np.concatenate([p[name] for p in parts]) for name in _SUMMARY}
    tile = np.concatenate([np.full(len(p["key"]), t, dtype=np.int64) for t, p in enumerate(parts)])
    local = np.concatenate([np.arange(len(p["key"]), dtype=np.int64) for p in parts])
    order = np.argsort(columns["key"], kind="stable")
    plan = {name: values[order] for name, values in columns.items() if name != "key"}
    plan.update(tile=tile[order], local=local[order], label=plane_ids(target, slice_index, len(order)))
    target.put(f"s{slice_index}/plan", plan)
    target.mark_done("plan", (slice_index,))


def run_chunk(target: Target, volume: Volume, grid: TileGrid, slice_index: int, tile_index: int,
              options: AisOptions, offset: int, *_plan: Any) -> None:
    """Stage 4: paint the planned objects overlapping one output chunk (the plan's ids plus ``offset``),
    and its uncertainty."""
    chunk = grid[tile_index].inner
    plan = target.get(f"s{slice_index}/plan")
    box = plan["box"]
    near = np.nonzero((box[:, 0] < chunk.row1) & (box[:, 2] >= chunk.row0) & (box[:, 1] < chunk.col1)
                      & (box[:, 3] >= chunk.col0))[0]
    records: dict[int, Unpacked] = {}
    labels = np.zeros(chunk.shape, dtype=np.uint32)
    for j in near:
        t = int(plan["tile"][j])
        if t not in records:
            records[t] = Unpacked(target.get(f"s{slice_index}/o{t}"))
        paint(labels, chunk, records[t], int(plan["local"][j]), offset + int(plan["label"][j]))
    maps = target.group[maps_name(slice_index)][(slice(None),) + chunk.slices]
    uncertainty = maps_uncertainty(maps, options).astype(np.float16)
    target.write_chunk(volume.out_index(slice_index, chunk), labels, uncertainty)
    target.mark_done("chunk", (slice_index, tile_index))


def write_objects_table(target: Target, n_slices: int) -> None:
    """Write the per-object table from the planes' plans, their ids moved as painted (a plane without
    one, done before a repair, keeps its verified rows of the existing table)."""
    parts = []
    offset = 0
    for s in range(n_slices):
        if f"work/s{s}/plan" in target.group:
            plan = target.get(f"s{s}/plan")
            n = len(plan["label"])
            parts.append({
                "label": offset + plan["label"], "slice": np.full(n, s, dtype=np.int64), "area": plan["area"],
                "predicted_iou": np.full(n, np.nan), "stability": np.full(n, np.nan),  # AIS has neither
                "mean_uncertainty": plan["mean_uncertainty"], "boundary_uncertainty": plan["boundary_uncertainty"],
            })
        else:
            parts.append(slice_rows(target, s))
        offset = id_offset(target, s, offset)
    write_table(target, parts)


def record_damage(target: Target) -> list[tuple[int, str]]:
    """``(plane, problem)`` for each record a pending chunk of an unfinished plane needs (maps blocks of
    finished tiles, object records, the plan) that is missing or damaged; checked when a job resumes."""
    if any(f"done/{stage}" not in target.group for stage in ("tile", "objects", "plan", "chunk")):
        return []
    tiles, objects, plans = target.flags("tile"), target.flags("objects"), target.flags("plan")
    chunks = target.flags("chunk")
    damage = []
    for s in np.nonzero(~chunks.all(axis=1))[0]:
        s = int(s)
        damage += [(s, problem) for problem in _maps_problems(target, s, np.nonzero(tiles[s])[0])]
        names = [f"s{s}/o{t}" for t in np.nonzero(objects[s])[0]] + ([f"s{s}/plan"] if plans[s] else [])
        damage += [(s, problem) for name in names if (problem := target.record_problem(name))]
    return damage


def _maps_problems(target: Target, slice_index: int, tiles: np.ndarray) -> list[str]:
    """What is wrong with the stored maps blocks of the finished ``tiles`` of one plane."""
    if not len(tiles):
        return []
    name = maps_name(slice_index)
    try:
        maps, sums = target.group[name], target.group[f"{name}_checksums"][...]
    except Exception:  # noqa: BLE001 - missing or unreadable metadata
        return [f"intermediate record {name} is missing or unreadable"]
    problems = []
    chunks = maps.chunks
    for t in tiles:
        rows, cols = np.divmod(int(t), maps.cdata_shape[2])
        region = (slice(None), slice(rows * chunks[1], (rows + 1) * chunks[1]),
                  slice(cols * chunks[2], (cols + 1) * chunks[2]))
        try:
            ok = chunk_checksum(np.ascontiguousarray(maps[region])) == int(sums[t])
        except Exception:  # noqa: BLE001 - any decoding failure is damage
            ok = False
        if not ok:
            problems.append(f"intermediate record {name} block of tile {int(t)} does not match its checksum")
    return problems


def _grown(region: Region, margin: int) -> Region:
    return Region(region.row0 - margin, region.col0 - margin, region.row1 + margin, region.col1 + margin)


def _clip(region: Region, shape: tuple[int, int]) -> Region:
    return Region(max(region.row0, 0), max(region.col0, 0), min(region.row1, shape[0]), min(region.col1, shape[1]))


def _union(a: Region, b: Region) -> Region:
    return Region(min(a.row0, b.row0), min(a.col0, b.col0), max(a.row1, b.row1), max(a.col1, b.col1))


def _trusted(window: Region, trust: int, shape: tuple[int, int]) -> Region:
    """The part of ``window`` (window coordinates) whose smoothed maps and boundary bands are exact:
    ``trust`` px in from every window edge that is not an image edge."""
    h, w = window.shape
    return Region(
        0 if window.row0 == 0 else trust,
        0 if window.col0 == 0 else trust,
        h if window.row1 == shape[0] else h - trust,
        w if window.col1 == shape[1] else w - trust,
    )


def _edge_labels(units: np.ndarray, window: Region, trusted: Region, shape: tuple[int, int]) -> np.ndarray:
    """Units with a pixel on a border line of ``trusted`` that is not an image edge (maybe cut there)."""
    lines = []
    if window.row0 > 0:
        lines.append(units[trusted.row0, trusted.col0 : trusted.col1])
    if window.row1 < shape[0]:
        lines.append(units[trusted.row1 - 1, trusted.col0 : trusted.col1])
    if window.col0 > 0:
        lines.append(units[trusted.row0 : trusted.row1, trusted.col0])
    if window.col1 < shape[1]:
        lines.append(units[trusted.row0 : trusted.row1, trusted.col1 - 1])
    return np.unique(np.concatenate(lines)) if lines else np.zeros(0, units.dtype)
