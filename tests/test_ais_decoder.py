"""The AIS decoder against torch-em's UNETR (micro-sam's decoder), and loading micro-sam's file layouts.

torch-em is a test-only reference (scripts/test.sh installs it with --no-deps); micro-sam builds its AIS
decoder as ``UNETR(backbone="sam", encoder=<SAM image encoder>, out_channels=3, use_sam_stats=True,
final_activation="Sigmoid", use_skip_connection=False, resize_input=True, use_conv_transpose=<from the
keys>)`` (``micro_sam.instance_segmentation.get_unetr``) and runs ``UNETR.decode`` on the precomputed
embedding (``DecoderAdapter``), which is what the reference calls here.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import reference_impl
from reference_models import reference_sam
from small_models import small_vit_config
from sum_core import zoo
from sum_core.checkpoint import infer_ais_config, load_checkpoint
from sum_core.errors import CheckpointError, InvalidInputError
from sum_core.loading import load_model, resolve_model
from sum_core.modeling import (
    AIS_PREFIX,
    AISDecoder,
    AISDecoderConfig,
    ImageEmbedding,
    SamModel,
    ais_decoder_of,
    attach_ais_decoder,
    build_from_config,
    decode_ais_maps,
    preset_config,
)


@pytest.fixture(autouse=True)
def isolated_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(zoo.MODELS_FILE_ENV, raising=False)
    monkeypatch.setattr(zoo, "_user_models", {})


def torch_em_unetr() -> type:
    """torch-em's ``UNETR`` class; skips when torch-em is not installed.

    ``import torch_em`` imports torchvision (its tensorboard logger's ``make_grid``), which does not
    load with the CPU torch: :func:`reference_impl.torch_em` registers the stand-in first.
    """
    if importlib.util.find_spec("torch_em") is None:
        pytest.skip("torch-em is not installed (scripts/test.sh installs it)")
    reference_impl.torch_em()
    return importlib.import_module("torch_em.model.unetr").UNETR


def micro_sam_unetr(encoder: torch.nn.Module, conv_transpose: bool, **kwargs) -> torch.nn.Module:
    """The UNETR as micro-sam's ``get_unetr`` builds it around ``encoder``, in eval mode."""
    unetr = torch_em_unetr()(
        backbone="sam",
        encoder=encoder,
        out_channels=3,
        use_sam_stats=True,
        final_activation="Sigmoid",
        use_skip_connection=False,
        resize_input=True,
        use_conv_transpose=conv_transpose,
        **kwargs,
    )
    return unetr.eval()


def decoder_state(unetr: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What micro-sam saves as the decoder: the UNETR state without ``encoder.*``."""
    return {k: v for k, v in unetr.state_dict().items() if not k.startswith("encoder")}


def load_decoder_weights(unetr: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put ``state`` into the UNETR's decoder strictly (its encoder keeps its own weights)."""
    missing, unexpected = unetr.load_state_dict(state, strict=False)
    assert unexpected == [] and all(key.startswith("encoder.") for key in missing)


class _NeckOnly(torch.nn.Module):
    """An encoder stand-in with SAM's neck (UNETR reads its 256 output channels); the decoder never calls it."""

    def __init__(self) -> None:
        super().__init__()
        self.img_size = 1024
        self.in_chans = 3
        self.neck = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Identity(), torch.nn.Conv2d(1, 256, 1))


def randomise(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random weights everywhere, BatchNorm statistics included (eval mode uses them)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=generator) + 0.5
        elif value.ndim == 1 and key.endswith("weight"):  # BatchNorm scale
            out[key] = torch.rand(value.shape, generator=generator) + 0.5
        else:
            fan_in = value[0].numel() if value.ndim > 1 else 10
            out[key] = torch.randn(value.shape, generator=generator) / fan_in**0.5
    return out


@pytest.fixture(scope="module")
def sam() -> SamModel:
    torch.manual_seed(0)
    return build_from_config(small_vit_config(hq=False))


def small_decoder(conv_transpose: bool = False, seed: int = 1) -> AISDecoder:
    decoder = AISDecoder(AISDecoderConfig(initial_features=8, conv_transpose=conv_transpose))
    decoder.load_state_dict(randomise(decoder.state_dict(), seed))
    return decoder.eval()


def with_decoder(model: SamModel, decoder: AISDecoder) -> SamModel:
    """A copy of ``model`` carrying ``decoder``."""
    copy = build_from_config(model.config)
    copy.load_state_dict(model.state_dict())
    return attach_ais_decoder(copy, decoder)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


def save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


# --- the decoder against torch-em -------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["vit_tiny", "vit_b", "vit_l"])
@pytest.mark.parametrize("conv_transpose", [False, True])
def test_keys_shapes_and_parameter_count_equal_micro_sams_decoder(model_type, conv_transpose):
    # micro-sam's vit_t is MobileSAM's TinyViT (sam-hq ships the same encoder code); vit_b / vit_l are
    # segment-anything's ViT. UNETR reads the decoder's input width from the encoder's neck (256).
    config = preset_config(model_type, hq=False)
    device = contextlib.nullcontext() if config.encoder == "tiny_vit" else torch.device("meta")
    with device:  # ViT encoders on meta: only shapes are needed
        unetr = micro_sam_unetr(reference_sam(config).image_encoder, conv_transpose)
    reference = decoder_state(unetr)
    ours = AISDecoder(AISDecoderConfig(embed_dim=config.prompt_embed_dim, conv_transpose=conv_transpose))
    assert unetr.embed_dim == config.prompt_embed_dim == 256
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in reference.items()
    }
    reference_parameters = sum(p.numel() for name, p in unetr.named_parameters() if not name.startswith("encoder"))
    assert sum(p.numel() for p in ours.parameters()) == reference_parameters
    assert reference_parameters == (11_028_931 if conv_transpose else 9_591_235)
    assert infer_ais_config(reference) == ours.config


def reference_maps(unetr, embedding: torch.Tensor, input_size, original_size) -> np.ndarray:
    """micro-sam's ``DecoderAdapter(embedding, input_shape, original_shape)`` (= ``UNETR.decode``)."""
    with torch.no_grad():
        return unetr.decode((embedding, None, None), input_size, original_size)[0].numpy()


@pytest.mark.slow
@pytest.mark.parametrize(
    "conv_transpose, original_size, input_size",
    [(False, (700, 525), (1024, 768)), (True, (1024, 1024), (1024, 1024))],
)
def test_maps_equal_torch_em_at_vit_b_sizes(sam, conv_transpose, original_size, input_size):
    # micro-sam's decoder sizes (64 initial features), a 1024 input and a 64x64x256 embedding.
    unetr = micro_sam_unetr(_NeckOnly(), conv_transpose)
    weights = randomise(decoder_state(unetr), seed=2)
    load_decoder_weights(unetr, weights)
    decoder = AISDecoder(AISDecoderConfig(conv_transpose=conv_transpose))
    decoder.load_state_dict(weights)
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(3))
    expected = reference_maps(unetr, embedding, input_size, original_size)
    image = ImageEmbedding(embedding, None, None, input_size, original_size)
    maps = decode_ais_maps(with_decoder(sam, decoder.eval()), image)
    assert maps.shape == (3, *original_size) and maps.dtype == np.float32
    assert 0.0 <= maps.min() and maps.max() <= 1.0
    # Same operations in the same order: float32 rounding differences only.
    assert np.abs(maps - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("conv_transpose", [False, True])
@pytest.mark.parametrize(
    "original_size, input_size",
    [((64, 200), (328, 1024)), ((1024, 1024), (1024, 1024)), ((1500, 900), (1024, 614))],
)
def test_small_decoder_maps_equal_torch_em_at_any_image_size(sam, conv_transpose, original_size, input_size):
    unetr = micro_sam_unetr(_NeckOnly(), conv_transpose, initial_features=8)
    decoder = small_decoder(conv_transpose, seed=4)
    load_decoder_weights(unetr, decoder.state_dict())
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(5))
    expected = reference_maps(unetr, embedding, input_size, original_size)
    image = ImageEmbedding(embedding, None, None, input_size, original_size)
    maps = decode_ais_maps(with_decoder(sam, decoder), image)
    assert maps.shape == (3, *original_size)
    assert np.abs(maps - expected).max() <= 1e-4 * np.abs(expected).max()


def test_decoding_without_a_decoder_is_explained(sam):
    image = ImageEmbedding(torch.zeros(1, 256, 64, 64), None, None, (1024, 1024), (1024, 1024))
    with pytest.raises(InvalidInputError, match="has no AIS decoder.*AMG"):
        decode_ais_maps(sam, image)


def test_attach_refuses_a_decoder_for_another_embedding_width(sam):
    with pytest.raises(InvalidInputError, match="reads 128-channel embeddings but the model produces 256"):
        attach_ais_decoder(sam, AISDecoder(AISDecoderConfig(embed_dim=128, initial_features=8)))
    assert ais_decoder_of(sam) is None


# --- loading micro-sam's layouts ---------------------------------------------------------------


def test_separate_decoder_file_loads_onto_its_base(sam, tmp_path):
    decoder = small_decoder(conv_transpose=True)
    sam_path = save(sam.state_dict(), tmp_path / "vit_b.pt")
    decoder_path = save(decoder.state_dict(), tmp_path / "vit_b_decoder.pt")
    for base in (sam_path, sam):
        loaded = load_model(decoder_path, device="cpu", base=base)
        assert_same_weights(loaded, with_decoder(sam, decoder))
        assert ais_decoder_of(loaded).config == AISDecoderConfig(initial_features=8, conv_transpose=True)
    # The SAM file alone has no decoder.
    assert ais_decoder_of(load_model(sam_path, device="cpu")) is None


def test_decoder_file_without_base_is_explained(tmp_path):
    path = save(small_decoder().state_dict(), tmp_path / "vit_b_decoder.pt")
    with pytest.raises(CheckpointError, match=r"vit_b_decoder\.pt holds no image encoder, only ais_decoder") as info:
        load_checkpoint(path, device="cpu")
    assert "base=" in str(info.value)


@pytest.mark.parametrize("prefix", ["sam.", ""])
def test_torch_em_training_layout_loads_with_its_decoder(sam, tmp_path, prefix):
    # torch_em's trainer saves the micro-sam model as "sam.<key>" (micro-sam strips that prefix where
    # present; its export keeps the layout without it), the decoder as decoder_state, and training state.
    decoder = small_decoder()
    checkpoint = {
        "model_state": {prefix + key: value for key, value in sam.state_dict().items()},
        "decoder_state": decoder.state_dict(),
        "iteration": 1200,
        "best_metric": 0.25,
        "optimizer_state": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-5}]},
    }
    loaded = load_model(save(checkpoint, tmp_path / "best.pt"), device="cpu")
    assert_same_weights(loaded, with_decoder(sam, decoder))
    # Without decoder_state: the SAM model alone.
    del checkpoint["decoder_state"]
    plain = load_model(save(checkpoint, tmp_path / "no_decoder.pt"), device="cpu")
    assert_same_weights(plain, sam)


def test_own_layout_round_trips(sam, tmp_path):
    model = with_decoder(sam, small_decoder())
    assert any(key.startswith(AIS_PREFIX) for key in model.state_dict())
    loaded = load_checkpoint(save(model.state_dict(), tmp_path / "with_decoder.pth"), device="cpu")
    assert_same_weights(loaded, model)


def test_hq_decoder_file_on_a_base_with_an_ais_decoder_keeps_it(sam, tmp_path):
    torch.manual_seed(6)
    hq = build_from_config(small_vit_config(hq=True))
    base = with_decoder(sam, small_decoder())
    loaded = load_checkpoint(save(hq.mask_decoder.state_dict(), tmp_path / "epoch_2.pth"), base=base, device="cpu")
    assert loaded.config.hq
    assert_same_weights(ais_decoder_of(loaded), ais_decoder_of(base))
    torch.testing.assert_close(loaded.mask_decoder.hf_token.weight, hq.mask_decoder.hf_token.weight)


@pytest.mark.slow
def test_vit_b_key_layout_round_trips(tmp_path):
    # micro-sam's published layout at full size: vit_b.pt (plain SAM) + vit_b_decoder.pt, and the
    # torch_em training layout of the same weights.
    torch.manual_seed(7)
    sam = build_from_config(preset_config("vit_b", hq=False))
    decoder = AISDecoder()  # micro-sam's decoder: interpolation variant, 64 initial features
    sam_path = save(sam.state_dict(), tmp_path / "vit_b.pt")
    decoder_path = save(decoder.state_dict(), tmp_path / "vit_b_decoder.pt")
    expected = with_decoder(sam, decoder)
    separate = load_model(decoder_path, device="cpu", base=sam_path)
    assert separate.config == preset_config("vit_b", hq=False)
    assert_same_weights(separate, expected)
    del separate
    training = {
        "model_state": {f"sam.{k}": v for k, v in sam.state_dict().items()},
        "decoder_state": decoder.state_dict(),
    }
    assert_same_weights(load_model(save(training, tmp_path / "best.pt"), device="cpu"), expected)


class _Config:
    """Stands in for the classes torch_em pickles into its checkpoints' "init" entry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_training_checkpoint_that_needs_code_is_refused_with_how_to_convert(sam, tmp_path):
    marker = tmp_path / "marker.txt"
    checkpoint = {
        "model_state": {f"sam.{k}": v for k, v in sam.state_dict().items()},
        "decoder_state": small_decoder().state_dict(),
        "init": {"model_class": _Config(marker)},
    }
    path = save(checkpoint, tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match=r"best\.pt is not a plain weights file") as info:
        load_model(path, device="cpu")
    message = str(info.value)
    assert "micro-sam" in message and "weights_only=False" in message
    assert "'decoder_state': state['decoder_state']" in message and "converted.pt" in message
    assert not marker.exists()


def test_decoder_with_other_outputs_is_refused(sam, tmp_path):
    state = small_decoder().state_dict()
    state["out_conv.weight"] = torch.zeros(2, 8, 1, 1)
    state["out_conv.bias"] = torch.zeros(2)
    path = save(state, tmp_path / "semantic_decoder.pt")
    with pytest.raises(CheckpointError, match=r"semantic_decoder\.pt: the AIS decoder has 2 output channels"):
        load_model(path, device="cpu", base=sam)


def test_decoder_with_mixed_upsampling_is_refused_naming_the_keys(sam, tmp_path):
    state = small_decoder(conv_transpose=False).state_dict()
    transposed = small_decoder(conv_transpose=True).state_dict()
    for suffix in ("weight", "bias"):  # one level of the decoder from the other variant
        del state[f"decoder.samplers.1.conv.{suffix}"]
        state[f"decoder.samplers.1.block.{suffix}"] = transposed[f"decoder.samplers.1.block.{suffix}"]
    path = save(state, tmp_path / "mixed_decoder.pt")
    with pytest.raises(CheckpointError, match=r"mixed_decoder\.pt does not match the AIS decoder") as info:
        load_model(path, device="cpu", base=sam)
    assert "missing keys: decoder.samplers.0.block.bias" in str(info.value)
    assert "unexpected keys: " in str(info.value) and "deconv1.block.0.conv.weight" in str(info.value)


def test_decoder_for_another_embedding_width_is_refused(sam, tmp_path):
    decoder = AISDecoder(AISDecoderConfig(embed_dim=128, initial_features=8))
    path = save(decoder.state_dict(), tmp_path / "narrow_decoder.pt")
    with pytest.raises(CheckpointError, match=r"narrow_decoder\.pt: the AIS decoder reads 128-channel"):
        load_model(path, device="cpu", base=sam)


# --- registry models with a decoder entry -----------------------------------------------------


def register_cached(name: str, path: Path, decoder: str | None = None) -> None:
    """Register ``path`` under ``name`` (sha256) and put it in the cache, as a finished download."""
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    zoo.register_model(name, f"https://example.invalid/{path.name}", f"sha256:{digest}", decoder=decoder)
    target = zoo.cached_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(path.read_bytes())


def test_registry_model_loads_its_decoder_entry_when_asked(sam, tmp_path):
    decoder = small_decoder()
    register_cached("my_lm_decoder", save(decoder.state_dict(), tmp_path / "vit_b_decoder.pt"))
    register_cached("my_lm", save(sam.state_dict(), tmp_path / "vit_b.pt"), decoder="my_lm_decoder")
    register_cached("my_plain", save(sam.state_dict(), tmp_path / "plain.pt"))
    assert ais_decoder_of(load_model("my_lm", device="cpu")) is None
    assert_same_weights(load_model("my_lm", device="cpu", ais_decoder=True), with_decoder(sam, decoder))
    with pytest.raises(InvalidInputError, match="model 'my_plain' has no AIS decoder"):
        load_model("my_plain", device="cpu", ais_decoder=True)
    with pytest.raises(InvalidInputError, match=r"has no AIS decoder \(ais_decoder=True\)"):
        load_model(tmp_path / "plain.pt", device="cpu", ais_decoder=True)


def test_resolved_model_with_its_decoder_serves_both_requests(sam, tmp_path):
    decoder = small_decoder()
    register_cached("my_lm_decoder", save(decoder.state_dict(), tmp_path / "vit_b_decoder.pt"))
    register_cached("my_lm", save(sam.state_dict(), tmp_path / "vit_b.pt"), decoder="my_lm_decoder")
    with_ais = resolve_model("my_lm", device="cpu", ais_decoder=True)
    assert ais_decoder_of(with_ais) is not None
    assert resolve_model("my_lm", device="cpu") is with_ais
    # A file holding its decoder, first resolved without asking for it, serves a call that asks.
    path = save(with_decoder(sam, decoder).state_dict(), tmp_path / "with_decoder.pth")
    first = resolve_model(path, device="cpu")
    assert ais_decoder_of(first) is not None
    assert resolve_model(path, device="cpu", ais_decoder=True) is first
    with pytest.raises(InvalidInputError, match="has no AIS decoder"):
        resolve_model(sam, ais_decoder=True)
