"""Train SUM's mask-refinement module and write the pseudo-labels' uncertainty maps.

::

    python -m training.refine --model sam_hq_vit_b --data DATASET --pseudo PSEUDO --out REFINER_DIR
    python -m training.refine --model sam_hq_vit_b --pseudo PSEUDO --skip-train --refiner REFINER_DIR

1. **Training pairs** (human-labelled ``DATASET``, all its images): for every
   ground-truth instance one click is drawn uniformly inside it; SAM answers
   as its automatic mask generator does (``multimask``: plain SAM's three
   candidates; for HQ models the one candidate of the HQ decoder, the best SAM
   token by predicted IoU + the HQ token); the candidate with the best IoU
   against the ground truth is the pseudo-mask. It is kept if it passes SAM's filters (predicted IoU,
   stability, area fraction) and its IoU with the ground truth is at least
   ``--min-iou`` (0.7). The refiner's inputs are then the click, the box
   around the pseudo-mask and the pseudo-mask's 8-bit probability as mask
   prompt (as stored for pseudo-labels); its target is the ground truth.
2. **Training**: focal 20 : Dice 1 (:func:`training.losses.sam_loss`, no IoU
   term) on the image's part of the ``256 x 256`` low-resolution frame (the
   padding of a non-square image is cropped away, :func:`low_res_region`), AdamW. Defaults (ours,
   the paper gives none): 10 epochs, lr 1e-4, weight decay 1e-4, 8 pairs per
   step (pairs of one image share a step). Image features are computed once
   (:func:`sum_core.encoding.encode_image`, the whole image resized to the
   encoder, at every image size) and kept in RAM as float16.
3. **Maps**: for every pseudo-mask, ``uncertainty_<index>.png =
   round(255 |p_SAM - p_refined|)`` at image resolution, with ``p_SAM`` the
   stored ``prob_<index>.png / 255``.

The refiner is saved as ``REFINER_DIR/refiner.pt`` (see
:mod:`training.refinement_module`) with ``REFINER_DIR/refiner.json``
(settings, pair counts, loss per epoch).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sum_core.decoding import run_decoder, upscale
from sum_core.encoding import encode_image, weights_hash
from sum_core.errors import InvalidInputError, SumError
from sum_core.image import prepare_image
from sum_core.imageio import read_image, write_image
from sum_core.loading import load_model
from sum_core.mask_ops import stability_score
from sum_core.modeling import ImageEmbedding, SamModel
from sum_core.prompts import ModelPrompts, batch_to_model_frame, to_low_res_frame, validate_prompts

from . import pseudo_store as store
from .dataset import Sample, scan_dataset
from .losses import sam_loss
from .prompt_sampling import box_from_mask, sample_weighted_points
from .pseudolabel import PSEUDO_OPTIONS, check_format
from .refinement_module import (
    RefinementModule,
    load_refiner,
    mask_prompt_from_probability,
    refiner_prompts,
)

REFINER_FILE = "refiner.pt"
SETTINGS_FILE = "refiner.json"
SAM_CHUNK = 16


@dataclass(frozen=True)
class PairFilters:
    """Which SAM answers become training pairs: the pseudo-labels' filters
    (:data:`training.pseudolabel.PSEUDO_OPTIONS`) and the IoU with the ground truth."""

    pred_iou_thresh: float = PSEUDO_OPTIONS.pred_iou_thresh
    stability_thresh: float = PSEUDO_OPTIONS.stability_thresh
    stability_offset: float = PSEUDO_OPTIONS.stability_offset
    max_area_fraction: float = PSEUDO_OPTIONS.max_area_fraction
    min_iou: float = 0.7


@dataclass(frozen=True)
class TrainSettings:
    """Refiner optimisation settings."""

    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 8
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    seed: int = 0


@dataclass
class TrainingPair:
    """One refiner example: prompts in image pixels plus the low-resolution target."""

    image: int
    point: np.ndarray
    box: np.ndarray
    mask_input: np.ndarray
    target: np.ndarray
    iou: float


@dataclass
class PairSet:
    """Training pairs and the cached (float16, CPU) features of their images."""

    features: list[ImageEmbedding] = field(default_factory=list)
    pairs: list[TrainingPair] = field(default_factory=list)
    tried: int = 0
    passed_filters: int = 0


def _read_labels(sample: Sample) -> np.ndarray:
    labels = read_image(sample.mask)
    return labels[..., 0] if labels.ndim == 3 else labels


def _sam_candidates(model: SamModel, image: ImageEmbedding, points: np.ndarray):
    """SAM's multimask answers to single clicks: (logits K x C x H x W, predicted IoU K x C).

    ``C`` is 3 for plain SAM and 1 for HQ models (their decoder keeps the best SAM token).
    """
    objects = [validate_prompts(points=[p], labels=[1], image_shape=image.original_size) for p in points]
    frame = batch_to_model_frame(objects, image.original_size, image.input_size, device=image.device)
    decoded = run_decoder(model, image, frame, None, True, False)
    return upscale(model, image, decoded.logits).cpu(), decoded.iou.cpu()


def _passes_sam_filters(
    pred_iou: float, stability: float, area: int, area_limit: float, f: PairFilters
) -> bool:
    """SAM's filters as in ``sum_core.automatic.generate_masks`` (a threshold <= 0 disables its filter)."""
    return (
        (f.pred_iou_thresh <= 0 or pred_iou > f.pred_iou_thresh)
        and (f.stability_thresh <= 0 or stability >= f.stability_thresh)
        and 0 < area <= area_limit
    )


def _pairs_of_image(
    model: SamModel, encoded: ImageEmbedding, labels: np.ndarray, filters: PairFilters,
    generator: torch.Generator, image_index: int, pair_set: PairSet,
) -> None:
    config = model.config
    ids = np.unique(labels)
    gts = [labels == i for i in ids[ids != 0]]
    points = [sample_weighted_points(gt, None, 1, generator=generator)[0] for gt in gts]
    area_limit = filters.max_area_fraction * labels.size
    for start in range(0, len(gts), SAM_CHUNK):
        chunk = gts[start : start + SAM_CHUNK]
        chunk_points = np.asarray(points[start : start + SAM_CHUNK], dtype=np.float64)
        logits, pred_iou = _sam_candidates(model, encoded, chunk_points)
        for k, gt in enumerate(chunk):
            pair_set.tried += 1
            gt_t = torch.from_numpy(gt)
            masks = logits[k] > 0
            inter = (masks & gt_t).flatten(1).sum(1).float()
            union = (masks | gt_t).flatten(1).sum(1).float().clamp(min=1)
            ious = inter / union
            best = int(ious.argmax())
            area = int(masks[best].sum())
            stable = float(stability_score(logits[k, best], 0.0, filters.stability_offset))
            if not _passes_sam_filters(float(pred_iou[k, best]), stable, area, area_limit, filters):
                continue
            pair_set.passed_filters += 1
            if float(ious[best]) < filters.min_iou:
                continue
            prob = store.logits_to_uint8(logits[k, best].numpy())
            if not (prob > 127).any():
                continue
            pair_set.pairs.append(
                TrainingPair(
                    image=image_index,
                    point=np.asarray(points[start + k], dtype=np.float64),
                    box=box_from_mask(prob > 127),
                    mask_input=mask_prompt_from_probability(
                        prob, encoded.input_size, config.image_size, config.low_res_size
                    ),
                    target=to_low_res_frame(
                        gt.astype(np.float32), encoded.input_size, config.image_size, config.low_res_size, 0.0
                    ).numpy(),
                    iou=float(ious[best]),
                )
            )


def _stored(image: ImageEmbedding) -> ImageEmbedding:
    """The features the refiner trains on, kept on the CPU as float16 (its own decoder makes
    the HQ features, so the frozen SAM's are dropped)."""

    def half(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to("cpu", torch.float16)

    return replace(image, embedding=half(image.embedding), early=half(image.early), hq_features=None)


def build_pairs(
    model: SamModel,
    samples: list[Sample],
    filters: PairFilters = PairFilters(),
    seed: int = 0,
    progress: bool = True,
) -> PairSet:
    """Run SAM on the labelled images and collect the refiner's training pairs.

    Parameters
    ----------
    model : SamModel
        The SAM whose pseudo-labels will be refined (on its device, frozen).
    samples : list of Sample
        Labelled images from :func:`training.dataset.scan_dataset`.
    filters : PairFilters
        SAM's filters and the IoU threshold.
    seed : int
        Seed of the click draws.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    PairSet

    Raises
    ------
    InvalidInputError
        If no pair survives the filters (the message gives the counts).
    """
    generator = torch.Generator().manual_seed(seed)
    pair_set = PairSet()
    for index, sample in enumerate(tqdm(samples, desc="training pairs", unit="image", disable=not progress)):
        encoded = encode_image(model, prepare_image(read_image(sample.image)))
        pair_set.features.append(_stored(encoded))
        _pairs_of_image(model, encoded, _read_labels(sample), filters, generator, index, pair_set)
    if not pair_set.pairs:
        raise InvalidInputError(
            f"data: no training pair survived: {pair_set.tried} SAM answer(s) tried, "
            f"{pair_set.passed_filters} passed SAM's filters (predicted IoU > {filters.pred_iou_thresh}, "
            f"stability >= {filters.stability_thresh}, area <= {filters.max_area_fraction} of the image), "
            f"none of those had IoU >= {filters.min_iou} with its ground truth; lower --min-iou or the "
            "filters, or add labelled images"
        )
    return pair_set


def pair_batches(
    pair_set: PairSet, batch_size: int, rng: np.random.Generator | None = None
) -> list[list[int]]:
    """Group pair indices into batches of <= ``batch_size`` pairs of one image (shuffled with ``rng``)."""
    by_image: dict[int, list[int]] = {}
    for i, pair in enumerate(pair_set.pairs):
        by_image.setdefault(pair.image, []).append(i)
    batches = []
    for indices in by_image.values():
        if rng is not None:
            indices = list(rng.permutation(indices))
        batches += [indices[s : s + batch_size] for s in range(0, len(indices), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def batch_inputs(
    pair_set: PairSet, indices: list[int], device
) -> tuple[ImageEmbedding, ModelPrompts, torch.Tensor]:
    """Features, model-frame prompts and ``B x 1 x L x L`` targets of pairs of one image."""
    pairs = [pair_set.pairs[i] for i in indices]
    encoded = pair_set.features[pairs[0].image].to(device)
    prompts = refiner_prompts(
        [p.point for p in pairs], [p.box for p in pairs], [p.mask_input for p in pairs], encoded, device
    )
    targets = torch.from_numpy(np.stack([p.target for p in pairs])).to(device)
    return encoded, prompts, targets


def low_res_region(image: ImageEmbedding, image_size: int, low_res_size: int) -> tuple[int, int]:
    """Rows and columns of the ``L x L`` low-resolution frame that cover the image's
    ``input_size`` region (``ceil(h L / S)``, ``ceil(w L / S)``; the rest is padding)."""
    h, w = image.input_size
    return math.ceil(h * low_res_size / image_size), math.ceil(w * low_res_size / image_size)


def train_step(
    refiner: RefinementModule,
    optimizer: torch.optim.Optimizer,
    batch: tuple[ImageEmbedding, ModelPrompts, torch.Tensor],
    settings: TrainSettings = TrainSettings(),
) -> float:
    """One optimisation step on a batch from :func:`batch_inputs`; returns the loss before the step.

    The loss covers only the image's part of the low-resolution frame (:func:`low_res_region`).
    """
    encoded, prompts, targets = batch
    refiner.train()
    logits = refiner(encoded, prompts)
    h, w = low_res_region(encoded, refiner.config.image_size, refiner.config.low_res_size)
    loss = sam_loss(
        logits[..., :h, :w],
        targets[..., :h, :w],
        None,
        focal_weight=settings.focal_weight,
        dice_weight=settings.dice_weight,
    )["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def make_optimizer(refiner: RefinementModule, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW over all refiner parameters."""
    return torch.optim.AdamW(refiner.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def train_refiner(
    model: SamModel, pair_set: PairSet, settings: TrainSettings = TrainSettings(), progress: bool = True
) -> tuple[RefinementModule, list[float]]:
    """Train a refiner (copy of ``model``'s prompt encoder + decoder); return it and the loss per epoch."""
    for name in ("epochs", "batch_size"):
        if getattr(settings, name) < 1:
            raise InvalidInputError(f"{name} must be >= 1, got {getattr(settings, name)}")
    if not settings.lr > 0:
        raise InvalidInputError(f"lr must be > 0, got {settings.lr}")
    torch.manual_seed(settings.seed)
    device = model.pixel_mean.device
    refiner = RefinementModule(model).to(device)
    optimizer = make_optimizer(refiner, settings)
    rng = np.random.default_rng(settings.seed)
    history = []
    bar = tqdm(total=settings.epochs, desc="refiner epochs", unit="epoch", disable=not progress)
    for _ in range(settings.epochs):
        losses = [
            train_step(refiner, optimizer, batch_inputs(pair_set, indices, device), settings)
            for indices in pair_batches(pair_set, settings.batch_size, rng)
        ]
        history.append(float(np.mean(losses)))
        bar.set_postfix(loss=f"{history[-1]:.4f}")
        bar.update()
    bar.close()
    return refiner.eval(), history


def _pseudo_images(pseudo: Path, manifest: dict) -> tuple[Path, dict[str, str]]:
    image_dir = Path(manifest.get("image_dir", ""))
    images = manifest.get("images")
    if not manifest.get("image_dir") or not isinstance(images, dict):
        raise InvalidInputError(f"pseudo: {pseudo}/{store.MANIFEST_NAME} lacks image_dir / images")
    if not image_dir.is_dir():
        raise InvalidInputError(
            f"pseudo: the images of {pseudo} were in {image_dir}, which no longer exists"
        )
    return image_dir, images


def check_pseudo(model: SamModel, pseudo: Path) -> tuple[Path, dict[str, str]]:
    """Check that ``pseudo`` was made by ``model`` and its images exist; return (image_dir, stem -> file)."""
    manifest = store.read_manifest(pseudo)
    check_format(pseudo, manifest)
    if manifest.get("weights_hash") != weights_hash(model):
        raise InvalidInputError(
            f"pseudo: {pseudo} was made by model {manifest.get('model')!r} (weights "
            f"{str(manifest.get('weights_hash'))[:20]}...), not by --model; the uncertainty maps need "
            "the SAM that made the pseudo-labels"
        )
    return _pseudo_images(pseudo, manifest)


def write_uncertainty_maps(
    model: SamModel,
    refiner: RefinementModule,
    pseudo: Path,
    batch_size: int = 8,
    progress: bool = True,
) -> int:
    """Write ``uncertainty_<index>.png`` for every pseudo-mask; return how many were written."""
    image_dir, images = check_pseudo(model, pseudo)
    config = model.config
    device = model.pixel_mean.device
    refiner.eval()
    written = 0
    folders = store.image_folders(pseudo)
    for folder in tqdm(folders, desc="uncertainty maps", unit="image", disable=not progress):
        masks = store.read_masks_csv(folder)
        if not masks:
            continue
        if folder.name not in images:
            raise InvalidInputError(f"pseudo: {folder} has no image listed in {pseudo}/{store.MANIFEST_NAME}")
        encoded = encode_image(model, prepare_image(read_image(image_dir / images[folder.name])))
        for start in range(0, len(masks), batch_size):
            chunk = masks[start : start + batch_size]
            probs = [store.read_probability(folder, m.index) for m in chunk]
            if probs[0].shape != encoded.original_size:
                raise InvalidInputError(
                    f"pseudo: {store.prob_path(folder, chunk[0].index)} has shape {probs[0].shape}, "
                    f"its image {images[folder.name]} has {encoded.original_size}"
                )
            mask_inputs = [
                mask_prompt_from_probability(p, encoded.input_size, config.image_size, config.low_res_size)
                for p in probs
            ]
            points, boxes = [m.point for m in chunk], [m.box for m in chunk]
            prompts = refiner_prompts(points, boxes, mask_inputs, encoded, device)
            with torch.inference_mode():
                refined = torch.sigmoid(upscale(model, encoded, refiner(encoded, prompts)))
            refined = refined[:, 0].cpu().numpy().astype(np.float64)
            for mask, prob, p_ref in zip(chunk, probs, refined):
                u = np.abs(prob.astype(np.float64) / 255.0 - p_ref)
                write_image(store.uncertainty_path(folder, mask.index), store.probability_to_uint8(u))
                written += 1
    return written


def _refiner_file(path: Path) -> Path:
    return path / REFINER_FILE if path.is_dir() else path


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m training.refine``."""
    f, t = PairFilters(), TrainSettings()
    parser = argparse.ArgumentParser(
        prog="python -m training.refine",
        description="Train SUM's mask-refinement module and write the pseudo-labels' uncertainty maps.",
    )
    parser.add_argument(
        "--model", required=True, help="registry name or checkpoint path (the pseudo-labels' SAM)"
    )
    parser.add_argument("--data", type=Path, help="human-labelled dataset folder (images/, masks/)")
    parser.add_argument(
        "--pseudo", required=True, type=Path, help="pseudo-label folder from training.pseudolabel"
    )
    parser.add_argument("--out", type=Path, help="folder for refiner.pt and refiner.json")
    parser.add_argument("--skip-train", action="store_true", help="only write maps, with --refiner")
    parser.add_argument("--refiner", type=Path, help="refiner.pt (or its folder) for --skip-train")
    parser.add_argument("--epochs", type=int, default=t.epochs)
    parser.add_argument("--lr", type=float, default=t.lr)
    parser.add_argument("--weight-decay", type=float, default=t.weight_decay)
    parser.add_argument("--batch-size", type=int, default=t.batch_size, help="pairs per step")
    parser.add_argument("--seed", type=int, default=t.seed)
    parser.add_argument(
        "--min-iou", type=float, default=f.min_iou, help="drop pairs below this IoU with the truth"
    )
    parser.add_argument("--pred-iou-thresh", type=float, default=f.pred_iou_thresh)
    parser.add_argument("--stability-thresh", type=float, default=f.stability_thresh)
    parser.add_argument("--stability-offset", type=float, default=f.stability_offset)
    parser.add_argument("--max-area-fraction", type=float, default=f.max_area_fraction)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.skip_train:
        if args.refiner is None:
            raise InvalidInputError("--refiner: required with --skip-train (a refiner.pt or its folder)")
    else:
        if args.data is None or args.out is None:
            raise InvalidInputError("--data and --out: required unless --skip-train")
        if args.refiner is not None:
            raise InvalidInputError("--refiner: only used with --skip-train")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise InvalidInputError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if not args.lr > 0:
        raise InvalidInputError(f"--lr: must be > 0, got {args.lr}")
    store.read_manifest(args.pseudo)


def run(args: argparse.Namespace) -> str:
    """Do what the parsed command line asks; return a summary line."""
    _check_args(args)
    progress = not args.no_progress
    if not args.skip_train:
        samples = scan_dataset(args.data, val_fraction=0.0).train
    model = load_model(args.model, device=args.device).requires_grad_(False)
    check_pseudo(model, args.pseudo)
    if args.skip_train:
        refiner = load_refiner(model, _refiner_file(args.refiner))
        summary = ""
    else:
        filters = PairFilters(
            args.pred_iou_thresh,
            args.stability_thresh,
            args.stability_offset,
            args.max_area_fraction,
            args.min_iou,
        )
        settings = TrainSettings(args.epochs, args.lr, args.weight_decay, args.batch_size, seed=args.seed)
        pair_set = build_pairs(model, samples, filters, args.seed, progress)
        refiner, history = train_refiner(model, pair_set, settings, progress)
        args.out.mkdir(parents=True, exist_ok=True)
        refiner.save(args.out / REFINER_FILE)
        record = {
            "model": str(args.model),
            "weights_hash": weights_hash(model),
            "data": str(Path(args.data).resolve()),
            "filters": asdict(filters),
            "settings": asdict(settings),
            "pairs_tried": pair_set.tried,
            "pairs_passed_filters": pair_set.passed_filters,
            "pairs_used": len(pair_set.pairs),
            "loss_per_epoch": history,
        }
        (args.out / SETTINGS_FILE).write_text(json.dumps(record, indent=2) + "\n")
        summary = (
            f"trained on {len(pair_set.pairs)} pair(s) of {pair_set.tried}; "
            f"saved {args.out / REFINER_FILE}; "
        )
    written = write_uncertainty_maps(model, refiner, args.pseudo, args.batch_size, progress)
    return summary + f"wrote {written} uncertainty map(s) in {args.pseudo}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; errors exit with a one-line message."""
    args = build_parser().parse_args(argv)
    try:
        print(run(args))
    except SumError as exc:
        sys.exit(f"training.refine: error: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
