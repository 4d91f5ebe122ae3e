"""``python -m training.finetune --scheme ais``: micro-sam's AIS decoder training.

Small random models with a 256 input (the training frame follows the model's input size),
the synthetic walk-through dataset (1-3 bright discs per 64 x 64 image).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from small_models import small_vit_config
from sum_core import auto_segment, load_model, zoo
from sum_core.checkpoint import load_state_dict_file
from sum_core.errors import SumError
from sum_core.modeling import AISDecoder, AISDecoderConfig, ais_decoder_of, build_from_config
from training import finetune, trainer
from training.ais_step import AisStep
from training.ais_targets import ais_targets
from training.checkpointing import load_ais_base, new_ais_decoder
from training.config import FinetuneConfig
from training.schemes import build_optimizer, set_trainable

_WALKTHROUGH = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "finetune_walkthrough.py"))
SIZE = 256
FEATURES = 4  # decoder width of these tests (micro-sam's is 64): levels 32, 16, 8, 4


def small_config(hq: bool):
    return small_vit_config(hq=hq).replace(image_size=SIZE)


def save_model(path: Path, hq: bool, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.save(build_from_config(small_config(hq)).state_dict(), path)
    return path


def decoder_state(seed: int, conv_transpose: bool = False) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    config = AISDecoderConfig(initial_features=FEATURES, conv_transpose=conv_transpose)
    return AISDecoder(config).state_dict()


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("ais")
    return {
        "root": root,
        "hq": save_model(root / "hq.pth", hq=True),
        "sam": save_model(root / "sam.pth", hq=False, seed=1),
        "data": _WALKTHROUGH["make_dataset"](root / "data", 6, 0),
    }


def args(checkpoint, data, output, *extra: str) -> list[str]:
    return [
        "--checkpoint", str(checkpoint), "--data", str(data), "--output", str(output), "--scheme", "ais",
        "--ais-features", str(FEATURES), "--batch-size", "2", "--no-augment", "--no-progress", *extra,
    ]


def metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_ais_run_lowers_the_validation_loss_and_the_checkpoint_segments(ws):
    run = ws["root"] / "run"
    code = finetune.main(args(ws["hq"], ws["data"], run, "--val-fraction", "0.34", "--epochs", "6", "--lr", "1e-2"))
    assert code == 0
    rows = metrics(run)
    val = [float(r["loss"]) for r in rows if r["kind"] == "val"]
    steps = [int(r["step"]) for r in rows if r["kind"] == "val"]
    assert steps == [0, 2, 4, 6, 8, 10, 12]  # before training, then after every epoch (4 train images)
    assert val[-1] < 0.85 * val[0]  # measured 0.94 -> 0.65 (seed 42)
    assert [r["kind"] for r in rows].count("human") == 12

    model = load_model(run / "final.pth", device="cpu", ais_decoder=True)
    base = load_state_dict_file(ws["hq"])
    final = load_state_dict_file(run / "final.pth")
    assert set(final) - set(base) == {f"ais_decoder.{k}" for k in ais_decoder_of(model).state_dict()}
    assert all(torch.equal(final[k], base[k]) for k in base)  # only the AIS decoder trained
    assert ais_decoder_of(model).config == AISDecoderConfig(embed_dim=256, initial_features=FEATURES)

    image = np.full((64, 64), 20, np.uint8)
    image[10:30, 12:30] = 220
    labels, uncertainty = auto_segment(image, mode="ais", model=model, device="cpu", progress=False)
    assert labels.shape == (64, 64) and labels.dtype == np.uint32 and uncertainty.shape == (64, 64)
    epoch = load_model(run / "epoch_5.pth", base=ws["hq"], device="cpu")  # micro-sam's decoder-only layout
    assert all(torch.equal(v, final[f"ais_decoder.{k}"]) for k, v in ais_decoder_of(epoch).state_dict().items())


def test_ais_resume_is_bit_exact(ws, monkeypatch):
    extra = ("--val-fraction", "0.34", "--epochs", "1", "--lr", "1e-3", "--no-augment")
    full, part = ws["root"] / "full", ws["root"] / "part"
    assert finetune.main(args(ws["hq"], ws["data"], full, *extra)) == 0

    def interrupt(self, position):
        if position["global_step"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Trainer, "on_step_end", interrupt)
    assert finetune.main(args(ws["hq"], ws["data"], part, *extra)) == finetune.EXIT_INTERRUPTED
    monkeypatch.undo()
    assert finetune.main(["--output", str(part), "--resume", "--no-progress"]) == 0
    a, b = torch.load(full / "final.pth"), torch.load(part / "final.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop_time = [{k: v for k, v in r.items() if k != "time"} for r in metrics(full)]
    assert drop_time == [{k: v for k, v in r.items() if k != "time"} for r in metrics(part)]
    assert [r["kind"] for r in metrics(full)] == ["val", "human", "human", "val"]


def test_plain_sam_checkpoint_gets_a_new_decoder_with_the_documented_init(ws):
    model = load_ais_base(ws["sam"], features=FEATURES, seed=5)
    assert not model.config.hq  # the SAM model is kept as it is (no HQ modules added)
    expected = new_ais_decoder(AISDecoderConfig(initial_features=FEATURES), seed=5).state_dict()
    got = ais_decoder_of(model).state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    torch.manual_seed(0)
    fresh = AISDecoder(AISDecoderConfig(initial_features=FEATURES)).state_dict()
    assert not torch.equal(fresh["out_conv.weight"], got["out_conv.weight"])  # seeded, not the caller's RNG

    run = ws["root"] / "from_sam"
    assert finetune.main(args(ws["sam"], ws["data"], run, "--epochs", "1", "--batch-size", "6", "--lr", "1e-3")) == 0
    trained = torch.load(run / "training_state.pth", weights_only=True)["trainable"]
    parameters = {f"ais_decoder.{n}" for n, _ in ais_decoder_of(model).named_parameters()}
    assert set(trained) == parameters  # the AIS decoder trains, nothing else
    final = load_model(run / "final.pth", device="cpu", ais_decoder=True)
    assert not final.config.hq and ais_decoder_of(final) is not None


def test_micro_sam_layouts_start_from_their_decoder(ws, tmp_path, monkeypatch):
    sam = load_state_dict_file(ws["sam"])
    decoder = decoder_state(seed=3, conv_transpose=True)
    torch_em_file = tmp_path / "torch_em_layout.pt"  # micro-sam's training checkpoint layout
    torch.save({"model_state": {f"sam.{k}": v for k, v in sam.items()}, "decoder_state": decoder, "epoch": 7},
               torch_em_file)
    got = ais_decoder_of(load_ais_base(torch_em_file, features=64)).state_dict()
    assert got.keys() == decoder.keys() and all(torch.equal(got[k], decoder[k]) for k in got)

    # The registry route (--checkpoint vit_b_lm): the model file and its *_decoder file, fetched and
    # hash-checked from the cache (no download here).
    monkeypatch.setenv("SUM_HQ_CACHE", str(tmp_path / "cache"))
    torch.save(decoder, tmp_path / "decoder.pt")
    for name, file in (("vit_b_lm", ws["sam"]), ("vit_b_lm_decoder", tmp_path / "decoder.pt")):
        digest = "sha256:" + hashlib.sha256(Path(file).read_bytes()).hexdigest()
        entry = dataclasses.replace(zoo.BUILTIN_MODELS[name], url="http://127.0.0.1:9/none", known_hash=digest)
        monkeypatch.setitem(zoo.BUILTIN_MODELS, name, entry)
        target = zoo.cached_path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(file).read_bytes())
    got = ais_decoder_of(load_ais_base("vit_b_lm", features=64)).state_dict()
    assert all(torch.equal(got[k], decoder[k]) for k in decoder)

    run = tmp_path / "run"
    assert finetune.main(args("vit_b_lm", ws["data"], run, "--max-steps", "1")) == 0  # lr 1e-5 (micro-sam)
    trained = torch.load(run / "training_state.pth", weights_only=True)["trainable"]
    moved = max(float((trained[f"ais_decoder.{k}"] - v).abs().max()) for k, v in decoder.items()
                if f"ais_decoder.{k}" in trained)
    assert 0 < moved < 1e-4  # one AdamW step of lr 1e-5 from the file's weights


def test_train_encoder_trains_the_encoder_with_layer_decay(ws):
    model = load_ais_base(ws["hq"], features=FEATURES)
    config = FinetuneConfig(checkpoint="x", data=["d"], scheme="ais", train_encoder=True).resolved()
    names = set(set_trainable(model, "ais", train_encoder=True))
    assert any(n.startswith("image_encoder.") for n in names) and any(n.startswith("ais_decoder.") for n in names)
    assert not any(n.startswith(("mask_decoder.", "prompt_encoder.")) for n in names)
    scales = {group["lr_scale"] for group in build_optimizer(model, config).param_groups}
    assert scales == {1.0, 0.8, 0.8**2, 0.8**3}  # neck, 2 blocks, patch embedding (layer_decay 0.8)
    model.train()
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[200:250, 180:256] = 1  # far corner, at the border
    batch = {
        "image": torch.randint(0, 255, (1, 3, SIZE, SIZE), dtype=torch.uint8),
        "ais_targets": torch.from_numpy(ais_targets(labels))[None],
    }
    AisStep(model, config)(batch)["loss"].backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("image_encoder.blocks.0.") for n in with_grad)
    assert any(n.startswith("ais_decoder.out_conv") for n in with_grad)
    assert set(set_trainable(model, "ais")) == {n for n in names if n.startswith("ais_decoder.")}


def test_bad_input_is_refused_before_training(ws, tmp_path):
    no_masks = tmp_path / "no_masks"
    (no_masks / "images").mkdir(parents=True)
    shutil.copy(ws["data"] / "images" / "im0.tif", no_masks / "images" / "im0.tif")
    missing_model = tmp_path / "missing.pth"  # never reached: the data is checked first
    run = tmp_path / "run"
    for extra, data, message in (
        ((), no_masks, "masks: folder .* does not exist"),
        (("--pseudo", str(tmp_path)), ws["data"], "pseudo-labels"),
        (("--scheme", "hq", "--train-encoder"), ws["data"], "train_encoder is an option of scheme='ais'"),
    ):
        parsed = finetune.build_parser().parse_args(args(missing_model, data, run, *extra))
        with pytest.raises(SumError, match=message):
            trainer.Trainer(finetune.resolve_config(parsed), progress=False).run()
    assert not run.exists()
