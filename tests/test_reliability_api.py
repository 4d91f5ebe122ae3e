"""Issue 11, the API cases already closed by the one-core work: bad prompts and options refused with
messages that name them, before any encoder work, and no silently wrong results."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from small_models import small_vit_config
from tiled_fakes import EncoderCounter
from sum_core import Predictor, segment
from sum_core.errors import InvalidInputError
from sum_core.modeling import build_from_config
from sum_core.propagation import propagate


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_from_config(small_vit_config().replace(image_size=256))


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 255, (200, 240), dtype=np.uint8)


def test_huge_mask_prompt_logits_are_refused_not_turned_into_nan(model, image):
    predictor = Predictor(model, device="cpu")
    predictor.set_image(image)
    with pytest.raises(InvalidInputError, match=r"mask_input: logits must lie within"):
        predictor.predict(points=[[50, 50]], mask_input=np.full((1, 64, 64), 1e20, np.float32))
    with pytest.raises(InvalidInputError, match=r"mask_input: logits must lie within"):
        predictor.predict(points=[[50, 50]], mask_input=np.full(image.shape, 1e20, np.float32))
    pred = predictor.predict(points=[[50, 50]], mask_input=np.full((1, 64, 64), 1e6, np.float32))
    assert np.isfinite(pred.logits).all() and np.isfinite(pred.uncertainty).all()


@pytest.mark.parametrize("shape", [(200, 240), (300, 500)], ids=["one window", "tiled"])
def test_one_mask_prompt_with_several_boxes_applies_to_every_box(model, shape):
    rng = np.random.default_rng(1)
    predictor = Predictor(model, device="cpu")
    predictor.set_image(rng.integers(0, 255, shape, dtype=np.uint8))
    boxes = [[10, 10, 60, 60], [100, 100, 150, 200]]
    mask = np.zeros(shape, bool)
    mask[20:50, 20:50] = True
    pred = predictor.predict(box=boxes, mask_input=mask)
    assert pred.masks.shape == (2, *shape) and np.isfinite(pred.logits).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": [1]}, r"task=\[1\] is not valid"),
        ({"hq_token_only": "False"}, "hq_token_only must be True or False"),
        ({"multimask": 1}, "multimask must be True or False"),
        ({"uncertainty": "nope"}, "uncertainty='nope' is not known"),
    ],
)
def test_bad_options_are_refused_by_name_before_anything_is_encoded(model, image, monkeypatch, kwargs, message):
    counter = EncoderCounter(model, monkeypatch)
    with pytest.raises(InvalidInputError, match=message):
        segment(image, points=[[50, 50]], model=model, device="cpu", **kwargs)
    assert counter.calls == 0


def test_a_bad_seed_is_refused_by_name(model, image):
    predictor = Predictor(model, device="cpu")
    predictor.set_image(image)
    with pytest.raises(InvalidInputError, match="seed must be an integer"):
        predictor.predict(points=[[50, 50]], uncertainty="ensemble", seed=1.5)


def test_bad_prompts_are_refused_before_anything_is_encoded(model, image, monkeypatch):
    counter = EncoderCounter(model, monkeypatch)
    with pytest.raises(InvalidInputError, match="points"):
        segment(image, points=[[500, 50]], model=model, device="cpu")
    with pytest.raises(InvalidInputError, match="labels"):
        segment(image, points=[[50, 50]], labels=[2], model=model, device="cpu")
    with pytest.raises(InvalidInputError, match="box"):
        segment(image, box=[60, 60, 10, 10], model=model, device="cpu")
    assert counter.calls == 0


def test_propagate_takes_numpy_float_thresholds(model):
    stack = np.random.default_rng(2).integers(0, 255, (3, 64, 80), dtype=np.uint8)
    mask = np.zeros((64, 80), bool)
    mask[20:40, 20:40] = True
    out = propagate(stack, axis=0, index=1, mask_or_prompts=mask, model=model, device="cpu",
                    iou_threshold=np.float32(0.0), score_threshold=np.float64(0.0), progress=False)
    assert out.shape == stack.shape


def test_set_image_in_one_thread_while_another_predicts_never_fails(model):
    """The predictor's state changes under its lock: a predict sees the old or the new image."""
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (120, 160), dtype=np.uint8) for _ in range(2)]
    predictor = Predictor(model, device="cpu")
    predictor.set_image(images[0])
    errors: list[BaseException] = []

    def predict_many():
        try:
            for _ in range(10):
                assert predictor.predict(points=[[60, 80]]).masks.shape == (1, 120, 160)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    thread = threading.Thread(target=predict_many)
    thread.start()
    for i in range(6):
        predictor.set_image(images[i % 2])
    thread.join(timeout=120)
    assert not thread.is_alive() and errors == []


def test_sum_hq_version(capsys):
    from sum_core import __version__
    from sum_core.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"sum-hq {__version__}"


@pytest.mark.parametrize("device", ["meta", "xla", "xpu:0"])
def test_devices_the_models_do_not_run_on_are_refused_by_name(device, image):
    from sum_core.device import resolve_device

    with pytest.raises(InvalidInputError, match=f"device='{device}': sum_core runs on cpu, cuda, mps devices"):
        resolve_device(device)
    with pytest.raises(InvalidInputError, match="sum_core runs on cpu, cuda, mps devices"):
        segment(image, points=[[5, 5]], device=device)


@pytest.mark.parametrize("reader", ["open_image", "read_image"])
def test_a_named_pipe_is_refused_instead_of_hanging(tmp_path, reader):
    import os

    from sum_core.imageio import read_image
    from sum_core.sources import open_image

    pipe = tmp_path / "stack.tif"
    os.mkfifo(pipe)
    with pytest.raises(InvalidInputError, match="is not a regular file or folder"):
        (open_image if reader == "open_image" else read_image)(pipe)
