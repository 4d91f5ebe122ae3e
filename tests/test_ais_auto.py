"""auto_segment's AIS mode (sum_core.ais): tiled AIS with an exact fake decoder, mode choice, refusals,
and a real small model end to end.

The exact fake stands in for the one per-window step (:func:`sum_core.ais.window_maps`): it sees only the
window's pixels, in which every object is drawn with its own grey value (touching objects differ), and
returns the true maps of the objects *as visible in the window*: foreground 1 inside, centre distance
(distance to the visible part's centroid over its maximum), boundary distance (1 - distance to the
outside over its maximum); background (0, 1, 1). Every map is computed in the object's own box, so an
object seen whole gets bit-identical maps from every window; an object cut by a window edge gets other
maps there, as a real decoder would.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import zarr
from scipy import ndimage

from sum_core import ais, automatic
from sum_core.ais import AisOptions, ais_maps
from sum_core.ais_postprocess import instances_from_distance_maps
from sum_core.auto_options import AutoOptions
from sum_core.automatic import auto_segment, check_output_memory
from sum_core.errors import Cancelled, InvalidInputError
from sum_core.modeling import AISDecoder, AISDecoderConfig, attach_ais_decoder, build_from_config
from sum_core.sources import image_planes
from sum_core.tiling import tile_grid

from small_models import small_vit_config
from tiled_fakes import EncoderCounter
from test_ais_postprocess import MICRO_SAM_DEFAULTS

SHAPE = (2048, 2048)
#: Largest disc radius: a disc (61 px across) is under the 64 px default halo, so every tile whose inner
#: region it touches sees it whole.
MAX_RADIUS = 30


def draw_disc(image: np.ndarray, row: int, col: int, radius: int, value: int) -> None:
    yy, xx = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    window = image[row - radius : row + radius + 1, col - radius : col + radius + 1]
    window[yy * yy + xx * xx <= radius * radius] = value


def objects(image: np.ndarray) -> np.ndarray:
    """The drawn objects as labels: the 4-connected parts of each grey value, numbered per value."""
    labels = np.zeros(image.shape, np.int64)
    count = 0
    for value in np.unique(image[image > 0]):
        parts, n = ndimage.label(image == value)
        labels[parts > 0] = parts[parts > 0] + count
        count += n
    return labels


def true_maps(image: np.ndarray) -> np.ndarray:
    """The exact decoder output for a window (or the whole image), computed from the visible objects."""
    labels = objects(image)
    maps = np.ones((3,) + image.shape, np.float32)
    maps[0] = 0
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        mask = labels[box] == index
        inside = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        rows, cols = np.nonzero(mask)
        centre = np.hypot(rows - rows.mean(), cols - cols.mean())
        block = maps[(slice(None),) + box]
        block[0][mask] = 1
        block[1][mask] = centre / centre.max()
        block[2][mask] = (1 - inside / inside.max())[mask]
    return maps


def exact_window_maps(calls: list | None = None):
    def window_maps(model, window, precision="fp32"):
        if calls is not None:
            calls.append(window.shape[:2])
        return true_maps(window[..., 0])

    return window_maps


def synthetic_image(touching: bool) -> np.ndarray:
    """Pairs of discs across every inner tile border of the default tiling (borders at 683 and 1366),
    on the four-tile corners, on the neighbours' window edges, far from the origin and elsewhere:
    34 pairs, 68 objects. A pair's left
    disc (radius 14) is centred on the pair's point, its right disc (radius 12..26) touches it when
    ``touching`` and is 2 px from it otherwise. Touching discs have different grey values."""
    image = np.zeros(SHAPE, np.uint8)
    gap = 0 if touching else 2
    centres = [(683, 683), (1366, 1366), (683, 1366), (1366, 683), (2000, 1950), (1990, 300), (300, 1950)]
    centres += [(row, border) for border in (683, 1366) for row in (100, 500, 1000, 1700, 1950)]
    centres += [(border, col) for border in (683, 1366) for col in (200, 1000, 1800)]
    centres += [(250, 250), (1000, 1000), (1700, 1000)]
    # On the window edges of the neighbours (border -+ 64): those windows see them cut.
    centres += [(400, 619), (1200, 747), (1600, 1302), (800, 1430), (619, 400), (747, 1200), (1302, 1600), (1430, 800)]
    for k, (row, col) in enumerate(centres):
        radius = 12 + (7 * k) % 15
        draw_disc(image, row, col, 14, 40 + 20 * (k % 5))
        draw_disc(image, row, col + 15 + radius + gap, radius, 150 + 20 * (k % 5))
    return image


def grey_image() -> np.ndarray:
    """A small non-constant image (constant images are refused)."""
    image = np.zeros((256, 256), np.uint8)
    draw_disc(image, 128, 128, 20, 200)
    return image


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renumbering of the ids (0 stays background)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    zero_ok = all((pa == 0) == (pb == 0) for pa, pb in pairs.T)
    return zero_ok and len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.fixture(scope="module")
def ais_model():
    torch.manual_seed(0)
    model = build_from_config(small_vit_config())
    return attach_ais_decoder(model, AISDecoder(AISDecoderConfig(initial_features=8))).eval()


@pytest.fixture(scope="module")
def plain_model():
    torch.manual_seed(1)
    return build_from_config(small_vit_config()).eval()


def test_synthetic_objects_cross_the_tile_borders():
    grid = tile_grid(SHAPE)
    assert len(grid) == 9 and grid.tile_shape == (683, 683) and grid.halo == (64, 64)
    truth = objects(synthetic_image(touching=False))
    crossing = 0
    for box in ndimage.find_objects(truth):
        r0, r1, c0, c1 = box[0].start, box[0].stop - 1, box[1].start, box[1].stop - 1
        if len(grid.tiles_touching((r0, c0, r1 + 1, c1 + 1))) > 1:
            crossing += 1
        assert max(r1 - r0, c1 - c0) < 64
    assert crossing == 30 and truth.max() == 68


def test_tiled_ais_gives_every_object_once_and_whole(monkeypatch, ais_model):
    """Non-touching discs, no smoothing: the labels are the drawn objects exactly, tiled or not."""
    image = synthetic_image(touching=False)
    calls: list = []
    monkeypatch.setattr(ais, "window_maps", exact_window_maps(calls))
    options = AisOptions(foreground_smoothing=0, distance_smoothing=0)
    labels, uncertainty = auto_segment(image, options, mode="ais", model=ais_model, device="cpu", progress=False)
    assert len(calls) == 9
    truth = objects(image)
    assert labels.dtype == np.uint32 and labels.shape == SHAPE
    assert int(labels.max()) == int(truth.max())
    assert same_partition(labels, truth)
    whole, _ = auto_segment(
        image, options, mode="ais", tile_shape=SHAPE, model=ais_model, device="cpu", progress=False
    )
    assert len(calls) == 10
    np.testing.assert_array_equal(whole, labels)  # ids too: raster order of the seeds
    # Exact maps: p is 0 or 1, and b in the objects' outer half ramps the boundary term.
    assert uncertainty.dtype == np.float32 and float(uncertainty.min()) == 0.0
    assert float(uncertainty[truth == 0].max()) == 0.0


def test_tiled_maps_equal_the_whole_image_maps_and_defaults_agree(monkeypatch, ais_model):
    """Touching discs across the borders, micro-sam's defaults: each pixel's maps come from its own
    tile (with halo) and equal the whole image's maps bit for bit, so the one watershed gives the
    same ids as one window; every object comes back once (one label each, 95% of it at least)."""
    image = synthetic_image(touching=True)
    monkeypatch.setattr(ais, "window_maps", exact_window_maps())
    planes = image_planes(image)
    maps = ais_maps(ais_model, planes, None, tile_grid(SHAPE))
    expected_maps = true_maps(image)
    np.testing.assert_array_equal(maps, expected_maps)
    labels, uncertainty = auto_segment(image, model=ais_model, device="cpu", progress=False)
    expected = instances_from_distance_maps(*expected_maps)
    np.testing.assert_array_equal(labels, expected)
    whole, whole_uncertainty = auto_segment(image, tile_shape=SHAPE, model=ais_model, device="cpu", progress=False)
    np.testing.assert_array_equal(whole, labels)
    np.testing.assert_array_equal(whole_uncertainty, uncertainty)
    truth = objects(image)
    assert int(labels.max()) == int(truth.max())
    for index, box in enumerate(ndimage.find_objects(truth), start=1):
        ids, counts = np.unique(labels[box][truth[box] == index], return_counts=True)
        assert ids[np.argmax(counts)] > 0 and counts.max() >= 0.95 * counts.sum()
    assert np.isfinite(uncertainty).all() and 0 <= uncertainty.min() <= uncertainty.max() <= 1


def test_auto_mode_picks_ais_iff_the_model_has_a_decoder(monkeypatch, ais_model, plain_model):
    image = grey_image()
    calls: list = []
    monkeypatch.setattr(ais, "window_maps", exact_window_maps(calls))
    amg_calls: list = []
    monkeypatch.setattr(automatic, "generate_masks", lambda *a, **k: amg_calls.append(1) or [])
    labels, _ = auto_segment(image, model=ais_model, device="cpu", progress=False)
    assert (len(calls), len(amg_calls), int(labels.max())) == (1, 0, 1)
    labels, _ = auto_segment(image, model=plain_model, device="cpu", progress=False)
    assert (len(calls), len(amg_calls), int(labels.max())) == (1, 1, 0)
    # The options' type decides "auto": AutoOptions run AMG even with a decoder.
    auto_segment(image, AutoOptions(points_per_side=2), model=ais_model, device="cpu", progress=False)
    assert (len(calls), len(amg_calls)) == (1, 2)


def test_auto_mode_fetches_a_registry_models_decoder(monkeypatch, ais_model, plain_model):
    """A registry name whose entry names a decoder file is resolved with it (mode auto or ais)."""
    asked: list = []

    def resolve(model, device=None, ais_decoder=False):
        asked.append((model, ais_decoder))
        return ais_model if ais_decoder else plain_model

    monkeypatch.setattr(automatic, "resolve_model", resolve)
    monkeypatch.setattr(ais, "window_maps", exact_window_maps())
    monkeypatch.setattr(automatic, "generate_masks", lambda *a, **k: [])
    image = grey_image()
    for name in ("vit_b_lm", "sam_hq_vit_b"):
        auto_segment(image, model=name, device="cpu", progress=False)
    auto_segment(image, mode="amg", model="vit_b_lm", device="cpu", progress=False)
    assert asked == [("vit_b_lm", True), ("sam_hq_vit_b", False), ("vit_b_lm", False)]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(mode="everything"), "mode must be one of ('auto', 'ais', 'amg')"),
        (dict(mode=None), "mode must be one of"),
        (dict(mode="ais", options=AutoOptions()), "AutoOptions are the options of mode 'amg', but mode='ais'"),
        (dict(mode="amg", options=AisOptions()), "AisOptions are the options of mode 'ais', but mode='amg'"),
        (dict(options={"min_size": 3}), "options must be a sum_core.auto_options.AutoOptions, got dict"),
        (dict(mode="ais", options={"min_size": 3}), "options must be a sum_core.ais_options.AisOptions, got dict"),
    ],
    ids=["unknown", "none", "amg-options", "ais-options", "dict", "dict-ais"],
)
def test_bad_mode_or_options_refused_before_the_model_loads(monkeypatch, kwargs, words):
    def resolve(*args, **kw):
        raise AssertionError("the model was resolved")

    monkeypatch.setattr(automatic, "resolve_model", resolve)
    with pytest.raises(InvalidInputError) as info:
        auto_segment(grey_image(), model="vit_b_lm", progress=False, **kwargs)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("foreground_threshold", 1.5),
        ("center_distance_threshold", -0.1),
        ("boundary_distance_threshold", 1.0),
        ("distance_smoothing", float("nan")),
        ("min_size", 2.5),
    ],
)
def test_ais_options_refuse_bad_values(field, value):
    with pytest.raises(InvalidInputError, match=field):
        AisOptions(**{field: value})


def test_ais_options_defaults_are_micro_sams():
    assert AisOptions() == AisOptions(**MICRO_SAM_DEFAULTS)


def test_ais_mode_without_decoder_is_refused(plain_model):
    with pytest.raises(InvalidInputError, match="has no AIS decoder"):
        auto_segment(grey_image(), mode="ais", model=plain_model, device="cpu", progress=False)


def test_memory_bound_counts_the_decoder_maps(monkeypatch, ais_model):
    """20000 x 20000: AMG's outputs (2.98 GiB) fit in MAX_OUTPUT_BYTES, AIS's with its maps (7.45 GiB) do not."""
    assert 20000 * 20000 * 8 <= automatic.MAX_OUTPUT_BYTES < 20000 * 20000 * 20
    monkeypatch.setattr(automatic, "_available_memory", lambda: None)  # the machine's memory is not tested
    check_output_memory((20000, 20000))
    with pytest.raises(InvalidInputError) as info:
        check_output_memory((20000, 20000), ais=True)
    message = str(info.value)
    assert "20 bytes per pixel" in message and "three float32 maps" in message and "7.45 GiB" in message
    lazy = zarr.zeros((20000, 20000), chunks=(1000, 1000), dtype=np.uint8)
    for mode in ("ais", "auto"):  # "auto" picks AIS for this model and checks again before reading
        with pytest.raises(InvalidInputError, match="20 bytes per pixel"):
            auto_segment(lazy, mode=mode, model=ais_model, device="cpu", progress=False)


def test_cancel_between_tiles(monkeypatch, ais_model):
    image = synthetic_image(touching=False)
    event = threading.Event()
    calls: list = []
    fake = exact_window_maps(calls)

    def cancelling(model, window, precision="fp32"):
        event.set()
        return fake(model, window, precision)

    monkeypatch.setattr(ais, "window_maps", cancelling)
    with pytest.raises(Cancelled):
        auto_segment(image, mode="ais", model=ais_model, device="cpu", progress=False, cancel=event)
    assert len(calls) == 1


def test_real_small_model_end_to_end(monkeypatch, ais_model):
    """A random small encoder and AIS decoder on a 1040 x 1392 frame, default tiling (4 windows)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4096, (1040, 1392), dtype=np.uint16)
    image[300:420, 500:650] += 3000
    counter = EncoderCounter(ais_model, monkeypatch)
    labels, uncertainty = auto_segment(image, model=ais_model, device="cpu", progress=False)
    assert counter.calls == len(tile_grid(image.shape)) == 4
    assert labels.shape == uncertainty.shape == image.shape
    assert labels.dtype == np.uint32 and uncertainty.dtype == np.float32
    assert np.isfinite(uncertainty).all() and 0 <= uncertainty.min() <= uncertainty.max() <= 1
    again, again_uncertainty = auto_segment(image, mode="ais", model=ais_model, device="cpu", progress=False)
    np.testing.assert_array_equal(again, labels)
    np.testing.assert_array_equal(again_uncertainty, uncertainty)
