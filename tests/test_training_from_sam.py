"""Fine-tuning from a plain SAM checkpoint (micro-sam's weights are plain SAM): the HQ modules
and SUM tables are added as HQ-SAM / SUM add them, every scheme trains, the result loads as SUM."""

from __future__ import annotations

import csv
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

import reference_impl
from small_models import small_vit_config
from sum_core import load_model, segment
from sum_core.checkpoint import load_state_dict_file
from sum_core.modeling import build_from_config
from training import finetune
from training.checkpointing import load_base_model
from training.schemes import HQ_MODULES

HQ_PREFIXES = tuple(f"mask_decoder.{name}." for name in HQ_MODULES)
SUM_PREFIXES = (
    "mask_decoder.task_prompt_tokens.", "mask_decoder.hf_type_tokens.", "mask_decoder.task_prompt_embeddings."
)

# The synthetic walk-through dataset of the other fine-tuning tests (1-3 bright discs per image).
_WALKTHROUGH = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "finetune_walkthrough.py"))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A random plain SAM checkpoint (no HQ keys) and a 2-image dataset."""
    root = tmp_path_factory.mktemp("from_sam")
    torch.manual_seed(0)
    torch.save(build_from_config(small_vit_config(hq=False)).state_dict(), root / "sam.pth")
    return {"base": root / "sam.pth", "data": _WALKTHROUGH["make_dataset"](root / "data", 2, 0)}


def _sam_hq_new_modules(seed: int, monkeypatch) -> dict[str, torch.Tensor]:
    """The new modules of sam-hq's own ``MaskDecoderHQ`` (256 wide, our small encoder's early
    feature width) with torch's RNG seeded with ``seed`` just before it builds ``hf_token``
    (its third ``nn.Embedding``, after ``iou_token`` and ``mask_tokens``)."""
    modeling = reference_impl.sam_hq().modeling
    transformer = modeling.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
    real = torch.nn.Embedding
    built = []

    def embedding(*args, **kwargs):
        built.append(args)
        if len(built) == 3:
            torch.manual_seed(seed)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn, "Embedding", embedding)
    decoder = modeling.MaskDecoderHQ(
        transformer_dim=256, transformer=transformer, vit_dim=small_vit_config().early_feature_dim
    )
    monkeypatch.undo()
    assert len(built) == 3
    return {f"mask_decoder.{k}": v for k, v in decoder.state_dict().items() if k.startswith(HQ_MODULES)}


def test_plain_sam_base_gets_the_hq_modules_sam_hq_builds_and_zero_sum_tables(plain, monkeypatch):
    torch.manual_seed(123)
    model = load_base_model(plain["base"], seed=3)
    assert model.config.hq and model.config.sum_tokens
    base = load_state_dict_file(plain["base"])
    state = model.state_dict()
    assert all(torch.equal(state[k], base[k]) for k in base)  # SAM's weights, bit for bit
    new = set(state) - set(base)
    hq = {k for k in new if k.startswith(HQ_PREFIXES)}
    assert len(hq) == 25  # sam-hq-architecture.md 1.6: the 25 HQ keys
    assert new - hq == {k for k in state if k.startswith(SUM_PREFIXES)} and len(new - hq) == 8
    assert all(not state[k].any() for k in new - hq)

    reference = _sam_hq_new_modules(3, monkeypatch)
    assert set(reference) == hq
    assert all(torch.equal(state[k], reference[k]) for k in hq)

    torch.manual_seed(7)  # the draws depend on ``seed`` only, not on the caller's RNG state
    again = load_base_model(plain["base"], seed=3).state_dict()
    assert all(torch.equal(again[k], state[k]) for k in state)
    other = load_base_model(plain["base"], seed=4).state_dict()
    assert not torch.equal(other["mask_decoder.hf_token.weight"], state["mask_decoder.hf_token.weight"])


def test_hq_base_keeps_its_hq_modules(tmp_path):
    torch.manual_seed(1)
    torch.save(build_from_config(small_vit_config(hq=True)).state_dict(), tmp_path / "hq.pth")
    base = load_state_dict_file(tmp_path / "hq.pth")
    state = load_base_model(tmp_path / "hq.pth", seed=3).state_dict()
    assert all(torch.equal(state[k], base[k]) for k in base)
    assert all(k.startswith(SUM_PREFIXES) for k in set(state) - set(base))


@pytest.mark.parametrize("scheme", ["hq", "decoder", "full"])
def test_plain_sam_base_fine_tunes_with_every_scheme_and_loads_as_sum(plain, tmp_path, scheme):
    run = tmp_path / "run"
    code = finetune.main([
        "--checkpoint", str(plain["base"]), "--data", str(plain["data"]), "--output", str(run),
        "--scheme", scheme, "--batch-size", "1", "--max-instances", "1", "--num-points", "2",
        "--epochs", "1", "--no-augment", "--no-progress",
    ])
    assert code == 0
    with (run / "metrics.csv").open() as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert losses and all(math.isfinite(loss) for loss in losses)

    model = load_model(run / "final.pth", device="cpu")
    assert model.config.hq and model.config.sum_tokens
    base = load_state_dict_file(plain["base"])
    start = load_base_model(plain["base"]).state_dict()  # the trainer's start (default seed)
    final = torch.load(run / "final.pth", weights_only=True)
    changed = {k for k in final if not torch.equal(final[k], start[k])}
    assert any(k.startswith("mask_decoder.hf_mlp.") for k in changed)  # the new modules trained
    if scheme == "hq":
        assert not changed & set(base)  # HQ-SAM's recipe: SAM's weights stay frozen

    image = np.full((64, 64), 20, np.uint8)
    image[20:40, 24:44] = 220
    result = segment(image, box=[18, 22, 41, 45], model=model, device="cpu")
    assert result.masks.shape == (1, 64, 64) and result.masks.dtype == bool
    assert np.isfinite(result.logits).all()
