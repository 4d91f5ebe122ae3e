"""training.finetune: config round trip, schemes, loss decrease, bit-exact resume, saved checkpoints."""

from __future__ import annotations

import csv
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from sum_core.checkpoint import load_checkpoint, load_state_dict_file
from sum_core.errors import CheckpointError, InvalidInputError
from sum_core.modeling import build_from_config, preset_config
from sum_core.predictor import Predictor
from training import finetune, trainer
from training.checkpointing import load_base_model
from training.config import FinetuneConfig, load_config
from training.schemes import set_trainable


def tiny_config(sum_tokens: bool = False):
    """A one-block ViT with a 32-wide decoder: 1024 input, fast enough for CPU training tests."""
    return preset_config(
        "vit_b",
        model_type="custom",
        embed_dim=16,
        depth=1,
        num_heads=1,
        global_attn_indexes=(0,),
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        iou_head_hidden_dim=32,
        mask_in_chans=4,
        hq=True,
        sum_tokens=sum_tokens,
    )


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    """Save a random tiny HQ model (no SUM tables) with torch.save."""
    torch.manual_seed(seed)
    torch.save(build_from_config(tiny_config()).state_dict(), path)
    return path


# The walk-through example builds the same synthetic dataset: one generator serves both.
_WALKTHROUGH = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "finetune_walkthrough.py"))


def make_dataset(root: Path, count: int = 8, seed: int = 0) -> Path:
    """``count`` 64 x 64 gray images with 1-3 bright discs, instance label TIFFs."""
    return _WALKTHROUGH["make_dataset"](root, count, seed)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    return {
        "base": save_tiny_model(root / "base.pth"),
        "data": make_dataset(root / "data", count=2),
        "root": root,
    }


def _args(ws, output: Path, *extra: str) -> list[str]:
    return [
        "--checkpoint", str(ws["base"]), "--data", str(ws["data"]), "--output", str(output),
        "--batch-size", "1", "--max-instances", "1", "--num-points", "2", "--epochs", "1",
        "--no-augment", "--no-progress", *extra,
    ]


def _losses(run: Path) -> list[float]:
    with (run / "metrics.csv").open() as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def test_base_without_sum_tables_gets_zero_tables_and_strict_subset(workspace):
    model = load_base_model(workspace["base"])
    base = load_state_dict_file(workspace["base"])
    state = model.state_dict()
    new = sorted(set(state) - set(base))
    assert new and all(k.startswith(("mask_decoder.task_prompt", "mask_decoder.hf_type")) for k in new)
    assert len(new) == 8
    assert all(torch.equal(state[k], base[k]) for k in base)
    assert all(not state[k].any() for k in new)


def test_base_with_wrong_keys_is_refused(tmp_path):
    state = build_from_config(tiny_config()).state_dict()
    del state["mask_decoder.hf_mlp.layers.0.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="hf_mlp.layers.0.weight"):
        load_base_model(tmp_path / "broken.pth")


def test_hq_scheme_trains_only_hq_modules_and_nonzero_task_tables():
    model = build_from_config(tiny_config(sum_tokens=True))
    names = set(set_trainable(model, "hq"))
    assert "mask_decoder.hf_token.weight" in names
    assert "mask_decoder.task_prompt_tokens.1.weight" in names
    assert "mask_decoder.hf_type_tokens.0.weight" in names
    assert "mask_decoder.task_prompt_tokens.0.weight" not in names
    assert "mask_decoder.task_prompt_embeddings.0.weight" not in names
    assert not any(n.startswith(("image_encoder", "prompt_encoder", "mask_decoder.transformer")) for n in names)
    decoder = set(set_trainable(model, "decoder"))
    assert any(n.startswith("prompt_encoder") for n in decoder)
    assert not any(n.startswith("image_encoder") for n in decoder)


def test_config_yaml_and_flags_precedence(tmp_path, workspace):
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text(f"checkpoint: {workspace['base']}\ndata: [{workspace['data']}]\nlr: 0.005\nbatch_size: 3\n")
    args = finetune.build_parser().parse_args(["--config", str(yaml_path), "--batch-size", "2"])
    config = finetune.resolve_config(args)
    assert (config.lr, config.batch_size, config.epochs, config.optimizer) == (0.005, 2, 12, "adam")
    decoder = finetune.resolve_config(finetune.build_parser().parse_args(["--config", str(yaml_path),
                                                                          "--scheme", "decoder"]))
    assert (decoder.optimizer, decoder.lr) == ("adamw", 0.005)
    with pytest.raises(InvalidInputError, match="unknown setting"):
        yaml_path.write_text("learning_rate: 1\n")
        load_config(yaml_path)


def test_loss_falls_on_a_fixed_example(tmp_path, workspace):
    run = tmp_path / "run"
    code = finetune.main(_args(workspace, run, "--max-steps", "8", "--epochs", "4", "--lr", "0.01",
                               "--prompt-kinds", "box", "--no-box-jitter"))
    assert code == 0
    losses = _losses(run)
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < np.mean(losses[:2])


def test_resume_after_interrupt_is_bit_exact_and_final_loads(tmp_path, workspace, monkeypatch):
    full = tmp_path / "full"
    assert finetune.main(_args(workspace, full)) == 0

    def interrupt(self, position):
        if position["global_step"] == 1:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    monkeypatch.setattr(trainer.Trainer, "on_step_end", interrupt)
    assert finetune.main(_args(workspace, part)) == finetune.EXIT_INTERRUPTED
    assert not (part / "final.pth").exists()
    monkeypatch.undo()
    assert finetune.main(["--output", str(part), "--resume", "--no-progress"]) == 0

    a, b = torch.load(full / "final.pth"), torch.load(part / "final.pth")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(full) == _losses(part)

    base = load_state_dict_file(workspace["base"])
    changed = [k for k in base if not torch.equal(a[k], base[k])]
    assert changed and all(k.startswith("mask_decoder.") for k in changed)

    model = load_checkpoint(full / "final.pth")
    assert model.config.sum_tokens
    decoder_only = torch.load(full / "epoch_0.pth")
    assert "hf_token.weight" in decoder_only and "task_prompt_tokens.1.weight" in decoder_only
    image = np.zeros((64, 64, 3), np.uint8)
    image[20:40, 20:40] = 200
    logits = []
    for candidate in (load_base_model(workspace["base"]), model):
        predictor = Predictor(candidate, device="cpu")
        predictor.set_image(image)
        logits.append(predictor.predict(box=[18, 18, 41, 41], task=1).logits)
    assert np.abs(logits[0] - logits[1]).max() > 1e-4

    reloaded = load_config(full / "config.yaml")
    assert (reloaded.scheme, reloaded.lr, reloaded.batch_size) == ("hq", 1e-3, 1)


def test_prompts_of_masks_without_clicks_stay_aligned():
    """An error-click round may leave a mask without clicks: its row is all SAM's "not a point"
    (label -1) and the other masks keep their own clicks and boxes."""
    points = [np.zeros((0, 2)), np.array([[10.0, 20.0], [30.0, 40.0]]), np.array([[50.0, 60.0]])]
    labels = [np.zeros(0, np.int64), np.array([1, 0]), np.array([1])]
    boxes = np.array([[0, 0, 9, 9], [1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.float64)
    (coords, point_labels), box_tensor = trainer.model_frame_prompts(points, labels, boxes, 1024, torch.device("cpu"))
    assert point_labels.tolist() == [[-1, -1], [1, 0], [1, -1]]
    assert coords[1].tolist() == [[20.0, 10.0], [40.0, 30.0]] and coords[2, 0].tolist() == [60.0, 50.0]
    assert box_tensor.tolist() == [[0, 0, 9, 9], [2, 1, 4, 3], [6, 5, 8, 7]]  # (x0, y0, x1, y1)
    with pytest.raises(InvalidInputError, match="boxes given for 1 of 2 objects"):
        trainer.model_frame_prompts(points[1:], labels[1:], [boxes[0], None], 1024, torch.device("cpu"))


@pytest.mark.parametrize("scheme", ["hq", "decoder", "full"])
def test_each_scheme_trains_its_modules_through_the_core_encode_and_decode(scheme):
    torch.manual_seed(0)
    model = build_from_config(tiny_config(sum_tokens=True))
    trainable = set(set_trainable(model, scheme))
    model.train()
    config = FinetuneConfig(checkpoint="x", data=["d"], scheme=scheme, prompt_kinds=["box"]).resolved()
    step = trainer.TrainStep(model, config, trainer.PromptSampler(config, torch.Generator().manual_seed(0)))
    masks = torch.zeros(1, 1024, 1024, dtype=torch.bool)
    masks[0, 900:1000, 800:1000] = True  # in the far corner
    image = torch.randint(0, 255, (1, 3, 1024, 1024), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    step({"image": image, "masks": [masks], "task": [1], "uncertainty": [None]}, pseudo=False)["loss"].backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad <= trainable
    encoder = {n for n in with_grad if n.startswith("image_encoder.")}
    assert bool(encoder) == (scheme == "full")
    assert any(n.startswith("mask_decoder.hf_mlp") for n in with_grad)
    assert any(n.startswith("mask_decoder.embedding_encoder") for n in with_grad)  # HQ features, with grad
    assert any(n.startswith("prompt_encoder.") for n in with_grad) == (scheme != "hq")
