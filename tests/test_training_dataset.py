"""Dataset scanning/validation (training/dataset.py) and augmentation (training/augment.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from sum_core.errors import InvalidInputError
from training import augment
from training.dataset import InstanceDataset, collate_instances, scan_dataset


def gradient(h: int, w: int, dtype=np.uint8, scale: int = 1) -> np.ndarray:
    return ((np.arange(h)[:, None] + np.arange(w)[None, :]) * scale).astype(dtype)


def labels_two(h: int, w: int, dtype=np.uint8) -> np.ndarray:
    lab = np.zeros((h, w), dtype=dtype)
    lab[2 : h // 2, 2 : w // 2] = 1
    lab[h // 2 + 1 : h - 2, w // 2 + 1 : w - 2] = 7
    return lab


def make_dataset(root: Path, n: int = 3) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        if i % 2 == 0:
            tifffile.imwrite(root / "images" / f"img{i}.tif", gradient(24, 32, np.uint16, 50))
            Image.fromarray(labels_two(24, 32)).save(root / "masks" / f"img{i}.png")
        else:
            rgb = np.stack([gradient(24, 32)] * 3, axis=-1)
            Image.fromarray(rgb).save(root / "images" / f"img{i}.png")
            tifffile.imwrite(root / "masks" / f"img{i}.tif", labels_two(24, 32, np.uint16))
    return root


def test_scan_dataset_split_is_seeded_and_complete(tmp_path):
    root = make_dataset(tmp_path / "data", 5)
    split = scan_dataset(root, val_fraction=0.2, seed=3)
    assert len(split.train) == 4 and len(split.val) == 1
    names = sorted(s.image.name for s in split.train + split.val)
    assert names == [f"img{i}.{'tif' if i % 2 == 0 else 'png'}" for i in range(5)]
    sample = split.train[0]
    assert sample.shape == (24, 32) and sample.num_instances == 2
    assert sample.mask.parent.name == "masks"
    assert scan_dataset(root, val_fraction=0.2, seed=3) == split
    assert split.unlabeled == []
    assert scan_dataset(root, val_fraction=0.0).val == []


def test_scan_dataset_with_val_root_and_unlabeled(tmp_path):
    root = make_dataset(tmp_path / "train", 2)
    (root / "unlabeled").mkdir()
    tifffile.imwrite(root / "unlabeled" / "u.tif", gradient(10, 12))
    val_root = make_dataset(tmp_path / "val", 1)
    split = scan_dataset(root, val_root=val_root)
    assert len(split.train) == 2
    assert [s.image.parent.parent for s in split.val] == [val_root]
    assert [p.name for p in split.unlabeled] == ["u.tif"]


def test_missing_mask_shape_mismatch_and_empty_mask_are_all_reported(tmp_path):
    root = make_dataset(tmp_path / "data", 3)
    (root / "masks" / "img0.png").unlink()
    tifffile.imwrite(root / "masks" / "img1.tif", np.ones((10, 10), np.uint8))
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(root / "masks" / "img2.png")
    with pytest.raises(InvalidInputError) as info:
        scan_dataset(root)
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "img0.tif: no mask named img0.*" in message
    assert "img1.tif: mask shape (10, 10) does not match its image shape (24, 32)" in message
    assert "img2.png: mask is empty" in message


def test_unreadable_file_is_named(tmp_path):
    root = make_dataset(tmp_path / "data", 1)
    (root / "images" / "img0.tif").write_bytes(b"this is not a tiff")
    with pytest.raises(InvalidInputError, match=r"img0\.tif.*could not read"):
        scan_dataset(root)


def test_invalid_mask_values_are_rejected(tmp_path):
    root = make_dataset(tmp_path / "data", 1)
    (root / "masks" / "img0.png").unlink()
    tifffile.imwrite(root / "masks" / "img0.tif", np.full((24, 32), 0.5, np.float32))
    with pytest.raises(InvalidInputError, match="img0.tif: mask has non-integer values"):
        scan_dataset(root)


def test_folder_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="root: folder .* does not exist"):
        scan_dataset(tmp_path / "nowhere")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    (tmp_path / "empty" / "images" / "notes.txt").write_text("not an image")
    with pytest.raises(InvalidInputError, match="images: folder .* has no image"):
        scan_dataset(tmp_path / "empty")
    (tmp_path / "nomasks" / "images").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="masks: folder .*masks does not exist"):
        scan_dataset(tmp_path / "nomasks")
    root = make_dataset(tmp_path / "dup", 1)
    Image.fromarray(gradient(24, 32)).save(root / "images" / "img0.png")
    with pytest.raises(InvalidInputError, match="share the stem 'img0'"):
        scan_dataset(root)
    with pytest.raises(InvalidInputError, match="val_fraction"):
        scan_dataset(make_dataset(tmp_path / "ok", 1), val_fraction=1.0)


def test_instance_dataset_items_and_max_instances(tmp_path):
    split = scan_dataset(make_dataset(tmp_path / "data", 2), val_fraction=0.0)
    ds = InstanceDataset(split.train, train=True, output_size=64, max_instances=1, seed=1)
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.uint8
    assert item["masks"].dtype == torch.bool and item["masks"].shape[1:] == (64, 64)
    assert item["masks"].shape[0] == 1 and item["masks"].any()
    assert item["instance_ids"].tolist()[0] in (1, 7)
    again = ds[0]
    assert torch.equal(item["image"], again["image"]) and torch.equal(item["masks"], again["masks"])
    batch = collate_instances([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 64, 64) and len(batch["masks"]) == 2


def test_instance_dataset_validation_view_is_resize_and_pad(tmp_path):
    split = scan_dataset(make_dataset(tmp_path / "data", 1), val_fraction=0.0)
    item = InstanceDataset(split.train, train=False, output_size=64)[0]
    # 24 x 32 -> 48 x 64, padded with 128 below
    assert (item["image"][:, 48:] == 128).all()
    assert item["instance_ids"].tolist() == [1, 7]
    masks = item["masks"]
    assert not masks[:, 48:].any()
    expected = augment.resize_and_pad(np.zeros((24, 32, 3), np.uint8), labels_two(24, 32), 64)[1]
    assert torch.equal(masks[1], torch.from_numpy(expected == 7))


def test_large_scale_jitter_shapes_padding_and_determinism():
    image = np.stack([gradient(40, 20)] * 3, axis=-1)
    labels = labels_two(40, 20, np.uint16)
    out_image, out_labels = augment.large_scale_jitter(
        image, labels, np.random.default_rng(0), output_size=32, scale_range=(0.5, 0.5)
    )
    # target side 16: 40 x 20 -> 16 x 8, padded to 32 x 32
    assert out_image.shape == (32, 32, 3) and out_labels.shape == (32, 32)
    assert out_labels.dtype == np.uint16
    assert (out_image[16:] == 128).all() and (out_image[:, 8:] == 128).all()
    assert not out_labels[16:].any() and not out_labels[:, 8:].any()
    assert set(np.unique(out_labels)) <= {0, 1, 7}
    # scale 2: 40 x 20 -> 64 x 32, cropped to 32 rows at a random offset
    a = augment.large_scale_jitter(image, labels, np.random.default_rng(5), 32, (2.0, 2.0))
    b = augment.large_scale_jitter(image, labels, np.random.default_rng(5), 32, (2.0, 2.0))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert (a[0] != 128).all()  # 32 columns fill the width, crop fills the height
    with pytest.raises(InvalidInputError, match="labels must be"):
        augment.large_scale_jitter(image, labels[:10], np.random.default_rng(0))


def test_hflip_and_augment_flip_probability():
    image = np.stack([gradient(4, 6)] * 3, axis=-1)
    labels = labels_two(4, 6)
    flipped, flipped_labels = augment.random_hflip(image, labels, np.random.default_rng(0), p=1.0)
    assert np.array_equal(flipped, image[:, ::-1]) and np.array_equal(flipped_labels, labels[:, ::-1])
    same, _ = augment.random_hflip(image, labels, np.random.default_rng(0), p=0.0)
    assert same is image
    out_image, out_labels = augment.augment(image, labels, np.random.default_rng(1), output_size=16)
    assert out_image.shape == (16, 16, 3) and out_labels.shape == (16, 16)
