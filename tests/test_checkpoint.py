"""Checkpoint reading, architecture inference and strict loading."""

from __future__ import annotations

import hashlib
import pickle
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reference_models import reference_sam
from small_models import small_tiny_vit_config, small_vit_config
from sum_core import loading, zoo
from sum_core.checkpoint import infer_config, load_checkpoint, load_state_dict_file
from sum_core.errors import CheckpointError, InvalidInputError
from sum_core.loading import load_model, resolve_model
from sum_core.modeling import SamModel, build_from_config, build_model, preset_config


@pytest.fixture(autouse=True)
def isolated_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(zoo.MODELS_FILE_ENV, raising=False)
    monkeypatch.setattr(zoo, "_user_models", {})


def random_model(config) -> SamModel:
    """Build ``config`` and perturb every float tensor (SUM tables start at zero)."""
    torch.manual_seed(0)
    model = build_from_config(config)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))
    return model


@pytest.fixture(scope="module")
def hq_model() -> SamModel:
    return random_model(small_vit_config(hq=True))


@pytest.fixture(scope="module")
def sum_model() -> SamModel:
    return random_model(small_vit_config(hq=True, sum_tokens=True))


@pytest.fixture(scope="module")
def sam_model() -> SamModel:
    return random_model(small_vit_config(hq=False))


@pytest.fixture(scope="module")
def tiny_model() -> SamModel:
    return random_model(small_tiny_vit_config(hq=True, sum_tokens=True))


def assert_same_state(loaded: SamModel, original: SamModel) -> None:
    expected = original.state_dict()
    actual = loaded.state_dict()
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def save(obj, path: Path, **kwargs) -> Path:
    torch.save(obj, path, **kwargs)
    return path


# --- round trips ------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["sam_model", "hq_model", "sum_model", "tiny_model"])
def test_full_state_dict_round_trip(model_name, request, tmp_path):
    model = request.getfixturevalue(model_name)
    path = save(model.state_dict(), tmp_path / "model.pth")
    loaded = load_checkpoint(path, device="cpu")
    assert isinstance(loaded, SamModel)
    assert not loaded.training
    assert loaded.config.hq == model.config.hq
    assert loaded.config.sum_tokens == model.config.sum_tokens
    assert_same_state(loaded, model)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in loaded.parameters())


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda sd: {"model": sd, "epoch": 3}, id="model-key"),
        pytest.param(lambda sd: {"state_dict": sd, "optimizer": {"lr": 1e-3}}, id="state_dict-key"),
        pytest.param(lambda sd: {f"module.{k}": v for k, v in sd.items()}, id="ddp-prefix"),
        pytest.param(lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}}, id="model+ddp"),
    ],
)
def test_wrapped_state_dicts_are_unwrapped(wrap, sum_model, tmp_path):
    path = save(wrap(sum_model.state_dict()), tmp_path / "wrapped.pth")
    state = load_state_dict_file(path)
    assert list(state) == list(sum_model.state_dict())
    assert_same_state(load_checkpoint(path, device="cpu"), sum_model)


def test_legacy_serialization_format(hq_model, tmp_path):
    path = save(hq_model.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert_same_state(load_checkpoint(path, device="cpu"), hq_model)


def test_cuda_saved_tensors_load_on_cpu(hq_model, tmp_path, monkeypatch):
    """HQ-SAM releases hold tensors saved on CUDA: they must map to the CPU."""
    path = tmp_path / "cuda_saved.pth"
    with monkeypatch.context() as patch:
        # Tag every storage as "cuda:0" while saving, as a GPU state dict would be.
        registry = [(0, lambda storage: "cuda:0", lambda storage, location: None)]
        registry += torch.serialization._package_registry
        patch.setattr(torch.serialization, "_package_registry", registry)
        torch.save(hq_model.state_dict(), path)
    if not torch.cuda.is_available():  # the file really asks for CUDA without map_location
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    loaded = load_checkpoint(path, device="cpu")
    assert_same_state(loaded, hq_model)


def test_loaded_model_gives_same_outputs(hq_model, tmp_path):
    path = save(hq_model.state_dict(), tmp_path / "hq.pth")
    loaded = load_checkpoint(path, device="cpu")
    torch.manual_seed(1)
    image = torch.randn(1, 3, 1024, 1024)
    points = (torch.tensor([[[100.0, 200.0]]]), torch.tensor([[1]]))
    outputs = []
    with torch.no_grad():
        for model in (hq_model, loaded):
            embedding, early = model.image_encoder(image)
            sparse, dense = model.prompt_encoder(points, None, None)
            hq = model.mask_decoder.hq_features(embedding, early)
            out = model.mask_decoder(embedding, model.prompt_encoder.get_dense_pe(), sparse, dense, hq)
            outputs.append(out)
    for before, after in zip(outputs[0], outputs[1]):
        torch.testing.assert_close(after, before, rtol=0, atol=0)


# --- decoder-only files ------------------------------------------------------


def decoder_only(model: SamModel) -> dict[str, torch.Tensor]:
    """The epoch_N.pth layout: the mask decoder's keys without the prefix."""
    return model.mask_decoder.state_dict()


def sum_on_base(sum_model: SamModel, sam_model: SamModel) -> SamModel:
    """The model expected from the SUM decoder on top of the SAM model's encoders."""
    expected = random_model(sum_model.config)
    expected.image_encoder.load_state_dict(sam_model.image_encoder.state_dict())
    expected.prompt_encoder.load_state_dict(sam_model.prompt_encoder.state_dict())
    expected.mask_decoder.load_state_dict(sum_model.mask_decoder.state_dict())
    return expected


def test_decoder_only_with_base_path(sum_model, sam_model, tmp_path):
    decoder_path = save(decoder_only(sum_model), tmp_path / "epoch_11.pth")
    base_path = save(sam_model.state_dict(), tmp_path / "sam.pth")
    loaded = load_checkpoint(decoder_path, base=base_path, device="cpu")
    assert loaded.config == small_vit_config(hq=True, sum_tokens=True)
    assert_same_state(loaded, sum_on_base(sum_model, sam_model))


def test_decoder_only_with_base_model(sum_model, sam_model, tmp_path):
    decoder_path = save(decoder_only(sum_model), tmp_path / "epoch_0.pth")
    loaded = load_checkpoint(decoder_path, base=sam_model, device="cpu")
    assert_same_state(loaded, sum_on_base(sum_model, sam_model))


def register_cached(name: str, path: Path, tmp_path: Path) -> None:
    """Register ``path`` under ``name`` with its sha256 and place it in the cache."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    zoo.register_model(name, f"https://example.invalid/{name}.pth", f"sha256:{digest}")
    (tmp_path / "cache").mkdir(exist_ok=True)
    (tmp_path / "cache" / f"{name}.pth").write_bytes(path.read_bytes())


def test_decoder_only_with_base_registry_name(sum_model, sam_model, tmp_path):
    register_cached("my_base", save(sam_model.state_dict(), tmp_path / "sam.pth"), tmp_path)
    decoder_path = save(decoder_only(sum_model), tmp_path / "epoch_3.pth")
    loaded = load_checkpoint(decoder_path, base="my_base", device="cpu")
    assert_same_state(loaded, sum_on_base(sum_model, sam_model))
    # The same through load_model.
    via_load_model = load_model(decoder_path, device="cpu", base="my_base")
    assert_same_state(via_load_model, sum_on_base(sum_model, sam_model))


def test_decoder_only_without_base_is_explained(sum_model, tmp_path):
    decoder_path = save(decoder_only(sum_model), tmp_path / "epoch_11.pth")
    with pytest.raises(CheckpointError, match="decoder-only") as info:
        load_checkpoint(decoder_path, device="cpu")
    assert "epoch_11.pth" in str(info.value)
    assert "base=" in str(info.value)


def test_bad_base_arguments(sum_model, sam_model, tmp_path):
    decoder_path = save(decoder_only(sum_model), tmp_path / "epoch_1.pth")
    with pytest.raises(InvalidInputError, match="base: model 'no_such_model' is neither a registry model nor an existing file; known models: sam_vit_b"):
        load_checkpoint(decoder_path, base="no_such_model", device="cpu")
    with pytest.raises(CheckpointError, match="must be a full checkpoint"):
        load_checkpoint(decoder_path, base=decoder_path, device="cpu")
    full_path = save(sam_model.state_dict(), tmp_path / "sam.pth")
    with pytest.raises(InvalidInputError, match="is a full checkpoint"):
        load_checkpoint(full_path, base=full_path, device="cpu")


# --- load_model ---------------------------------------------------------------


def test_load_model_by_name_and_path(hq_model, tmp_path):
    path = save(hq_model.state_dict(), tmp_path / "hq.pth")
    assert_same_state(load_model(path, device="cpu"), hq_model)
    assert_same_state(load_model(str(path), device="cpu"), hq_model)
    register_cached("my_hq", path, tmp_path)
    assert_same_state(load_model("my_hq", device="cpu"), hq_model)


def test_load_model_unknown_lists_registry(tmp_path):
    with pytest.raises(InvalidInputError, match="neither a registry model nor an existing file") as info:
        load_model("sam_hq_vit_q", device="cpu")
    assert "sam_hq_vit_b" in str(info.value)
    assert "sam_vit_h" in str(info.value)


def test_registry_names_win_over_files_of_the_same_name(hq_model, sam_model, tmp_path, monkeypatch):
    register_cached("my_hq", save(hq_model.state_dict(), tmp_path / "hq.pth"), tmp_path)
    monkeypatch.chdir(tmp_path)
    save(sam_model.state_dict(), tmp_path / "my_hq")  # a file named like the registry entry
    assert zoo.locate("my_hq") == tmp_path / "cache" / "my_hq.pth"
    assert_same_state(load_model("my_hq", device="cpu"), hq_model)
    assert_same_state(resolve_model("my_hq", device="cpu"), hq_model)
    assert zoo.locate("./my_hq") == Path("my_hq")  # written as a path, it is the file
    assert_same_state(load_model("./my_hq", device="cpu"), sam_model)
    assert_same_state(resolve_model(Path("my_hq"), device="cpu"), sam_model)


@pytest.fixture
def fresh_resolver(monkeypatch) -> list[Path]:
    """An empty resolve_model cache; returns the list of files it loads."""
    monkeypatch.setattr(loading, "_RESOLVED", OrderedDict())
    loads: list[Path] = []
    real = loading.load_checkpoint
    monkeypatch.setattr(loading, "load_checkpoint", lambda path, **kw: loads.append(Path(path)) or real(path, **kw))
    return loads


def test_resolve_model_loads_each_file_once_and_keeps_the_last_two(
    hq_model, sam_model, sum_model, tmp_path, fresh_resolver
):
    hq_path = save(hq_model.state_dict(), tmp_path / "hq.pth")
    register_cached("my_hq", hq_path, tmp_path)
    first = resolve_model(hq_path, device="cpu")
    assert resolve_model(str(hq_path), device="cpu") is first
    (tmp_path / "sub").mkdir()
    assert resolve_model(tmp_path / "sub" / ".." / "hq.pth", device="cpu") is first
    assert fresh_resolver == [hq_path]
    assert_same_state(first, hq_model)
    cached = resolve_model("my_hq", device="cpu")  # the registry's own file: another path
    assert cached is not first and resolve_model("my_hq", device="cpu") is cached
    assert resolve_model(hq_model) is hq_model  # a model is returned as it is
    resolve_model(save(sam_model.state_dict(), tmp_path / "sam.pth"), device="cpu")  # evicts hq.pth
    assert len(fresh_resolver) == 3 and resolve_model("my_hq", device="cpu") is cached
    again = resolve_model(hq_path, device="cpu")
    assert again is not first and len(fresh_resolver) == 4
    with pytest.raises(InvalidInputError, match="must be a registry name, a checkpoint path or a SamModel"):
        resolve_model(3)


def test_resolve_model_loads_a_checkpoint_rewritten_in_place_again(hq_model, tmp_path, fresh_resolver):
    """A retrained checkpoint saved over the old file is the new model, not the cached old one."""
    import os

    path = save(hq_model.state_dict(), tmp_path / "best.pth")
    first = resolve_model(path, device="cpu")
    retrained = {k: v + 1 if v.is_floating_point() else v for k, v in hq_model.state_dict().items()}
    save(retrained, path)  # same size, same path
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a later write on a coarse clock
    second = resolve_model(path, device="cpu")
    assert second is not first and len(fresh_resolver) == 2
    assert torch.equal(second.state_dict()["mask_decoder.iou_token.weight"], retrained["mask_decoder.iou_token.weight"])


def test_resolve_model_from_two_threads_loads_once(hq_model, tmp_path, monkeypatch, fresh_resolver):
    """The second thread waits for the first one's load and gets the same model."""
    path = save(hq_model.state_dict(), tmp_path / "hq.pth")
    lock = loading._RESOLVE_LOCK
    waiting = threading.Semaphore(0)

    class WatchedLock:
        def __enter__(self):
            waiting.release()  # this thread now waits for (or takes) the lock
            return lock.__enter__()

        def __exit__(self, *exc):
            return lock.__exit__(*exc)

    monkeypatch.setattr(loading, "_RESOLVE_LOCK", WatchedLock())
    load = loading.load_checkpoint

    def load_while_the_other_thread_waits(path, **kw):
        assert waiting.acquire(timeout=30) and waiting.acquire(timeout=30)  # both threads are in
        return load(path, **kw)

    monkeypatch.setattr(loading, "load_checkpoint", load_while_the_other_thread_waits)
    got: list[SamModel] = []
    threads = [threading.Thread(target=lambda: got.append(resolve_model(path, device="cpu"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 2 and got[0] is got[1] and fresh_resolver == [path]


def test_invalid_device_is_rejected_before_loading(tmp_path):
    with pytest.raises(InvalidInputError, match="device='gpu0'"):
        load_checkpoint(tmp_path / "does_not_exist.pth", device="gpu0")


# --- infer_config ---------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        small_vit_config(hq=False),
        small_vit_config(hq=True),
        small_vit_config(hq=True, sum_tokens=True),
        preset_config("vit_b", model_type="custom", embed_dim=48, depth=3, num_heads=3,
                      global_attn_indexes=(0, 2), window_size=8, mlp_ratio=2.0, decoder_depth=1,
                      decoder_mlp_dim=512, iou_head_hidden_dim=128, hq=True),
    ],
    ids=["sam", "hq", "sum", "custom"],
)
def test_infer_config_recovers_small_vit(config):
    with torch.device("meta"):
        state = build_from_config(config).state_dict()
    assert infer_config(state) == config


def test_infer_config_recovers_small_tiny_vit():
    config = small_tiny_vit_config(hq=True, sum_tokens=True)
    with torch.device("meta"):
        state = build_from_config(config).state_dict()
    inferred = infer_config(state)
    # Stage 0 is convolutional: its heads/window are not in the weights (preset values kept).
    preset = preset_config("vit_tiny")
    expected = config.replace(
        tiny_num_heads=(preset.tiny_num_heads[0],) + config.tiny_num_heads[1:],
        tiny_window_sizes=(preset.tiny_window_sizes[0],) + config.tiny_window_sizes[1:],
    )
    assert inferred == expected
    assert inferred.encoder == "tiny_vit"
    assert inferred.tiny_embed_dims == config.tiny_embed_dims
    assert inferred.tiny_num_heads[1:] == config.tiny_num_heads[1:]


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h", "vit_tiny"])
@pytest.mark.parametrize(("hq", "sum_tokens"), [(False, False), (True, False), (True, True)])
def test_infer_config_official_sizes_on_meta(model_type, hq, sum_tokens):
    with torch.device("meta"):
        state = build_model(model_type, hq=hq, sum_tokens=sum_tokens).state_dict()
    inferred = infer_config(state)
    assert inferred == preset_config(model_type, hq=hq, sum_tokens=sum_tokens)
    assert inferred.model_type == model_type


@pytest.mark.parametrize(("model_type", "hq"), [("vit_b", False), ("vit_l", True), ("vit_h", True)])
def test_infer_config_on_reference_layout(model_type, hq):
    """State dicts of the reference implementation (as in the released files) are recognised."""
    with torch.device("meta"):
        state = reference_sam(preset_config(model_type, hq=hq)).state_dict()
    assert infer_config(state) == preset_config(model_type, hq=hq)


@pytest.mark.parametrize(
    "config",
    [small_vit_config(hq=False), small_vit_config(hq=True), small_tiny_vit_config(hq=True)],
    ids=["sam", "hq", "tiny-hq"],
)
def test_reference_checkpoint_loads_strictly(config, tmp_path):
    """A file saved from the reference model loads with every tensor in place."""
    torch.manual_seed(0)
    reference = reference_sam(config)
    path = save(reference.state_dict(), tmp_path / "reference.pth")
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.config.hq == config.hq
    assert loaded.config.encoder == config.encoder
    actual = loaded.state_dict()
    expected = reference.state_dict()
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def test_infer_config_official_details():
    with torch.device("meta"):
        state = build_model("vit_h").state_dict()
    config = infer_config(state)
    assert (config.embed_dim, config.depth, config.num_heads) == (1280, 32, 16)
    assert config.global_attn_indexes == (7, 15, 23, 31)
    assert config.window_size == 14
    assert config.image_size == 1024


def test_infer_config_on_decoder_only_state_fails_clearly(sum_model):
    with pytest.raises(CheckpointError, match="no ViT .* or TinyViT .* image encoder"):
        infer_config(decoder_only(sum_model))


# --- errors ---------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing_model\.pth does not exist"):
        load_checkpoint(tmp_path / "missing_model.pth", device="cpu")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pth is empty"):
        load_state_dict_file(tmp_path / "empty.pth")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_file(hq_model, tmp_path, legacy):
    path = save(hq_model.state_dict(), tmp_path / "full.pth", _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth is truncated or corrupted"):
        load_checkpoint(cut, device="cpu")


def test_png_file(tmp_path):
    path = tmp_path / "picture.pth"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path, format="PNG")
    with pytest.raises(CheckpointError, match=r"picture\.pth is not a PyTorch checkpoint.*PNG image"):
        load_state_dict_file(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\nat all\n")
    with pytest.raises(CheckpointError, match=r"notes\.pth is not a PyTorch checkpoint.*text file"):
        load_state_dict_file(path)


class _SideEffect:
    """Unpickling this writes a marker file: a stand-in for malicious code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_code_running_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "marker.txt"
    path = save({"weight": torch.zeros(2), "payload": _SideEffect(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"evil\.pth is not a plain weights file") as info:
        load_checkpoint(path, device="cpu")
    assert "Path.write_text" in str(info.value) or "unsupported" in str(info.value).lower()
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def test_raw_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"payload": _SideEffect(marker)}))
    with pytest.raises(CheckpointError, match="plain Python pickle"):
        load_state_dict_file(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"epoch": 3, "lr": 0.1}, "dict without any tensors"),
        ({}, "dict without any tensors"),
        ([torch.zeros(1)], "holds a list, not a state dict"),
        ({"weight": torch.zeros(1), "step": 7}, "these entries are not tensors: step"),
        ({0: torch.zeros(1)}, "keys must be strings, found 0"),
    ],
)
def test_not_a_state_dict(obj, message, tmp_path):
    path = save(obj, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=message):
        load_state_dict_file(path)


def test_missing_key_is_listed(hq_model, tmp_path):
    state = hq_model.state_dict()
    del state["mask_decoder.hf_mlp.layers.1.bias"]
    del state["image_encoder.blocks.0.norm2.weight"]
    with pytest.raises(CheckpointError, match="missing keys") as info:
        load_checkpoint(save(state, tmp_path / "m.pth"), device="cpu")
    assert "image_encoder.blocks.0.norm2.weight, mask_decoder.hf_mlp.layers.1.bias" in str(info.value)
    assert "unexpected" not in str(info.value)


def test_unexpected_keys_are_listed(hq_model, tmp_path):
    state = hq_model.state_dict()
    state["mask_decoder.bogus.weight"] = torch.zeros(3)
    state["extra_head.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="unexpected keys") as info:
        load_checkpoint(save(state, tmp_path / "u.pth"), device="cpu")
    assert "extra_head.bias, mask_decoder.bogus.weight" in str(info.value)
    assert "missing" not in str(info.value)


def test_shape_mismatch_is_listed(hq_model, tmp_path):
    state = hq_model.state_dict()
    state["mask_decoder.hf_mlp.layers.0.weight"] = torch.zeros(256, 128)
    with pytest.raises(CheckpointError, match="shape mismatches") as info:
        load_checkpoint(save(state, tmp_path / "s.pth"), device="cpu")
    assert "mask_decoder.hf_mlp.layers.0.weight (file (256, 128), model (256, 256))" in str(info.value)


def test_sum_tokens_without_hq_is_a_checkpoint_error(sum_model, tmp_path):
    state = {k: v for k, v in sum_model.state_dict().items() if "hf_token" not in k}
    with pytest.raises(CheckpointError, match="not valid.*requires hq=True"):
        load_checkpoint(save(state, tmp_path / "x.pth"), device="cpu")


def test_default_device_is_used(hq_model, tmp_path, monkeypatch):
    import sum_core.checkpoint as checkpoint

    chosen = []
    monkeypatch.setattr(checkpoint, "resolve_device", lambda d: chosen.append(d) or torch.device("cpu"))
    model = load_checkpoint(save(hq_model.state_dict(), tmp_path / "d.pth"))
    assert chosen == [None]
    assert next(model.parameters()).device.type == "cpu"
