"""training.pseudolabel --exclude-masks: a partly annotated image keeps only the pseudo-masks that lie
mostly off its labelled objects (the fine-tune widget's "rest of annotated images is unknown")."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sum_core.automatic import MaskRecord
from sum_core.errors import InvalidInputError
from sum_core.imageio import write_image
from training import pseudo_store as store
from training.pseudolabel import EXCLUDE_OVERLAP, main, unannotated_masks
from test_training_pseudolabel import RELAXED, blob_image, tiny_model


def _record(pixels: np.ndarray) -> MaskRecord:
    logits = np.where(pixels, 4.0, -4.0).astype(np.float32)
    return MaskRecord(pixels, logits, 0.9, 0.9, (0.0, 0.0), (0, 0, 0, 0), int(pixels.sum()), np.zeros_like(logits))


def test_masks_mostly_on_labelled_objects_are_dropped_exactly():
    labels = np.zeros((10, 10), np.uint16)
    labels[:, :5] = 3  # the left half is a committed object
    masks = {}
    for name, (c0, c1) in {"inside": (0, 5), "half": (3, 7), "mostly_on": (2, 7), "off": (6, 10)}.items():
        pixels = np.zeros((10, 10), bool)
        pixels[:2, c0:c1] = True
        masks[name] = pixels
    # on-object fractions: inside 1, half 2/4 = 0.5 (kept: not more than EXCLUDE_OVERLAP), mostly_on 3/5, off 0
    assert EXCLUDE_OVERLAP == 0.5
    kept = unannotated_masks([_record(m) for m in masks.values()], labels)
    assert [next(n for n, m in masks.items() if np.array_equal(m, r.mask)) for r in kept] == ["half", "off"]
    with pytest.raises(InvalidInputError, match="shape"):
        unannotated_masks([_record(masks["off"])], labels[:5])


def test_cli_exclude_drops_the_masks_on_labelled_objects(tmp_path):
    torch.save(tiny_model().state_dict(), tmp_path / "model.pt")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    write_image(tmp_path / "images" / "a.png", blob_image(0))
    common = ["--model", tmp_path / "model.pt", "--images", tmp_path / "images"]
    assert main([str(a) for a in [*common, "--out", tmp_path / "all", *RELAXED]]) == 0
    labels = (store.read_probability(tmp_path / "all" / "a", 0) > 127).astype(np.uint8)  # mask 0 is committed
    write_image(tmp_path / "masks" / "a.png", labels)
    argv = [*common, "--out", tmp_path / "rest", "--exclude-masks", tmp_path / "masks", *RELAXED]
    assert main([str(a) for a in argv]) == 0

    def overlaps(root):
        folder = root / "a"
        return [np.count_nonzero((store.read_probability(folder, m.index) > 127) & (labels > 0))
                / max(np.count_nonzero(store.read_probability(folder, m.index) > 127), 1)
                for m in store.read_masks_csv(folder)]

    everything, rest = overlaps(tmp_path / "all"), overlaps(tmp_path / "rest")
    assert sorted(rest) == sorted(f for f in everything if f <= EXCLUDE_OVERLAP)  # the same masks, minus those
    assert len(rest) < len(everything)  # some mask lay on the committed blob
    manifest = json.loads((tmp_path / "rest" / store.MANIFEST_NAME).read_text())
    assert manifest["exclude"] == str((tmp_path / "masks").resolve())
    with pytest.raises(SystemExit, match="another exclude"):  # resuming with other settings is refused
        main([str(a) for a in [*common, "--out", tmp_path / "rest", *RELAXED]])
