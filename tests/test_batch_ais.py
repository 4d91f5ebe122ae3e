"""segment_zarr's AIS mode (sum_core.batch.ais_stages): equal to auto_segment(mode="ais"), resumable, verified;
the per-object table; the shared mode rule; ``sum-hq batch --mode``.

Both paths decode each tile through :func:`sum_core.ais.window_maps`, replaced by the exact window-local
fake of ``test_ais_auto`` (the maps of the objects visible in the window), so the comparison is of the
tiling, watershed, numbering and painting, bit for bit.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile
import zarr

from sum_core import ais
from sum_core.ais import AisOptions
from sum_core.object_scores import object_scores
from sum_core.auto_options import AutoOptions
from sum_core.automatic import auto_segment
from sum_core.batch import ais_stages, model_spec, object_table, segment_zarr, verify_target
from sum_core.batch import auto as batch_auto
from sum_core.cli import main as cli_main
from sum_core.errors import Cancelled, DamagedTargetError, InvalidInputError
from sum_core.tiling import Region
from test_ais_auto import ais_model, draw_disc, exact_window_maps, plain_model, synthetic_image  # noqa: F401
from test_batch import Counter, blobs, use_model

KW = dict(progress=False, device="cpu")


def finite_exact_maps(calls: list | None = None):
    """The exact fake, with the centre distance of a one-pixel visible part (0 / 0) set to 0."""
    fake = exact_window_maps(calls)

    def window_maps(model, window, precision="fp32"):
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(fake(model, window, precision), nan=0.0)

    return window_maps


@pytest.fixture
def exact(monkeypatch):
    calls: list = []
    monkeypatch.setattr(ais, "window_maps", finite_exact_maps(calls))
    return calls


def random_discs(shape: tuple[int, int], n: int, seed: int, max_radius: int = 30) -> np.ndarray:
    """uint8 image of ``n`` discs of random grey values (touching and overlapping ones too)."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.uint8)
    for _ in range(n):
        radius = int(rng.integers(4, max_radius))
        row = int(rng.integers(radius, shape[0] - radius))
        col = int(rng.integers(radius, shape[1] - radius))
        draw_disc(image, row, col, radius, int(rng.integers(20, 255)))
    return image


def assert_equals_auto_segment(group, image, model, options=None, tile_shape=None, halo=None, slice_index=0):
    """Labels (ids up to the plane's offset), uncertainty (float16) and the object table of one plane."""
    labels, uncertainty = auto_segment(image, options, mode="ais", model=model, tile_shape=tile_shape, halo=halo,
                                       **KW)
    index = slice_index if group["labels"].ndim == 3 else ...
    got = group["labels"][index].astype(np.int64)
    offset = int(group["counts"][:slice_index].sum()) if group["labels"].ndim == 3 else 0  # the earlier planes' ids
    np.testing.assert_array_equal(np.where(got > 0, got - offset, 0), labels)
    np.testing.assert_array_equal(group["uncertainty"][index], uncertainty.astype(np.float16))
    table = object_table(group)
    rows = table["slice"] == slice_index
    expected = object_scores(labels, uncertainty)
    np.testing.assert_array_equal(table["label"][rows], expected.label + offset)
    np.testing.assert_array_equal(table["area"][rows], expected.area)
    np.testing.assert_array_equal(table["mean_uncertainty"][rows], expected.mean_uncertainty)
    np.testing.assert_array_equal(table["boundary_uncertainty"][rows], expected.boundary_uncertainty)
    return labels


def test_2048_plane_equals_auto_segment(tmp_path, exact, ais_model):
    """Touching discs across every tile border, one far from the origin; micro-sam's defaults."""
    image = synthetic_image(touching=True)
    group = segment_zarr(image, tmp_path / "out.zarr", mode="ais", model=ais_model, **KW)
    assert len(exact) == 9  # one decoder pass per tile, no more
    labels = assert_equals_auto_segment(group, image, ais_model)
    assert int(labels.max()) == 68 and labels[2000, 1950] > 0
    assert "work" not in group and group.attrs["sum_hq_batch"]["signature"]["mode"] == "ais"
    assert group["objects/label"].dtype == np.uint32 and group["objects/label"].shape == (68,)


def test_camera_frame_equals_auto_segment_with_min_size(tmp_path, exact, ais_model):
    """1040 x 1392 (4 tiles), overlapping discs; min_size removes some objects, the ids stay equal."""
    image = random_discs((1040, 1392), 120, seed=3)
    options = AisOptions(min_size=400)
    group = segment_zarr(image, tmp_path / "out.zarr", mode="ais", model=ais_model, options=options, **KW)
    labels = assert_equals_auto_segment(group, image, ais_model, options)
    unfiltered, _ = auto_segment(image, mode="ais", model=ais_model, **KW)
    assert 0 < labels.max() < unfiltered.max()  # min_size removed objects


def test_stack_ids_per_plane(tmp_path, exact, ais_model):
    stack = np.stack([random_discs((300, 420), 30, seed=s) for s in range(3)])
    kwargs = dict(tile_shape=128, halo=24)
    group = segment_zarr(stack, tmp_path / "out.zarr", mode="ais", model=ais_model, **kwargs, **KW)
    assert group["labels"].shape == (3, 300, 420) and group["labels"].chunks == (1, 128, 128)
    for s in range(3):
        assert_equals_auto_segment(group, stack[s], ais_model, **kwargs, slice_index=s)
    table = object_table(tmp_path / "out.zarr")
    n = int(group["counts"][...].sum())  # sequential ids 1..N over the stack, one table row each
    np.testing.assert_array_equal(np.unique(group["labels"][...])[1:], np.arange(1, n + 1))
    np.testing.assert_array_equal(table["label"], np.arange(1, n + 1))
    assert set(table["slice"]) == {0, 1, 2}


def snake() -> np.ndarray:
    """One object winding over many 64 px tiles (far larger than any margin): it starts in the tile of its
    top-right corner and reaches left and down from there, and a small disc lies in its bend."""
    image = np.zeros((400, 520), np.uint8)
    image[40:50, 300:500] = 200   # first pixel (40, 300): in tile (0, 4)
    image[40:360, 300:310] = 200  # down...
    image[350:360, 20:310] = 200  # ...and left, to the far side
    image[100:360, 20:30] = 200
    draw_disc(image, 200, 150, 20, 90)
    return image


def test_a_unit_larger_than_the_margin_grows_the_window(tmp_path, exact, ais_model, monkeypatch):
    grown: list = []
    original = ais_stages._owned_units

    def spy(block, window, *args):
        found = original(block, window, *args)
        grown.append(isinstance(found, Region))
        return found

    monkeypatch.setattr(ais_stages, "_owned_units", spy)
    image = snake()
    kwargs = dict(tile_shape=64, halo=16)
    group = segment_zarr(image, tmp_path / "out.zarr", mode="ais", model=ais_model, **kwargs, **KW)
    assert any(grown)  # the snake's owner read beyond its first window
    labels = assert_equals_auto_segment(group, image, ais_model, **kwargs)
    # The fake cuts the snake's maps differently in each window, so it holds several seeds (objects), but its
    # foreground is one unit from end to end, owned by one chunk.
    assert labels.max() >= 2 and labels[45, 499] > 0 and labels[355, 25] > 0


def test_cancelled_job_resumes_bit_identical(tmp_path, ais_model, monkeypatch):
    image = random_discs((700, 900), 60, seed=5)
    kwargs = dict(mode="ais", model=ais_model, tile_shape=256, halo=32, **KW)
    fake = finite_exact_maps()
    monkeypatch.setattr(ais, "window_maps", fake)
    reference = segment_zarr(image, tmp_path / "ref.zarr", **kwargs)
    event, calls = threading.Event(), []

    def cancelling(model, window, precision="fp32"):
        calls.append(1)
        if len(calls) == 4:
            event.set()
        return fake(model, window, precision)

    monkeypatch.setattr(ais, "window_maps", cancelling)
    with pytest.raises(Cancelled):
        segment_zarr(image, tmp_path / "out.zarr", cancel=event, **kwargs)
    done = zarr.open_group(str(tmp_path / "out.zarr"))["done/tile"][...]
    assert 0 < done.sum() < 12
    calls.clear()
    event.clear()
    group = segment_zarr(image, tmp_path / "out.zarr", **kwargs)
    assert len(calls) == 12 - done.sum()  # finished tiles are not decoded again
    for name in ("labels", "uncertainty"):
        np.testing.assert_array_equal(group[name][...], reference[name][...])
    assert object_table(group).keys() == object_table(reference).keys()
    for name, values in object_table(reference).items():
        np.testing.assert_array_equal(object_table(group)[name], values)


def crash_in_chunks(monkeypatch, after: int) -> None:
    original, count = ais_stages.run_chunk, []

    def crashing(*args):
        count.append(1)
        if len(count) > after:
            raise RuntimeError("simulated crash")
        return original(*args)

    monkeypatch.setattr(ais_stages, "run_chunk", crashing)


def test_a_damaged_maps_block_is_found_and_repaired(tmp_path, exact, ais_model, monkeypatch):
    image = random_discs((600, 600), 40, seed=7)
    kwargs = dict(mode="ais", model=ais_model, tile_shape=256, halo=32, **KW, scheduler="synchronous")
    reference = segment_zarr(image, tmp_path / "ref.zarr", **kwargs)
    crash_in_chunks(monkeypatch, after=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_zarr(image, tmp_path / "out.zarr", **kwargs)
    monkeypatch.undo()
    monkeypatch.setattr(ais, "window_maps", finite_exact_maps())
    maps = zarr.open_group(str(tmp_path / "out.zarr"))["work/s0/maps"]
    maps[0, 256:300, 0:40] = 0.5  # tile 3's block altered (its checksum kept)
    with pytest.raises(DamagedTargetError, match="work/s0/maps block of tile 3 does not match its checksum"):
        segment_zarr(image, tmp_path / "out.zarr", **kwargs)
    with pytest.raises(DamagedTargetError, match="work/s0/maps block of tile 3"):
        verify_target(tmp_path / "out.zarr")
    with pytest.warns(UserWarning, match="repairing"):
        group = segment_zarr(image, tmp_path / "out.zarr", repair=True, **kwargs)
    for name in ("labels", "uncertainty", "objects/label", "objects/boundary_uncertainty"):
        np.testing.assert_array_equal(group[name][...], reference[name][...])
    assert verify_target(tmp_path / "out.zarr") == 9


def test_a_damaged_object_table_is_found_and_repaired(tmp_path, exact, ais_model):
    stack = np.stack([random_discs((200, 200), 12, seed=s) for s in range(2)])
    kwargs = dict(mode="ais", model=ais_model, **KW)
    group = segment_zarr(stack, tmp_path / "out.zarr", **kwargs)
    expected = object_table(group)
    rows = int((expected["slice"] == 0).sum())
    group["objects/area"][rows] += 1  # the first row of slice 1
    with pytest.raises(DamagedTargetError, match="objects table rows of slice 1 do not match"):
        verify_target(tmp_path / "out.zarr")
    with pytest.warns(UserWarning, match=r"redoing slice\(s\) \[1\]"):
        group = segment_zarr(stack, tmp_path / "out.zarr", repair=True, **kwargs)
    for name, values in expected.items():
        np.testing.assert_array_equal(object_table(group)[name], values)


def test_an_amg_target_of_the_previous_version_resumes_as_amg(tmp_path, monkeypatch):
    """Before the AIS mode, AMG jobs signed the mode "auto": such an unfinished target resumes (with mode
    "auto" and AutoOptions, or mode "amg"), redoing only its unfinished tiles."""
    from test_tiled_predictor import tiny_model

    use_model(monkeypatch, tiny_model())
    image = blobs((200, 260), seed=1)
    kwargs = dict(tile_shape=(64, 96), halo=16, progress=False, scheduler="synchronous")
    monkeypatch.setattr(batch_auto, "window_records", Counter(fail_at=5))
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_zarr(image, tmp_path / "out.zarr", options=AutoOptions(), **kwargs)
    old = zarr.open_group(str(tmp_path / "out.zarr"))
    info = old.attrs["sum_hq_batch"]
    assert info["signature"]["mode"] == "amg"
    info["signature"]["mode"] = "auto"  # as the previous version wrote it
    old.attrs["sum_hq_batch"] = info
    resumed = Counter()
    monkeypatch.setattr(batch_auto, "window_records", resumed)
    group = segment_zarr(image, tmp_path / "out.zarr", options=AutoOptions(), **kwargs)
    assert resumed.calls == 12 - 4 and group.attrs["sum_hq_batch"]["signature"]["mode"] == "auto"
    assert segment_zarr(image, tmp_path / "out.zarr", mode="amg", **kwargs) and resumed.calls == 8
    table = object_table(group)  # finished by this version: with its table (all tiles' records were kept)
    np.testing.assert_array_equal(table["label"], np.unique(group["labels"][...])[1:])


def test_auto_mode_picks_ais_iff_the_model_has_a_decoder(tmp_path, exact, ais_model, plain_model, monkeypatch):
    image = random_discs((200, 200), 8, seed=1)
    group = segment_zarr(image, tmp_path / "ais.zarr", model=ais_model, **KW)
    assert group.attrs["sum_hq_batch"]["signature"]["mode"] == "ais" and len(exact) == 1
    amg = Counter()
    monkeypatch.setattr(batch_auto, "window_records", amg)
    group = segment_zarr(image, tmp_path / "amg.zarr", model=plain_model, **KW)
    assert group.attrs["sum_hq_batch"]["signature"]["mode"] == "amg" and amg.calls == 1 and len(exact) == 1
    group = segment_zarr(image, tmp_path / "amg2.zarr", model=ais_model, options=AutoOptions(), **KW)
    assert group.attrs["sum_hq_batch"]["signature"]["mode"] == "amg" and amg.calls == 2  # the options decide
    with pytest.raises(InvalidInputError, match="AisOptions are the options of mode 'ais', but mode='amg'"):
        segment_zarr(image, tmp_path / "x.zarr", mode="amg", options=AisOptions(), model=ais_model, **KW)


@pytest.mark.parametrize("model", ["plain", "sam_hq_vit_b"])
def test_ais_of_a_model_without_decoder_is_refused_before_loading(tmp_path, monkeypatch, plain_model, model):
    def resolve(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(model_spec, "resolve_model", resolve)
    chosen = plain_model if model == "plain" else model
    with pytest.raises(InvalidInputError, match="has no AIS decoder, so mode 'ais' cannot run"):
        segment_zarr(np.ones((64, 64), np.uint8), tmp_path / "out.zarr", mode="ais", model=chosen, **KW)
    with pytest.raises(InvalidInputError, match="has no AIS decoder"):
        auto_segment(np.ones((64, 64), np.uint8), mode="ais", model=chosen, **KW)
    assert not (tmp_path / "out.zarr").exists()


def cli(argv: list[str]) -> int:
    return cli_main(["batch", *argv])


def test_cli_mode_ais_writes_and_names_the_object_table(tmp_path, exact, ais_model, monkeypatch, capsys):
    monkeypatch.setattr(model_spec, "resolve_model", lambda name, device, ais_decoder=False: ais_model)
    image = random_discs((300, 300), 15, seed=2)
    zarr.open_group(str(tmp_path / "in.zarr"), mode="w").create_array("img", data=image)
    argv = [str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr"), "--key", "img", "--model", "vit_b_lm",
            "--mode", "ais", "--min-size", "50", "--distance-smoothing", "1.0", "--no-progress", "--device", "cpu"]
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert f"labels {tmp_path / 'out.zarr' / 'labels'}" in out and f"{tmp_path / 'out.zarr' / 'objects'}" in out
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    signed = group.attrs["sum_hq_batch"]["signature"]
    assert signed["mode"] == "ais" and signed["options"]["min_size"] == 50
    assert signed["options"]["distance_smoothing"] == 1.0
    assert_equals_auto_segment(group, image, ais_model, AisOptions(min_size=50, distance_smoothing=1.0))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--mode", "ais", "--points-per-side", "8"], "--points-per-side: AMG options do not apply with --mode ais"),
        (["--mode", "amg", "--min-size", "5"], "--min-size: AIS options do not apply with --mode amg"),
        (["--min-size", "5", "--min-area", "3"], "options of both automatic modes"),
        (["--mode", "ais", "--model", "sam_hq_vit_b"], "has no AIS decoder, so mode 'ais' cannot run"),
        (["--mode", "ais", "--prompts", "p.csv"], "--mode ais: automatic mode options do not apply with --prompts"),
        (["--verify", "--foreground-threshold", "0.4"], "--verify: only checks TARGET"),
    ],
    ids=["amg-flag-ais", "ais-flag-amg", "both", "no-decoder", "prompts", "verify"],
)
def test_cli_refuses_options_of_the_other_mode_before_loading(tmp_path, monkeypatch, capsys, flags, message):
    def resolve(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(model_spec, "resolve_model", resolve)
    tifffile.imwrite(tmp_path / "in.tif", np.ones((8, 8), np.uint8))
    assert cli([str(tmp_path / "in.tif"), str(tmp_path / "out.zarr"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.zarr").exists()


def test_real_small_model_equals_auto_segment(tmp_path, ais_model):
    """A random small encoder and AIS decoder (no fake), 4 tiles: the batch job decodes the same windows."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4096, (400, 500), dtype=np.uint16)
    image[100:220, 150:300] += 3000
    kwargs = dict(tile_shape=256, halo=32)
    group = segment_zarr(image, tmp_path / "out.zarr", mode="ais", model=ais_model, **kwargs, **KW)
    assert_equals_auto_segment(group, image, ais_model, **kwargs)
