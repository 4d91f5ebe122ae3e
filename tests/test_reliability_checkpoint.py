"""Checkpoint safety: what cannot be trusted is refused before it is allocated or loaded (issue 11).

Crafted files declare huge tensors in a few KB (one stored element repeated with
stride 0), hold tensors without data (``meta``), NaN / inf, integer, bool,
complex, quantized, sparse or empty tensors, or have bytes flipped inside a
tensor of the zip archive. Each must be a :class:`CheckpointError` naming the
file and the offending key, member or size, and a huge architecture must never
be built for real (the ``no_real_build`` fixture fails any build off the
``meta`` device, so the old code fails these tests without allocating).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from small_models import small_vit_config
from test_zoo import isolated_zoo  # noqa: F401  (autouse: private cache, no models file)
from sum_core import checkpoint
from sum_core.checkpoint import MAX_PARAMETERS, load_checkpoint, load_state_dict_file
from sum_core.errors import CheckpointError
from sum_core.modeling import SamModel, build_from_config


@pytest.fixture(scope="module")
def hq_state() -> dict[str, torch.Tensor]:
    """State dict of a small HQ model with every float tensor perturbed (none all-zero)."""
    torch.manual_seed(0)
    state = build_from_config(small_vit_config(hq=True)).state_dict()
    return {key: value + 0.05 * torch.randn_like(value) for key, value in state.items()}


@pytest.fixture
def no_real_build(monkeypatch):
    """Fail any ``build_from_config`` in ``sum_core.checkpoint`` that would allocate real weights."""
    real = checkpoint.build_from_config

    def meta_only(config):
        if torch.empty(0).device.type != "meta":
            raise AssertionError(f"a model was built for real from {config}")
        return real(config)

    monkeypatch.setattr(checkpoint, "build_from_config", meta_only)


def save(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def repeated(shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of ``shape`` that stores one element (stride 0): a few bytes in a file."""
    return torch.full((1,) * len(shape), 0.01).expand(shape)


# --- declared sizes beyond any SAM-family model ----------------------------------


def test_stride_zero_file_declaring_embed_dim_60000_is_refused_unbuilt(no_real_build, tmp_path):
    config = small_vit_config(hq=True).replace(embed_dim=60000)
    with torch.device("meta"):
        shapes = {key: value.shape for key, value in build_from_config(config).state_dict().items()}
    path = save({key: repeated(shape) for key, shape in shapes.items()}, tmp_path / "crafted.pth")
    assert path.stat().st_size < 200_000  # a few KB on disk ...
    with pytest.raises(CheckpointError, match=r"crafted\.pth declares [\d,]+ values") as info:
        load_checkpoint(path, device="cpu")
    message = str(info.value)  # ... ~11 G values declared
    assert f"more than the {MAX_PARAMETERS:,} allowed" in message
    assert "image_encoder.blocks.0.mlp.lin1.weight (240000, 60000)" in message


def test_architecture_too_large_for_any_preset_is_refused_unbuilt(hq_state, no_real_build, tmp_path):
    """Only the two tensors defining the width are huge (under the file bound): the model would not be."""
    state = dict(hq_state)
    state["image_encoder.patch_embed.proj.weight"] = repeated((60000, 3, 16, 16))
    state["image_encoder.pos_embed"] = repeated((1, 64, 64, 60000))
    path = save(state, tmp_path / "wide.pth")
    expected = r"wide\.pth: the architecture inferred from it would hold"
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(path, device="cpu")
    assert "embed_dim=60000 (presets: at most 1280)" in str(info.value)


def test_fine_tuning_base_too_large_for_any_preset_is_refused_unbuilt(hq_state, monkeypatch, tmp_path):
    """``training.finetune`` loads its base through ``load_base_model``: the same bound, before building."""
    from training import checkpointing

    monkeypatch.setattr(checkpointing, "build_from_config", lambda config: pytest.fail("built for real"))
    state = dict(hq_state)
    state["image_encoder.patch_embed.proj.weight"] = repeated((60000, 3, 16, 16))
    state["image_encoder.pos_embed"] = repeated((1, 64, 64, 60000))
    with pytest.raises(CheckpointError, match=r"wide\.pth: the architecture inferred from it would hold"):
        checkpointing.load_base_model(save(state, tmp_path / "wide.pth"))


def test_huge_mask_token_table_does_not_build_a_module_per_token(hq_state, no_real_build, tmp_path):
    state = dict(hq_state)
    state["mask_decoder.mask_tokens.weight"] = repeated((200_000, 256))
    path = save(state, tmp_path / "tokens.pth")
    with pytest.raises(
        CheckpointError,
        match=r"tokens\.pth: mask_decoder\.mask_tokens\.weight has 200000 tokens but there are 4 "
        r"mask_decoder\.output_hypernetworks_mlps",
    ):
        load_checkpoint(path, device="cpu")


def test_decoder_only_file_with_huge_mlp_is_refused_with_base(hq_state, no_real_build, tmp_path):
    base = save(hq_state, tmp_path / "base.pth")
    prefix = "mask_decoder."
    decoder = {key[len(prefix) :]: value for key, value in hq_state.items() if key.startswith(prefix)}
    # Under the file bound alone (768 M values); the model it implies would hold 3 G.
    decoder["transformer.layers.0.mlp.lin1.weight"] = repeated((3_000_000, 256))
    path = save(decoder, tmp_path / "epoch_1.pth")
    with pytest.raises(CheckpointError, match=r"epoch_1\.pth: the architecture inferred") as info:
        load_checkpoint(path, base=base, device="cpu")
    assert "decoder_mlp_dim=3000000 (presets: at most 2048)" in str(info.value)


# --- tensors that are not real weights --------------------------------------------


def test_meta_tensors_are_refused(hq_state, tmp_path):
    path = save({key: value.to("meta") for key, value in hq_state.items()}, tmp_path / "meta.pth")
    with pytest.raises(
        CheckpointError,
        match=r"meta\.pth holds tensors without data \(saved on the 'meta' device\): "
        r"image_encoder\.pos_embed, ",
    ):
        load_checkpoint(path, device="cpu")


def test_meta_base_model_is_refused(hq_state, tmp_path):
    decoder = {key: value for key, value in hq_state.items() if key.startswith("mask_decoder.")}
    path = save(decoder, tmp_path / "epoch_2.pth")
    with torch.device("meta"):
        base = build_from_config(small_vit_config(hq=True))
    with pytest.raises(CheckpointError, match=r"base model holds tensors without data"):
        load_checkpoint(path, base=base, device="cpu")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
    ],
)
def test_non_finite_weights_are_refused(hq_state, value, expected, tmp_path):
    state = dict(hq_state)
    for key in ("image_encoder.blocks.1.attn.qkv.weight", "mask_decoder.iou_token.weight"):
        state[key] = state[key].clone()
        state[key][0, 3] = value
    assert str(state["mask_decoder.iou_token.weight"][0, 3].item()) == expected
    path = save(state, tmp_path / "diverged.pth")
    with pytest.raises(
        CheckpointError,
        match=r"diverged\.pth holds NaN or infinite values .* in "
        r"image_encoder\.blocks\.1\.attn\.qkv\.weight, mask_decoder\.iou_token\.weight;",
    ):
        load_checkpoint(path, device="cpu")


def test_float64_beyond_float32_range_is_refused(hq_state, tmp_path):
    state = {key: value.double() for key, value in hq_state.items()}
    state["mask_decoder.hf_token.weight"] = state["mask_decoder.hf_token.weight"].clone()
    state["mask_decoder.hf_token.weight"][0, 0] = 1e300  # finite in float64, inf in the float32 model
    path = save(state, tmp_path / "wide_range.pth")
    expected = r"wide_range\.pth holds NaN .* in mask_decoder\.hf_token\.weight;"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path, device="cpu")


def test_large_finite_weights_still_load(hq_state, tmp_path):
    """The fast finiteness test sums each tensor: a sum that overflows must fall back to the exact test."""
    state = dict(hq_state)
    state["mask_decoder.iou_token.weight"] = torch.full((1, 256), 3e38)  # finite; the sum is inf
    model = load_checkpoint(save(state, tmp_path / "large.pth"), device="cpu")
    assert torch.equal(model.state_dict()["mask_decoder.iou_token.weight"], torch.full((1, 256), 3e38))


def test_repeated_nan_is_found_without_expanding(hq_state, tmp_path):
    state = dict(hq_state)
    state["image_encoder.pos_embed"] = torch.full((1, 1, 1, 32), float("nan")).expand(1, 64, 64, 32)
    expected = r"nan_pos\.pth holds NaN or infinite values .* in image_encoder\.pos_embed;"
    with pytest.raises(CheckpointError, match=expected):
        load_state_dict_file(save(state, tmp_path / "nan_pos.pth"))


@pytest.mark.parametrize(
    ("convert", "shown"),
    [
        (lambda t: t > 0, "torch.bool, torch.strided"),
        (lambda t: t.to(torch.complex64), "torch.complex64, torch.strided"),
        (lambda t: torch.quantize_per_tensor(t, 0.01, 0, torch.qint8), "torch.qint8, torch.strided"),
        (lambda t: t.to_sparse(), "torch.float32, torch.sparse_coo"),
    ],
    ids=["bool", "complex", "quantized", "sparse"],
)
def test_tensor_types_no_weight_has_are_refused(hq_state, convert, shown, tmp_path):
    state = dict(hq_state)
    state["mask_decoder.iou_token.weight"] = convert(state["mask_decoder.iou_token.weight"])
    path = save(state, tmp_path / "odd.pth")
    expected = r"odd\.pth holds tensors of a type no model weight has: "
    expected += rf"mask_decoder\.iou_token\.weight \({shown}\)"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path, device="cpu")


def test_integer_weights_are_refused(hq_state, tmp_path):
    state = dict(hq_state)
    state["image_encoder.pos_embed"] = (100 * state["image_encoder.pos_embed"]).to(torch.int32)
    path = save(state, tmp_path / "ints.pth")
    with pytest.raises(
        CheckpointError,
        match=r"ints\.pth does not match .* integer / floating-point mismatches: "
        r"image_encoder\.pos_embed \(file torch\.int32, model torch\.float32\)",
    ):
        load_checkpoint(path, device="cpu")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_still_load(hq_state, dtype, tmp_path):
    state = {key: value.to(dtype) for key, value in hq_state.items()}
    model = load_checkpoint(save(state, tmp_path / "half.pth"), device="cpu")
    loaded = model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value.float()), key


def test_empty_tensors_are_refused(hq_state, tmp_path):
    state = dict(hq_state)
    for block in (0, 1):
        state[f"image_encoder.blocks.{block}.attn.rel_pos_h"] = torch.zeros(27 if block == 0 else 127, 0)
    path = save(state, tmp_path / "empty_heads.pth")
    with pytest.raises(
        CheckpointError,
        match=r"empty_heads\.pth holds empty tensors \(a zero-size dimension\): "
        r"image_encoder\.blocks\.0\.attn\.rel_pos_h \(27, 0\), "
        r"image_encoder\.blocks\.1\.attn\.rel_pos_h \(127, 0\)",
    ):
        load_checkpoint(path, device="cpu")


@pytest.mark.parametrize(
    ("key", "tensor", "message"),
    [
        (
            "image_encoder.patch_embed.proj.weight",
            torch.zeros(10),
            r"image_encoder\.patch_embed\.proj\.weight has shape \(10,\); the architecture needs 4 non-zero",
        ),
        (
            "image_encoder.blocks.0.attn.rel_pos_h",
            torch.zeros(27, 100),
            r"the relative-position tables are 100 wide, which does not divide the embedding width 32",
        ),
    ],
    ids=["patch-1d", "head-wider-than-embedding"],
)
def test_inconsistent_shapes_are_checkpoint_errors(hq_state, key, tensor, message, tmp_path):
    state = dict(hq_state)
    state[key] = tensor
    if "rel_pos_h" in key:
        state["image_encoder.blocks.1.attn.rel_pos_h"] = torch.zeros(127, 100)
    with pytest.raises(CheckpointError, match=r"shapes\.pth: " + message):
        load_checkpoint(save(state, tmp_path / "shapes.pth"), device="cpu")


# --- archive checksums ------------------------------------------------------------------


def largest_member(path: Path) -> tuple[str, int, int]:
    """Name, data offset and size of the largest member of a zip checkpoint."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda item: item.file_size)
    with path.open("rb") as handle:
        handle.seek(info.header_offset + 26)
        name_length, extra_length = (int.from_bytes(handle.read(2), "little") for _ in range(2))
    return info.filename, info.header_offset + 30 + name_length + extra_length, info.file_size


def test_flipped_bytes_inside_a_tensor_are_detected(hq_state, tmp_path):
    path = save(hq_state, tmp_path / "flipped.pth")
    member, start, size = largest_member(path)
    data = bytearray(path.read_bytes())
    middle = start + size // 2
    data[middle : middle + 1000] = bytes(b ^ 0x5A for b in data[middle : middle + 1000])
    path.write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError,
        match=rf"flipped\.pth is corrupted \(checksum of {member} does not match\); "
        "download or save it again",
    ):
        load_checkpoint(path, device="cpu")


def test_intact_zip_checkpoint_loads_exactly(hq_state, tmp_path):
    model = load_checkpoint(save(hq_state, tmp_path / "intact.pth"), device="cpu")
    assert isinstance(model, SamModel)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in hq_state.items())
