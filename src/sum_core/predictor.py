"""Prompted segmentation of one image of any size with a SAM / HQ-SAM / SUM model.

:meth:`Predictor.set_image` binds an image; :meth:`Predictor.predict` returns a
:class:`~sum_core.prediction.Prediction` for the **whole image**, whatever its size: full-size
masks, logits and uncertainty maps with a leading object axis.

How the image is encoded is decided by one size rule, :func:`sum_core.tiling.tile_grid`:

- an image of at most the encoder size (1024 px) on both sides is encoded once, as a whole,
  in ``set_image`` (SAM's own path, equal to the reference implementation);
- a larger image is cut into windows of at most the encoder size, so that no pixel is
  downscaled (small cells keep their resolution); ``tile_shape=`` / ``halo=`` choose another
  tiling, and an image with ``cache=`` is always handled tile by tile (its tiles persist). Nothing is encoded in ``set_image``: each ``predict`` encodes only the
  tiles its object reaches (:class:`~sum_core.tiled_predictor.TiledPredictor` follows the
  object across tile borders) and pastes the windows back into full-size results. Pass
  ``tile_shape=image.shape[:2]`` to encode a large image as one downscaled window instead
  (SAM's behaviour: one encoder run, coarser masks).

Images too large to hold full-size results (whole slides) go through
:class:`~sum_core.tiled_predictor.TiledPredictor` directly, which returns windows.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .decoding import decode_window
from .encoding import encode_image, prepare_model
from .errors import InvalidInputError
from .image import Normalization, prepare_image
from .modeling import ImageEmbedding, SamModel
from .prediction import BACKGROUND_LOGIT, PredictOptions, Prediction, TiledPrediction, UncertaintyMethod
from .prompts import Prompts, mask_logits, validate_prompts, window_mask_prompt
from .sources import image_planes
from .tiled_embedding import DEFAULT_MEMORY_TILES
from .tiled_predictor import TiledPredictor
from .tiling import tile_grid
from .validation import check_bool

__all__ = ["Predictor"]


class Predictor:
    """Encode an image once, then segment it from point, box and mask prompts.

    Safe to share between threads: calls on one predictor run one at a time (a second
    thread waits), so concurrent predictions are the sequential ones.

    Parameters
    ----------
    model : SamModel
        A model from :func:`sum_core.load_model` or :func:`sum_core.build_model`.
    device : str or torch.device, optional
        Where to run; default CUDA, then MPS, then CPU.
    precision : {"fp32", "bf16", "fp16"}
        Precision of the image encoder, which does nearly all the work (``torch.autocast``;
        weights stay float32): ``"bf16"`` on CUDA or CPU, ``"fp16"`` on CUDA only. The
        embedding is stored as float32 and the prompt encoder and mask decoder always run
        in float32 (cheap, and in bf16 their logits drift by ~2 %). ``"bf16"`` logits
        differ from ``"fp32"`` by under 1 % (relative norm) on the test models, so only
        mask pixels whose logit is near 0 may flip.
    compile : bool
        Compile the model in place with ``torch.compile`` (see
        :func:`sum_core.acceleration.compile_model`; on CUDA the decoder runs as CUDA
        graphs). The first ``set_image`` / ``predict`` calls, and the first call with each
        new prompt shape, pay the compilation (tens of seconds on a CPU); results equal
        the eager float32 ones to float rounding.
    memory_tiles : int
        Tile embeddings of a tiled image kept in memory (LRU).

    Raises
    ------
    InvalidInputError
        Unknown ``precision``, ``"fp16"`` off CUDA, or ``compile=True`` where
        ``torch.compile`` has no compiler.

    Examples
    --------
    >>> import numpy as np
    >>> from sum_core import Predictor, build_model
    >>> predictor = Predictor(build_model("vit_tiny", image_size=256), device="cpu")
    >>> image = np.zeros((300, 420), np.uint8); image[100:180, 250:330] = 200
    >>> predictor.set_image(image)
    >>> pred = predictor.predict(points=[[140, 290]], box=[[90, 240, 190, 340], [0, 0, 50, 50]])
    >>> pred.masks.shape, pred.scores.shape, pred.uncertainties.dtype
    ((2, 300, 420), (2,), dtype('float32'))
    """

    def __init__(
        self,
        model: SamModel,
        device: str | torch.device | None = None,
        *,
        precision: str = "fp32",
        compile: bool = False,
        memory_tiles: int = DEFAULT_MEMORY_TILES,
    ) -> None:
        compile = check_bool(compile, "compile")
        self.model, self.device, self.precision = prepare_model(model, device, precision, compile)
        self.memory_tiles = memory_tiles
        self._embedding: ImageEmbedding | None = None
        self._tiled: TiledPredictor | None = None
        self._lock = threading.RLock()

    @property
    def is_image_set(self) -> bool:
        """Whether an image (or an embedding) has been set."""
        return self._embedding is not None or self._tiled is not None

    @property
    def is_tiled(self) -> bool:
        """Whether the current image is encoded tile by tile (see :meth:`set_image`)."""
        return self._tiled is not None

    @property
    def tiled(self) -> TiledPredictor | None:
        """The :class:`~sum_core.tiled_predictor.TiledPredictor` of a tiled image, else None."""
        return self._tiled

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the current image."""
        if self._tiled is not None:
            return self._tiled.embeddings.grid.shape
        return self._require_embedding().original_size

    def set_image(
        self,
        image: Any,
        normalization: Normalization | None = None,
        *,
        cache: str | os.PathLike | None = None,
        tile_shape: int | Sequence[int] | None = None,
        halo: int | Sequence[int] | None = None,
        overwrite: bool = False,
    ) -> None:
        """Bind ``image``: a 2D gray ``(H, W)`` or RGB/RGBA ``(H, W, 3|4)`` plane, any real dtype.

        uint8 images are used as they are; other dtypes are rescaled to 0..255 by
        ``normalization`` (see :class:`sum_core.image.Normalization`; for tiled images the
        intensity window is computed once for the whole image, so all tiles share it).

        Parameters
        ----------
        image : array-like or path
            A numpy array, a lazy array (dask, zarr, TIFF store) or a path (opened lazily
            with :func:`sum_core.sources.open_image`). For a stack pass one plane
            (``stack[z]``) or use :class:`~sum_core.tiled_predictor.TiledPredictor`.
        normalization : Normalization, optional
            Intensity window.
        cache : str or path-like, optional
            Folder of a persistent zarr embedding cache (see :func:`sum_core.embed`); the
            image is then encoded tile by tile and tiles are reused across sessions.
        tile_shape, halo : int or (int, int), optional
            Tiling, see :func:`sum_core.tiling.tile_grid` (default: one window up to the
            encoder size, else windows of at most the encoder size).
        overwrite : bool
            Discard an existing cache at ``cache`` and start a new one (without it, a cache
            made for other data, another model, tiling or preprocessing is refused).

        Notes
        -----
        A tiled image is read tile by tile when a prompt first reaches a tile, so the array
        must not change while it is bound: after editing it, call ``set_image`` again. With
        ``cache=``, a cache made before the edit is then refused, since
        :func:`sum_core.embedding_cache.data_hash` covers every element; pass ``overwrite=True``
        to rebuild it.
        """
        overwrite = check_bool(overwrite, "overwrite")
        planes = image_planes(image)
        grid = tile_grid(planes.plane_shape, self.model.config.image_size, tile_shape, halo)
        with self._lock:
            self.reset_image()
            if len(grid) == 1 and cache is None:
                prepared = prepare_image(planes.read(), normalization)
                self._embedding = encode_image(self.model, prepared, self.precision)
                return
            tiled = TiledPredictor(
                self.model, cache=cache, tile_shape=tile_shape, halo=halo, device=self.device,
                precision=self.precision, memory_tiles=self.memory_tiles,
            )  # fmt: skip
            tiled.set_image(planes.image, normalization=normalization, overwrite=overwrite)
            self._tiled = tiled

    def get_embedding(self) -> ImageEmbedding:
        """The current image's embedding (an image encoded as one window)."""
        with self._lock:
            return self._require_embedding()

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Use an embedding from :meth:`get_embedding` or :func:`sum_core.encoding.encode` (no encoder work)."""
        config = self.model.config
        if not isinstance(embedding, ImageEmbedding):
            raise InvalidInputError(f"embedding must be an ImageEmbedding, got {type(embedding).__name__}")
        grid = config.embedding_size
        expected = (1, config.prompt_embed_dim, grid, grid)
        if tuple(embedding.embedding.shape) != expected:
            raise InvalidInputError(
                f"embedding has shape {tuple(embedding.embedding.shape)}, this model needs {expected}"
            )
        if config.hq and embedding.hq_features is None:
            early_shape = (1, grid, grid, config.early_feature_dim)
            if embedding.early is None or tuple(embedding.early.shape) != early_shape:
                got = None if embedding.early is None else tuple(embedding.early.shape)
                raise InvalidInputError(f"embedding.early has shape {got}, this HQ model needs {early_shape}")
        with torch.inference_mode():
            moved = self.model.with_hq_features(embedding.to(self.device))
        with self._lock:
            self.reset_image()
            self._embedding = moved

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        with self._lock:
            self._embedding = None
            self._tiled = None

    def predict(
        self,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = False,
        hq_token_only: bool = False,
        task: int = 1,
        uncertainty: UncertaintyMethod = "auto",
        ensemble_size: int = 8,
        seed: int = 0,
        *,
        cancel: threading.Event | None = None,
    ) -> Prediction:
        """Segment the current image from prompts; full-size results at any image size.

        Parameters
        ----------
        points : array-like, optional
            (N, 2) click positions as (row, col) image pixels.
        labels : array-like, optional
            (N,) 1 for a positive click, 0 for a negative one; default: all positive.
        box : array-like, optional
            (4,) box (row0, col0, row1, col1), or (K, 4) for K objects at once (the clicks
            then apply to every box).
        mask_input : array-like, optional
            A mask prompt: a 2D full-size ``(H, W)`` array of logits (a previous
            ``logits[k]``) or a bool mask, at any image size; or a 3D ``(1, L, L)`` array of
            low-resolution logits (a previous ``low_res_logits[k]``, SAM's own path) for an
            image encoded as one window.
        multimask, hq_token_only, task, uncertainty, ensemble_size, seed
            See :class:`~sum_core.prediction.PredictOptions`.
        cancel : threading.Event, optional
            For tiled images: checked between tiles (raises :class:`sum_core.errors.Cancelled`).

        Returns
        -------
        Prediction
            ``masks``, ``logits``, ``uncertainties`` of shape ``(K, H, W)`` (the whole
            image), ``scores`` ``(K,)``; ``K`` is the number of boxes, or 1.
        """
        options = PredictOptions(multimask, hq_token_only, task, uncertainty, ensemble_size, seed)
        options.uncertainty_for(self.model.config.hq)
        with self._lock:
            if self._tiled is not None:
                return self._predict_tiled(points, labels, box, mask_input, options, cancel)
            image = self._require_embedding()
            low_res = self._low_res_prompt(mask_input, image)
            prompts = validate_prompts(
                points, labels, box, low_res, image_shape=image.original_size,
                low_res_size=self.model.config.low_res_size, default_positive=True,
            )  # fmt: skip
            out = decode_window(self.model, image, prompts, options)
            logits = out.logits.cpu().numpy()
            return Prediction(
                masks=logits > 0,
                scores=out.scores.cpu().numpy(),
                logits=logits,
                uncertainties=out.uncertainty.cpu().numpy(),
                low_res_logits=out.low_res_logits.cpu().numpy(),
            )

    # -- internals ---------------------------------------------------------------------------

    def _require_embedding(self) -> ImageEmbedding:
        if self._embedding is None:
            if self._tiled is not None:
                raise InvalidInputError(
                    "this image is encoded tile by tile (it is larger than one encoder window, or was "
                    "set with a cache or a tiling): it has no single embedding"
                )
            raise InvalidInputError("no image is set: call set_image(image) before predict()")
        return self._embedding

    def _low_res_prompt(self, mask_input: Any, image: ImageEmbedding) -> np.ndarray | None:
        """A mask prompt in the decoder's low-resolution frame (full-size ones converted)."""
        if mask_input is None:
            return None
        config = self.model.config
        values = np.asarray(mask_input)
        if values.ndim == 3:
            return values  # (1, L, L) low-resolution logits, checked by validate_prompts
        full = mask_logits(values)
        if full.shape != tuple(image.original_size):
            raise InvalidInputError(
                f"mask_input: expected full-size {tuple(image.original_size)} logits or mask, or "
                f"(1, {config.low_res_size}, {config.low_res_size}) low-resolution logits; got {full.shape}"
            )
        return window_mask_prompt(full, image.input_size, config.image_size, config.low_res_size)

    def _predict_tiled(self, points, labels, box, mask_input, options, cancel) -> Prediction:
        """One tiled prediction per object, pasted into full-size arrays."""
        tiled = self._tiled
        shape = tiled.embeddings.grid.shape
        if mask_input is not None and points is None and labels is None and box is None:
            prompts = Prompts(None, None, None, None, tuple(shape))  # a mask prompt alone
        else:
            prompts = validate_prompts(points, labels, box, None, image_shape=shape, default_positive=True)
        if mask_input is not None and np.asarray(mask_input).shape != tuple(shape):
            raise InvalidInputError(
                f"mask_input: this image is encoded tile by tile; give a full-size {tuple(shape)} mask "
                f"or logits (e.g. a previous prediction's logits[k]), got shape {np.asarray(mask_input).shape}"
            )
        boxes = [None] if prompts.boxes is None else list(prompts.boxes)
        k = len(boxes)
        logits = np.full((k, *shape), BACKGROUND_LOGIT, dtype=np.float32)
        uncertainties = np.zeros((k, *shape), dtype=np.float32)
        scores = np.zeros(k, dtype=np.float32)
        for i, one_box in enumerate(boxes):
            window: TiledPrediction = tiled.predict(
                prompts.points, prompts.labels, one_box, mask_input, options, cancel=cancel
            )
            rows, cols = window.window.slices
            logits[i, rows, cols] = window.logits
            uncertainties[i, rows, cols] = window.uncertainty
            scores[i] = window.score
        return Prediction(
            masks=logits > 0, scores=scores, logits=logits, uncertainties=uncertainties, low_res_logits=None
        )
