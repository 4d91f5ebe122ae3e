"""Qt-free segmentation of one plane of the interactive widget (worker thread) and what it hands back.

:func:`segment_plane` runs a plane's predictor (:mod:`napari_sum_hq._session`) on its prompts and cuts the
result to windows (:class:`~napari_sum_hq._session.ObjectPiece`, :class:`~napari_sum_hq._session.UncertaintyPiece`)
so the GUI thread writes only those. Everything else a result needs is computed here too, from the full-size
(or window) arrays the GUI thread never sees: every object's **stability**
(:func:`sum_core.mask_ops.stability_score` of its logits, offset :data:`sum_core.object_scores.STABILITY_OFFSET`),
its mean and boundary uncertainty (:func:`napari_sum_hq._interactive_scores.piece_score`, reused by the
commit) and, for a single object, the **suggested next click** (:func:`sum_core.suggest_click`: the centre of the
largest uncertain region near it, positive outside the mask, negative inside), which on a 2048 x 2048 plane
would cost the GUI thread more than it may spend.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sum_core.errors import InvalidInputError
from sum_core.tiling import Region

from ._interactive_scores import ObjectScore, piece_score
from ._session import (
    WINDOWED_PIXELS,
    ObjectPiece,
    SliceKey,
    UncertaintyPiece,
    bounding_box,
    object_piece,
    tiles_encoded,
    uncertainty_piece,
)


@dataclass(frozen=True)
class SegmentResult:
    """What a finished segmentation hands back to the GUI thread.

    Attributes
    ----------
    slice_key : tuple of int
        The segmented slice.
    objects : tuple of ObjectPiece
        One piece per non-empty object, in box order.
    uncertainty : UncertaintyPiece or None
        None when the uncertainty is zero everywhere.
    scores : np.ndarray
        float32 ``(K,)`` predicted IoU of every object (empty ones included).
    object_scores : dict of int to ObjectScore
        The scores of every non-empty object by index: predicted IoU, stability, and its uncertainties
        (:func:`napari_sum_hq._interactive_scores.piece_score`).
    low_res_logits : np.ndarray or None
        ``(K, 1, L, L)`` for a plane encoded as one window (SAM's own mask prompt, kept to
        refine a committed object), else None.
    tiles : int
        Tiles encoded by this segmentation.
    complete : bool
        False when a plane segmented window by window reached ``max_tiles`` while an object still
        touched an inner tile border (it may be cut there).
    plane_tiles : int
        Tiles of such a plane (0 for other planes): a ``max_tiles`` that always completes.
    suggestion : SuggestedClick or None
        The suggested next click (plane pixels) when the result is one object and some pixel near it
        is uncertain; else None.
    """

    slice_key: SliceKey
    objects: tuple[ObjectPiece, ...]
    uncertainty: UncertaintyPiece | None
    scores: np.ndarray
    object_scores: dict[int, ObjectScore]
    low_res_logits: np.ndarray | None
    tiles: int
    complete: bool = True
    plane_tiles: int = 0
    suggestion: Any = None




@dataclass(frozen=True)
class PlanePrompts:
    """The prompts of one slice, in (row, col) pixels of the plane.

    Attributes
    ----------
    points : np.ndarray
        ``(N, 2)`` float.
    labels : np.ndarray
        ``(N,)`` int, 1 positive / 0 negative.
    boxes : np.ndarray
        ``(K, 4)`` float ``(row0, col0, row1, col1)``.
    """

    points: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray


@dataclass(frozen=True)
class Refinement:
    """The committed object being refined: its id, its slice of the committed layer, and
    SAM's low-resolution logits remembered from when it was committed (if any)."""

    label_id: int
    committed_plane: np.ndarray
    remembered: RememberedLogits | None


@dataclass(frozen=True)
class RememberedLogits:
    """The low-resolution logits of a committed object and the pixels it had then."""

    slice_key: SliceKey
    region: Region
    mask: np.ndarray
    logits: np.ndarray


def refinement_prompt(refinement: Refinement, slice_key: SliceKey) -> np.ndarray:
    """The mask prompt for a refined object: its remembered low-resolution logits when its
    pixels are unchanged since it was committed, else its full-size bool mask."""
    mask = refinement.committed_plane == refinement.label_id
    box = bounding_box(mask)
    if box is None:
        raise InvalidInputError(
            f"refine label {refinement.label_id}: the committed objects have no pixel of that id on this slice."
        )
    remembered = refinement.remembered
    if (
        remembered is not None
        and remembered.slice_key == slice_key
        and remembered.region == box
        and np.array_equal(remembered.mask, mask[box.slices])
    ):
        return remembered.logits
    return mask


def segment_plane(
    predictor: Any,
    slice_key: SliceKey,
    prompts: PlanePrompts,
    refinement: Refinement | None,
    task: int,
    uncertainty: str,
    cancel: threading.Event,
    max_tiles: int = 16,
) -> SegmentResult:
    """Segment one plane from its prompts (worker thread) and cut the result to windows.

    Parameters
    ----------
    predictor : sum_core.Predictor or sum_core.TiledPredictor
        From :func:`napari_sum_hq._session.new_predictor`.
    slice_key : tuple of int
        The slice (for the pieces).
    prompts : PlanePrompts
        Clicks and boxes; several boxes give several objects.
    refinement : Refinement or None
        The committed object to refine (its mask is the mask prompt).
    task, uncertainty
        See :meth:`sum_core.Predictor.predict`.
    cancel : threading.Event
        Set by the widget's Cancel: the work stops before the next tile
        (:class:`sum_core.errors.Cancelled`).
    max_tiles : int
        Planes segmented window by window: at most this many tiles per object
        (:meth:`sum_core.TiledPredictor.predict`; the result says whether an object was cut).

    Raises
    ------
    sum_core.errors.InvalidInputError
        Bad prompts, or a refinement on a windowed plane.
    sum_core.errors.Cancelled
        Cancelled.
    """
    from sum_core.prediction import PredictOptions
    from sum_core.tiled_predictor import TiledPredictor

    before = tiles_encoded(predictor)
    points = prompts.points if len(prompts.points) else None
    labels = prompts.labels if len(prompts.points) else None
    if isinstance(predictor, TiledPredictor):
        if refinement is not None:
            raise InvalidInputError(
                f"refine label: this plane has more than {WINDOWED_PIXELS} pixels and is segmented window "
                "by window, which takes no full-size mask prompt; set refine label to 'new object'."
            )
        options = PredictOptions(task=task, uncertainty=uncertainty)
        boxes = list(prompts.boxes) if len(prompts.boxes) else [None]
        with warnings.catch_warnings():  # said by ``complete`` (the widget shows it)
            warnings.filterwarnings("ignore", message="the object still reaches an inner tile border")
            windows = [
                predictor.predict(points, labels, box, options=options, cancel=cancel, max_tiles=max_tiles)
                for box in boxes
            ]
        pieces = [object_piece(slice_key, w.mask, index, w.offset) for index, w in enumerate(windows, start=1)]
        unc = _windows_uncertainty(slice_key, windows)
        scores = np.array([w.score for w in windows], dtype=np.float32)
        objects = tuple(piece for piece in pieces if piece is not None)
        stability = np.array([_stability(w.logits[None])[0] for w in windows])
        scored = _scored(objects, scores, stability, unc, windows[0].image_shape)
        return SegmentResult(
            slice_key, objects, unc, scores, scored, None, tiles_encoded(predictor) - before,
            all(w.complete for w in windows), len(predictor.embeddings.grid),
            _suggestion(windows[0]) if len(windows) == 1 and len(objects) == 1 else None,
        )  # fmt: skip
    mask_input = None if refinement is None else refinement_prompt(refinement, slice_key)
    box = None if not len(prompts.boxes) else prompts.boxes
    pred = predictor.predict(
        points=points, labels=labels, box=box, mask_input=mask_input, task=task, uncertainty=uncertainty,
        cancel=cancel,
    )  # fmt: skip
    unc = uncertainty_piece(slice_key, pred.uncertainties.max(axis=0), (0, 0))
    pieces = (object_piece(slice_key, mask, index) for index, mask in enumerate(pred.masks, start=1))
    objects = tuple(piece for piece in pieces if piece is not None)
    return SegmentResult(
        slice_key, objects, unc, pred.scores, _scored(objects, pred.scores, _stability(pred.logits), unc,
                                                      pred.masks.shape[1:]), pred.low_res_logits,
        tiles_encoded(predictor) - before, suggestion=_suggestion(pred) if len(pred) == 1 and objects else None,
    )  # fmt: skip


def _windows_uncertainty(slice_key: SliceKey, windows: list) -> UncertaintyPiece | None:
    """The max of the windows' uncertainties over the union of their windows."""
    union = Region(
        min(w.window.row0 for w in windows), min(w.window.col0 for w in windows),
        max(w.window.row1 for w in windows), max(w.window.col1 for w in windows),
    )  # fmt: skip
    values = np.zeros(union.shape, dtype=np.float32)
    for w in windows:
        r, c = w.window.row0 - union.row0, w.window.col0 - union.col0
        part = values[r : r + w.mask.shape[0], c : c + w.mask.shape[1]]
        np.maximum(part, w.uncertainty, out=part)
    return uncertainty_piece(slice_key, values, (union.row0, union.col0))


def _stability(logits: np.ndarray) -> np.ndarray:
    """float64 ``(K,)`` stability scores of ``(K, H, W)`` logits."""
    import torch
    from sum_core.mask_ops import stability_score
    from sum_core.object_scores import STABILITY_OFFSET

    return stability_score(torch.as_tensor(logits), 0.0, STABILITY_OFFSET).numpy().astype(np.float64)


def _scored(
    objects: tuple[ObjectPiece, ...], scores: np.ndarray, stability: np.ndarray, uncertainty: UncertaintyPiece | None,
    plane_shape: tuple[int, int],
) -> dict[int, ObjectScore]:  # fmt: skip
    """:class:`~napari_sum_hq._interactive_scores.ObjectScore` of every object piece, by index."""
    return {p.index: piece_score(p, scores[p.index - 1], stability[p.index - 1], uncertainty, plane_shape)
            for p in objects}  # fmt: skip


def _suggestion(prediction: Any) -> Any:
    """:func:`sum_core.suggest_click` of a one-object prediction (window), or None when nothing is uncertain."""
    from sum_core.suggest import suggest_click

    return suggest_click(prediction)
