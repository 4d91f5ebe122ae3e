"""The SUM fine-tuning loop: data streams, prompts, losses, devices, checkpoints.

One *step* is one optimiser step on a batch of human-labelled images; every
``pseudo_ratio`` human steps (counted over the whole run) are followed by a separate optimiser step on a
pseudo-labelled batch (SUM's 1 : 1 mixing with separate steps).  The data
order of every epoch is a seeded permutation (split over DDP ranks like
``DistributedSampler``), items are deterministic per (seed, epoch, index), and
all other randomness comes from RNGs whose states are saved with the training
state, so ``--resume`` continues bit for bit.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm import tqdm

from sum_core.acceleration import autocast
from sum_core.encoding import encode
from sum_core.errors import InvalidInputError
from sum_core.image import prepare_image, preprocess_shape, resize_longest_side
from sum_core.imageio import read_image
from sum_core.modeling import DecodedMasks, ImageEmbedding, SamModel
from sum_core.prompts import batch_to_model_frame, validate_prompts

from . import checkpointing as ckpt
from . import losses, pseudo_store
from .ais_step import AisStep
from .augment import OUTPUT_SIZE
from .config import FinetuneConfig
from .dataset import DatasetSplit, InstanceDataset, collate_instances, image_files, scan_dataset
from .prompt_sampling import (
    box_from_mask,
    jitter_box,
    noisy_mask_prompt,
    sample_error_click,
    sample_weighted_points,
)
from .schemes import build_optimizer, build_scheduler, set_trainable

TASK_PSEUDO, TASK_SALIENT, TASK_ENTITY = 0, 1, 2
METRIC_FIELDS = (
    "time", "epoch", "step", "kind", "loss", "focal", "dice", "iou", "bce", "lr", "foreground", "center", "boundary"
)


# --- data -----------------------------------------------------------------------------------


class TaskDataset(Dataset):
    """An :class:`InstanceDataset` whose items also carry a SUM task index."""

    def __init__(self, dataset: InstanceDataset, task: int) -> None:
        self.dataset = dataset
        self.task = task

    def set_epoch(self, epoch: int) -> None:
        """Forward to the wrapped dataset."""
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        item["task"] = self.task
        return item


def collate(batch: list[dict]) -> dict:
    """:func:`training.dataset.collate_instances` plus ``"task"``, ``"uncertainty"`` and
    ``"input_size"`` lists (None where an item has none: its whole frame is the image)."""
    out = collate_instances(batch)
    out["task"] = [item["task"] for item in batch]
    out["uncertainty"] = [item.get("uncertainty") for item in batch]
    out["input_size"] = [item.get("input_size") for item in batch]
    return out


def _resize_maps(maps: np.ndarray, size: int) -> torch.Tensor:
    """Bilinearly resize ``N x H x W`` float maps (long side -> size), pad bottom/right with 0."""
    h, w = maps.shape[1:]
    new_h, new_w = preprocess_shape(h, w, size)
    tensor = torch.from_numpy(maps.astype(np.float32))[:, None]
    tensor = F.interpolate(tensor, (new_h, new_w), mode="bilinear", align_corners=False)[:, 0]
    return F.pad(tensor, (0, size - new_w, 0, size - new_h))


class PseudoDataset(Dataset):
    """Pseudo-labelled images (``training.pseudolabel`` / ``training.refine`` folder).

    Each item has ``"image"`` (3 x S x S uint8: the image resized with SAM's
    preprocessing, :func:`sum_core.image.resize_longest_side`, antialiased, then
    zero-padded bottom/right; no augmentation, as in SUM), ``"input_size"`` (the
    resized image's ``(h, w)`` inside the frame: losses and the encoder use only
    that region, as the reference crops to ``input_size``), ``"masks"``
    (N x S x S bool, ``prob > 0.5``), ``"uncertainty"`` (N x S x S float32 in
    [0, 1]) and ``"task"`` 0.

    As in the reference, a mask's area in the S frame is its ``masks.csv`` area
    times ``(S / max(H, W))**2``.  Masks under ``min_area`` are dropped *first*,
    then at most ``max_masks`` of the rest are sampled (seeded by (seed, index)).
    Only masks of at least ``min_uncertainty_area`` use their uncertainty map;
    the others, and masks without a map, get ``u = 0`` (certain), as in the SUM code.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_dir: str | os.PathLike | None = None,
        max_masks: int = 40,
        min_area: int = 100,
        output_size: int = OUTPUT_SIZE,
        seed: int = 0,
        min_uncertainty_area: int = 10_000,
    ) -> None:
        self.root = Path(root)
        manifest = pseudo_store.read_manifest(self.root)
        image_dir = Path(image_dir or manifest.get("image_dir", ""))
        if not image_dir.is_dir():
            raise InvalidInputError(
                f"pseudo_images: image folder {image_dir} of pseudo-label folder {self.root} does not exist"
            )
        images = image_files(image_dir)
        self.folders = [
            f for f in pseudo_store.image_folders(self.root)
            if f.name in images and pseudo_store.read_masks_csv(f)
        ]
        if not self.folders:
            raise InvalidInputError(f"pseudo: {self.root} has no labelled image found in {image_dir}")
        self.images = [images[f.name] for f in self.folders]
        self.max_masks, self.min_area = max_masks, min_area
        self.min_uncertainty_area = min_uncertainty_area
        self.output_size, self.seed = output_size, seed

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int) -> dict:
        folder = self.folders[index]
        size = self.output_size
        image = prepare_image(read_image(self.images[index]))
        area_scale = (size / max(image.shape[:2])) ** 2
        rows = [r for r in pseudo_store.read_masks_csv(folder) if r.area * area_scale >= self.min_area]
        rng = np.random.default_rng((self.seed, index))
        if len(rows) > self.max_masks:
            rows = [rows[i] for i in sorted(rng.choice(len(rows), self.max_masks, replace=False))]
        resized = resize_longest_side(image, size)
        new_h, new_w = resized.shape[:2]
        frame = np.zeros((3, size, size), np.uint8)
        frame[:, :new_h, :new_w] = resized.transpose(2, 0, 1)
        shape = (len(rows), *image.shape[:2])
        probs = np.zeros(shape)
        unc = np.zeros(shape)
        for i, row in enumerate(rows):
            probs[i] = pseudo_store.read_probability(folder, row.index) / 255.0
            path = pseudo_store.uncertainty_path(folder, row.index)
            if row.area * area_scale >= self.min_uncertainty_area and path.is_file():
                unc[i] = read_image(path) / 255.0
        masks = _resize_maps(probs, size) > 0.5
        keep = masks.flatten(1).any(1)  # a mask lost in the resize cannot be prompted
        return {
            "image": torch.from_numpy(frame),
            "input_size": (new_h, new_w),
            "masks": masks[keep],
            "uncertainty": _resize_maps(unc, size)[keep].clamp(0, 1),
            "instance_ids": torch.tensor([r.index for r in rows], dtype=torch.int64)[keep],
            "path": str(self.images[index]),
            "task": TASK_PSEUDO,
        }


def epoch_batches(
    length: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1
) -> list[list[int]]:
    """Batches of dataset indices for one epoch and one rank.

    A ``torch.randperm`` seeded with ``seed + epoch`` is padded to a multiple
    of ``world`` (repeating its start, like ``DistributedSampler``), rank
    ``r`` takes every ``world``-th index from ``r``, and the result is cut
    into batches (the last one may be shorter).
    """
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(length, generator=generator).tolist()
    total = math.ceil(length / world) * world
    order = (order * math.ceil(total / max(length, 1)))[:total]
    mine = order[rank::world]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


# --- prompts ---------------------------------------------------------------------------------


def model_frame_prompts(
    points: list[np.ndarray] | None,
    labels: list[np.ndarray] | None,
    boxes: np.ndarray | None,
    size: int,
    device: torch.device,
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None]:
    """Per-mask (row, col) prompts in the ``size x size`` training frame -> prompt-encoder tensors.

    Each mask's prompts are validated and batched by
    :func:`sum_core.prompts.batch_to_model_frame` (masks with fewer clicks are padded with
    SAM's "not a point").  Returns ``((coords B x N x 2, labels B x N) or None, boxes B x 4 or None)``.
    """
    if points is None and boxes is None:
        return None, None
    count = len(points) if points is not None else len(boxes)
    objects = [
        validate_prompts(
            points=None if points is None else points[i],
            labels=None if labels is None else labels[i],
            box=None if boxes is None else boxes[i],
            image_shape=(size, size),
        )
        for i in range(count)
    ]
    frame = batch_to_model_frame(objects, (size, size), (size, size), device=device)
    point_args = None if frame.point_coords is None else (frame.point_coords, frame.point_labels)
    return point_args, frame.boxes


class PromptSampler:
    """Draws training prompts from a dedicated CPU generator (state saved for resume)."""

    def __init__(self, config: FinetuneConfig, generator: torch.Generator) -> None:
        self.config = config
        self.generator = generator

    def choice(self, options: list[str]) -> str:
        """One of ``options``, uniformly."""
        return options[int(torch.randint(len(options), (1,), generator=self.generator))]

    def boxes(self, masks: torch.Tensor, region: tuple[int, int]) -> np.ndarray:
        """Tight boxes of the masks, with SUM's jitter (clipped to the image's ``region``)
        if configured; ``K x 4`` (row, col)."""
        boxes = np.stack([box_from_mask(m) for m in masks])
        if self.config.box_jitter:
            boxes = jitter_box(boxes, self.generator, image_shape=region)
        return boxes

    def points(self, masks: torch.Tensor, certainty: torch.Tensor | None, count: int) -> list[np.ndarray]:
        """``count`` positive points per mask, drawn proportionally to the certainty."""
        return [
            sample_weighted_points(
                m, None if certainty is None else certainty[i], count, generator=self.generator
            )
            for i, m in enumerate(masks)
        ]

    def noisy_masks(self, masks: torch.Tensor, size: int) -> torch.Tensor:
        """HQ-SAM's noisy mask prompts, ``K x 1 x size x size``."""
        return noisy_mask_prompt(masks, size=size, generator=self.generator)


# --- one training step --------------------------------------------------------------------


class TrainStep(nn.Module):
    """Forward pass + loss of one batch (a module so that DDP can wrap it).

    Parameters
    ----------
    model : SamModel
    config : FinetuneConfig
    sampler : PromptSampler
    """

    def __init__(self, model: SamModel, config: FinetuneConfig, sampler: PromptSampler) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.sampler = sampler

    def forward(self, batch: dict, pseudo: bool) -> dict[str, torch.Tensor]:
        """Mean loss over the images of ``batch`` (dict of scalar tensors, ``"loss"`` included).

        The images (``B x 3 x S x S``, already in the ``S x S`` training frame) are encoded
        through :func:`sum_core.encoding.encode`, with gradients only in the ``full`` scheme.
        An item's ``"input_size"`` ``(h, w)`` is the image's own region of the frame: only
        it is encoded (SAM's padding follows) and enters the losses and the error clicks, as
        in the reference's pseudo-label branch.  Without it (human-labelled items) the whole
        frame is the image: HQ-SAM trains on its large-scale-jitter frame, padding included.
        """
        model, config = self.model, self.config
        images = batch["image"]
        frame = tuple(images.shape[-2:])
        regions = [frame if r is None else tuple(r) for r in batch.get("input_size", [None] * len(images))]
        pixels = [image[:, :h, :w] for image, (h, w) in zip(images, regions)]
        with torch.set_grad_enabled(config.scheme == "full" and torch.is_grad_enabled()):
            encoded = encode(model, pixels, regions, config.precision, hq_features=False)
        totals: dict[str, torch.Tensor] = {}
        count = 0
        for b, image in enumerate(encoded):
            masks = batch["masks"][b]
            if masks.shape[0] == 0:
                continue
            unc = batch["uncertainty"][b] if pseudo else None
            parts = self._image_loss(image, masks, unc, batch["task"][b], regions[b])
            for key, value in parts.items():
                totals[key] = totals.get(key, 0) + value
            count += 1
        if count == 0:
            zero = sum(p.sum() * 0 for p in model.parameters() if p.requires_grad)
            return {"loss": zero}
        return {key: value / count for key, value in totals.items()}

    def _image_loss(
        self, image: ImageEmbedding, masks, unc, task: int, region: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        model, config = self.model, self.config
        device = image.device
        size, low = model.config.image_size, model.config.low_res_size
        certainty = None if unc is None else 1 - unc
        image = model.with_hq_features(image)  # once per image, with gradients (shared by all rounds)
        targets = masks.to(device).float()[:, None]
        unc_device = None if unc is None else unc.to(device).float()[:, None]
        rounds = config.interactive_rounds if config.interactive else 1
        previous: torch.Tensor | None = None
        points: list[np.ndarray] | None = None
        labels: list[np.ndarray] | None = None
        boxes = mask_prompt = None
        totals: dict[str, torch.Tensor] = {}
        for round_index in range(rounds):
            if round_index == 0:
                kinds = ["box", "points"] if config.interactive else config.prompt_kinds
                kind = self.sampler.choice(list(kinds))
                if kind == "box":
                    boxes = self.sampler.boxes(masks, region)
                elif kind == "points":
                    points = self.sampler.points(masks, certainty, 1 if config.interactive else config.num_points)
                    labels = [np.ones(len(p), np.int64) for p in points]
                else:
                    mask_prompt = self.sampler.noisy_masks(masks, low).to(device)
            else:
                mask_prompt = previous
                if round_index < rounds - 1:
                    points, labels = self._add_error_clicks(previous, masks, certainty, points, labels, region)
            point_args, box_tensor = model_frame_prompts(points, labels, boxes, size, device)
            with_task = round_index == 0 or config.task_prompt_every_round
            decoded = model.decode(image, point_args, box_tensor, mask_prompt, task if with_task else None)
            logits, iou = self._select(decoded)
            parts = self._loss(logits, iou, targets, unc_device, region)
            for key, value in parts.items():
                totals[key] = totals.get(key, 0) + value / rounds
            previous = logits.detach().float()
        return totals

    def _add_error_clicks(self, previous, masks, certainty, points, labels, region):
        """One click per mask from its error region inside the image's ``region`` (top-left)."""
        size = masks.shape[-1]
        h, w = region
        pred = F.interpolate(previous, (size, size), mode="bilinear", align_corners=False)[:, 0, :h, :w] > 0
        points = list(points) if points is not None else [np.zeros((0, 2), np.int64)] * len(masks)
        labels = list(labels) if labels is not None else [np.zeros(0, np.int64)] * len(masks)
        for i in range(len(masks)):
            click = sample_error_click(
                pred[i].cpu(),
                masks[i, :h, :w],
                None if certainty is None else certainty[i, :h, :w],
                self.sampler.generator,
            )
            if click is not None:
                points[i] = np.concatenate([points[i], click[0][None]])
                labels[i] = np.concatenate([labels[i], [click[1]]])
        if all(len(p) == 0 for p in points):
            return None, None
        return points, labels

    def _select(self, decoded: DecodedMasks) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Trained logits: the HQ token (``hq`` scheme) or the predictor's single-mask output."""
        if self.config.scheme == "hq":
            return decoded.hq_logits.float(), None
        return decoded.logits.float(), decoded.iou.float()

    def _loss(self, logits, iou, targets, unc, region: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The loss of one round.  The dense losses see only the image's ``region`` of the
        frame (logits upsampled to the frame, then cropped with labels and uncertainty, as the
        reference crops to ``input_size``); HQ-SAM's point-sampled loss (human data, ``hq``
        scheme) samples the whole frame, which is the image there."""
        config = self.config
        if unc is None and config.scheme == "hq":
            return losses.point_sampled_mask_loss(logits, targets)
        size = targets.shape[-1]
        h, w = region
        up = F.interpolate(logits, (size, size), mode="bilinear", align_corners=False)[..., :h, :w]
        targets = targets[..., :h, :w]
        weights = {
            "focal_weight": config.focal_weight,
            "dice_weight": config.dice_weight,
            "iou_weight": config.iou_weight,
        }
        if unc is None:
            return losses.sam_loss(up, targets, iou, **weights)
        return losses.uncertainty_aware_loss(
            up, targets, unc[..., :h, :w], iou, config.ua_threshold, config.ua_dice_mode, **weights
        )


# --- the trainer --------------------------------------------------------------------------


class Interrupted(Exception):
    """Raised inside the loop when SIGINT arrived; the state is saved at the last step."""


class Trainer:
    """Runs a fine-tuning job described by a resolved :class:`FinetuneConfig`.

    Parameters
    ----------
    config : FinetuneConfig
        Resolved configuration (see :meth:`FinetuneConfig.resolved`).
    resume : bool
        Continue from ``<output>/training_state.pth``.
    progress : bool
        Show tqdm progress bars (rank 0 only).
    """

    def __init__(self, config: FinetuneConfig, resume: bool = False, progress: bool = True) -> None:
        self.config = config
        self.run_dir = Path(config.output)
        self.resume = resume
        self.distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        self.rank, self.world = 0, 1
        self.device = self._setup_device()
        if config.precision == "fp16" and self.device.type != "cuda":
            raise InvalidInputError(
                f"precision='fp16' needs a CUDA device (it trains with a GradScaler), got device "
                f"{self.device.type!r}; use precision='bf16' or 'fp32' on the CPU"
            )
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        self._sigint = False
        self.position = {"epoch": 0, "batch": 0, "global_step": 0, "pseudo_steps": 0}

    # -- setup --

    def _setup_device(self) -> torch.device:
        config = self.config
        if self.distributed:
            self.rank, self.world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            local = int(os.environ.get("LOCAL_RANK", self.rank))
            use_cuda = torch.cuda.is_available() and config.device != "cpu"
            if not dist.is_initialized():
                dist.init_process_group("nccl" if use_cuda else "gloo")
            if use_cuda:
                torch.cuda.set_device(local)
                return torch.device("cuda", local)
            return torch.device("cpu")
        if config.device:
            device = torch.device(config.device)
            if device.type == "cuda" and not torch.cuda.is_available():
                raise InvalidInputError(f"device={config.device!r}: CUDA is not available")
            return device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _scan_data(self) -> list[tuple[str, DatasetSplit]]:
        """Read and check every labelled folder (before the model loads): ``(folder, split)`` pairs."""
        config = self.config
        return [(folder, scan_dataset(folder, val_fraction=config.val_fraction, seed=config.seed))
                for folder in config.data]

    def _human_datasets(
        self, splits: list[tuple[str, DatasetSplit]], frame: int
    ) -> tuple[Dataset | None, Dataset | None]:
        """The training set and, in the ``ais`` scheme, the validation set (None if empty),
        serving ``frame x frame`` images (the model's input size)."""
        config = self.config
        ais_min_size = config.ais_min_size if config.scheme == "ais" else None
        parts, val = [], []
        for folder, split in splits:
            dataset = InstanceDataset(
                split.train, train=config.augment, output_size=frame, max_instances=config.max_instances,
                seed=config.seed, ais_min_size=ais_min_size,
            )
            task = TASK_ENTITY if folder in config.entity_data else TASK_SALIENT
            parts.append(TaskDataset(dataset, task))
            val += split.val
        human = None if not parts else parts[0] if len(parts) == 1 else _EpochConcat(parts)
        if ais_min_size is None or not val:
            return human, None
        validation = InstanceDataset(
            val, train=False, output_size=frame, max_instances=1, seed=config.seed, ais_min_size=ais_min_size
        )
        return human, validation

    def _pseudo_dataset(self, frame: int) -> PseudoDataset | None:
        config = self.config
        if not config.pseudo:
            return None
        return PseudoDataset(
            config.pseudo,
            config.pseudo_images,
            config.max_pseudo_masks,
            config.min_pseudo_area,
            output_size=frame,
            seed=config.seed,
            min_uncertainty_area=config.min_uncertainty_area,
        )

    def _autocast(self):
        return autocast(self.device, self.config.precision)

    # -- main loop --

    def run(self) -> str:
        """Train; return ``"finished"``, ``"stopped"`` (max_steps) or ``"interrupted"`` (SIGINT)."""
        config = self.config
        splits = self._scan_data()  # every image and mask checked before the model loads
        if config.scheme == "ais":
            model = ckpt.load_ais_base(config.checkpoint, config.ais_features, seed=config.seed)
        else:
            model = ckpt.load_base_model(config.checkpoint, seed=config.seed)
        frame = model.config.image_size
        (human, self.val), pseudo = self._human_datasets(splits, frame), self._pseudo_dataset(frame)
        set_trainable(model, config.scheme, config.train_encoder)
        model.to(self.device).train()
        self.model = model
        optimizer = build_optimizer(model, config)
        scheduler = build_scheduler(optimizer, config)
        scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        generator = torch.Generator().manual_seed(config.seed * 1000 + self.rank)
        if config.scheme == "ais":
            self.step = AisStep(model, config)
        else:
            self.step = TrainStep(model, config, PromptSampler(config, generator))
        step_module: nn.Module = self.step
        if self.distributed:
            step_module = nn.parallel.DistributedDataParallel(
                step_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters,
            )
        self.parts = {
            "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "generator": generator
        }
        torch.manual_seed(config.seed + self.rank)
        np.random.seed(config.seed + self.rank)
        if self.resume:
            self._load_state()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._boundary = self._snapshot_rngs()
        with self._sigint_guard():
            try:
                return self._loop(step_module, human, pseudo)
            except (KeyboardInterrupt, Interrupted):
                self._save_state(self._boundary)
                if self.is_main:
                    print(f"interrupted: state saved in {self.run_dir}; continue with --resume")
                return "interrupted"

    def _loop(self, step_module, human, pseudo) -> str:
        config = self.config
        optimizer, scheduler = self.parts["optimizer"], self.parts["scheduler"]
        if self.position["global_step"] == 0:
            self._validate(self.position["epoch"])
        epochs_iter = range(self.position["epoch"], config.epochs)
        for epoch in epochs_iter:
            if human is not None:
                human.set_epoch(epoch)
                batches = epoch_batches(len(human), config.batch_size, config.seed, epoch, self.rank, self.world)
            else:
                per_epoch = math.ceil(len(pseudo) / self.world / config.pseudo_batch_size)
                batches = [[] for _ in range(per_epoch)]
            start = self.position["batch"]
            loader = self._loader(human, batches[start:], epoch)
            bar = tqdm(
                total=len(batches), initial=start, desc=f"epoch {epoch + 1}/{config.epochs}",
                disable=not self.progress, leave=False,
            )
            for index, batch in enumerate(loader, start=start):
                records = []
                if batch is not None:
                    records.append(("human", self._optimise(step_module, batch, pseudo=False)))
                # Counted over the run (not within an epoch, which may hold fewer batches than the ratio).
                if pseudo is not None and (self.position["global_step"] + 1) % config.pseudo_ratio == 0:
                    pseudo_batch = self._pseudo_batch(pseudo, self.position["pseudo_steps"])
                    records.append(("pseudo", self._optimise(step_module, pseudo_batch, pseudo=True)))
                    self.position["pseudo_steps"] += 1
                self.position.update(epoch=epoch, batch=index + 1)
                self.position["global_step"] += 1
                self._boundary = self._snapshot_rngs()
                self._log(epoch, records, optimizer)
                bar.update(1)
                bar.set_postfix(loss=f"{records[0][1]['loss']:.4f}" if records else "-")
                self.on_step_end(dict(self.position))
                if self._sigint:
                    raise Interrupted()
                if config.max_steps and self.position["global_step"] >= config.max_steps:
                    bar.close()
                    self._save_state(self._boundary)
                    return "stopped"
            bar.close()
            if scheduler is not None:
                scheduler.step()
            self.position.update(epoch=epoch + 1, batch=0)
            self._boundary = self._snapshot_rngs()
            self._validate(epoch)
            if self.is_main:
                ckpt.save_epoch(self.model, self.run_dir, epoch, ais=config.scheme == "ais")
            self._save_state(self._boundary)
        if self.is_main:
            ckpt.save_final(self.model, self.run_dir)
        return "finished"

    def validation_loss(self) -> dict[str, float] | None:
        """Mean loss over the validation batches (``ais`` scheme with a validation split), else None.

        As torch-em's validation: the model in eval mode (BatchNorm running statistics),
        no gradients, the un-augmented frames (:func:`training.augment.resize_and_pad`) in
        batches of ``batch_size``, the mean of the batch losses. Uses no RNG, so resumed
        runs stay bit for bit.
        """
        if self.val is None:
            return None
        batches = [list(range(i, min(i + self.config.batch_size, len(self.val))))
                   for i in range(0, len(self.val), self.config.batch_size)]
        totals: dict[str, float] = {}
        self.model.eval()
        try:
            with torch.no_grad(), self._autocast():
                for indexes in batches:
                    parts = self.step(collate_instances([self.val[i] for i in indexes]), False)
                    for key, value in parts.items():
                        totals[key] = totals.get(key, 0.0) + float(value) / len(batches)
        finally:
            self.model.train()
        return totals

    def _validate(self, epoch: int) -> None:
        """Log :meth:`validation_loss` (``kind`` ``val``) at the current step, if there is one."""
        values = self.validation_loss()
        if values is not None:
            self._log(epoch, [("val", values)], self.parts["optimizer"], always=True)

    def on_step_end(self, position: dict[str, int]) -> None:
        """Hook called after every step (no-op; tests and tools may override it)."""

    def _loader(self, human, batches, epoch):
        if human is None:
            return iter([None] * len(batches))
        generator = torch.Generator().manual_seed(self.config.seed + epoch)
        return DataLoader(
            human, batch_sampler=batches, collate_fn=collate,
            num_workers=self.config.workers, generator=generator,
        )

    def _pseudo_batch(self, pseudo: PseudoDataset, step: int) -> dict:
        per_cycle = math.ceil(math.ceil(len(pseudo) / self.world) / self.config.pseudo_batch_size)
        cycle, position = divmod(step, per_cycle)
        batches = epoch_batches(
            len(pseudo), self.config.pseudo_batch_size, self.config.seed + 7919, cycle, self.rank, self.world
        )
        return collate([pseudo[i] for i in batches[position]])

    def _optimise(self, step_module, batch, pseudo: bool) -> dict[str, float]:
        optimizer, scaler = self.parts["optimizer"], self.parts["scaler"]
        optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            parts = step_module(batch, pseudo)
        scaler.scale(parts["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        return {key: float(value.detach()) for key, value in parts.items()}

    # -- logging and state --

    def _log(self, epoch: int, records, optimizer, always: bool = False) -> None:
        if not self.is_main or (self.position["global_step"] % self.config.log_every and not always):
            return
        path = self.run_dir / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
            if new:
                writer.writeheader()
            for kind, values in records:
                row = {"time": f"{time.time():.3f}", "epoch": epoch, "step": self.position["global_step"],
                       "kind": kind, "lr": optimizer.param_groups[0]["lr"]}
                row.update({k: f"{v:.6g}" for k, v in values.items() if k in METRIC_FIELDS})
                writer.writerow(row)
        self._tensorboard(records)

    def _tensorboard(self, records) -> None:
        if not hasattr(self, "_writer"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._writer = None
            else:
                self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        if self._writer is not None:
            for kind, values in records:
                for key, value in values.items():
                    self._writer.add_scalar(f"{kind}/{key}", value, self.position["global_step"])

    def _snapshot_rngs(self) -> dict[str, Any]:
        return {"rng": ckpt.rng_states(), "generator": self.parts["generator"].get_state()}

    def _save_state(self, rngs: dict[str, Any]) -> None:
        if not self.is_main:
            return
        parts = self.parts
        trainable = {
            name: param.detach().cpu().clone()
            for name, param in self.model.named_parameters() if param.requires_grad
        }
        params = dict(self.model.named_parameters())
        buffers = {  # e.g. the AIS decoder's BatchNorm statistics, which training updates
            name: value.detach().cpu().clone()
            for name, value in self.model.state_dict().items() if name not in params
        }
        state = {
            "position": dict(self.position),
            "trainable": trainable,
            "buffers": buffers,
            "optimizer": parts["optimizer"].state_dict(),
            "scheduler": None if parts["scheduler"] is None else parts["scheduler"].state_dict(),
            "scaler": parts["scaler"].state_dict(),
            "world_size": self.world,
            **rngs,
        }
        ckpt.save_training_state(state, self.run_dir)

    def _load_state(self) -> None:
        state = ckpt.load_training_state(self.run_dir)
        if state["world_size"] != self.world:
            raise InvalidInputError(
                f"resume: the run used {state['world_size']} process(es), this one has {self.world}; "
                "the data order would differ"
            )
        params = dict(self.model.named_parameters())
        trainable = {name for name, param in params.items() if param.requires_grad}
        if set(state["trainable"]) != trainable:
            changed = sorted(set(state["trainable"]) ^ trainable)
            raise InvalidInputError(
                f"resume: {self.run_dir} was trained with another set of trainable parameters "
                f"(differing: {changed[:5]}); it was written by an earlier version whose scheme "
                f"{self.config.scheme!r} trained other tables; start a new run (another --output)"
            )
        with torch.no_grad():
            for name, value in state["trainable"].items():
                params[name].copy_(value)
        buffers = self.model.state_dict()
        for name, value in state.get("buffers", {}).items():
            if name in buffers:
                buffers[name].copy_(value)
        self.parts["optimizer"].load_state_dict(state["optimizer"])
        if self.parts["scheduler"] is not None and state["scheduler"] is not None:
            self.parts["scheduler"].load_state_dict(state["scheduler"])
        self.parts["scaler"].load_state_dict(state["scaler"])
        self.parts["generator"].set_state(state["generator"])
        ckpt.set_rng_states(state["rng"])
        self.position = dict(state["position"])

    @contextmanager
    def _sigint_guard(self):
        """Turn SIGINT into a flag checked between steps (main thread only)."""
        def handler(signum, frame):
            self._sigint = True

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class _EpochConcat(ConcatDataset):
    """ConcatDataset of :class:`TaskDataset` parts with ``set_epoch``."""

    def set_epoch(self, epoch: int) -> None:
        """Forward to every part."""
        for part in self.datasets:
            part.set_epoch(epoch)
