"""Speed options (bf16 autocast, torch.compile) against the plain float32 path on the same weights."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import tifffile
import torch
import zarr

from reference_models import randomize_
from small_models import small_tiny_vit_config, small_vit_config
from sum_core import acceleration, api
from sum_core.acceleration import PRECISIONS, autocast, check_precision, compile_model
from sum_core.cli import build_parser, main
from sum_core.errors import InvalidInputError
from sum_core.modeling import build_from_config
from sum_core.predictor import Predictor
from sum_core.tiled_predictor import TiledPredictor

CONFIGS = {"vit": small_vit_config, "tiny_vit": small_tiny_vit_config}
POINTS, LABELS = np.array([[150.0, 200.0], [60.0, 90.0]]), np.array([1, 0])
BOX = np.array([40.0, 60.0, 230.0, 340.0])


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-12))


def scene(shape=(300, 400), seed=0) -> np.ndarray:
    """RGB uint8: a bright disc and a darker square on a noisy background."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    disc = ((rows - 150) ** 2 + (cols - 200) ** 2) < 70**2
    square = (rows > 200) & (cols < 100)
    base = 50 + 140 * disc[..., None] + 70 * square[..., None] + rng.normal(0, 15, (*shape, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


IMAGE = scene()


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request):
    torch.manual_seed(0)
    return randomize_(build_from_config(CONFIGS[request.param]()), seed=3)


def predictions(predictor: Predictor, box: bool = True) -> list:
    predictor.set_image(IMAGE)
    first = predictor.predict(points=POINTS, labels=LABELS)
    return [first, predictor.predict(box=BOX, uncertainty="entropy", multimask=True)] if box else [first]


def test_bf16_on_cpu_is_close_to_fp32_and_returns_float32(model):
    reference = predictions(Predictor(model, "cpu"))
    bf16_predictor = Predictor(model, "cpu", precision="bf16")
    bf16 = predictions(bf16_predictor)
    embedding = bf16_predictor.get_embedding()
    assert embedding.embedding.dtype == embedding.early.dtype == embedding.hq_features.dtype == torch.float32
    for ours, ref in zip(bf16, reference):
        for name in ("logits", "low_res_logits", "uncertainties"):
            assert getattr(ours, name).dtype == np.float32
        low_err, full_err = rel_err(ours.low_res_logits, ref.low_res_logits), rel_err(ours.logits, ref.logits)
        assert 1e-6 < low_err < 1e-2 and full_err < 1e-2  # bf16 really ran, and stayed close
        bound = float(np.abs(ours.logits - ref.logits).max())
        flipped = ours.masks != ref.masks
        # masks differ only where the float32 logit is within bf16's error of 0, and rarely
        assert np.all(np.abs(ref.logits[flipped]) <= bound)
        assert flipped.mean() < 1e-2
        assert np.abs(ours.uncertainties - ref.uncertainties).max() < 0.05
        assert abs(ours.score - ref.score) < 0.05


def test_precision_is_checked_at_construction(model):
    with pytest.raises(InvalidInputError, match=r"precision='fp16' needs a CUDA device, got device 'cpu'"):
        Predictor(model, "cpu", precision="fp16")
    with pytest.raises(InvalidInputError, match=r"precision='int8' is not one of"):
        Predictor(model, "cpu", precision="int8")
    with pytest.raises(InvalidInputError, match="compile must be True or False"):
        Predictor(model, "cpu", compile="yes")
    with pytest.raises(InvalidInputError, match="precision='fp16' needs a CUDA device"):
        TiledPredictor(model, device="cpu", precision="fp16")
    with pytest.raises(InvalidInputError, match="precision='fp16' needs a CUDA device"):
        api.segment(IMAGE, points=POINTS, model=model, device="cpu", precision="fp16")


def test_autocast_runs_matmuls_in_bf16_and_fp32_untouched():
    a = torch.randn(8, 8)
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert torch.equal(a @ a, a @ a) and (a @ a).dtype == torch.float32
    assert check_precision("bf16", torch.device("cpu")) == "bf16"


def test_tiled_mode_runs_at_the_predictor_precision(model, monkeypatch):
    seen = []
    real_init = TiledPredictor.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("precision"))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(TiledPredictor, "__init__", spy)
    predictor = Predictor(model, "cpu", precision="bf16")
    predictor.set_image(IMAGE, tile_shape=(200, 200), halo=16)
    assert seen == ["bf16"]
    assert predictor.tiled.embeddings.precision == "bf16" and predictor.tiled.precision == "bf16"
    pred = predictor.predict(points=POINTS[:1], labels=LABELS[:1])
    assert pred.logits.dtype == np.float32 and pred.mask.any()


# -- torch.compile ------------------------------------------------------------------------------


class FakeModule:
    """Stands in for a child module: records the ``compile`` keyword arguments."""

    def __init__(self, calls: list, name: str) -> None:
        self.compile = lambda **kwargs: calls.append((name, kwargs))


class FakeModel:
    def __init__(self, calls: list) -> None:
        for name in ("image_encoder", "prompt_encoder", "mask_decoder"):
            setattr(self, name, FakeModule(calls, name))


def test_compile_model_cuda_branch_uses_cuda_graphs_for_the_decoder(monkeypatch):
    monkeypatch.setattr(acceleration.importlib.util, "find_spec", lambda name: object())  # "triton is there"
    calls = []
    fake = FakeModel(calls)
    compile_model(fake, torch.device("cuda"))
    assert calls == [
        ("image_encoder", {"dynamic": False}),
        ("prompt_encoder", {"mode": "reduce-overhead"}),
        ("mask_decoder", {"mode": "reduce-overhead"}),
    ]
    assert acceleration.uses_cuda_graphs(fake)
    compile_model(fake, torch.device("cuda"))
    assert len(calls) == 3  # idempotent

    cpu_calls = []
    cpu_model = FakeModel(cpu_calls)
    compile_model(cpu_model, torch.device("cpu"))
    assert cpu_calls == [("prompt_encoder", {}), ("mask_decoder", {})]  # the eager CPU encoder is faster
    assert not acceleration.uses_cuda_graphs(cpu_model)


def test_compile_without_a_compiler_is_a_clear_error(model, monkeypatch):
    monkeypatch.setattr(acceleration.shutil, "which", lambda name: None)
    fresh = copy.deepcopy(model)
    with pytest.raises(InvalidInputError, match=r"compile=True on device 'cpu' needs a C\+\+ compiler.*g\+\+"):
        Predictor(fresh, "cpu", compile=True)
    assert not acceleration.uses_cuda_graphs(fresh) and not hasattr(fresh, acceleration._COMPILED)
    monkeypatch.setattr(acceleration.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InvalidInputError, match="compile=True on device 'cuda' needs the 'triton' package"):
        compile_model(FakeModel([]), torch.device("cuda"))


@pytest.mark.slow
def test_compiled_predictor_matches_eager_fp32():
    """Real inductor on the CPU (the smallest model; 2-3 minutes on 2 shared cores, less with a warm inductor cache)."""
    torch.manual_seed(0)
    eager_model = randomize_(build_from_config(small_tiny_vit_config()), seed=3)
    compiled_model = copy.deepcopy(eager_model)
    keys = list(eager_model.state_dict())
    # one prompt shape: a second one recompiles the decoder (with dynamic shapes), ~doubling the time
    reference = predictions(Predictor(eager_model, "cpu"), box=False)
    start = time.perf_counter()
    compiled = predictions(Predictor(compiled_model, "cpu", compile=True), box=False)
    print(f"compile + first predictions: {time.perf_counter() - start:.1f} s")
    assert list(compiled_model.state_dict()) == keys
    assert compiled_model.mask_decoder._compiled_call_impl is not None  # really compiled
    assert compiled_model.image_encoder._compiled_call_impl is None  # eager on the CPU (faster)
    for ours, ref in zip(compiled, reference):
        for name in ("logits", "low_res_logits", "uncertainty"):
            assert rel_err(getattr(ours, name), getattr(ref, name)) < 1e-4
        assert abs(ours.score - ref.score) < 1e-4
    wrapped = compiled_model.mask_decoder._compiled_call_impl
    compile_model(compiled_model, torch.device("cpu"))  # a second call does nothing
    assert compiled_model.mask_decoder._compiled_call_impl is wrapped


# -- command line -------------------------------------------------------------------------------


def test_cli_speed_flags_parse_and_reach_the_predictor(small_hq_checkpoint, tmp_path, monkeypatch):
    args = build_parser().parse_args(["segment", "sample", "--point", "5,5", "--out", "m.tif",
                                      "--precision", "bf16", "--compile"])
    assert (args.precision, args.compile) == ("bf16", True)
    args = build_parser().parse_args(["batch", "in.zarr", "out.zarr"])
    assert (args.precision, args.compile) == ("fp32", False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["segment", "sample", "--out", "m.tif", "--precision", "fp64"])
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices["segment"]._actions:
        if action.dest == "precision":
            assert tuple(action.choices) == PRECISIONS

    seen = []
    monkeypatch.setattr(acceleration, "compile_model", lambda model, device: seen.append(("compile", device.type)))
    monkeypatch.setattr("sum_core.encoding.compile_model", acceleration.compile_model)
    real_init = Predictor.__init__

    def spy(self, model, device=None, *, precision="fp32", compile=False):
        seen.append((precision, compile))
        real_init(self, model, device, precision=precision, compile=compile)

    monkeypatch.setattr(Predictor, "__init__", spy)
    image = tmp_path / "in.tif"
    tifffile.imwrite(image, IMAGE[..., 0])
    out = tmp_path / "mask.tif"
    code = main(["segment", str(image), "--point", "150,200", "--model", small_hq_checkpoint,
                 "--device", "cpu", "--precision", "bf16", "--compile", "--out", str(out)])
    assert code == 0 and out.exists()
    assert seen == [("bf16", True), ("compile", "cpu")]


def test_cli_batch_speed_flags_reach_the_tile_predictor(small_hq_checkpoint, tmp_path, monkeypatch):
    import sum_core.batch.auto as batch_auto

    specs = []
    monkeypatch.setattr(batch_auto, "window_records", lambda prepared, spec, *rest: specs.append(spec) or [])
    root = zarr.open_group(str(tmp_path / "in.zarr"), mode="w")
    root.create_array("img", data=IMAGE[..., 0])
    argv = ["batch", str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr"), "--key", "img", "--model", small_hq_checkpoint,
            "--tile", "150,200", "--halo", "8", "--device", "cpu", "--no-progress"]
    assert main([*argv, "--precision", "bf16", "--compile"]) == 0
    assert len(specs) == 4 and {(s.model, s.precision, s.compile) for s in specs} == {(small_hq_checkpoint, "bf16", True)}
    signature = zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs["sum_hq_batch"]["signature"]
    assert signature["precision"] == "bf16"  # a bf16 job is never resumed at fp32
    assert main([*argv[:2], str(tmp_path / "fp32.zarr"), *argv[3:]]) == 0
    fp32 = zarr.open_group(str(tmp_path / "fp32.zarr"), mode="r").attrs["sum_hq_batch"]["signature"]
    assert "precision" not in fp32 and specs[-1].precision == "fp32" and specs[-1].compile is False
