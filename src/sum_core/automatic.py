"""Automatic ("segment everything") segmentation: a grid of point prompts, filtered masks.

:func:`generate_masks` is SAM's automatic mask generator on one encoded window (an
:class:`~sum_core.modeling.ImageEmbedding`): a regular grid of single positive clicks decoded in
batches through the model's decode step (the embedding is broadcast over the batch), SAM's
filters (predicted IoU, stability of the logits), SUM's maximum area fraction, box NMS and
optional small-region clean-up. :func:`auto_segment` runs it on a whole image, tiled by the
package's one size rule (:func:`sum_core.tiling.tile_grid`; each tile's window, tile plus halo,
is encoded as one image resized to the encoder) and paints the result into an instance label
image with a per-pixel uncertainty map. The options are data: :class:`~sum_core.auto_options.AutoOptions`.

Memory: candidate masks are kept at the decoder's low resolution (``L×L``, 256 for SAM); only the
masks of one chunk are upscaled to the window size at a time, and only the masks kept by NMS are
returned at full resolution. :func:`auto_segment` reads the image one tile window at a time
(lazy inputs are never read whole) and refuses, before any work, an image whose full-size
outputs would not fit in memory (:data:`MAX_OUTPUT_BYTES`); :func:`sum_core.batch.segment_zarr`
writes the outputs of such images to zarr tile by tile.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import uncertainty as unc
from . import zoo
from .acceleration import check_precision
from .ais import AIS_MAP_BYTES_PER_PIXEL, AisOptions, ais_segment
from .auto_options import AutoOptions
from .decoding import run_decoder, upscale
from .device import resolve_device
from .encoding import encode_image
from .errors import InvalidInputError, check_cancel
from .loading import resolve_model
from .mask_ops import (
    box_touches_edge,
    boxes_to_xyxy,
    clean_small_regions,
    masks_to_boxes,
    pixel_counts,
    point_grid,
    stability_score,
)
from .modeling import DecodedMasks, ImageEmbedding, SamModel, ais_decoder_of
from .nms import nms
from .object_scores import ObjectScores, object_scores
from .prompts import batch_to_model_frame, validate_prompts
from .sources import fixed_normalization, image_planes
from .tile_window import read_window
from .tiling import Region, Tile, TileGrid, tile_grid
from .validation import check_bool, check_options
from .zoo import DEFAULT_MODEL

__all__ = [
    "AUTO_MODES",
    "MAX_OUTPUT_BYTES",
    "SAM_EDGE_ATOL",
    "AisOptions",
    "AutoOptions",
    "AutoSegmentation",
    "Instance",
    "MaskRecord",
    "auto_segment",
    "check_mode",
    "check_output_memory",
    "decode_points",
    "generate_masks",
    "model_for_mode",
    "owned_instances",
    "window_masks",
]

# Masks upscaled to the window size at once (memory: _UPSCALE_CHUNK x H x W float32).
_UPSCALE_CHUNK = 16
# Pixels around a mask's box that its uncertainty map contributes to in auto_segment.
_UNCERTAINTY_MARGIN = 4
#: SAM's distance (pixels) from a crop edge within which a mask counts as cut by the crop;
#: :func:`owned_instances` uses ``min(SAM_EDGE_ATOL, halo / 2)``.
SAM_EDGE_ATOL = 20
#: Largest in-memory output of :func:`auto_segment`: its uint32 labels and float32 uncertainty
#: take 8 bytes per pixel, so 4 GiB is about 23000 x 23000 pixels. Larger images are refused
#: (as are outputs larger than the memory available): use :func:`sum_core.batch.segment_zarr`.
MAX_OUTPUT_BYTES = 4 * 2**30
# Bytes per output pixel of auto_segment: uint32 label + float32 uncertainty.
_OUTPUT_BYTES_PER_PIXEL = 8
#: The modes of :func:`auto_segment`: ``"auto"`` picks one, ``"ais"`` is the AIS decoder's
#: one-pass instance segmentation, ``"amg"`` SAM's point-grid mask generator.
AUTO_MODES = ("auto", "ais", "amg")
# Pixels relabelled at a time by _paint (bounds its temporaries on large outputs).
_PAINT_PIXELS = 1 << 22


@dataclass
class MaskRecord:
    """One mask found by :func:`generate_masks`, in the pixels of the encoded window.

    Attributes
    ----------
    mask : np.ndarray
        bool, (H, W): ``logits > 0``, after the small-region clean-up when ``min_area > 0``.
    logits : np.ndarray
        float32, (H, W): the decoder's mask logits upscaled to the window (before clean-up).
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
    model: SamModel, embedding: ImageEmbedding, points: np.ndarray, options: AutoOptions
) -> DecodedMasks:
    """Decode N single positive clicks on one encoded window in one decoder call.

    Each click is its own prompt (one mask set per click): the model's decode step
    (:meth:`sum_core.modeling.SamModel.decode`) broadcasts the embedding over the N prompts.
    Plain SAM with ``options.multimask`` keeps all 3 masks per click, as SAM's generator does.

    Parameters
    ----------
    model : SamModel
    embedding : ImageEmbedding
        The encoded window.
    points : np.ndarray
        ``(N, 2)`` clicks ``(row, col)`` in window pixels.
    options : AutoOptions
        ``multimask``, ``hq_token_only`` and ``task`` are used.

    Returns
    -------
    DecodedMasks
        Low-resolution logits ``N×C×L×L``, predicted IoU ``N×C``.
    """
    prompts = validate_prompts(points=points, image_shape=embedding.original_size, default_positive=True)
    clicks = [
        replace(prompts, points=prompts.points[i : i + 1], labels=prompts.labels[i : i + 1])
        for i in range(len(prompts.points))
    ]  # one object per click
    frame = batch_to_model_frame(clicks, embedding.original_size, embedding.input_size, device=embedding.device)
    return run_decoder(model, embedding, frame, options.task, options.multimask, options.hq_token_only)


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


def _upscale(model: SamModel, embedding: ImageEmbedding, low_res: torch.Tensor) -> torch.Tensor:
    """``K×L×L`` low-res logits to ``K×H×W`` logits at the window's size."""
    return upscale(model, embedding, low_res[:, None])[:, 0]


def generate_masks(
    model: SamModel,
    embedding: ImageEmbedding,
    options: AutoOptions | None = None,
    *,
    progress: bool = False,
    cancel: threading.Event | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[MaskRecord]:
    """Segment everything in one encoded window from a grid of clicks (SAM's AMG).

    Steps (SAM's automatic mask generator on one crop, in (row, col)):

    1. ``points_per_side²`` clicks at the cell centres of a regular grid over the window,
       decoded ``points_per_batch`` at a time (:func:`decode_points`).
    2. Keep masks with predicted IoU ``> pred_iou_thresh`` (no filter when it is ``<= 0``,
       as SAM), then stability score (on the upscaled logits) ``>= stability_thresh`` (no
       filter when ``<= 0``), then area ``<= max_area_fraction`` of the window (SUM's filter
       against background masks); empty masks are dropped.
    3. Greedy NMS of the mask boxes at ``box_nms_thresh``, scored by predicted IoU.
    4. With ``min_area > 0``: fill holes and remove islands smaller than ``min_area`` in each
       mask, then NMS again preferring unchanged masks (SAM's ``postprocess_small_regions``).

    Parameters
    ----------
    model : SamModel
        The model that encoded ``embedding``.
    embedding : ImageEmbedding
        One encoded window, e.g. ``sum_core.encoding.encode_image(model, prepare_image(image))``.
    options : AutoOptions, optional
        Default ``AutoOptions()`` (SAM's settings).
    progress : bool
        Show a progress bar over the decoder batches.
    cancel : threading.Event, optional
        Checked between decoder batches: raises :class:`sum_core.errors.Cancelled` when set.
    on_batch : callable, optional
        Called after each decoder batch with ``(batches done, batches of this window)``: progress
        within one window (AMG at its defaults decodes 1024 clicks, 16 batches of 64, for minutes
        on a CPU). The ``progress`` bar counts the same batches.

    Returns
    -------
    list of MaskRecord
        In decreasing predicted IoU (NMS order), in window pixels.

    Raises
    ------
    InvalidInputError
        Not a model / embedding / AutoOptions, or ``on_batch`` not callable.
    Cancelled
        ``cancel`` was set.
    """
    if not isinstance(model, SamModel):
        raise InvalidInputError(f"model must be a sum_core SamModel, got {type(model).__name__}")
    if not isinstance(embedding, ImageEmbedding):
        raise InvalidInputError(
            f"embedding must be a sum_core ImageEmbedding (see sum_core.encoding.encode_image), "
            f"got {type(embedding).__name__}"
        )
    options = check_options(options, AutoOptions)
    if on_batch is not None and not callable(on_batch):
        raise InvalidInputError(f"on_batch must be a callable (done, total) or None, got {type(on_batch).__name__}")
    height, width = embedding.original_size
    points = point_grid(options.points_per_side) * np.array([height, width], dtype=np.float64)
    max_area = options.max_area_fraction * height * width
    found = _Candidates()
    starts = range(0, len(points), options.points_per_batch)
    for done, start in enumerate(tqdm(starts, desc="decoding point batches", disable=not progress), start=1):
        check_cancel(cancel)
        batch_points = points[start : start + options.points_per_batch]
        batch = decode_points(model, embedding, batch_points, options)
        _filter_batch(model, embedding, batch, batch_points, found, options, max_area)
        if on_batch is not None:
            on_batch(done, len(starts))
    check_cancel(cancel)
    if not found:
        return []
    boxes = torch.stack(found.box)
    keep = nms(boxes_to_xyxy(boxes), torch.tensor(found.score), options.box_nms_thresh).tolist()
    records = _records(model, embedding, found, keep)
    if options.min_area > 0:
        records = _clean_small_regions(records, options.min_area, options.box_nms_thresh)
    return records


def _filter_batch(
    model: SamModel,
    embedding: ImageEmbedding,
    batch: DecodedMasks,
    batch_points: np.ndarray,
    found: _Candidates,
    options: AutoOptions,
    max_area: float,
) -> None:
    """Apply the per-mask filters to one batch and append the survivors (low-res) to ``found``."""
    n, c = batch.iou.shape
    iou = batch.iou.reshape(-1).float().cpu()
    point_of = np.repeat(np.arange(n), c)
    chosen = torch.arange(n * c)
    if options.pred_iou_thresh > 0:
        chosen = chosen[iou[chosen] > options.pred_iou_thresh]
    logits = batch.logits.reshape(n * c, *batch.logits.shape[-2:])
    sam = batch.sam_logits.reshape(n * c, *batch.sam_logits.shape[-2:])
    for part in torch.split(chosen, _UPSCALE_CHUNK):
        if len(part) == 0:
            continue
        full = _upscale(model, embedding, logits[part])
        stability = stability_score(full, 0.0, options.stability_offset).cpu()
        masks = full > 0
        areas = pixel_counts(masks).cpu()
        boxes = masks_to_boxes(masks).cpu()
        ok = (areas > 0) & (areas <= max_area)
        if options.stability_thresh > 0:
            ok &= stability >= options.stability_thresh
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


def _records(model: SamModel, embedding: ImageEmbedding, found: _Candidates, keep: list[int]) -> list[MaskRecord]:
    """Full-resolution records of the kept candidates, upscaled a chunk at a time."""
    records = []
    for start in range(0, len(keep), _UPSCALE_CHUNK):
        idx = keep[start : start + _UPSCALE_CHUNK]
        full = _upscale(model, embedding, torch.stack([found.logits[i] for i in idx]))
        sam = _upscale(model, embedding, torch.stack([found.sam[i] for i in idx]))
        if found.hq[idx[0]] is not None:
            hq = _upscale(model, embedding, torch.stack([found.hq[i] for i in idx]))
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
    stability : float
        Stability score of the record (NaN when not known).
    """

    box: tuple[int, int, int, int]
    mask: np.ndarray
    score: float
    area: int
    unc_region: Region
    uncertainty: np.ndarray
    stability: float = math.nan


class AutoSegmentation(tuple):
    """What :func:`auto_segment` returns: unpacks as ``labels, uncertainty`` (as before), plus ``objects``.

    Attributes
    ----------
    labels : np.ndarray
        uint32 ``(H, W)`` instance labels, 0 background.
    uncertainty : np.ndarray
        float32 ``(H, W)`` per-pixel uncertainty in [0, 1].
    objects : ObjectScores
        One row per object of ``labels`` (:func:`sum_core.object_scores.object_scores` of ``labels`` and
        ``uncertainty``): AMG with each mask's predicted IoU and stability score, AIS with NaN for them.
    """

    objects: ObjectScores

    def __new__(cls, labels: np.ndarray, uncertainty: np.ndarray, objects: ObjectScores) -> AutoSegmentation:
        result = super().__new__(cls, (labels, uncertainty))
        result.objects = objects
        return result

    def __getnewargs__(self) -> tuple[np.ndarray, np.ndarray, ObjectScores]:
        return self[0], self[1], self.objects

    @property
    def labels(self) -> np.ndarray:
        return self[0]

    @property
    def uncertainty(self) -> np.ndarray:
        return self[1]


def auto_segment(
    image: Any,
    options: AutoOptions | AisOptions | None = None,
    *,
    mode: str = "auto",
    tile_shape: int | tuple[int, int] | None = None,
    halo: int | tuple[int, int] | None = None,
    model: str | PathLike | SamModel = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    progress: bool = True,
    cancel: threading.Event | None = None,
) -> AutoSegmentation:
    """Segment every object of an image into an instance label image, with uncertainty and per-object scores.

    Two modes (``mode``):

    - ``"ais"``: automatic instance segmentation with the model's AIS decoder (micro-sam's),
      one decoder pass per tile and one seeded watershed over the whole image
      (:func:`sum_core.ais.ais_segment`); options :class:`~sum_core.ais_options.AisOptions`.
    - ``"amg"``: SAM's automatic mask generator, a grid of clicks per tile
      (:func:`generate_masks`); options :class:`~sum_core.auto_options.AutoOptions`.
    - ``"auto"`` (default): the mode of the ``options`` given; without options, AIS when the
      model carries an AIS decoder, else AMG. A model carries one when it is a ``SamModel``
      with a decoder (:func:`sum_core.modeling.ais_decoder_of`), a registry name whose entry
      names a decoder file (it is then fetched with the model, e.g. ``"vit_b_lm"``), or a
      checkpoint file that holds one.

    The image is cut by the package's one size rule, :func:`sum_core.tiling.tile_grid`
    (an image of at most the model input size, 1024 for SAM, is one window; a larger one is
    tiled so that no window is downscaled, unless ``tile_shape`` says otherwise). Each tile's
    outer window (tile plus halo) is encoded as one image resized to the encoder
    (:func:`sum_core.encoding.encode_image`).

    AIS stitches nothing: each tile's window is decoded, only the tile's inner block of the
    three decoder maps is kept in full-size maps, and ONE watershed over them makes the
    instances, so an object crossing tile borders comes back once and whole as long as the
    decoder sees it whole from the tile that owns each of its pixels (it reaches at most
    ``halo`` px beyond that tile).

    AMG segments each window with :func:`generate_masks` (so ``max_area_fraction`` refers to
    the window). Stitching, so that seams neither split nor double objects:

    - a mask is kept only by the tile whose inner region holds its box centre;
    - it is dropped when it lies within ``atol = min(20, halo / 2)`` px (SAM's crop-edge
      distance) of an edge of the window that is not an image edge: it may be cut there;
    - remaining duplicates across tiles are removed by NMS over the global boxes
      (``box_nms_thresh``, scored by predicted IoU).

    An object crossing an inner border is therefore kept whole by AMG when it reaches at most
    ``halo - atol`` px beyond that border (44 px with the default 64 px halo); larger objects
    on a seam are lost: give a larger ``halo`` for them.

    The image is read one tile window at a time (:meth:`sum_core.sources.Planes.read`), so a
    lazy image (dask, zarr, TIFF, a path) is never read whole; every window is converted to
    8 bits with ONE intensity window for the whole image
    (:func:`sum_core.sources.fixed_normalization`, applied by :func:`sum_core.image.to_uint8_rgb`).
    For a numpy image of up to 64 Mpixel that window is the one of
    :func:`sum_core.image.prepare_image`, so the result equals segmenting ``prepare_image(image)``.
    The outputs are full size and in memory (8 bytes per pixel; AIS also holds the decoder's
    three float32 maps, 12 more): an image whose outputs would exceed :data:`MAX_OUTPUT_BYTES`
    (4 GiB) or the memory available is refused before any work (:func:`check_output_memory`);
    segment it into a zarr store, tile by tile, with :func:`sum_core.batch.segment_zarr` or
    ``sum-hq batch``.

    Parameters
    ----------
    image : array-like or path
        One 2D grayscale (H, W) or RGB/RGBA (H, W, 3|4) plane, any real dtype: a numpy array,
        a lazy array (dask, zarr) or a path (opened lazily with
        :func:`sum_core.sources.open_image`). For a stack, pass one plane (``stack[z]``).
    options : AutoOptions or AisOptions, optional
        The options of the mode: :class:`~sum_core.auto_options.AutoOptions` (AMG, per window)
        or :class:`~sum_core.ais_options.AisOptions` (AIS); default: the mode's defaults.
    mode : {"auto", "ais", "amg"}
        See above.
    tile_shape, halo : int or (int, int), optional
        Tiling, see :func:`sum_core.tiling.tile_grid` (``tile_shape=image.shape[:2]``: one
        window resized to the encoder, SAM's own behaviour).
    model : str, path or SamModel
        Registry name, checkpoint path or loaded model (see :func:`sum_core.loading.resolve_model`).
    device : str or torch.device, optional
        Default: CUDA, then MPS, then CPU.
    precision : {"fp32", "bf16", "fp16"}
        Encoder precision (see :mod:`sum_core.acceleration`).
    progress : bool
        Show progress (over tiles, or for AMG over decoder batches for one tile).
    cancel : threading.Event, optional
        Checked before the image is read, between tiles, between AMG's decoder batches and
        before AIS's watershed: raises :class:`sum_core.errors.Cancelled` when set.

    Returns
    -------
    AutoSegmentation
        Unpacks as ``labels, uncertainty`` (a tuple, as in earlier versions), with ``.objects``:

        - ``labels`` (np.ndarray): uint32 (H, W): instances 1..N, 0 for background. AMG: where
          masks overlap, the smaller one (then the better-scoring one) wins. AIS: numbered in
          raster order of their seeds. The same image and model give the same ids.
        - ``uncertainty`` (np.ndarray): float32 (H, W) in [0, 1]. AMG: per pixel, the maximum
          of the uncertainty maps (:attr:`MaskRecord.uncertainty`) of the kept masks whose box,
          grown by 4 px, covers the pixel; 0 where no mask does. AIS:
          :func:`sum_core.ais_uncertainty.ais_pixel_uncertainty` of the decoder's maps.
        - ``objects`` (:class:`~sum_core.object_scores.ObjectScores`): one row per id of
          ``labels`` (:func:`~sum_core.object_scores.object_scores` of the two maps); AMG gives
          each object its mask's predicted IoU and stability score, AIS NaN for them.

    Raises
    ------
    InvalidInputError
        Bad image, mode, tiling, options (or options of the other mode) or precision, or
        outputs too large for memory (checked before the image is read or the model is
        loaded); ``mode="ais"`` with a model that has no AIS decoder.
    Cancelled
        ``cancel`` was set.

    Examples
    --------
    A camera frame with a small random model (a real one: ``model="sam_hq_vit_b"``), encoded as
    one window resized to the encoder (drop ``tile_shape`` to tile it at full resolution):

    >>> import numpy as np
    >>> from sum_core.auto_options import AutoOptions
    >>> from sum_core.automatic import auto_segment
    >>> from sum_core.modeling import build_model
    >>> image = np.zeros((1040, 1392), np.uint16); image[900:960, 1300:1360] = 4000
    >>> labels, uncertainty = auto_segment(
    ...     image, AutoOptions(points_per_side=4), tile_shape=image.shape,
    ...     model=build_model("vit_tiny", image_size=256), device="cpu", progress=False)
    >>> labels.shape, labels.dtype, uncertainty.dtype
    ((1040, 1392), dtype('uint32'), dtype('float32'))

    The same frame by AIS, with a (random) AIS decoder attached to the model (a real one:
    ``model="vit_b_lm"``, whose decoder comes with it):

    >>> from sum_core.modeling import AISDecoder, AISDecoderConfig, attach_ais_decoder
    >>> ais_model = attach_ais_decoder(build_model("vit_tiny", image_size=256),
    ...                                AISDecoder(AISDecoderConfig(initial_features=8)))
    >>> labels, uncertainty = auto_segment(
    ...     image, tile_shape=image.shape, model=ais_model, device="cpu", progress=False)
    >>> labels.dtype, bool(0 <= uncertainty.min() <= uncertainty.max() <= 1)
    (dtype('uint32'), True)
    """
    requested = check_mode(mode, options, model)
    progress = check_bool(progress, "progress")
    planes = image_planes(image)
    shape = planes.plane_shape
    check_output_memory(shape, ais=requested == "ais")
    target = resolve_device(device)
    check_precision(precision, target)
    if tile_shape is not None or halo is not None:
        tile_grid(shape, tile_shape=tile_shape, halo=halo)  # a bad tiling fails before the model loads
    check_cancel(cancel)
    sam_model, mode = model_for_mode(
        model, requested, lambda ais_decoder: resolve_model(model, target, ais_decoder=ais_decoder)
    )
    if mode == "ais" and requested == "auto":
        check_output_memory(shape, ais=True)
    options = check_options(options, AisOptions if mode == "ais" else AutoOptions)
    normalization = fixed_normalization(planes)
    sam_model = sam_model.to(target).eval()
    grid = tile_grid(shape, sam_model.config.image_size, tile_shape, halo)
    tiled = len(grid) > 1
    if mode == "ais":
        labels, uncertainty = ais_segment(
            sam_model, planes, normalization, grid, options, precision, progress=progress and tiled, cancel=cancel
        )
        return AutoSegmentation(labels, uncertainty, object_scores(labels, uncertainty))
    instances: list[Instance] = []
    for tile in tqdm(grid, desc="segmenting tiles", disable=not (progress and tiled)):
        check_cancel(cancel)
        window = read_window(planes, 0, tile.outer, normalization)
        records = window_masks(sam_model, window, options, precision, progress=progress and not tiled, cancel=cancel)
        instances += owned_instances(records, tile, grid)
    if tiled and instances:
        boxes = torch.tensor([inst.box for inst in instances], dtype=torch.int64)
        scores = torch.tensor([inst.score for inst in instances])
        keep = nms(boxes_to_xyxy(boxes), scores, options.box_nms_thresh)
        instances = [instances[i] for i in keep.tolist()]
    labels, uncertainty, painted = _paint(instances, shape)
    scores = object_scores(
        labels, uncertainty, predicted_iou={k: inst.score for k, inst in painted.items()},
        stability={k: inst.stability for k, inst in painted.items()},
    )  # fmt: skip
    return AutoSegmentation(labels, uncertainty, scores)


def window_masks(
    model: SamModel,
    window: np.ndarray,
    options: AutoOptions,
    precision: str = "fp32",
    *,
    progress: bool = False,
    cancel: threading.Event | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[MaskRecord]:
    """AMG's one per-window step: encode an ``(h, w, 3)`` uint8 window as one image, then
    :func:`generate_masks` (used by :func:`auto_segment` and the batch jobs)."""
    embedding = encode_image(model, window, precision)
    return generate_masks(model, embedding, options, progress=progress, cancel=cancel, on_batch=on_batch)


def check_mode(mode: Any, options: Any, model: Any = None) -> str:
    """The automatic mode asked for, checked before the model loads: THE mode rule's first half.

    ``mode`` must be one of :data:`AUTO_MODES`; options of the other mode are refused; ``"auto"``
    with options is the mode of their type (:class:`AisOptions`: ``"ais"``, :class:`AutoOptions`:
    ``"amg"``). ``"auto"`` without options stays ``"auto"``, decided by :func:`model_for_mode`.
    Used by :func:`auto_segment` and :func:`sum_core.batch.segment_zarr`.

    Raises
    ------
    InvalidInputError
        An unknown mode, options that are not options, or options of the other mode; AIS asked of
        a ``model`` known to have no AIS decoder (a ``SamModel`` without one, a registry name whose
        entry names none), before anything is loaded or downloaded.
    """
    checked = _checked_mode(mode, options)
    if checked == "ais" and _known_without_decoder(model):
        raise InvalidInputError(
            f"model: {_model_label(model)} has no AIS decoder, so mode 'ais' cannot run; choose a model with "
            "one (`sum-hq models list` shows them, e.g. vit_b_lm) or mode 'amg' (the point grid)"
        )
    return checked


def _known_without_decoder(model: Any) -> bool:
    """Whether ``model`` is a ``SamModel`` without an AIS decoder or a registry name whose entry names none."""
    if isinstance(model, SamModel):
        return ais_decoder_of(model) is None
    return _registry_decoder(model) is False


def _model_label(model: Any) -> str:
    return f"the {model.config.model_type} model" if isinstance(model, SamModel) else repr(model)


def _checked_mode(mode: Any, options: Any) -> str:
    """``mode`` checked against :data:`AUTO_MODES` and the options' type (see :func:`check_mode`)."""
    if not isinstance(mode, str) or mode not in AUTO_MODES:
        raise InvalidInputError(
            f"mode must be one of {AUTO_MODES} ('ais': the AIS decoder, 'amg': the point grid, "
            f"'auto': AIS when the model has an AIS decoder), got {mode!r}"
        )
    if options is None:
        return mode
    kinds = {"ais": AisOptions, "amg": AutoOptions}
    if not isinstance(options, (AisOptions, AutoOptions)):
        if mode != "auto":
            check_options(options, kinds[mode])  # raises: the mode's options type
        raise InvalidInputError(
            f"options must be a sum_core.auto_options.AutoOptions, got {type(options).__name__} "
            "(or a sum_core.ais_options.AisOptions for the AIS mode)"
        )
    given = "ais" if isinstance(options, AisOptions) else "amg"
    if mode == given:
        return mode
    if mode == "auto":
        return given
    kind = kinds[mode]
    raise InvalidInputError(
        f"options: {type(options).__name__} are the options of mode {given!r}, but mode={mode!r}; "
        f"pass {kind.__module__}.{kind.__name__} (or None) with mode={mode!r}, or mode={given!r}"
    )


def model_for_mode(
    model: str | PathLike | SamModel, mode: str, load: Callable[[bool], SamModel]
) -> tuple[SamModel, str]:
    """The model loaded for a mode from :func:`check_mode`, and the mode decided: THE mode rule's second half.

    ``"auto"`` becomes ``"ais"`` when the model carries an AIS decoder (a registry name whose entry
    names a decoder file is loaded with it), else ``"amg"``.

    Parameters
    ----------
    model : str, path or SamModel
        As given by the caller.
    mode : {"auto", "ais", "amg"}
        From :func:`check_mode`.
    load : callable
        ``load(ais_decoder: bool) -> SamModel``: the caller's way to resolve ``model``
        (:func:`sum_core.loading.resolve_model`; it raises for ``ais_decoder=True`` and a model
        without a decoder).

    Returns
    -------
    (SamModel, str)
        The model and ``"ais"`` or ``"amg"``.
    """
    if mode == "auto" and _registry_decoder(model):
        mode = "ais"  # fetch the registry model's decoder with it
    resolved = load(mode == "ais")
    if mode == "auto":
        mode = "ais" if ais_decoder_of(resolved) is not None else "amg"
    return resolved, mode


def _registry_decoder(model: Any) -> bool | None:
    """:func:`sum_core.zoo.has_decoder` of ``model``, None also for a malformed models file
    (resolve_model says what is wrong with it)."""
    try:
        return zoo.has_decoder(model)
    except InvalidInputError:
        return None


def check_output_memory(shape: tuple[int, int], *, ais: bool = False) -> None:
    """Refuse an image whose :func:`auto_segment` outputs would not fit in memory.

    The outputs (uint32 labels and float32 uncertainty, full size) take 8 bytes per pixel;
    AIS (``ais=True``) also holds the decoder's three full-size float32 maps until the end,
    12 more (:data:`sum_core.ais.AIS_MAP_BYTES_PER_PIXEL`): 20 bytes per pixel. They must fit
    within :data:`MAX_OUTPUT_BYTES` and within the memory available now (``MemAvailable`` of
    ``/proc/meminfo`` where there is one). AIS's watershed needs working memory beyond this
    bound (see ``docs/architecture.md``).

    Parameters
    ----------
    shape : (int, int)
        ``(height, width)`` of the image.
    ais : bool
        Count the AIS decoder maps too.

    Raises
    ------
    InvalidInputError
        The outputs would be larger; the message gives their size and points to
        :func:`sum_core.batch.segment_zarr` / ``sum-hq batch``, which write them to zarr.

    Examples
    --------
    >>> from sum_core.automatic import check_output_memory
    >>> check_output_memory((2160, 2560))  # 42 MiB of outputs
    >>> check_output_memory((50000, 50000))
    Traceback (most recent call last):
    ...
    sum_core.errors.InvalidInputError: image: auto_segment's outputs for a 50000 x 50000 image ...
    would take 18.63 GiB, more than its limit MAX_OUTPUT_BYTES (4.00 GiB); ... sum_core.batch.segment_zarr...
    """
    per_pixel = _OUTPUT_BYTES_PER_PIXEL + (AIS_MAP_BYTES_PER_PIXEL if ais else 0)
    needed = int(shape[0]) * int(shape[1]) * per_pixel
    available = _available_memory()
    if needed <= MAX_OUTPUT_BYTES and (available is None or needed <= available):
        return
    if needed > MAX_OUTPUT_BYTES:
        limit = f"its limit MAX_OUTPUT_BYTES ({MAX_OUTPUT_BYTES / 2**30:.2f} GiB)"
    else:
        limit = f"the memory available now ({available / 2**30:.2f} GiB)"
    what = "uint32 labels + float32 uncertainty" + (" + the AIS decoder's three float32 maps" if ais else "")
    raise InvalidInputError(
        f"image: auto_segment's outputs for a {shape[0]} x {shape[1]} image ({what}, "
        f"{per_pixel} bytes per pixel) would take {needed / 2**30:.2f} GiB, "
        f"more than {limit}; segment it into a zarr store tile by tile with "
        'sum_core.batch.segment_zarr(image, "result.zarr") or `sum-hq batch IMAGE result.zarr` instead'
    )


def _available_memory() -> int | None:
    """Bytes of memory available for new allocations (Linux ``MemAvailable``), None if unknown."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024  # the value is in kB
    return None


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
        stability=rec.stability,
    )


def _paint(
    instances: list[Instance], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, dict[int, Instance]]:
    """Label image (largest first, then lowest score first, so small masks win), uncertainty, and the
    instance of each final id."""
    labels = np.zeros(shape, dtype=np.uint32)
    uncertainty = np.zeros(shape, dtype=np.float32)
    order = sorted(range(len(instances)), key=lambda i: (-instances[i].area, instances[i].score, i))
    for label, i in enumerate(order, start=1):
        inst = instances[i]
        r0, c0, r1, c1 = inst.box
        labels[r0 : r1 + 1, c0 : c1 + 1][inst.mask] = label
        window = uncertainty[inst.unc_region.slices]
        np.maximum(window, inst.uncertainty, out=window)
    # Consecutive ids 1..N for the instances that kept at least one pixel, relabelled a band of
    # rows at a time so that no temporary of the image's size is made.
    rows = max(1, _PAINT_PIXELS // shape[1])
    bands = [slice(r, r + rows) for r in range(0, shape[0], rows)]
    present = np.zeros(len(instances) + 1, dtype=bool)
    for band in bands:
        present[np.unique(labels[band])] = True
    present[0] = False
    lookup = np.zeros(len(instances) + 1, dtype=np.uint32)
    lookup[present] = np.arange(1, int(present.sum()) + 1, dtype=np.uint32)
    for band in bands:
        labels[band] = lookup[labels[band]]
    painted = {int(lookup[label]): instances[i] for label, i in enumerate(order, start=1) if present[label]}
    return labels, uncertainty, painted
