"""Fine-tuning datasets: folder layout, up-front validation, torch Dataset.

A dataset folder holds::

    images/      TIFF, PNG, JPEG or zarr; 2D gray or RGB(A); any dtype
    masks/       one instance label image per image, same stem (a.tif <-> a.png)
    unlabeled/   optional images without masks (for pseudo-labelling)

In a label image each distinct non-zero value is one instance and 0 is
background (a binary 0/255 mask is one instance).  :func:`scan_dataset`
reads and checks *every* file before training starts and reports all
problems at once; :class:`InstanceDataset` then serves augmented
1024 x 1024 images with per-instance binary masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sum_core.errors import InvalidInputError
from sum_core.image import Normalization, prepare_image
from sum_core.imageio import read_image

from .ais_targets import ais_targets
from .augment import OUTPUT_SIZE, augment, resize_and_pad

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".zarr")
MAX_REPORTED_PROBLEMS = 20
AUGMENT_RETRIES = 10


@dataclass(frozen=True)
class Sample:
    """One validated image / label-image pair."""

    image: Path
    mask: Path
    shape: tuple[int, int]
    num_instances: int


@dataclass(frozen=True)
class DatasetSplit:
    """Result of :func:`scan_dataset`."""

    train: list[Sample]
    val: list[Sample]
    unlabeled: list[Path]


def _stem(path: Path) -> str:
    name = path.name[: -len(path.suffix)] if path.suffix else path.name
    return name[:-4] if name.lower().endswith(".ome") else name


def image_files(folder: Path) -> dict[str, Path]:
    """Supported image files / zarr stores in ``folder`` by stem (hidden files skipped)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.is_dir() and path.suffix.lower() != ".zarr":
            continue
        stem = _stem(path)
        if stem in found:
            raise InvalidInputError(
                f"{folder}: two files share the stem {stem!r} ({found[stem].name} and {path.name}); "
                "rename one so that each image matches exactly one mask"
            )
        found[stem] = path
    return found


def _require_folder(path: Path, what: str) -> None:
    if not path.is_dir():
        raise InvalidInputError(f"{what}: folder {path} does not exist")


def _check_image(path: Path, normalization: Normalization | None) -> tuple[int, int]:
    """Read and convert one image; return its (H, W). Errors name the file."""
    try:
        image = prepare_image(read_image(path), normalization)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc}") from exc
    return image.shape[:2]


def _check_labels(path: Path, shape: tuple[int, int]) -> int:
    """Read one label image, check it against the image shape; return its instance count."""
    labels = read_image(path)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2:
        raise InvalidInputError(
            f"{path}: a mask must be a 2D label image, got shape {labels.shape}"
        )
    if labels.shape != tuple(shape):
        raise InvalidInputError(
            f"{path}: mask shape {labels.shape} does not match its image shape {tuple(shape)}"
        )
    kind = labels.dtype.kind
    if kind == "f" and not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
        raise InvalidInputError(f"{path}: mask has non-integer values; expected instance labels")
    if kind not in "biuf":
        raise InvalidInputError(f"{path}: mask dtype {labels.dtype} is not a label image")
    if kind != "b" and (labels < 0).any():
        raise InvalidInputError(f"{path}: mask has negative labels")
    ids = np.unique(labels)
    ids = ids[ids != 0]
    if ids.size == 0:
        raise InvalidInputError(f"{path}: mask is empty (no non-zero label)")
    return int(ids.size)


def _scan_labelled(root: Path, normalization: Normalization | None) -> list[Sample]:
    images_dir, masks_dir = root / "images", root / "masks"
    _require_folder(images_dir, "images")
    _require_folder(masks_dir, "masks")
    images = image_files(images_dir)
    if not images:
        raise InvalidInputError(
            f"images: folder {images_dir} has no image ({', '.join(IMAGE_SUFFIXES)})"
        )
    masks = image_files(masks_dir)
    samples: list[Sample] = []
    problems: list[str] = []
    for stem, image_path in images.items():
        mask_path = masks.get(stem)
        if mask_path is None:
            problems.append(f"{image_path}: no mask named {stem}.* in {masks_dir}")
            continue
        try:
            shape = _check_image(image_path, normalization)
            count = _check_labels(mask_path, shape)
        except InvalidInputError as exc:
            problems.append(str(exc))
            continue
        samples.append(Sample(image_path, mask_path, shape, count))
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = len(problems) - len(shown)
        tail = f"\n  ... and {more} more" if more else ""
        raise InvalidInputError(
            f"dataset {root}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + tail
        )
    return samples


def scan_dataset(
    root,
    val_fraction: float = 0.1,
    val_root=None,
    seed: int = 0,
    normalization: Normalization | None = None,
) -> DatasetSplit:
    """Find, read and validate a dataset folder, then split it.

    Every image is read and converted with
    :func:`sum_core.image.prepare_image`, every mask is read and checked
    (2D, same H x W as its image, integer labels >= 0, at least one non-zero
    label), so that no problem appears mid-training.

    Parameters
    ----------
    root : path-like
        Folder with ``images/``, ``masks/`` and optionally ``unlabeled/``.
    val_fraction : float
        Fraction of ``root``'s pairs held out for validation (at least one
        pair when the fraction is positive and there are two or more pairs;
        at least one pair is always kept for training).  Ignored with
        ``val_root``.
    val_root : path-like, optional
        Separate validation folder with ``images/`` and ``masks/``.
    seed : int
        Seed of the random split.
    normalization : Normalization, optional
        Passed to ``prepare_image`` (for non-uint8 images).

    Returns
    -------
    DatasetSplit

    Raises
    ------
    InvalidInputError
        Missing ``images/`` or ``masks/`` folder, an images folder without
        images, two files with one stem, or (all listed in one message, each
        naming its file) an image without a mask, an unreadable or invalid
        image, a mask of the wrong shape or dtype, or an empty mask.
    """
    root = Path(root)
    _require_folder(root, "root")
    if not 0.0 <= val_fraction < 1.0:
        raise InvalidInputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    samples = _scan_labelled(root, normalization)
    if val_root is not None:
        val_root = Path(val_root)
        _require_folder(val_root, "val_root")
        train, val = samples, _scan_labelled(val_root, normalization)
    else:
        order = np.random.default_rng(seed).permutation(len(samples))
        n_val = round(val_fraction * len(samples))
        if val_fraction > 0 and len(samples) > 1:
            n_val = min(max(n_val, 1), len(samples) - 1)
        else:
            n_val = 0
        val = [samples[i] for i in sorted(order[:n_val])]
        train = [samples[i] for i in sorted(order[n_val:])]
    unlabeled: list[Path] = []
    unlabeled_dir = root / "unlabeled"
    if unlabeled_dir.is_dir():
        unlabeled = list(image_files(unlabeled_dir).values())
        for path in unlabeled:
            _check_image(path, normalization)
    return DatasetSplit(train=train, val=val, unlabeled=unlabeled)


class InstanceDataset(Dataset):
    """Torch dataset of images with per-instance binary masks.

    Each item is a dict with

    * ``"image"``: ``3 x S x S`` uint8 tensor (RGB, padded with 128),
    * ``"masks"``: ``N x S x S`` bool tensor, one mask per instance
      (``N <= max_instances``; instances are sampled without replacement when
      there are more),
    * ``"instance_ids"``: ``(N,)`` int64 label values of those instances,
    * ``"path"``: the image path as a string,
    * ``"ais_targets"`` (only with ``ais_min_size``): ``3 x S x S`` float32, the AIS
      decoder's targets of *all* instances of the frame's label image
      (:func:`training.ais_targets.ais_targets`).

    With ``train=True`` the HQ-SAM augmentation (:func:`training.augment.augment`)
    is applied; if a crop loses every instance it is redrawn up to 10 times,
    then the un-jittered :func:`training.augment.resize_and_pad` view is used
    (``N`` can only be 0 if an instance is too small to survive that
    down-scaling).  With ``train=False`` the image is only resized and padded.
    Randomness comes from ``numpy.random.default_rng((seed, epoch, index))``,
    so items are reproducible and independent of worker processes; call
    :meth:`set_epoch` to get new draws each epoch.
    """

    def __init__(
        self,
        samples: list[Sample],
        train: bool = True,
        output_size: int = OUTPUT_SIZE,
        max_instances: int | None = None,
        normalization: Normalization | None = None,
        seed: int = 0,
        ais_min_size: int | None = None,
    ) -> None:
        if max_instances is not None and max_instances < 1:
            raise InvalidInputError(f"max_instances must be >= 1 or None, got {max_instances}")
        self.samples = list(samples)
        self.train = train
        self.output_size = output_size
        self.max_instances = max_instances
        self.normalization = normalization
        self.seed = seed
        self.ais_min_size = ais_min_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of an epoch (augmentation and instance sampling)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _transform(
        self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.train:
            for _ in range(AUGMENT_RETRIES):
                out_image, out_labels = augment(image, labels, rng, self.output_size)
                if out_labels.any():
                    return out_image, out_labels
        return resize_and_pad(image, labels, self.output_size)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        image = prepare_image(read_image(sample.image), self.normalization)
        labels = read_image(sample.mask)
        if labels.ndim == 3:
            labels = labels[..., 0]
        if labels.dtype.kind == "f":
            labels = labels.astype(np.int64)
        image, labels = self._transform(image, labels, rng)
        ids = np.unique(labels)
        ids = ids[ids != 0]
        if self.max_instances is not None and ids.size > self.max_instances:
            ids = np.sort(rng.choice(ids, self.max_instances, replace=False))
        masks = labels[None] == ids[:, None, None]
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "masks": torch.from_numpy(masks),
            "instance_ids": torch.from_numpy(ids.astype(np.int64)),
            "path": str(sample.image),
        }
        if self.ais_min_size is not None:
            item["ais_targets"] = torch.from_numpy(ais_targets(labels, self.ais_min_size))
        return item


def collate_instances(batch: list[dict]) -> dict:
    """Batch items of :class:`InstanceDataset`: stack images, keep masks as lists.

    Returns a dict with ``"image"`` (``B x 3 x S x S`` uint8), ``"masks"`` and
    ``"instance_ids"`` (lists of length B, since N varies), ``"path"`` and, when the
    items have them, ``"ais_targets"`` (``B x 3 x S x S`` float32).
    """
    out = {
        "image": torch.stack([item["image"] for item in batch]),
        "masks": [item["masks"] for item in batch],
        "instance_ids": [item["instance_ids"] for item in batch],
        "path": [item["path"] for item in batch],
    }
    if "ais_targets" in batch[0]:
        out["ais_targets"] = torch.stack([item["ais_targets"] for item in batch])
    return out
