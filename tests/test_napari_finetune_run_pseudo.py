"""The fine-tune widget's pseudo-label stages in the run folder (Qt-free): the commands asked for, progress,
and what a new start clears (only what training.pseudolabel / training.refine wrote)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_sum_hq._finetune_run import (
    RunSettings,
    clear_pseudo,
    finetune_command,
    pseudo_mask_count,
    pseudo_progress,
    pseudolabel_command,
    refine_command,
    run_state,
)
from sum_core.errors import InvalidInputError


def _settings(tmp_path: Path, **kwargs) -> RunSettings:
    return RunSettings(checkpoint="base.pth", output=tmp_path / "run", scheme="hq", epochs=2, device="cpu", **kwargs)


def test_commands_of_the_pseudo_stages(tmp_path):
    plain = _settings(tmp_path, pseudo_unannotated=True, pseudo_extra=("--points-per-side", "8"))
    rest = _settings(tmp_path, pseudo_annotated=True, refine_extra=("--epochs", "3"))
    run = tmp_path / "run"
    assert plain.pseudo and rest.pseudo and not _settings(tmp_path).pseudo
    assert pseudolabel_command(plain)[2:] == [
        "training.pseudolabel", "--model", "base.pth", "--images", str(run / "annotations" / "unlabeled"),
        "--out", str(run / "pseudo"), "--no-progress", "--device", "cpu", "--points-per-side", "8",
    ]
    assert pseudolabel_command(rest)[-2:] == ["--exclude-masks", str(run / "annotations" / "masks")]
    assert refine_command(rest)[2:] == [
        "training.refine", "--model", "base.pth", "--data", str(run / "annotations"), "--pseudo", str(run / "pseudo"),
        "--out", str(run / "refiner"), "--no-progress", "--device", "cpu", "--epochs", "3",
    ]
    assert "--pseudo" not in finetune_command(plain, resume=False)
    (run / "pseudo").mkdir(parents=True)
    (run / "pseudo" / "manifest.json").write_text(json.dumps({"image_dir": str((run / "annotations" / "unlabeled").resolve())}))
    command = finetune_command(plain, resume=False)
    assert command[command.index("--pseudo") + 1] == str(run / "pseudo")


def test_progress_mask_count_and_clearing(tmp_path):
    run = tmp_path / "run"
    (run / "annotations").mkdir(parents=True)
    (run / "annotations" / "annotations.json").write_text(json.dumps({"unlabeled": ["a", "b", "c"]}))
    for stem, rows in (("a", 3), ("b", 0)):
        (run / "pseudo" / stem).mkdir(parents=True)
        (run / "pseudo" / stem / "masks.csv").write_text("index,score\n" + "0,1\n" * rows)
    (run / "pseudo" / ".c.partial-1").mkdir()  # being written
    (run / "pseudo" / "manifest.json").write_text(json.dumps({"image_dir": str((run / "annotations" / "unlabeled").resolve())}))
    (run / "refiner").mkdir()
    (run / "refiner" / "refiner.pt").write_bytes(b"")
    assert pseudo_progress(run) == (2, 3)
    assert pseudo_mask_count(run) == 3
    assert run_state(run) == "new"  # an earlier start's folders: Run starts afresh here

    (run / "refiner" / "thesis.docx").write_text("x")
    with pytest.raises(InvalidInputError, match="another program"):
        clear_pseudo(run)
    assert (run / "pseudo" / "a" / "masks.csv").is_file()  # nothing removed
    (run / "refiner" / "thesis.docx").unlink()
    manifest = (run / "pseudo" / "manifest.json").read_text()
    (run / "pseudo" / "manifest.json").write_text(json.dumps({"image_dir": "/data/my_images"}))
    with pytest.raises(InvalidInputError, match="pseudo-labels of other images"):  # a user's own pseudolabel run
        clear_pseudo(run)
    assert (run / "pseudo" / "a" / "masks.csv").is_file()  # nothing removed
    (run / "pseudo" / "manifest.json").write_text(manifest)
    clear_pseudo(run)
    assert sorted(p.name for p in run.iterdir()) == ["annotations"]
    (run / "pseudo").mkdir()
    with pytest.raises(InvalidInputError, match="not a pseudo-label folder"):
        clear_pseudo(run)


def test_run_folder_names_are_those_of_training():
    from napari_sum_hq import _finetune_run as run
    from training import from_annotations, pseudo_store, refine

    assert run.UNLABELED == from_annotations.UNLABELED and run.MARKER_FILE == from_annotations.MARKER
    assert run.PSEUDO_MANIFEST == pseudo_store.MANIFEST_NAME and run.PSEUDO_DONE_FILE == pseudo_store.MASKS_CSV
    assert run.REFINER_FILES == {refine.REFINER_FILE, refine.SETTINGS_FILE}
