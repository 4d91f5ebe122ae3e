"""HQ-SAM training augmentation: random horizontal flip + large-scale jitter.

Images are ``H x W x 3`` uint8 (from :func:`sum_core.image.prepare_image`);
labels are ``H x W`` instance label images of any integer or bool dtype and
keep their dtype and values (nearest-neighbour resampling).  Every random
choice comes from the ``numpy.random.Generator`` passed in, so a seeded
generator reproduces the same output.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sum_core.errors import InvalidInputError

OUTPUT_SIZE = 1024
SCALE_RANGE = (0.1, 2.0)
IMAGE_PAD_VALUE = 128
LABEL_PAD_VALUE = 0


def _check_pair(image: np.ndarray, labels: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidInputError(
            f"image must be H x W x 3 uint8, got shape {image.shape} and dtype {image.dtype}"
        )
    if labels.shape != image.shape[:2]:
        raise InvalidInputError(
            f"labels must be H x W = {image.shape[:2]} like the image, got shape {labels.shape}"
        )


def hflip(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image and labels left-right (copies)."""
    _check_pair(image, labels)
    return image[:, ::-1].copy(), labels[:, ::-1].copy()


def random_hflip(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, p: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Apply :func:`hflip` with probability ``p`` (one ``rng.random()`` draw)."""
    _check_pair(image, labels)
    return hflip(image, labels) if rng.random() < p else (image, labels)


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if size == image.shape[:2]:
        return image
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    out = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest neighbour at pixel centres: source ``floor((i + 0.5) * in / out)``."""
    (h, w), (new_h, new_w) = labels.shape, size
    rows = np.minimum(((np.arange(new_h) + 0.5) * h / new_h).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(new_w) + 0.5) * w / new_w).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def _scaled_size(shape: tuple[int, int], scale: float, output_size: int) -> tuple[int, int]:
    """Size whose longer side is ``round(scale * output_size)``, aspect ratio kept."""
    h, w = shape
    target = round(scale * output_size)
    factor = min(target / h, target / w)
    return max(1, round(h * factor)), max(1, round(w * factor))


def _scale_crop_pad(
    image: np.ndarray,
    labels: np.ndarray,
    size: tuple[int, int],
    offsets: tuple[int, int],
    output_size: int,
    pad_value: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size``, crop an ``output_size`` window at ``offsets`` (top, left), pad bottom/right."""
    image = _resize_image(image, size)
    labels = _resize_labels(labels, size)
    crop_h, crop_w = min(output_size, size[0]), min(output_size, size[1])
    top, left = offsets
    out_image = np.full((output_size, output_size, 3), pad_value, dtype=np.uint8)
    out_labels = np.full((output_size, output_size), LABEL_PAD_VALUE, dtype=labels.dtype)
    out_image[:crop_h, :crop_w] = image[top : top + crop_h, left : left + crop_w]
    out_labels[:crop_h, :crop_w] = labels[top : top + crop_h, left : left + crop_w]
    return out_image, out_labels


def large_scale_jitter(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    output_size: int = OUTPUT_SIZE,
    scale_range: tuple[float, float] = SCALE_RANGE,
    pad_value: int = IMAGE_PAD_VALUE,
) -> tuple[np.ndarray, np.ndarray]:
    """HQ-SAM's large-scale jitter: rescale, random crop, pad to a square.

    A scale ``s ~ U(scale_range)`` sets the target side ``round(s *
    output_size)``; the image is resized (bilinear; labels nearest) so that its
    longer side has that length, keeping the aspect ratio.  If it is larger
    than ``output_size`` a random ``output_size`` window is cropped: per axis an
    integer offset drawn uniformly from ``[0, margin]`` inclusive (``margin`` =
    scaled size - crop size), as HQ-SAM's ``randint(0, margin + 1)``; the result
    is padded at the bottom/right to ``output_size x output_size`` with
    ``pad_value`` (image) and 0 (labels).

    Returns
    -------
    tuple of numpy.ndarray
        ``output_size x output_size x 3`` uint8 image and
        ``output_size x output_size`` labels of the input dtype.
    """
    _check_pair(image, labels)
    low, high = scale_range
    if not 0 < low <= high:
        raise InvalidInputError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    size = _scaled_size(labels.shape, rng.uniform(low, high), output_size)
    offsets = tuple(int(rng.integers(0, max(side - output_size, 0) + 1)) for side in size)
    return _scale_crop_pad(image, labels, size, offsets, output_size, pad_value)


def resize_and_pad(
    image: np.ndarray,
    labels: np.ndarray,
    output_size: int = OUTPUT_SIZE,
    pad_value: int = IMAGE_PAD_VALUE,
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic counterpart of :func:`large_scale_jitter` (scale 1, no crop).

    The longer side becomes ``output_size``; the rest is padded bottom/right.
    Used for validation samples.
    """
    _check_pair(image, labels)
    size = _scaled_size(labels.shape, 1.0, output_size)
    return _scale_crop_pad(image, labels, size, (0, 0), output_size, pad_value)


def augment(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    output_size: int = OUTPUT_SIZE,
    scale_range: tuple[float, float] = SCALE_RANGE,
    flip_probability: float = 0.5,
    pad_value: int = IMAGE_PAD_VALUE,
) -> tuple[np.ndarray, np.ndarray]:
    """HQ-SAM's training transform: :func:`random_hflip` then :func:`large_scale_jitter`."""
    image, labels = random_hflip(image, labels, rng, flip_probability)
    return large_scale_jitter(image, labels, rng, output_size, scale_range, pad_value)
