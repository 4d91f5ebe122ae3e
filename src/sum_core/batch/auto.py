"""Automatic mode of a batch job, in three resumable stages per plane.

1. **tile** (one task per tile): read the tile's outer window, segment it with
   :func:`sum_core.automatic.generate_masks`, keep the masks this tile owns
   (:func:`sum_core.automatic.owned_instances`, the seam rules of
   :func:`sum_core.automatic.auto_segment`), and store them cropped to their boxes.
2. **plan** (one task per plane): NMS over the boxes of all tiles of the plane (as
   ``auto_segment`` does; computed per tile against its neighbours,
   :func:`~sum_core.batch.tile_nms.neighbour_nms`), then the painting order (larger masks first, so smaller ones stay on
   top) and each mask's id within the plane (1..N in painting order); N is recorded
   (:meth:`~sum_core.batch.writer.Target.set_count`).
3. **chunk** (one task per output chunk = tile inner region, once the planes before it are
   planned): paint the planned masks of the tiles whose windows overlap the chunk with their ids
   moved after those of the planes before (``offset``, see :func:`id_offset`), and write the chunk.

Only windows, cropped masks and chunks are ever in memory, never a whole plane, and the result
equals ``auto_segment`` on the whole plane up to the label numbering.

When the job completes, the per-object table (:mod:`sum_core.batch.objects`) is written: each planned
object's predicted IoU and stability (stored with its tile's masks) under its final id, its area and
uncertainties scored on the written output, one window per object (:func:`write_objects_table`).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..auto_options import AutoOptions
from ..automatic import Instance, MaskRecord, owned_instances, window_masks
from ..errors import SumError
from ..image import Normalization
from ..tile_window import read_window
from ..tiling import Region, TileGrid
from .memory import release_freed_memory
from .model_spec import ModelSpec
from .objects import window_rows, write_slices_table
from .tile_nms import neighbour_nms
from .volume import Volume
from .writer import Target

#: Label ids are uint32: at most ``ID_SPACE - 1`` objects in a volume.
ID_SPACE = 2**32

#: The running tile task's ``on_batch`` (set by :func:`run_tile` around its segmentation, per scheduler
#: thread), read by :func:`window_records`: its signature stays what the tile stage replaces in tests.
_ON_BATCH: contextvars.ContextVar[Callable[[int, int], None] | None] = contextvars.ContextVar("on_batch", default=None)


def window_records(
    window: np.ndarray,
    model: ModelSpec,
    device: Any,
    options: AutoOptions,
    cancel: threading.Event | None = None,
) -> list[MaskRecord]:
    """Segment one ``(H, W, 3)`` uint8 window: encoded as one image, then the mask generator
    (:func:`sum_core.automatic.window_masks` with the job's model), reporting each decoder batch
    to the running tile's ``on_batch`` (see :func:`run_tile`)."""
    return window_masks(model.load(device), window, options, model.precision, cancel=cancel, on_batch=_ON_BATCH.get())


def run_tile(
    target: Target,
    volume: Volume,
    grid: TileGrid,
    slice_index: int,
    tile_index: int,
    normalization: Normalization | None,
    model: ModelSpec,
    device: Any,
    options: AutoOptions,
    cancel: threading.Event | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> None:
    """Stage 1: segment one tile window and store the masks it owns (``on_batch(done, total)``
    after each decoder batch of the window: the job's progress within the tile)."""
    reporting = _ON_BATCH.set(on_batch)
    try:
        _segment_tile(target, volume, grid, slice_index, tile_index, normalization, model, device, options, cancel)
    finally:
        _ON_BATCH.reset(reporting)
    release_freed_memory()  # the window-sized maps just freed, else the resident set creeps per tile
    target.mark_done("tile", (slice_index, tile_index))


def _segment_tile(target: Target, volume: Volume, grid: TileGrid, slice_index: int, tile_index: int,
                  normalization: Normalization | None, model: ModelSpec, device: Any,
                  options: AutoOptions, cancel: threading.Event | None) -> None:
    """Segment one tile window and store its owned instances (all its maps freed on return)."""
    tile = grid[tile_index]
    window = read_window(volume.planes, slice_index, tile.outer, normalization)
    records = []
    if not (window == window[0, 0]).all():  # a window the encoder sees constant holds no object
        records = window_records(window, model, device, options, cancel)
    target.put(f"s{slice_index}/t{tile_index}", _pack(owned_instances(records, tile, grid)))


def _pack(instances: list[Instance]) -> dict[str, np.ndarray]:
    return {
        "box": np.array([i.box for i in instances], dtype=np.int64).reshape(-1, 4),
        "score": np.array([i.score for i in instances], dtype=np.float64),
        "stability": np.array([i.stability for i in instances], dtype=np.float64),
        "area": np.array([i.area for i in instances], dtype=np.int64),
        "unc_region": np.array([tuple(i.unc_region) for i in instances], dtype=np.int64).reshape(-1, 4),
        "mask": np.concatenate([i.mask.reshape(-1) for i in instances] or [np.zeros(0, bool)]),
        "unc": np.concatenate([i.uncertainty.reshape(-1) for i in instances] or [np.zeros(0)]).astype(np.float16),
    }


def run_plan(target: Target, grid: TileGrid, slice_index: int, box_nms_thresh: float, *_tiles_done: Any) -> None:
    """Stage 2: cross-tile NMS, painting order and label ids of one plane (see :func:`plane_ids`)."""
    parts = [_summary(target.get(f"s{slice_index}/t{t}")) for t in range(len(grid))]  # one tile at a time
    tile = np.concatenate([np.full(len(p["score"]), t, dtype=np.int64) for t, p in enumerate(parts)])
    local = np.concatenate([np.arange(len(p["score"]), dtype=np.int64) for p in parts])
    boxes = np.concatenate([p["box"] for p in parts])
    scores = np.concatenate([p["score"] for p in parts])
    areas = np.concatenate([p["area"] for p in parts])
    if len(grid) > 1 and len(scores):
        keep = neighbour_nms(boxes, scores, tile, grid, box_nms_thresh)
        tile, local, scores, areas = tile[keep], local[keep], scores[keep], areas[keep]
    order = sorted(range(len(scores)), key=lambda i: (-areas[i], scores[i], i))
    target.put(
        f"s{slice_index}/plan",
        {"tile": tile[order], "local": local[order], "label": plane_ids(target, slice_index, len(order))},
    )
    target.mark_done("plan", (slice_index,))


def plane_ids(target: Target, slice_index: int, n: int) -> np.ndarray:
    """The ids of a plane's ``n`` planned objects, as its plan stores them (both automatic modes), after
    recording ``n`` (:meth:`Target.set_count`): ``1..n``, moved after the earlier planes' ids when
    painted (:func:`id_offset`); in a target of an older version (``id_stride``), the plane's own
    range ``s * id_stride + 1..n``.

    Raises
    ------
    RuntimeError
        Older targets: more objects than the plane's id range.
    """
    ids = np.arange(1, n + 1, dtype=np.int64)
    stride = target.id_stride
    if stride is not None:
        if n >= stride:
            raise RuntimeError(f"plane {slice_index} has {n} objects, more than its id range {stride - 1}")
        return slice_index * stride + ids
    target.set_count(slice_index, n)
    return ids


def id_offset(target: Target, slice_index: int, offset: int, *_planned: Any) -> int:
    """The id offset of plane ``slice_index + 1``: ``offset`` (that of plane ``slice_index``) plus the
    plane's object count (0 in a target of an older version, whose plans hold the final ids).

    Raises
    ------
    DamagedTargetError
        The plane's count is missing or unreadable (names ``repair=True``).
    SumError
        The volume's objects do not fit in uint32 ids.
    """
    if target.id_stride is not None:
        return 0
    n = target.count(slice_index)
    if n < 0:
        raise target.damaged([f"counts of slice {slice_index} is missing or unreadable"])
    if offset + n >= ID_SPACE:
        raise SumError(f"the volume has more than {ID_SPACE - 1} objects, more than uint32 labels can number")
    return offset + n


def record_damage(target: Target) -> list[tuple[int, str]]:
    """``(plane, problem)`` for each record of a finished tile or plan that a pending chunk needs and
    that is missing or damaged (see :meth:`Target.record_problem`); checked when a job resumes."""
    if any(f"done/{stage}" not in target.group for stage in ("tile", "plan", "chunk")):
        return []
    tiles, plans, chunks = target.flags("tile"), target.flags("plan"), target.flags("chunk")
    damage = []
    for s in np.nonzero(~chunks.all(axis=1))[0]:
        names = [f"s{s}/t{t}" for t in np.nonzero(tiles[s])[0]] + ([f"s{s}/plan"] if plans[s] else [])
        damage += [(int(s), problem) for name in names if (problem := target.record_problem(name))]
    return damage


def write_objects_table(target: Target, volume: Volume, cancel: threading.Event | None = None) -> None:
    """Write the per-object table: the rows of each plane planned by this run (:func:`plane_rows`, ids moved
    as painted), the verified rows of the existing table for a plane done before a repair."""
    offsets = [0]
    for s in range(volume.n_slices - 1):
        offsets.append(id_offset(target, s, offsets[-1]))

    def fresh(s: int) -> dict[str, np.ndarray] | None:
        return plane_rows(target, volume, s, offsets[s], cancel) if f"work/s{s}/plan" in target.group else None

    write_slices_table(target, volume.n_slices, fresh)


def plane_rows(target: Target, volume: Volume, slice_index: int, offset: int,
               cancel: threading.Event | None = None) -> dict[str, np.ndarray]:
    """The table rows of one planned plane whose chunks are written: its objects' ids (plan's plus
    ``offset``), predicted IoU and stability (NaN in tile records of an earlier version), scored on the
    output window by window (:func:`sum_core.batch.objects.window_rows`)."""
    plan = target.get(f"s{slice_index}/plan")
    tiles: dict[int, Any] = {}
    objects = []
    for t, i, label in zip(plan["tile"].tolist(), plan["local"].tolist(), plan["label"].tolist()):
        if t not in tiles:
            record = target.get(f"s{slice_index}/t{t}")
            n = len(record["score"])
            stability = record["stability"] if "stability" in record.files else np.full(n, np.nan)
            tiles[t] = (record["box"], record["score"], stability)
        box, score, stability = tiles[t]
        r0, c0, r1, c1 = (int(v) for v in box[i])
        objects.append((offset + label, Region(r0, c0, r1 + 1, c1 + 1), float(score[i]), float(stability[i])))
    return window_rows(target, volume, slice_index, objects, cancel)


def _summary(npz: Any) -> dict[str, np.ndarray]:
    """Boxes, scores and areas of a stored tile (its masks are not kept)."""
    return {name: npz[name] for name in ("box", "score", "area")}


def run_chunk(target: Target, volume: Volume, grid: TileGrid, slice_index: int, tile_index: int, offset: int,
              *_plan: Any) -> None:
    """Stage 3: paint and write one output chunk (the inner region of a tile), the plan's ids plus ``offset``."""
    chunk = grid[tile_index].inner
    plan = target.get(f"s{slice_index}/plan")
    sources = [t for t in grid.tiles_touching(_grow(chunk, grid.halo)) if t.outer.intersects(chunk)]
    tiles = {t.index: Unpacked(target.get(f"s{slice_index}/t{t.index}")) for t in sources}
    labels = np.zeros(chunk.shape, dtype=np.uint32)
    uncertainty = np.zeros(chunk.shape, dtype=np.float16)
    for t, i, label in zip(plan["tile"], plan["local"], plan["label"]):
        if int(t) not in tiles:
            continue
        part = tiles[int(t)]
        paint(labels, chunk, part, i, offset + label)
        unc_box = Region(*(int(v) for v in part.unc_region[i]))
        window, inside = _overlap(unc_box, chunk)
        if window is not None:
            view = uncertainty[window.slices]
            np.maximum(view, part.unc(i)[inside.slices], out=view)
    target.write_chunk(volume.out_index(slice_index, chunk), labels, uncertainty)
    target.mark_done("chunk", (slice_index, tile_index))


def paint(labels: np.ndarray, chunk: Region, part: Unpacked, i: int, label: int) -> None:
    """Paint object ``i`` of a stored record with ``label`` into the ``labels`` of ``chunk`` (where they overlap);
    the one painter of both automatic modes."""
    box = Region(*(int(v) for v in part.box[i][:2]), *(int(v) + 1 for v in part.box[i][2:]))
    window, inside = _overlap(box, chunk)
    if window is not None:
        labels[window.slices][part.mask(i)[inside.slices]] = label


class Unpacked:
    """Random access to the objects of a stored record: inclusive global ``box`` and the mask cropped to
    it of each (:func:`run_tile`; AIS's object records), and the cropped uncertainty of AMG's."""

    def __init__(self, npz: Any) -> None:
        self.box = npz["box"]
        self._mask = npz["mask"]
        sizes = (self.box[:, 2] - self.box[:, 0] + 1) * (self.box[:, 3] - self.box[:, 1] + 1)
        self._starts = np.concatenate([[0], np.cumsum(sizes)])
        if "unc_region" in npz:
            self.unc_region, self._unc = npz["unc_region"], npz["unc"]
            r = self.unc_region
            self._unc_starts = np.concatenate([[0], np.cumsum((r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1]))])

    def mask(self, i: int) -> np.ndarray:
        r0, c0, r1, c1 = self.box[i]
        return self._mask[self._starts[i] : self._starts[i + 1]].reshape(r1 - r0 + 1, c1 - c0 + 1)

    def unc(self, i: int) -> np.ndarray:
        r0, c0, r1, c1 = self.unc_region[i]
        return self._unc[self._unc_starts[i] : self._unc_starts[i + 1]].reshape(r1 - r0, c1 - c0)


def _grow(region: Region, halo: tuple[int, int]) -> Region:
    return Region(region.row0 - halo[0], region.col0 - halo[1], region.row1 + halo[0], region.col1 + halo[1])


def _overlap(item: Region, chunk: Region) -> tuple[Region | None, Region]:
    """``item ∩ chunk`` relative to ``chunk`` and relative to ``item`` (None when empty)."""
    r0, c0 = max(item.row0, chunk.row0), max(item.col0, chunk.col0)
    r1, c1 = min(item.row1, chunk.row1), min(item.col1, chunk.col1)
    if r0 >= r1 or c0 >= c1:
        return None, item
    return (
        Region(r0 - chunk.row0, c0 - chunk.col0, r1 - chunk.row0, c1 - chunk.col0),
        Region(r0 - item.row0, c0 - item.col0, r1 - item.row0, c1 - item.col0),
    )
