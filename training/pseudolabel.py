"""SUM pseudo-labels: automatic mask generation over a folder of unlabeled images.

::

    python -m training.pseudolabel --model sam_hq_vit_b --images DATASET/unlabeled --out PSEUDO

Every image gets SAM's automatic masks (:func:`sum_core.automatic.generate_masks`)
from a ``points_per_side`` grid of clicks, kept when the predicted IoU is >
``pred_iou_thresh``, the stability score >= ``stability_thresh`` and the area <=
``max_area_fraction`` of the image (SUM: 0.88, 0.95, 0.95; :data:`PSEUDO_OPTIONS`,
every :class:`~sum_core.auto_options.AutoOptions` field is a flag). The result is the
pseudo-label folder of ``docs/training-data.md`` (see :mod:`training.pseudo_store`),
with one full-size probability map per mask. The run is resumable: images whose
folder is complete are skipped, and temporary folders of an interrupted run are removed.

``--exclude-masks DATASET/masks`` pseudo-labels partly annotated images: an image with a
label image of the same stem there keeps only the masks lying mostly off its labelled
objects (:func:`unannotated_masks`), so the human labels train those objects and the
pseudo-labels the unannotated rest (the napari fine-tune widget's "rest of annotated
images is unknown").

Every image, whatever its size, is encoded as one window resized to the encoder
(:func:`sum_core.encoding.encode_image`), as SAM's automatic mask generator does and
as SUM made its pseudo-labels: training sees pseudo-labelled images resized to that
same frame (:class:`training.trainer.PseudoDataset`), and the refiner
(:mod:`training.refine`) encodes them the same way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

import sum_core
from sum_core.auto_options import AutoOptions
from sum_core.automatic import MaskRecord, generate_masks
from sum_core.cli.arguments import add_auto_option_arguments, auto_options_from_args
from sum_core.device import resolve_device
from sum_core.encoding import encode_image, weights_hash
from sum_core.errors import InvalidInputError, SumError
from sum_core.image import prepare_image
from sum_core.imageio import read_image
from sum_core.loading import load_model
from sum_core.modeling import SamModel

from . import pseudo_store as store
from .dataset import IMAGE_SUFFIXES, image_files

#: Largest fraction of a pseudo-mask's pixels on labelled objects (``exclude``) for it to be kept.
EXCLUDE_OVERLAP = 0.5
#: Version of the pseudo-label folder layout (2: the weights identity is ``sum_core.encoding.weights_hash``).
FORMAT_VERSION = 2


#: SUM's pseudo-label settings: SAM's automatic-mask-generator defaults with SUM's area filter.
PSEUDO_OPTIONS = AutoOptions(max_area_fraction=0.95)


def resolve_image_dir(images: Path) -> Path:
    """The folder to label: ``images`` itself, or ``images/unlabeled`` for a dataset root."""
    images = Path(images)
    if not images.is_dir():
        raise InvalidInputError(f"images: folder {images} does not exist")
    if (images / "unlabeled").is_dir() and (images / "images").is_dir():
        return images / "unlabeled"
    return images


def list_images(image_dir: Path) -> dict[str, Path]:
    """Images of ``image_dir`` by stem; error if there is none."""
    found = image_files(image_dir)
    if not found:
        raise InvalidInputError(
            f"images: folder {image_dir} has no image ({', '.join(IMAGE_SUFFIXES)})"
        )
    return found


def _read(path: Path):
    try:
        return prepare_image(read_image(path))
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"images: {path} cannot be used ({exc}); fix or remove it and run again "
            "(finished images are kept and skipped)"
        ) from exc


def check_format(root: Path, manifest: dict) -> None:
    """Refuse a pseudo-label folder written in another layout version."""
    if manifest.get("format") != FORMAT_VERSION:
        raise InvalidInputError(
            f"pseudo: {root} was written by another version of training.pseudolabel (format "
            f"{manifest.get('format')}, this one writes {FORMAT_VERSION}); label the images again into a new folder"
        )


def _check_resume(out: Path, manifest: dict) -> dict:
    """Merge with an existing manifest; refuse a different model or different filters."""
    if not (out / store.MANIFEST_NAME).is_file():
        return manifest
    old = store.read_manifest(out)
    check_format(out, old)
    for key in ("weights_hash", "filters", "exclude"):
        if old.get(key) != manifest[key]:
            raise InvalidInputError(
                f"out: {out} holds pseudo-labels made with another {key} ({old.get(key)} instead of "
                f"{manifest[key]}); use a new --out folder or the same settings"
            )
    if old.get("image_dir") != manifest["image_dir"]:
        raise InvalidInputError(
            f"out: {out} holds pseudo-labels of images in {old.get('image_dir')}, not "
            f"{manifest['image_dir']}; use a new --out folder"
        )
    manifest["images"] = old.get("images", {}) | manifest["images"]
    return manifest


def pseudolabel_folder(
    model: SamModel,
    images: Path,
    out: Path,
    options: AutoOptions = PSEUDO_OPTIONS,
    model_name: str = "",
    device=None,
    progress: bool = True,
    exclude: Path | None = None,
) -> dict[str, int]:
    """Write pseudo-labels of every image in ``images`` to ``out``.

    Parameters
    ----------
    model : SamModel
        The model whose automatic masks become pseudo-labels.
    images : Path
        Folder of images, or a dataset root (its ``unlabeled/`` folder is used).
    out : Path
        Pseudo-label folder (created if needed).
    options : AutoOptions
        Automatic mask generation settings (recorded in the manifest as ``filters``).
    model_name : str
        Registry name or path of ``model``, recorded in the manifest.
    device : str or torch.device, optional
        Where to run the model.
    progress : bool
        Show a tqdm progress bar.
    exclude : Path, optional
        Folder of label images (a dataset's ``masks/``): an image whose stem has one there is
        partly annotated, and its masks that lie mostly (more than :data:`EXCLUDE_OVERLAP` of
        their pixels) on labelled objects are dropped: the human labels train those objects,
        the pseudo-labels the rest of the image. Recorded in the manifest.

    Returns
    -------
    dict
        ``{"stem": number of masks}`` of the images labelled by this call
        (skipped images are not listed).

    Raises
    ------
    InvalidInputError
        Missing or empty image folder, an unreadable image (named), or an
        ``out`` folder made with another model, other filters or other images.
    """
    if not isinstance(options, AutoOptions):
        raise InvalidInputError(f"options must be an AutoOptions, got {type(options).__name__}")
    image_dir = resolve_image_dir(images)
    found = list_images(image_dir)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"out: {out} exists and is not a folder")
    manifest = {
        "format": FORMAT_VERSION,
        "model": model_name,
        "model_type": model.config.model_type,
        "hq": model.config.hq,
        "weights_hash": weights_hash(model),
        "filters": options.to_dict(),
        "package_version": sum_core.__version__,
        "image_dir": str(image_dir.resolve()),
        "images": {stem: path.name for stem, path in found.items()},
        "exclude": None if exclude is None else str(Path(exclude).resolve()),
    }
    if exclude is not None and not Path(exclude).is_dir():
        raise InvalidInputError(f"exclude: folder {exclude} does not exist")
    manifest = _check_resume(out, manifest)
    out.mkdir(parents=True, exist_ok=True)
    store.write_manifest(out, manifest)
    store.remove_partial_folders(out)
    todo = {stem: path for stem, path in found.items() if not store.is_complete(out, stem)}
    labelled = image_files(Path(exclude)) if exclude is not None else {}
    model = model.to(resolve_device(device)).eval()
    counts: dict[str, int] = {}
    for stem, path in tqdm(todo.items(), desc="pseudo-labels", unit="image", disable=not progress):
        embedding = encode_image(model, _read(path))
        records = generate_masks(model, embedding, options)
        if stem in labelled:
            records = unannotated_masks(records, read_image(labelled[stem]), labelled[stem])
        rows = [
            store.PseudoMask(
                index=i,
                score=float(r.score),
                stability=float(r.stability),
                area=int(r.area),
                point=(float(r.point[0]), float(r.point[1])),
                box=tuple(float(v) for v in r.box),
            )
            for i, r in enumerate(records)
        ]
        store.write_image_folder(out, stem, rows, [store.logits_to_uint8(r.logits) for r in records])
        counts[stem] = len(rows)
    return counts


def unannotated_masks(
    records: list[MaskRecord], labels: np.ndarray, source: Path | str = "labels"
) -> list[MaskRecord]:
    """The masks of ``records`` that lie mostly off the labelled objects of ``labels``.

    A mask is dropped when more than :data:`EXCLUDE_OVERLAP` of its pixels (``logits > 0``,
    the pixels its pseudo-label trains) are non-zero in ``labels``.

    Raises
    ------
    InvalidInputError
        ``labels`` (read from ``source``) does not have the image's shape.
    """
    labels = labels[..., 0] if labels.ndim == 3 and labels.shape[-1] == 1 else labels
    kept = []
    for record in records:
        if labels.shape != record.logits.shape:
            raise InvalidInputError(
                f"exclude: {source} has shape {labels.shape}, its image {record.logits.shape}"
            )
        pixels = record.logits > 0
        on_objects = np.count_nonzero(pixels & (labels != 0))
        if on_objects <= EXCLUDE_OVERLAP * np.count_nonzero(pixels):
            kept.append(record)
    return kept


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m training.pseudolabel``: one flag per
    :class:`~sum_core.auto_options.AutoOptions` field, defaults :data:`PSEUDO_OPTIONS`."""
    parser = argparse.ArgumentParser(
        prog="python -m training.pseudolabel",
        description="Write SUM pseudo-labels (SAM automatic masks) for a folder of unlabeled images.",
    )
    parser.add_argument("--model", required=True, help="registry name or checkpoint path")
    parser.add_argument(
        "--images", required=True, type=Path, help="image folder, or a dataset root (uses its unlabeled/)"
    )
    parser.add_argument("--out", required=True, type=Path, help="pseudo-label folder to write")
    parser.add_argument(
        "--exclude-masks", type=Path, default=None,
        help="folder of label images of partly annotated images (same stems): masks lying mostly on "
        "their labelled objects are dropped",
    )
    add_auto_option_arguments(parser, defaults=PSEUDO_OPTIONS)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; errors exit with a one-line message."""
    args = build_parser().parse_args(argv)
    try:
        options = AutoOptions.from_dict(auto_options_from_args(args))
        list_images(resolve_image_dir(args.images))
        model = load_model(args.model, device=args.device)
        counts = pseudolabel_folder(
            model, args.images, args.out, options, str(args.model), args.device, not args.no_progress,
            args.exclude_masks,
        )
    except SumError as exc:
        sys.exit(f"training.pseudolabel: error: {exc}")
    print(f"labelled {len(counts)} image(s), {sum(counts.values())} mask(s); output in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
