"""Prompted segmentation of one image with a SAM / HQ-SAM / SUM model.

The image is encoded once by :meth:`Predictor.set_image`; every
:meth:`Predictor.predict` call then only runs the prompt encoder and the mask
decoder, and returns the mask together with a per-pixel uncertainty map.

Large images (lazy arrays, paths, planes larger than one encoder window) and embedding
caches are handled in *tiled mode*: :meth:`Predictor.set_image` then binds a
:class:`sum_core.tiled_predictor.TiledPredictor` that encodes only the tiles a prompt
touches, and :meth:`Predictor.predict` returns its windowed
:class:`~sum_core.tiled_predictor.TiledPrediction`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch
import zarr

from . import uncertainty as unc
from .acceleration import autocast, check_compile, check_precision, compile_model, uses_cuda_graphs
from .device import resolve_device
from .errors import InvalidInputError
from .image import Normalization, image_to_tensor, prepare_image, resize_longest_side
from .modeling import SamModel
from .options import TASKS, UNCERTAINTY_METHODS
from .prompts import ModelPrompts, to_model_frame, validate_prompts
from .tiling import default_tiling

if TYPE_CHECKING:
    from .tiled_predictor import TiledPredictor

UncertaintyMethod = Literal["disagreement", "entropy", "ensemble"]


@dataclass
class Prediction:
    """Result of one prompted segmentation.

    With ``K > 1`` boxes every array gains a leading axis of length ``K``.

    Attributes
    ----------
    mask : np.ndarray
        bool, (H, W): ``logits > 0``.
    score : float or np.ndarray
        Predicted IoU of the mask (the IoU head's output).
    logits : np.ndarray
        float32, (H, W): mask logits at the image's size.
    low_res_logits : np.ndarray
        float32, (1, 256, 256): decoder logits to pass back as ``mask_input``.
    uncertainty : np.ndarray
        float32, (H, W), in [0, 1]: per-pixel uncertainty (see
        :mod:`sum_core.uncertainty` for the definitions).
    """

    mask: np.ndarray
    score: float | np.ndarray
    logits: np.ndarray
    low_res_logits: np.ndarray
    uncertainty: np.ndarray


class DecodedMasks(NamedTuple):
    """Decoder output at low resolution (``B`` prompts, ``C`` masks each).

    Attributes
    ----------
    logits : torch.Tensor
        ``B×C×L×L`` mask logits (SAM + HQ for HQ models unless ``hq_token_only``).
    iou : torch.Tensor
        ``B×C`` predicted IoU.
    sam_logits : torch.Tensor
        ``B×C×L×L`` logits of the chosen SAM tokens.
    hq_logits : torch.Tensor or None
        ``B×1×L×L`` HQ-token logits (HQ/SUM models), else None.
    """

    logits: torch.Tensor
    iou: torch.Tensor
    sam_logits: torch.Tensor
    hq_logits: torch.Tensor | None


@dataclass
class ImageEmbedding:
    """Everything :meth:`Predictor.predict` needs from the image encoder.

    Attributes
    ----------
    embedding : np.ndarray
        float32, (1, 256, 64, 64): the image embedding.
    early : np.ndarray or None
        float32, (1, 64, 64, C): early encoder feature (HQ models only).
    original_size : tuple of int
        (H, W) of the image given to ``set_image``.
    input_size : tuple of int
        (h, w) of the image after resizing its long side to the encoder size.
    """

    embedding: np.ndarray
    early: np.ndarray | None
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class Predictor:
    """Encode an image once, then segment it from point, box and mask prompts.

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

    Raises
    ------
    InvalidInputError
        Unknown ``precision``, ``"fp16"`` off CUDA, or ``compile=True`` where
        ``torch.compile`` has no compiler.

    Examples
    --------
    >>> predictor = Predictor(load_model("sam_hq_vit_b"))  # doctest: +SKIP
    >>> predictor.set_image(image)  # doctest: +SKIP
    >>> pred = predictor.predict(points=[[120, 64]], labels=[1])  # doctest: +SKIP
    >>> pred.mask.shape, pred.uncertainty.dtype  # doctest: +SKIP
    ((512, 512), dtype('float32'))
    """

    def __init__(
        self,
        model: SamModel,
        device: str | torch.device | None = None,
        *,
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        if not isinstance(model, SamModel):
            raise InvalidInputError(
                f"model must be a sum_core SamModel (from sum_core.load_model), got {type(model).__name__}"
            )
        check_compile(compile)
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        if compile:
            compile_model(self.model, self.device)
        self._embedding: torch.Tensor | None = None
        self._early: torch.Tensor | None = None
        self._hq_features: torch.Tensor | None = None
        self._original_size: tuple[int, int] | None = None
        self._input_size: tuple[int, int] | None = None
        self._tiled: TiledPredictor | None = None

    @property
    def is_image_set(self) -> bool:
        """Whether an image (or an embedding) has been set."""
        return self._embedding is not None or self._tiled is not None

    @property
    def tiled(self) -> TiledPredictor | None:
        """The :class:`~sum_core.tiled_predictor.TiledPredictor` of the current image in
        tiled mode (see :meth:`set_image`), else None."""
        return self._tiled

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the current image."""
        if self._tiled is not None:
            return self._tiled.embeddings.grid.shape
        self._require_image()
        return self._original_size

    @property
    def input_size(self) -> tuple[int, int]:
        """(h, w) of the current image resized to the encoder (long side = image_size)."""
        self._require_image()
        return self._input_size

    def set_image(
        self,
        image: Any,
        normalization: Normalization | None = None,
        *,
        cache: str | os.PathLike | None = None,
        tile_shape: int | Sequence[int] | None = None,
        halo: int | Sequence[int] | None = None,
    ) -> None:
        """Encode ``image`` (2D gray (H, W) or RGB/RGBA (H, W, 3|4), any real dtype).

        uint8 images are used as they are; other dtypes are rescaled to 0..255 by
        ``normalization`` (see :class:`sum_core.image.Normalization`).

        Large images switch the predictor to *tiled mode*: when ``cache``, ``tile_shape``
        or ``halo`` is given, when ``image`` is not an in-memory numpy array (a dask or
        zarr array, a zarr group, or a path: opened lazily with
        :func:`sum_core.sources.open_image`), or when the plane is larger than one encoder
        window (:func:`sum_core.tiling.default_tiling` at the model's input size gives more
        than one tile). Nothing is encoded then: :meth:`predict` encodes (or reads from
        ``cache``) only the tiles a prompt touches, through a
        :class:`~sum_core.tiled_predictor.TiledPredictor` (available as :attr:`tiled`),
        and returns a :class:`~sum_core.tiled_predictor.TiledPrediction`: a window of the
        image plus its ``offset``; use its ``paste_into`` to write it into a full-size array.
        Small numpy images without these options are encoded here, as a whole.

        Parameters
        ----------
        image : array-like or path
            A numpy array; in tiled mode anything :func:`sum_core.sources.open_image`
            accepts (one 2D or RGB plane; stacks: use ``TiledPredictor`` with ``stack_axis``).
        normalization : Normalization, optional
            Intensity window (in tiled mode computed once for the whole image).
        cache : str or path-like, optional
            Folder of the zarr embedding cache (see :func:`sum_core.embed`); tiled mode.
        tile_shape, halo : int or (int, int), optional
            Tiling (default :func:`sum_core.tiling.default_tiling`); tiled mode.
        """
        if self._wants_tiles(image, cache, tile_shape, halo):
            from .tiled_predictor import TiledPredictor  # tiled_predictor imports this module

            tiled = TiledPredictor(
                self.model, cache=cache, tile_shape=tile_shape, halo=halo, device=self.device,
                precision=self.precision,
            )  # fmt: skip
            tiled.set_image(image, normalization=normalization)
            self.reset_image()
            self._tiled = tiled
            return
        prepared = prepare_image(image, normalization)
        resized = resize_longest_side(prepared, self.model.config.image_size)
        pixels = image_to_tensor(resized).to(self.device)
        with torch.inference_mode(), autocast(self.device, self.precision):
            embedding, early = self.model.image_encoder(self.model.preprocess(pixels))
        self._tiled = None
        early = early.float() if self.model.config.hq else None
        self._store(embedding.float(), early, prepared.shape[:2], resized.shape[:2])

    def get_embedding(self) -> ImageEmbedding:
        """Return the current image embedding (for caching).

        Not available in tiled mode (see :meth:`set_image`): tile embeddings live in the
        cache; fill it with :func:`sum_core.embed` and pass ``cache=`` to ``set_image``.
        """
        self._require_not_tiled("get_embedding()")
        self._require_image()
        return ImageEmbedding(
            embedding=self._embedding.float().cpu().numpy(),
            early=None if self._early is None else self._early.float().cpu().numpy(),
            original_size=self._original_size,
            input_size=self._input_size,
        )

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Restore an embedding from :meth:`get_embedding` (no encoder work).

        Not available in tiled mode (see :meth:`set_image`; call :meth:`reset_image` first).
        """
        self._require_not_tiled("set_embedding()")
        config = self.model.config
        grid = config.embedding_size
        expected = (1, config.prompt_embed_dim, grid, grid)
        if tuple(embedding.embedding.shape) != expected:
            raise InvalidInputError(
                f"embedding has shape {tuple(embedding.embedding.shape)}, this model needs {expected}"
            )
        if config.hq:
            early_shape = (1, grid, grid, config.early_feature_dim)
            if embedding.early is None or tuple(embedding.early.shape) != early_shape:
                got = None if embedding.early is None else tuple(embedding.early.shape)
                raise InvalidInputError(
                    f"embedding.early has shape {got}, this HQ model needs {early_shape}"
                )
        tensor = torch.as_tensor(embedding.embedding, device=self.device).float()
        early = None if not config.hq else torch.as_tensor(embedding.early, device=self.device).float()
        self._store(tensor, early, embedding.original_size, embedding.input_size)

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self._embedding = self._early = self._hq_features = None
        self._original_size = self._input_size = None
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
        uncertainty: UncertaintyMethod = "disagreement",
        ensemble_size: int = 8,
        seed: int = 0,
    ) -> Prediction:
        """Segment the current image from prompts.

        Parameters
        ----------
        points : array-like, optional
            (N, 2) click positions as (row, col) image pixels.
        labels : array-like, optional
            (N,) 1 for a positive click, 0 for a negative one. Required with ``points``.
        box : array-like, optional
            (4,) box (row0, col0, row1, col1), or (K, 4) for K objects at once.
        mask_input : array-like, optional
            (1, 256, 256) logits, usually a previous ``low_res_logits``.
        multimask : bool
            Let the decoder choose among its three candidate masks (the one with
            the best predicted IoU is returned).
        hq_token_only : bool
            HQ models: use the HQ token's mask alone instead of SAM + HQ logits.
        task : {0, 1, 2}
            SUM task prompt: 0 anything (SA-1B style), 1 object / high quality,
            2 entity. Ignored by models without SUM task tokens.
        uncertainty : {"disagreement", "entropy", "ensemble"}
            ``"disagreement"``: |sigmoid(SAM-token logit) - sigmoid(HQ-token logit)|
            (HQ/SUM models). ``"entropy"``: normalised Bernoulli entropy of the
            returned mask's probability (of the HQ token alone when
            ``hq_token_only``, else of the SAM token, never of the SAM + HQ sum).
            ``"ensemble"``: normalised predictive entropy over ``ensemble_size``
            perturbed prompts (box jitter, moved clicks) that reuse the embedding.
        ensemble_size : int
            Number of ensemble members (the unperturbed prompt included).
        seed : int
            Seed of the ensemble's prompt perturbations.

        Returns
        -------
        Prediction
            In tiled mode (see :meth:`set_image`) a
            :class:`~sum_core.tiled_predictor.TiledPrediction`: the arrays cover a window
            of the image starting at its ``offset`` (the object followed across tiles,
            one object per call); write it into a full-size array with ``paste_into``.
            ``mask_input`` is not supported there.
        """
        if self._tiled is not None:
            if mask_input is not None:
                raise InvalidInputError(
                    "mask_input: not supported for a large image in tiled mode (set_image with a "
                    "cache, tiles, a lazy array or a plane larger than the encoder input); "
                    "prompt with points and/or a box"
                )
            return self._tiled.predict(
                points=points, labels=labels, box=box, multimask=multimask, hq_token_only=hq_token_only,
                task=task, uncertainty=uncertainty, ensemble_size=ensemble_size, seed=seed,
            )  # fmt: skip
        self._require_image()
        if uncertainty not in UNCERTAINTY_METHODS:
            raise InvalidInputError(
                f"uncertainty={uncertainty!r} is not known; choose one of {list(UNCERTAINTY_METHODS)}"
            )
        if uncertainty == "disagreement" and not self.model.config.hq:
            raise InvalidInputError(
                "uncertainty='disagreement' needs an HQ-SAM or SUM model (it compares the SAM and HQ "
                "tokens); this is a plain SAM model: use 'entropy' or 'ensemble'"
            )
        if task not in TASKS:
            raise InvalidInputError(f"task={task!r} is not valid; choose one of {TASKS}")
        if uncertainty == "ensemble" and (not isinstance(ensemble_size, int) or ensemble_size < 2):
            raise InvalidInputError(f"ensemble_size must be an integer >= 2, got {ensemble_size!r}")
        prompts = validate_prompts(
            points=points,
            labels=labels,
            box=box,
            mask_input=mask_input,
            image_shape=self._original_size,
            low_res_size=self.model.config.low_res_size,
        )
        logits, iou, sam_logits, hq_logits = self._decode(prompts, multimask, hq_token_only, task)
        # Upscaling is linear, so the SAM + HQ sum is upscaled as up(SAM) + up(HQ): each token is
        # upscaled once and serves both the mask and the uncertainty map.
        hq = self.model.config.hq
        need_sam = not hq or not hq_token_only or uncertainty == "disagreement"
        full_sam = self.upscale(sam_logits) if need_sam else None
        full_hq = self.upscale(hq_logits) if hq else None
        if not hq:
            full = full_sam
        elif hq_token_only:
            full = full_hq
        else:
            full = full_sam + full_hq
        if uncertainty == "disagreement":
            unc_map = unc.disagreement(full_sam, full_hq)
        elif uncertainty == "entropy":
            unc_map = unc.bernoulli_entropy(full_hq if hq_token_only else full_sam)
        else:
            unc_map = self._ensemble(prompts, multimask, hq_token_only, task, ensemble_size, seed)
        return _to_prediction(full, iou, logits, unc_map)

    # -- internals ---------------------------------------------------------------------------

    def _store(self, embedding, early, original_size, input_size) -> None:
        self._embedding = embedding
        self._early = early
        self._hq_features = None
        if self.model.config.hq:
            with torch.inference_mode():
                self._hq_features = self.model.mask_decoder.hq_features(embedding, early)
        self._original_size = (int(original_size[0]), int(original_size[1]))
        self._input_size = (int(input_size[0]), int(input_size[1]))

    def _wants_tiles(self, image: Any, cache: Any, tile_shape: Any, halo: Any) -> bool:
        """Whether ``set_image`` should use tiled mode (see its docstring)."""
        if cache is not None or tile_shape is not None or halo is not None:
            return True
        if isinstance(image, (str, os.PathLike, zarr.Group)):
            return True
        if not isinstance(image, np.ndarray):
            # lazy arrays (dask, zarr, TIFF stores...); tensors, lists and PIL images are read whole
            lazy = all(hasattr(image, name) for name in ("shape", "dtype", "__getitem__"))
            return lazy and not isinstance(image, torch.Tensor)
        if image.ndim < 2:
            return False  # prepare_image reports the bad shape
        return len(default_tiling(image.shape[:2], self.model.config.image_size)) > 1

    def _require_not_tiled(self, what: str) -> None:
        if self._tiled is not None:
            raise InvalidInputError(
                f"{what} is not available in tiled mode (the image was set with a cache, tiles, a "
                "lazy array or a plane larger than the encoder input): tile embeddings are kept in "
                "the embedding cache; fill it with sum_core.embed(...) and pass cache= to set_image"
            )

    def _require_image(self) -> None:
        self._require_not_tiled("this low-level call")
        if self._embedding is None:
            raise InvalidInputError("no image is set: call set_image(image) before predict()")

    def decode(
        self, frame: ModelPrompts, multimask: bool = False, hq_token_only: bool = False, task: int | None = 1
    ) -> DecodedMasks:
        """Run the prompt encoder and mask decoder on prompts in the model frame.

        Low-level batched entry (automatic segmentation decodes many clicks in one
        call with it): the image embedding is broadcast over the prompts, not copied.

        Parameters
        ----------
        frame : ModelPrompts
            Prompts from :func:`sum_core.prompts.to_model_frame` (batch ``B``).
        multimask, hq_token_only : bool
            Output selection, see :meth:`sum_core.modeling.mask_decoder.MaskDecoder.select_outputs`
            (plain SAM with ``multimask`` keeps its 3 candidates here).
        task : int or None
            SUM task; ignored by models without SUM task tokens.

        Returns
        -------
        DecodedMasks
            Low-resolution ``B×C×L×L`` logits, ``B×C`` IoU, the chosen SAM-token
            logits and the HQ-token logits (None for plain SAM).
        """
        self._require_image()
        model = self.model
        cuda_graphs = uses_cuda_graphs(model)
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode():
            points = None if frame.point_coords is None else (frame.point_coords, frame.point_labels)
            sparse, dense = model.prompt_encoder(points=points, boxes=frame.boxes, masks=frame.mask_input)
            out = model.mask_decoder(
                image_embeddings=self._embedding,
                image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                hq_features=self._hq_features,
                task=task if model.config.sum_tokens else None,
            )
            logits, iou, sam_logits = model.mask_decoder.select_outputs(out, multimask, hq_token_only)
        hq_logits = out.hq_logits
        if cuda_graphs:  # a CUDA graph's outputs are overwritten by its next replay: copy them
            logits, iou, sam_logits = logits.clone(), iou.clone(), sam_logits.clone()
            hq_logits = None if hq_logits is None else hq_logits.clone()
        return DecodedMasks(logits, iou, sam_logits, hq_logits)

    def upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        """``B×C×L×L`` low-resolution logits to ``B×C×H×W`` logits at the image's size."""
        self._require_image()
        with torch.inference_mode():
            return self.model.postprocess_masks(low_res, self._input_size, self._original_size)

    def _decode(self, prompts, multimask: bool, hq_token_only: bool, task: int) -> DecodedMasks:
        """Validated prompts -> one mask per prompt (plain SAM multimask: the best candidate)."""
        frame = to_model_frame(prompts, self._original_size, self._input_size, device=self.device)
        decoded = self.decode(frame, multimask, hq_token_only, task)
        if self.model.config.hq or not multimask:
            return decoded
        logits, iou, sam_logits, hq_logits = decoded
        best = iou.argmax(dim=1)
        rows = torch.arange(iou.shape[0], device=iou.device)
        return DecodedMasks(logits[rows, best][:, None], iou[rows, best][:, None], sam_logits[rows, best][:, None], hq_logits)

    def _ensemble(self, prompts, multimask, hq_token_only, task, size: int, seed: int) -> torch.Tensor:
        members = unc.perturb_prompts(
            prompts.points, prompts.labels, prompts.boxes, size, seed, image_shape=self._original_size
        )
        logits = [
            self._decode(replace(prompts, points=points, boxes=boxes), multimask, hq_token_only, task)[0]
            for points, _, boxes in members
        ]
        return unc.ensemble_entropy(torch.stack([self.upscale(lg) for lg in logits]))


def _to_prediction(full: torch.Tensor, iou: torch.Tensor, low_res: torch.Tensor, unc_map: torch.Tensor) -> Prediction:
    """Convert batched (K, 1, ...) tensors to a Prediction, dropping K when it is 1."""
    full = full[:, 0].float().cpu().numpy()
    unc_np = unc_map.reshape(full.shape).float().cpu().numpy().astype(np.float32)
    scores = iou[:, 0].float().cpu().numpy()
    low = low_res.float().cpu().numpy()
    if full.shape[0] == 1:
        return Prediction(full[0] > 0, float(scores[0]), full[0], low[0], unc_np[0])
    return Prediction(full > 0, scores, full, low, unc_np)
