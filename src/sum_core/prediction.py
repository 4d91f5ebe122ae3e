"""The result contract of prompted segmentation, and the options that shape it.

- :class:`Prediction`: what :meth:`sum_core.Predictor.predict` and :func:`sum_core.segment`
  return for an image of **any** size: full-size arrays with a leading object axis of length
  ``K`` (one object per box, or one for clicks alone), always, whatever ``K`` is.
  ``mask`` / ``score`` / ``uncertainty`` are the single-object views (``K == 1``).
- :class:`TiledPrediction`: what :meth:`sum_core.TiledPredictor.predict` returns for images too
  large to hold a full-size result (whole slides): one object's **window** of the image and
  its ``offset``, with :meth:`TiledPrediction.paste_into` to write it into a full-size array.
- :class:`PredictOptions`: the decoder / uncertainty options, as data, validated once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import InvalidInputError
from .options import UNCERTAINTY_METHODS
from .tiling import Region
from .validation import check_bool, check_index, check_int, check_task

__all__ = ["BACKGROUND_LOGIT", "PredictOptions", "Prediction", "TiledPrediction"]

UncertaintyMethod = Literal["auto", "disagreement", "entropy", "ensemble"]

#: Logit of pixels no decoded window covers (outside every visited tile): surely background.
BACKGROUND_LOGIT = -100.0


@dataclass(frozen=True)
class PredictOptions:
    """Decoder and uncertainty options of one prediction.

    Attributes
    ----------
    multimask : bool
        Let the decoder choose among its three candidate masks (the best predicted IoU wins).
    hq_token_only : bool
        HQ models: the HQ token's mask alone instead of SAM + HQ logits.
    task : {0, 1, 2}
        SUM task prompt: 0 anything (SA-1B style), 1 object / high quality, 2 entity.
        Ignored by models without SUM task tables.
    uncertainty : {"auto", "disagreement", "entropy", "ensemble"}
        ``"auto"`` (default): ``"disagreement"`` for HQ-SAM / SUM models, ``"entropy"`` for
        plain SAM. ``"disagreement"``: |sigmoid(SAM-token logit) - sigmoid(HQ-token logit)|
        (HQ / SUM models only). ``"entropy"``: normalised Bernoulli entropy of the returned
        mask's token (the HQ token with ``hq_token_only``, else the SAM token).
        ``"ensemble"``: normalised predictive entropy over ``ensemble_size`` perturbed prompts
        reusing the embedding (see :func:`sum_core.uncertainty.perturb_prompts`).
    ensemble_size : int
        Ensemble members (the unperturbed prompt included), >= 2.
    seed : int
        Seed of the ensemble's prompt perturbations, >= 0.
    """

    multimask: bool = False
    hq_token_only: bool = False
    task: int = 1
    uncertainty: UncertaintyMethod = "auto"
    ensemble_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("multimask", "hq_token_only"):
            check_bool(getattr(self, name), name)
        check_task(self.task)
        if self.uncertainty != "auto" and self.uncertainty not in UNCERTAINTY_METHODS:
            raise InvalidInputError(
                f"uncertainty={self.uncertainty!r} is not known; choose one of "
                f"{['auto', *UNCERTAINTY_METHODS]}"
            )
        check_int(self.ensemble_size, "ensemble_size", 2)
        check_int(self.seed, "seed", 0)  # numpy's generators take no negative seed

    def uncertainty_for(self, hq: bool) -> str:
        """The uncertainty method for a model with (``hq=True``) or without an HQ token; the one
        check, before any work, of the options such a model cannot honour.

        Raises
        ------
        InvalidInputError
            ``"disagreement"`` or ``hq_token_only=True`` asked of a plain SAM model.
        """
        if self.hq_token_only and not hq:
            raise InvalidInputError(
                "hq_token_only=True needs an HQ-SAM or SUM model (it returns the HQ token's mask); this "
                "is a plain SAM model: leave hq_token_only=False"
            )
        if self.uncertainty == "auto":
            return "disagreement" if hq else "entropy"
        if self.uncertainty == "disagreement" and not hq:
            raise InvalidInputError(
                "uncertainty='disagreement' needs an HQ-SAM or SUM model (it compares the SAM and HQ "
                "tokens); this is a plain SAM model: use 'auto', 'entropy' or 'ensemble'"
            )
        return self.uncertainty


def _single(name: str, values: np.ndarray) -> Any:
    if len(values) != 1:
        raise InvalidInputError(
            f"Prediction.{name} is the single-object view; this prediction holds {len(values)} objects: "
            f"use Prediction.{name}s[k] (or logits[k])"
        )
    return values[0]


@dataclass(frozen=True)
class Prediction:
    """Result of prompted segmentation of a whole image, at the image's size.

    The leading axis ``K`` is the object axis: one object per box, or one object when there
    are only clicks (or a mask prompt). It is present for every ``K``, 1 included.

    Attributes
    ----------
    masks : np.ndarray
        bool ``(K, H, W)``: ``logits > 0``.
    scores : np.ndarray
        float32 ``(K,)``: predicted IoU of each mask (the IoU head's output; of the tile
        where the object was prompted for a tiled image).
    logits : np.ndarray
        float32 ``(K, H, W)`` mask logits at the image's size (``mask_prompt(k)`` gives object
        ``k`` as the next ``mask_input``).
    uncertainties : np.ndarray
        float32 ``(K, H, W)`` in [0, 1]: per-pixel uncertainty (see :class:`PredictOptions`).
    low_res_logits : np.ndarray or None
        float32 ``(K, 1, L, L)`` decoder logits (SAM's ``mask_input`` frame) when the image was
        encoded as one window; None for tiled images (use ``logits`` as the mask prompt).
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    uncertainties: np.ndarray
    low_res_logits: np.ndarray | None

    def __len__(self) -> int:
        return len(self.masks)

    def mask_prompt(self, k: int = 0) -> np.ndarray:
        """Object ``k`` as the ``mask_input`` of the next prediction (a refining click, the next
        slice): SAM's own ``(1, L, L)`` low-resolution logits when the image was encoded as one
        window (SAM's iterative-click protocol, exactly), else the full-size ``(H, W)`` logits."""
        k = check_index(k, "k", len(self))
        return self.logits[k] if self.low_res_logits is None else self.low_res_logits[k]

    @property
    def mask(self) -> np.ndarray:
        """bool ``(H, W)`` mask of the single object (``K == 1``; else an error)."""
        return _single("mask", self.masks)

    @property
    def score(self) -> float:
        """Predicted IoU of the single object (``K == 1``; else an error)."""
        return float(_single("score", self.scores))

    @property
    def uncertainty(self) -> np.ndarray:
        """float32 ``(H, W)`` uncertainty of the single object (``K == 1``; else an error)."""
        return _single("uncertainty", self.uncertainties)


@dataclass(frozen=True)
class TiledPrediction:
    """One object in a window of a large image (see :class:`sum_core.TiledPredictor`).

    ``mask``, ``logits`` and ``uncertainty`` cover the window ``offset`` ..
    ``offset + mask.shape`` of the image plane; ``score`` is that of the prompted tile.

    Attributes
    ----------
    mask : np.ndarray
        bool ``(h, w)``.
    score : float
        Predicted IoU in the prompted tile.
    logits : np.ndarray
        float32 ``(h, w)``; :data:`BACKGROUND_LOGIT` where no visited tile reached.
    uncertainty : np.ndarray
        float32 ``(h, w)`` in [0, 1].
    offset : (int, int)
        ``(row, col)`` of the window's top-left pixel in the image.
    image_shape : (int, int)
        ``(H, W)`` of the image plane.
    tiles : tuple of int
        Tiles decoded, in visiting order (the first is the prompted tile).
    complete : bool
        False when following stopped at ``max_tiles`` while the mask still reached an
        inner window border (the object may be cut there).
    """

    mask: np.ndarray
    score: float
    logits: np.ndarray
    uncertainty: np.ndarray
    offset: tuple[int, int]
    image_shape: tuple[int, int]
    tiles: tuple[int, ...]
    complete: bool

    @property
    def window(self) -> Region:
        """The image region the arrays cover."""
        r, c = self.offset
        return Region(r, c, r + self.mask.shape[0], c + self.mask.shape[1])

    def paste_into(self, target: Any, value: Any = True, slice_index: int | None = None) -> Any:
        """Write ``value`` into ``target`` where the mask is set; return ``target``.

        Only the window is read and written, so ``target`` may be a zarr array of a slide.

        Parameters
        ----------
        target : array-like
            ``(H, W)`` (numpy or zarr), or a stack ``(Z, H, W)`` with ``slice_index``.
        value : scalar
            Value for the mask's pixels (True, or a label id).
        slice_index : int, optional
            Slice of a ``(Z, H, W)`` target.
        """
        shape = tuple(getattr(target, "shape", ()))
        plane = shape if slice_index is None else shape[1:]
        if plane != tuple(self.image_shape) or (slice_index is not None and len(shape) != 3):
            raise InvalidInputError(
                f"target: shape {shape} does not fit an image of shape {self.image_shape}"
                + ("" if slice_index is None else f" with slice_index={slice_index}")
            )
        rows, cols = self.window.slices
        index = (rows, cols) if slice_index is None else (slice_index, rows, cols)
        current = np.asarray(target[index])
        target[index] = np.where(self.mask, np.asarray(value, dtype=current.dtype), current)
        return target
