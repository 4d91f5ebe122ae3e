"""Automatic ("segment everything") segmentation: a grid of point prompts, filtered masks.

:func:`generate_masks` is SAM's automatic mask generator on a :class:`~sum_core.predictor.Predictor`'s
current image: a regular grid of single positive clicks decoded in batches (the image embedding is
broadcast over the batch), SAM's filters (predicted IoU, stability of the logits), SUM's maximum
area fraction, box NMS and optional small-region clean-up. :func:`auto_segment` runs it on a whole
image, tiled with a halo when the image is larger than the model input, and paints the result into
an instance label image with a per-pixel uncertainty map.

Memory: candidate masks are kept at the decoder's low resolution (``L×L``, 256 for SAM); only the
masks of one chunk are upscaled to the image size at a time, and only the masks kept by NMS are
returned at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike

import numpy as np
import torch
from tqdm.auto import tqdm

from . import uncertainty as unc
from .api import _resolve_model
from .errors import InvalidInputError
from .image import prepare_image
from .mask_ops import (
    box_touches_edge,
    boxes_to_xyxy,
    clean_small_regions,
    masks_to_boxes,
    point_grid,
    stability_score,
)
from .modeling import SamModel
from .nms import nms
from .options import TASKS
from .predictor import DecodedMasks, Predictor
from .prompts import to_model_frame, validate_prompts
from .tiling import Region, Tile, TileGrid, default_tiling
from .zoo import DEFAULT_MODEL

__all__ = [
    "SAM_EDGE_ATOL",
    "Instance",
    "MaskRecord",
    "auto_segment",
    "decode_points",
    "generate_masks",
    "owned_instances",
]

# Masks upscaled to the image size at once (memory: _UPSCALE_CHUNK x H x W float32).
_UPSCALE_CHUNK = 16
# Pixels around a mask's box that its uncertainty map contributes to in auto_segment.
_UNCERTAINTY_MARGIN = 4
#: SAM's distance (pixels) from a crop edge within which a mask counts as cut by the crop;
#: :func:`owned_instances` uses ``min(SAM_EDGE_ATOL, halo / 2)``.
SAM_EDGE_ATOL = 20

_GENERATE_OPTIONS = (
    "points_per_batch",
    "stability_offset",
    "max_area_fraction",
    "multimask",
    "hq_token_only",
    "task",
)


@dataclass
class MaskRecord:
    """One mask found by :func:`generate_masks`.

    Attributes
    ----------
    mask : np.ndarray
        bool, (H, W): ``logits > 0``, after the small-region clean-up when ``min_area > 0``.
    logits : np.ndarray
        float32, (H, W): the decoder's mask logits upscaled to the image (before clean-up).
    score : float
        Predicted IoU (the IoU head's output for the chosen mask token).
    stability : float
        Stability score: IoU of ``logits > offset`` and ``logits > -offset``.
    point : tuple of float
        ``(row, col)`` of the grid click that produced the mask.
    box : tuple of int
        ``(row0, col0, row1, col1)`` inclusive bounding box of ``mask``.
    area : int
        Number of pixels of ``mask``.
    uncertainty : np.ndarray
        float32, (H, W), in [0, 1]: disagreement of the SAM and HQ tokens for HQ/SUM models,
        normalised Bernoulli entropy of the SAM token for plain SAM (see :mod:`sum_core.uncertainty`).
    """

    mask: np.ndarray
    logits: np.ndarray
    score: float
    stability: float
    point: tuple[float, float]
    box: tuple[int, int, int, int]
    area: int
    uncertainty: np.ndarray


def decode_points(
    predictor: Predictor,
    points: np.ndarray,
    multimask: bool = True,
    hq_token_only: bool = False,
    task: int | None = None,
) -> DecodedMasks:
    """Decode N single positive clicks on the predictor's current image in one decoder call.

    Each click is its own prompt (one mask set per click). The image embedding (batch 1) is
    broadcast over the N prompts by the decoder, not copied.

    Parameters
    ----------
    predictor : Predictor
        With an image set.
    points : np.ndarray
        ``(N, 2)`` clicks ``(row, col)`` in image pixels.
    multimask, hq_token_only : bool
        Output selection, see :meth:`sum_core.modeling.mask_decoder.MaskDecoder.select_outputs`
        (plain SAM with ``multimask`` keeps all 3 masks per click, as SAM's generator does).
    task : int or None
        SUM task prompt; None (or a model without SUM tokens) adds no task offsets.

    Returns
    -------
    DecodedMasks
    """
    prompts = validate_prompts(
        points=points, labels=np.ones(len(points), dtype=np.int64), image_shape=predictor.original_size
    )
    frame = to_model_frame(prompts, predictor.original_size, predictor.input_size, device=predictor.device)
    # to_model_frame treats the clicks as one prompt (1×N×2); make them N prompts of one click.
    frame = frame._replace(point_coords=frame.point_coords[0][:, None, :], point_labels=frame.point_labels[0][:, None])
    return predictor.decode(frame, multimask, hq_token_only, task)


class _Candidates:
    """Masks that passed the per-mask filters, kept at low resolution until NMS."""

    def __init__(self) -> None:
        self.logits: list[torch.Tensor] = []
        self.sam: list[torch.Tensor] = []
        self.hq: list[torch.Tensor | None] = []
        self.score: list[float] = []
        self.stability: list[float] = []
        self.point: list[tuple[float, float]] = []
        self.box: list[torch.Tensor] = []
        self.area: list[int] = []

    def __len__(self) -> int:
        return len(self.score)


def _upscale(predictor: Predictor, low_res: torch.Tensor) -> torch.Tensor:
    """``K×L×L`` low-res logits to ``K×H×W`` logits at the predictor's image size."""
    return predictor.upscale(low_res[:, None])[:, 0]


def _check_range(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    if not low <= float(value) <= high:
        raise InvalidInputError(f"{name} must lie in [{low}, {high}], got {value!r}")
    return float(value)


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def generate_masks(
    predictor: Predictor,
    points_per_side: int = 32,
    points_per_batch: int = 64,
    pred_iou_thresh: float = 0.88,
    stability_thresh: float = 0.95,
    stability_offset: float = 1.0,
    box_nms_thresh: float = 0.7,
    min_area: int = 0,
    max_area_fraction: float = 1.0,
    multimask: bool = True,
    hq_token_only: bool = False,
    task: int | None = None,
    progress: bool = False,
) -> list[MaskRecord]:
    """Segment everything in the predictor's current image from a grid of clicks (SAM's AMG).

    Steps (SAM's automatic mask generator on one crop, in (row, col)):

    1. ``points_per_side²`` clicks at the cell centres of a regular grid over the image,
       decoded ``points_per_batch`` at a time (:func:`decode_points`).
    2. Keep masks with predicted IoU ``> pred_iou_thresh`` (no filter when it is ``<= 0``,
       as SAM), then stability score (on the upscaled logits) ``>= stability_thresh`` (no
       filter when ``<= 0``), then area ``<= max_area_fraction`` of the image (SUM's filter
       against background masks); empty masks are dropped.
    3. Greedy NMS of the mask boxes at ``box_nms_thresh``, scored by predicted IoU.
    4. With ``min_area > 0``: fill holes and remove islands smaller than ``min_area`` in each
       mask, then NMS again preferring unchanged masks (SAM's ``postprocess_small_regions``).

    Parameters
    ----------
    predictor : Predictor
        With an image set (``set_image`` or ``set_embedding``).
    points_per_side : int
        Grid size; ``points_per_side**2`` clicks.
    points_per_batch : int
        Clicks decoded per decoder call (memory vs. speed).
    pred_iou_thresh : float
        Minimum predicted IoU, in [0, 1].
    stability_thresh : float
        Minimum stability score, in [0, 1].
    stability_offset : float
        Logit offset of the stability score, ``>= 0``.
    box_nms_thresh : float
        Box IoU above which the lower-scoring mask is dropped, in [0, 1].
    min_area : int
        Small-region clean-up: holes and islands below this many pixels (0: off).
    max_area_fraction : float
        Drop masks covering more than this fraction of the image, in (0, 1].
    multimask : bool
        Plain SAM: 3 masks per click; HQ: best of the 3 SAM tokens per click.
    hq_token_only : bool
        HQ models: use the HQ token's logits alone instead of SAM + HQ.
    task : {0, 1, 2} or None
        SUM task prompt (0 anything, 1 object, 2 entity); None: no task offsets.
    progress : bool
        Show a progress bar over the batches.

    Returns
    -------
    list of MaskRecord
        In decreasing predicted IoU (NMS order).

    Raises
    ------
    InvalidInputError
        No image set, or an option out of range.
    """
    if not predictor.is_image_set:
        raise InvalidInputError("no image is set: call predictor.set_image(image) before generate_masks()")
    grid = point_grid(points_per_side)
    points_per_batch = _check_int(points_per_batch, "points_per_batch", 1)
    pred_iou_thresh = _check_range(pred_iou_thresh, "pred_iou_thresh", 0.0, 1.0)
    stability_thresh = _check_range(stability_thresh, "stability_thresh", 0.0, 1.0)
    stability_offset = _check_range(stability_offset, "stability_offset", 0.0, float("inf"))
    box_nms_thresh = _check_range(box_nms_thresh, "box_nms_thresh", 0.0, 1.0)
    min_area = _check_int(min_area, "min_area", 0)
    max_area_fraction = _check_range(max_area_fraction, "max_area_fraction", 0.0, 1.0)
    if max_area_fraction == 0.0:
        raise InvalidInputError("max_area_fraction must be > 0, got 0")
    if task is not None and task not in TASKS:
        raise InvalidInputError(f"task={task!r} is not valid; choose None or one of {list(TASKS)}")

    height, width = predictor.original_size
    points = grid * np.array([height, width], dtype=np.float64)
    max_area = max_area_fraction * height * width
    found = _Candidates()
    starts = range(0, len(points), points_per_batch)
    for start in tqdm(starts, desc="decoding point batches", disable=not progress):
        batch_points = points[start : start + points_per_batch]
        batch = decode_points(predictor, batch_points, multimask, hq_token_only, task)
        _filter_batch(
            predictor, batch, batch_points, found,
            pred_iou_thresh, stability_thresh, stability_offset, max_area,
        )
    if not found:
        return []
    boxes = torch.stack(found.box)
    keep = nms(boxes_to_xyxy(boxes), torch.tensor(found.score), box_nms_thresh).tolist()
    records = _records(predictor, found, keep)
    if min_area > 0:
        records = _clean_small_regions(records, min_area, box_nms_thresh)
    return records


def _filter_batch(
    predictor: Predictor,
    batch: DecodedMasks,
    batch_points: np.ndarray,
    found: _Candidates,
    pred_iou_thresh: float,
    stability_thresh: float,
    stability_offset: float,
    max_area: float,
) -> None:
    """Apply the per-mask filters to one batch and append the survivors (low-res) to ``found``."""
    n, c = batch.iou.shape
    iou = batch.iou.reshape(-1).float().cpu()
    point_of = np.repeat(np.arange(n), c)
    chosen = torch.arange(n * c)
    if pred_iou_thresh > 0:
        chosen = chosen[iou[chosen] > pred_iou_thresh]
    logits = batch.logits.reshape(n * c, *batch.logits.shape[-2:])
    sam = batch.sam_logits.reshape(n * c, *batch.sam_logits.shape[-2:])
    for part in torch.split(chosen, _UPSCALE_CHUNK):
        if len(part) == 0:
            continue
        full = _upscale(predictor, logits[part])
        stability = stability_score(full, 0.0, stability_offset).cpu()
        masks = full > 0
        areas = masks.sum(dim=(-2, -1)).cpu()
        boxes = masks_to_boxes(masks).cpu()
        ok = (areas > 0) & (areas <= max_area)
        if stability_thresh > 0:
            ok &= stability >= stability_thresh
        for k in torch.nonzero(ok)[:, 0].tolist():
            i = int(part[k])
            found.logits.append(logits[i].clone())
            found.sam.append(sam[i].clone())
            found.hq.append(None if batch.hq_logits is None else batch.hq_logits[i // c, 0].clone())
            found.score.append(float(iou[i]))
            found.stability.append(float(stability[k]))
            found.point.append((float(batch_points[point_of[i], 0]), float(batch_points[point_of[i], 1])))
            found.box.append(boxes[k])
            found.area.append(int(areas[k]))


def _records(predictor: Predictor, found: _Candidates, keep: list[int]) -> list[MaskRecord]:
    """Full-resolution records of the kept candidates, upscaled a chunk at a time."""
    records = []
    for start in range(0, len(keep), _UPSCALE_CHUNK):
        idx = keep[start : start + _UPSCALE_CHUNK]
        full = _upscale(predictor, torch.stack([found.logits[i] for i in idx]))
        sam = _upscale(predictor, torch.stack([found.sam[i] for i in idx]))
        if found.hq[idx[0]] is not None:
            hq = _upscale(predictor, torch.stack([found.hq[i] for i in idx]))
            unc_maps = unc.disagreement(sam, hq)
        else:
            unc_maps = unc.bernoulli_entropy(sam)
        full = full.float().cpu().numpy()
        unc_maps = unc_maps.float().cpu().numpy()
        for k, i in enumerate(idx):
            records.append(
                MaskRecord(
                    mask=full[k] > 0,
                    logits=full[k],
                    score=found.score[i],
                    stability=found.stability[i],
                    point=found.point[i],
                    box=tuple(int(v) for v in found.box[i].tolist()),
                    area=found.area[i],
                    uncertainty=unc_maps[k],
                )
            )
    return records


def _clean_small_regions(records: list[MaskRecord], min_area: int, nms_thresh: float) -> list[MaskRecord]:
    """SAM's ``postprocess_small_regions``: clean each mask, then NMS preferring unchanged masks."""
    scores = []
    for rec in records:
        mask, changed = clean_small_regions(rec.mask, min_area)
        if changed:
            rec.mask = mask
            rec.area = int(mask.sum())
            rec.box = tuple(int(v) for v in masks_to_boxes(torch.from_numpy(mask)).tolist())
        scores.append(0.0 if changed else 1.0)
    boxes = torch.tensor([rec.box for rec in records], dtype=torch.int64)
    keep = nms(boxes_to_xyxy(boxes), torch.tensor(scores), nms_thresh).tolist()
    return [records[i] for i in keep]


@dataclass
class Instance:
    """A mask kept for an image, in image coordinates, cropped to its box.

    Attributes
    ----------
    box : tuple of int
        ``(row0, col0, row1, col1)`` inclusive bounding box in the image.
    mask : np.ndarray
        bool, cropped to ``box``.
    score : float
        Predicted IoU of the record.
    area : int
        Pixels of the mask.
    unc_region : Region
        The box grown by 4 px (clipped to the window the mask was found in): the pixels its
        uncertainty contributes to.
    uncertainty : np.ndarray
        float32, the record's uncertainty map cropped to ``unc_region``.
    """

    box: tuple[int, int, int, int]
    mask: np.ndarray
    score: float
    area: int
    unc_region: Region
    uncertainty: np.ndarray


def auto_segment(
    image: np.ndarray,
    points_per_side: int = 32,
    pred_iou_thresh: float = 0.88,
    stability_thresh: float = 0.95,
    box_nms_thresh: float = 0.7,
    min_area: int = 0,
    tile_shape: int | tuple[int, int] | None = None,
    halo: int | tuple[int, int] | None = None,
    model: str | PathLike | SamModel = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    progress: bool = True,
    **kwargs,
) -> tuple[np.ndarray, np.ndarray]:
    """Segment every object of an image into an instance label image, with uncertainty.

    Images whose sides fit the model input (1024 for SAM) are segmented in one piece. Larger
    images (or any image when ``tile_shape`` is given) are cut into a :class:`TileGrid`; each
    tile's outer window (tile plus halo) is encoded and segmented with :func:`generate_masks`
    (so ``max_area_fraction`` refers to the window). Stitching, so that seams neither split
    nor double objects:

    - a mask is kept only by the tile whose inner region holds its box centre;
    - it is dropped when it lies within ``atol = min(20, halo / 2)`` px (SAM's crop-edge
      distance) of an edge of the window that is not an image edge: it may be cut there;
    - remaining duplicates across tiles are removed by NMS over the global boxes
      (``box_nms_thresh``, scored by predicted IoU).

    An object crossing an inner border is therefore kept whole when it reaches at most
    ``halo - atol`` px beyond that border (44 px with the default 64 px halo); larger objects
    on a seam are lost: give a larger ``halo`` for them.

    Parameters
    ----------
    image : np.ndarray
        2D grayscale (H, W) or RGB/RGBA (H, W, 3|4), any real dtype (normalised once for the
        whole image, see :func:`sum_core.image.prepare_image`).
    points_per_side, pred_iou_thresh, stability_thresh, box_nms_thresh, min_area
        See :func:`generate_masks` (per tile).
    tile_shape : int or (int, int), optional
        Inner tile size. Default: :func:`sum_core.tiling.default_tiling` (untiled up to the
        model input size).
    halo : int or (int, int), optional
        Context around each tile; only with ``tile_shape``. Default: model input size / 16
        (64 for SAM).
    model : str, path or SamModel
        Registry name, checkpoint path or loaded model (names and paths are cached).
    device : str or torch.device, optional
        Default: CUDA, then MPS, then CPU.
    progress : bool
        Show progress (over tiles, or over decoder batches for one tile).
    **kwargs
        Further :func:`generate_masks` options: ``points_per_batch``, ``stability_offset``,
        ``max_area_fraction``, ``multimask``, ``hq_token_only``, ``task``.

    Returns
    -------
    labels : np.ndarray
        uint32 (H, W): instances 1..N, 0 for background. Where masks overlap, the smaller
        one (then the better-scoring one) wins.
    uncertainty : np.ndarray
        float32 (H, W) in [0, 1]: per pixel, the maximum of the uncertainty maps
        (:attr:`MaskRecord.uncertainty`) of the kept masks whose box, grown by 4 px, covers
        the pixel; 0 where no mask does.

    Raises
    ------
    InvalidInputError
        Bad image, tiling or option (checked before the model is loaded).
    """
    unknown = sorted(set(kwargs) - set(_GENERATE_OPTIONS))
    if unknown:
        raise InvalidInputError(
            f"unknown option(s) {unknown}; generate_masks options are {list(_GENERATE_OPTIONS)}"
        )
    prepared = prepare_image(image)
    shape = prepared.shape[:2]
    if halo is not None and tile_shape is None:
        raise InvalidInputError(
            "halo was given without tile_shape; give both, or neither for the default tiling"
        )
    options = dict(
        points_per_side=points_per_side,
        pred_iou_thresh=pred_iou_thresh,
        stability_thresh=stability_thresh,
        box_nms_thresh=box_nms_thresh,
        min_area=min_area,
        **kwargs,
    )
    sam_model = _resolve_model(model, device)
    encoder_size = sam_model.config.image_size
    if tile_shape is None:
        grid = default_tiling(shape, encoder_size)
    else:
        grid = TileGrid(shape, tile_shape, encoder_size // 16 if halo is None else halo)
    predictor = Predictor(sam_model, device=device)
    tiled = len(grid) > 1
    instances: list[Instance] = []
    for tile in tqdm(grid, desc="segmenting tiles", disable=not (progress and tiled)):
        predictor.set_image(prepared[tile.outer.slices])
        records = generate_masks(predictor, progress=progress and not tiled, **options)
        instances += owned_instances(records, tile, grid)
    if tiled and instances:
        boxes = torch.tensor([inst.box for inst in instances], dtype=torch.int64)
        keep = nms(boxes_to_xyxy(boxes), torch.tensor([inst.score for inst in instances]), box_nms_thresh)
        instances = [instances[i] for i in keep.tolist()]
    return _paint(instances, shape)


def owned_instances(records: list[MaskRecord], tile: Tile, grid: TileGrid) -> list[Instance]:
    """The masks found in one tile's window that this tile keeps, in image coordinates.

    These are :func:`auto_segment`'s per-tile seam rules, for callers that segment the tiles
    themselves (such as :mod:`sum_core.batch`). With more than one tile, a record is kept
    when its box centre lies in the tile's inner region and its box stays more than
    ``atol = min(SAM_EDGE_ATOL, max(1, min(halo) // 2))`` px from every window edge that is
    not an image edge (it may be cut there); a single-tile grid keeps every record. Kept
    records are cropped to their box (:class:`Instance`). Duplicates across tiles are not
    removed here: run box NMS over the instances of all tiles afterwards.

    Parameters
    ----------
    records : list of MaskRecord
        From :func:`generate_masks` on the tile's outer window (``tile.outer``), in window
        coordinates.
    tile : Tile
        The tile, from ``grid``.
    grid : TileGrid
        The tiling of the image.

    Returns
    -------
    list of Instance
        In the order of ``records``.
    """
    if len(grid) == 1:
        return [_to_instance(rec, tile.outer) for rec in records]
    atol = min(SAM_EDGE_ATOL, max(1, min(grid.halo) // 2))
    return [
        _to_instance(rec, tile.outer)
        for rec in records
        if _owned(rec.box, tile.outer, tile.index, grid, atol)
    ]


def _owned(box: tuple[int, int, int, int], outer: Region, index: int, grid: TileGrid, atol: int) -> bool:
    """Whether tile ``index`` (window ``outer``) keeps a mask with window-local inclusive ``box``.

    Kept when the box centre lies in the tile's inner region and the box stays more than
    ``atol`` px from every window edge that is not an image edge. A tile's window extends the
    halo beyond its inner region on both sides of a seam, so an object cut by its owner's
    window is also cut by the neighbour's: no other tile could hold it whole.
    """
    r0, c0, r1, c1 = box[0] + outer.row0, box[1] + outer.col0, box[2] + outer.row0, box[3] + outer.col0
    if grid.tile_containing((r0 + r1) / 2, (c0 + c1) / 2).index != index:
        return False
    return not bool(box_touches_edge(torch.tensor([[r0, c0, r1, c1]]), outer, grid.shape, atol)[0])


def _to_instance(rec: MaskRecord, outer: Region) -> Instance:
    """Crop a record (in the window ``outer``) to its box, in global coordinates."""
    r0, c0, r1, c1 = rec.box
    h, w = rec.mask.shape
    m = _UNCERTAINTY_MARGIN
    unc_local = Region(max(r0 - m, 0), max(c0 - m, 0), min(r1 + 1 + m, h), min(c1 + 1 + m, w))
    return Instance(
        box=(r0 + outer.row0, c0 + outer.col0, r1 + outer.row0, c1 + outer.col0),
        mask=rec.mask[r0 : r1 + 1, c0 : c1 + 1].copy(),
        score=rec.score,
        area=rec.area,
        unc_region=Region(
            unc_local.row0 + outer.row0,
            unc_local.col0 + outer.col0,
            unc_local.row1 + outer.row0,
            unc_local.col1 + outer.col0,
        ),
        uncertainty=rec.uncertainty[unc_local.slices].copy(),
    )


def _paint(instances: list[Instance], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Label image (largest first, then lowest score first, so small masks win) and uncertainty."""
    labels = np.zeros(shape, dtype=np.uint32)
    uncertainty = np.zeros(shape, dtype=np.float32)
    order = sorted(range(len(instances)), key=lambda i: (-instances[i].area, instances[i].score, i))
    for label, i in enumerate(order, start=1):
        inst = instances[i]
        r0, c0, r1, c1 = inst.box
        labels[r0 : r1 + 1, c0 : c1 + 1][inst.mask] = label
        window = uncertainty[inst.unc_region.slices]
        np.maximum(window, inst.uncertainty, out=window)
    # Consecutive ids 1..N for the instances that kept at least one pixel.
    present = np.unique(labels)
    present = present[present > 0]
    lookup = np.zeros(len(instances) + 1, dtype=np.uint32)
    lookup[present] = np.arange(1, len(present) + 1, dtype=np.uint32)
    return lookup[labels], uncertainty
