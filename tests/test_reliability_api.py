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


@pytest.mark.parametrize("seed", [1.5, -1], ids=["float", "negative (found by the fuzz suite: numpy's ValueError)"])
def test_a_bad_seed_is_refused_by_name(model, image, seed):
    predictor = Predictor(model, device="cpu")
    predictor.set_image(image)
    with pytest.raises(InvalidInputError, match=f"seed must be an integer >= 0, got {seed}"):
        predictor.predict(points=[[50, 50]], uncertainty="ensemble", seed=seed)


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


# --- sources: zarr keys, paths, damaged files (every read goes through Planes.read) -------------------


@pytest.fixture
def zarr_group(tmp_path):
    import zarr

    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("img", shape=(10, 12), dtype="u1")
    return tmp_path / "g.zarr"


@pytest.mark.parametrize("key", [5, b"img"])
def test_a_zarr_key_that_is_not_a_string_is_refused_by_name(zarr_group, key):
    from sum_core.sources import open_image

    with pytest.raises(InvalidInputError, match=rf"key: expected the path of an array inside zarr group .*g\.zarr "
                                                 rf"as a string, got {key!r}"):  # fmt: skip
        open_image(zarr_group, key=key)


@pytest.mark.parametrize("key", ["..", "img/..", "../g.zarr", "nothing"])
def test_a_zarr_key_that_names_no_array_is_refused_with_the_arrays_there(zarr_group, key):
    from sum_core.sources import open_image

    with pytest.raises(InvalidInputError) as info:
        open_image(zarr_group, key=key)
    assert str(info.value) == (
        f"key: {key!r} not found in zarr group {zarr_group}; its arrays are ['img']"
    )


def test_ome_zarr_metadata_naming_a_missing_level_is_refused_by_name(tmp_path):
    import zarr

    from sum_core.sources import open_image

    group = zarr.open_group(tmp_path / "ome.zarr", mode="w")
    group.create_array("1", shape=(4, 4), dtype="u1")
    group.attrs["multiscales"] = [{"datasets": [{"path": "0"}, {"path": "1"}]}]
    with pytest.raises(InvalidInputError) as info:
        open_image(tmp_path / "ome.zarr")
    assert str(info.value) == (
        f"level 0: '0' (named by its OME-Zarr metadata) not found in zarr group {tmp_path / 'ome.zarr'}; "
        "its arrays are ['1']"
    )
    assert open_image(tmp_path / "ome.zarr", level=1).shape == (4, 4)


@pytest.mark.parametrize("reader", ["open_image", "read_image", "check_image_target"])
def test_a_nul_character_in_a_file_name_is_named(tmp_path, reader):
    from sum_core.imageio import check_image_target, read_image
    from sum_core.sources import open_image

    path = f"{tmp_path}/a\x00b.tif"
    call = {"open_image": open_image, "read_image": read_image,
            "check_image_target": lambda p: check_image_target(p, (4, 4), np.uint8)}[reader]  # fmt: skip
    with pytest.raises(InvalidInputError, match=r"contains a NUL character") as info:
        call(path)
    assert repr(path) in str(info.value)


@pytest.mark.parametrize("reader", ["open_image", "read_image", "check_image_target", "inside_a_loop"])
def test_a_symbolic_link_loop_is_named_not_reported_missing(tmp_path, reader):
    import os

    from sum_core.imageio import check_image_target, read_image
    from sum_core.sources import open_image

    loop = tmp_path / "loop.tif"
    os.symlink(loop, loop)
    if reader == "inside_a_loop":  # a file below a folder link that leads back to itself
        with pytest.raises(InvalidInputError, match=r"is a symbolic-link loop"):
            check_image_target(loop / "out.tif", (4, 4), np.uint8, name="--out")
        return
    call = {"open_image": open_image, "read_image": read_image,
            "check_image_target": lambda p: check_image_target(p, (4, 4), np.uint8)}[reader]  # fmt: skip
    with pytest.raises(InvalidInputError) as info:
        call(loop)
    assert f"{loop} is a symbolic-link loop" in str(info.value)


def _truncated_tiff(path, **kwargs):
    import tifffile

    image = np.random.default_rng(4).integers(0, 65535, (256, 256), dtype=np.uint16)
    tifffile.imwrite(path, image, **kwargs)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("layout", [{}, {"tile": (64, 64), "compression": "zlib"}], ids=["strips", "zlib-tiles"])
def test_a_truncated_tiff_is_refused_when_opened(tmp_path, model, layout):
    from sum_core.sources import open_image

    path = tmp_path / "cut.tif"
    _truncated_tiff(path, **layout)
    message = rf"source: {path} is truncated: its image data reach byte \d+ but the file has \d+ bytes"
    with pytest.raises(InvalidInputError, match=message):
        open_image(path)
    with pytest.raises(InvalidInputError, match=message):
        Predictor(model, device="cpu").set_image(path)


def test_a_damaged_tile_names_the_file_and_the_region_read(tmp_path, model):
    """A TIFF of full length whose middle slice is garbage: opening works, reading that slice fails
    clearly (a SumError naming the file, rows, cols and slice), the other slices still read."""
    import tifffile

    from sum_core.sources import Planes, open_image
    from sum_core.tiling import Region

    path = tmp_path / "stack.tif"
    stack = np.random.default_rng(5).integers(0, 65535, (3, 128, 128), dtype=np.uint16)
    tifffile.imwrite(path, stack, photometric="minisblack", tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[1].dataoffsets[0]
    data = bytearray(path.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    planes = Planes(open_image(path), stack_axis=0)
    np.testing.assert_array_equal(planes.read(2, Region(0, 0, 64, 64)), stack[2, :64, :64])
    with pytest.raises(InvalidInputError) as info:
        planes.read(1, Region(0, 0, 64, 64))
    assert str(info.value).startswith(f"image: could not read rows 0:64, cols 0:64 of slice 1 of {path} (")
    assert "damaged or cut short" in str(info.value)


def test_a_batch_job_over_a_damaged_tiff_names_the_file_before_encoding(tmp_path, model, monkeypatch):
    """The job signature hashes every pixel (embedding_cache.data_hash): its reads go through
    sources.read_block too, so damaged data is a clear error there, not a raw codec error."""
    import tifffile

    from sum_core.batch import segment_zarr

    path = tmp_path / "slide.tif"
    image = np.random.default_rng(6).integers(0, 65535, (2048, 2048), dtype=np.uint16)
    tifffile.imwrite(path, image, photometric="minisblack", tile=(256, 256), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[-1]  # the tile at the bottom-right corner, far from the origin
    data = bytearray(path.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    counter = EncoderCounter(model, monkeypatch)
    with pytest.raises(InvalidInputError, match=rf"image: could not read the block .* of {path} \(.*damaged or cut short"):
        segment_zarr(path, tmp_path / "out.zarr", model=model, device="cpu", progress=False)
    assert counter.calls == 0


def test_a_bad_numpy_image_is_refused_before_the_model_is_resolved(monkeypatch):
    """A NaN pixel is found before ``segment`` resolves (and maybe downloads) the model."""
    import sum_core.api

    monkeypatch.setattr(sum_core.api, "resolve_model", lambda *a, **k: pytest.fail("the model was resolved"))
    image = np.random.default_rng(8).random((1040, 1392)).astype(np.float32)
    image[1000, 1300] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        segment(image, points=[[500, 700]], model="sam_hq_vit_b", device="cpu")


@pytest.mark.parametrize("shape", [(1, 600), (600, 1)])
def test_an_image_thinner_than_a_resized_pixel_is_segmented(model, shape):
    """Squeezed into one window (tile_shape larger than the encoder), a 1 x 600 image would resize to
    0 rows on a 256 px encoder (PIL raised a raw ValueError, found by the fuzz suite): a side is never less than 1 pixel."""
    image = np.random.default_rng(7).integers(0, 255, shape, dtype=np.uint8)
    pred = segment(image, points=[[0, 0]], model=model, device="cpu", tile_shape=1000)
    assert pred.masks.shape == (1, *shape) and np.isfinite(pred.logits).all()


# --- options a model cannot honour, and strings given for booleans -----------------------------------


@pytest.fixture(scope="module")
def plain_sam():
    torch.manual_seed(0)
    return build_from_config(small_vit_config(hq=False).replace(image_size=256))


def test_hq_token_only_on_plain_sam_is_refused_before_anything_is_encoded(plain_sam, image, monkeypatch):
    from sum_core import TiledPredictor
    from sum_core.prediction import PredictOptions

    counter = EncoderCounter(plain_sam, monkeypatch)
    message = "hq_token_only=True needs an HQ-SAM or SUM model"
    with pytest.raises(InvalidInputError, match=message):
        segment(image, points=[[50, 50]], model=plain_sam, device="cpu", hq_token_only=True)
    tiled = TiledPredictor(plain_sam, device="cpu")
    tiled.set_image(image)
    with pytest.raises(InvalidInputError, match=message):
        tiled.predict(points=[[50, 50]], options=PredictOptions(hq_token_only=True))
    assert counter.calls == 0
    predictor = Predictor(plain_sam, device="cpu")
    predictor.set_image(image)
    with pytest.raises(InvalidInputError, match=message):
        predictor.predict(points=[[50, 50]], hq_token_only=True)
    assert predictor.predict(points=[[50, 50]]).masks.shape == (1, *image.shape)


@pytest.mark.parametrize("value", ["no", "False"])
@pytest.mark.parametrize("call", ["segment-compile", "Predictor-compile", "set_image-overwrite",
                                  "TiledPredictor-compile", "tiled_set_image-overwrite", "tiled-follow",
                                  "propagate-progress"])  # fmt: skip
def test_strings_given_for_booleans_are_refused_by_name(model, image, tmp_path, monkeypatch, call, value):
    """``"no"`` is truthy: taken as a bool it would compile, overwrite a cache or follow silently."""
    from sum_core import TiledPredictor

    counter = EncoderCounter(model, monkeypatch)
    name = call.split("-")[-1]
    with pytest.raises(InvalidInputError, match=f"{name} must be True or False, got '{value}'"):
        if call == "segment-compile":
            segment(image, points=[[50, 50]], model=model, device="cpu", compile=value)
        elif call == "Predictor-compile":
            Predictor(model, device="cpu", compile=value)
        elif call == "set_image-overwrite":
            Predictor(model, device="cpu").set_image(image, cache=tmp_path / "cache.zarr", overwrite=value)
        elif call == "TiledPredictor-compile":
            TiledPredictor(model, device="cpu", compile=value)
        elif call == "tiled_set_image-overwrite":
            TiledPredictor(model, device="cpu", cache=tmp_path / "cache.zarr").set_image(image, overwrite=value)
        elif call == "tiled-follow":
            tiled = TiledPredictor(model, device="cpu")
            tiled.set_image(image)
            tiled.predict(points=[[50, 50]], follow=value)
        else:
            stack = np.stack([image] * 3)
            propagate(stack, axis=0, index=1, mask_or_prompts={"points": [[50, 50]]}, model=model,
                      device="cpu", progress=value)  # fmt: skip
    assert counter.calls == 0
    assert not (tmp_path / "cache.zarr").exists()


def test_a_numpy_bool_is_a_bool(model, image):
    predictor = Predictor(model, device="cpu", compile=np.False_)
    predictor.set_image(image)
    assert predictor.predict(points=[[50, 50]], multimask=np.True_).masks.shape == (1, *image.shape)
