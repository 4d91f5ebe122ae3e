"""sum_core.batch: resumable tiled batch segmentation into zarr v3 (fake decoder; one real-model run)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
import zarr.storage
from scipy import ndimage

from sum_core.auto_options import AutoOptions
from sum_core.automatic import MaskRecord, auto_segment
from sum_core.batch import auto as batch_auto
from sum_core.batch import model_spec, segment_zarr
from sum_core.batch.tile_nms import neighbour_nms
from sum_core.errors import InvalidInputError
from sum_core.mask_ops import boxes_to_xyxy
from sum_core.modeling import build_from_config
from sum_core.nms import nms
from sum_core.prediction import PredictOptions
from sum_core.tiled_predictor import TiledPredictor, TileMasks
from sum_core.tiling import TileGrid
from small_models import small_vit_config
from test_tiled_predictor import tiny_model


def blobs(shape: tuple[int, int], seed: int, n: int = 12, radius: int = 9) -> np.ndarray:
    """uint16 image with up to ``n`` separate bright discs on a dark, slightly noisy background."""
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    image = rng.integers(0, 50, size=shape).astype(np.uint16)
    centres: list[tuple[int, int]] = []
    for _ in range(20 * n):  # separate discs (objects wider than the halo may be lost at seams)
        r, c = rng.integers(radius, shape[0] - radius), rng.integers(radius, shape[1] - radius)
        if all((r - r2) ** 2 + (c - c2) ** 2 > (2 * radius + 3) ** 2 for r2, c2 in centres):
            centres.append((r, c))
            image[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = 3000
        if len(centres) == n:
            break
    return image


def fake_records(window, model, device, options, cancel=None):
    """Deterministic stand-in for the SAM generator: one record per bright component."""
    components, n = ndimage.label(window[..., 0] > 128)
    records = []
    for k in range(1, n + 1):
        mask = components == k
        rows, cols = np.nonzero(mask)
        unc = np.zeros(mask.shape, dtype=np.float32)
        unc[mask] = 0.25
        records.append(
            MaskRecord(mask=mask, logits=mask.astype(np.float32), score=0.9 + k * 1e-4, stability=1.0,
                       point=(float(rows.mean()), float(cols.mean())),
                       box=(int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())),
                       area=int(mask.sum()), uncertainty=unc)
        )
    return records


class Counter:
    """Wraps the fake generator: counts calls, raises on call number ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at

    def __call__(self, window, model, device, options, cancel=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        return fake_records(window, model, device, options)


def use_model(monkeypatch, model) -> None:
    """Every model name or path of a job resolves to ``model`` (no weights to download)."""
    monkeypatch.setattr(model_spec, "resolve_model", lambda name, device: model)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture
def fake(monkeypatch, tiny):
    counter = Counter()
    monkeypatch.setattr(batch_auto, "window_records", counter)
    use_model(monkeypatch, tiny)
    return counter


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images are equal up to renumbering (background 0 in both)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_2d_auto_tiled_matches_components_and_chunks(tmp_path, fake):
    image = blobs((200, 260), seed=0)
    group = segment_zarr(image, tmp_path / "out.zarr", tile_shape=(64, 96), halo=24, progress=False,
                         scheduler="synchronous")
    labels, unc = group["labels"], group["uncertainty"]
    assert labels.shape == (200, 260) and labels.dtype == np.uint32 and labels.chunks == (64, 96)
    assert unc.shape == (200, 260) and unc.dtype == np.float16 and unc.chunks == (64, 96)
    expected, _ = ndimage.label(image > 1000)
    assert same_partition(labels[...], expected)  # no object split or doubled at tile seams
    assert np.all(unc[...][labels[...] > 0] == np.float16(0.25))
    assert "work" not in group and group.attrs["sum_hq_batch"]["complete"] is True


def test_3d_stack_ids_unique_across_slices(tmp_path, fake):
    stack = np.stack([blobs((96, 120), seed=s) for s in range(3)])
    root = zarr.open_group(str(tmp_path / "src.zarr"), mode="w")
    root.create_array("raw", data=stack, chunks=(1, 48, 60), dimension_names=("z", "y", "x"))
    group = segment_zarr(tmp_path / "src.zarr", tmp_path / "out.zarr", key="raw", axis="z", progress=False)
    labels = group["labels"][...]
    assert labels.shape == (3, 96, 120) and group["labels"].chunks == (1, 96, 120)
    assert group["labels"].metadata.dimension_names == ("z", "y", "x")
    assert group.attrs["sum_hq_batch"]["ids"] == "sequential"
    start = 0
    for s in range(3):  # the documented id rule: plane s holds counts[s] ids after the earlier planes'
        ids = np.unique(labels[s])[1:]
        count = int(group["counts"][s])
        assert count > 0 and np.array_equal(ids, np.arange(start + 1, start + count + 1))
        assert same_partition(labels[s], ndimage.label(stack[s] > 1000)[0])
        start += count


def test_resume_after_crash_redoes_nothing_completed(tmp_path, monkeypatch, tiny):
    use_model(monkeypatch, tiny)
    image = blobs((200, 260), seed=1)
    kwargs = dict(tile_shape=(64, 96), halo=16, progress=False, scheduler="synchronous")
    crashing = Counter(fail_at=5)
    monkeypatch.setattr(batch_auto, "window_records", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_zarr(image, tmp_path / "out.zarr", **kwargs)
    done = zarr.open_group(str(tmp_path / "out.zarr"))["done/tile"][...]
    assert done.sum() == 4  # tiles before the crash are complete, the crashed one is not
    resumed = Counter()
    monkeypatch.setattr(batch_auto, "window_records", resumed)
    group = segment_zarr(image, tmp_path / "out.zarr", **kwargs)
    assert resumed.calls == 12 - 4  # 4 x 3 tiles minus the completed ones
    clean = Counter()
    monkeypatch.setattr(batch_auto, "window_records", clean)
    reference = segment_zarr(image, tmp_path / "ref.zarr", **kwargs)
    assert clean.calls == 12
    np.testing.assert_array_equal(group["labels"][...], reference["labels"][...])
    np.testing.assert_array_equal(group["uncertainty"][...], reference["uncertainty"][...])
    again = Counter()
    monkeypatch.setattr(batch_auto, "window_records", again)
    segment_zarr(image, tmp_path / "out.zarr", **kwargs)
    assert again.calls == 0  # a completed job is not recomputed


def test_resume_after_crash_in_chunk_stage(tmp_path, fake, monkeypatch):
    image = blobs((130, 130), seed=2)
    kwargs = dict(tile_shape=64, halo=8, progress=False, scheduler="synchronous")
    original = batch_auto.run_chunk
    painted = []

    def flaky(*args):
        painted.append(args[4])
        if len(painted) == 3:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(batch_auto, "run_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        segment_zarr(image, tmp_path / "out.zarr", **kwargs)
    assert fake.calls == 9
    monkeypatch.setattr(batch_auto, "run_chunk", original)
    group = segment_zarr(image, tmp_path / "out.zarr", **kwargs)
    assert fake.calls == 9  # tiles and plan were complete; only the chunks left are painted
    reference = segment_zarr(image, tmp_path / "ref.zarr", **kwargs)
    np.testing.assert_array_equal(group["labels"][...], reference["labels"][...])


def test_other_job_refused_unless_overwrite(tmp_path, fake):
    image = blobs((64, 64), seed=3)
    segment_zarr(image, tmp_path / "out.zarr", progress=False)
    signed = zarr.open_group(str(tmp_path / "out.zarr")).attrs["sum_hq_batch"]["signature"]["options"]
    # the signature of targets written before the options were data (points_per_batch never)
    assert signed == {"points_per_side": 32, "pred_iou_thresh": 0.88, "stability_thresh": 0.95,
                      "box_nms_thresh": 0.7, "min_area": 0}
    assert segment_zarr(image, tmp_path / "out.zarr", options=AutoOptions(points_per_batch=8), progress=False)
    with pytest.raises(InvalidInputError, match=r"different job \(differs in options\).*overwrite=True"):
        segment_zarr(image, tmp_path / "out.zarr", options=AutoOptions(min_area=5), progress=False)
    group = segment_zarr(image, tmp_path / "out.zarr", options=AutoOptions(min_area=5, task=2), overwrite=True,
                         progress=False)
    signed = group.attrs["sum_hq_batch"]["signature"]["options"]
    assert signed["min_area"] == 5 and signed["task"] == 2 and "multimask" not in signed
    foreign = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    foreign.create_array("x", shape=(2,), dtype="uint8")
    with pytest.raises(InvalidInputError, match="not written by a sum-hq batch job"):
        segment_zarr(image, tmp_path / "foreign.zarr", progress=False)


def test_read_only_target_is_a_clear_error(tmp_path, fake):
    store = zarr.storage.LocalStore(str(tmp_path / "ro.zarr"), read_only=True)
    with pytest.raises(InvalidInputError, match="target: .*read-only"):
        segment_zarr(blobs((64, 64), seed=4), store, progress=False)
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        segment_zarr(blobs((64, 64), seed=4), tmp_path / "file.zarr", progress=False)


def test_axis_errors(tmp_path, fake):
    root = zarr.open_group(str(tmp_path / "src.zarr"), mode="w")
    root.create_array("raw", shape=(2, 3, 32, 32), dtype="uint16", dimension_names=("t", "z", "y", "x"))
    with pytest.raises(InvalidInputError, match="axis: no axis named 'q'.*'t', 'z', 'y', 'x'"):
        segment_zarr(tmp_path / "src.zarr", tmp_path / "o.zarr", key="raw", axis="q")
    with pytest.raises(InvalidInputError, match="4 dimensions .*name the slice axis"):
        segment_zarr(tmp_path / "src.zarr", tmp_path / "o.zarr", key="raw")
    with pytest.raises(InvalidInputError, match="slicing along 't' leaves 3 axes"):
        segment_zarr(tmp_path / "src.zarr", tmp_path / "o.zarr", key="raw", axis="t")
    with pytest.raises(InvalidInputError, match=r"options must be a sum_core.auto_options.AutoOptions, got dict"):
        segment_zarr(np.zeros((8, 8)), tmp_path / "o.zarr", options={"points_per_side": 4})
    with pytest.raises(InvalidInputError, match=r"options \(mode=.prompts.\) must be a sum_core.prediction.PredictOptions"):
        segment_zarr(np.zeros((8, 8)), tmp_path / "o.zarr", mode="prompts", prompts="p.csv", options=AutoOptions())
    with pytest.raises(InvalidInputError, match="tile_shape must be >= 1"):
        segment_zarr(np.zeros((8, 8)), tmp_path / "o.zarr", tile_shape=0)
    assert not (tmp_path / "o.zarr").exists()


def boxes_over_grid(grid: TileGrid, rng: np.random.Generator, per_tile: int):
    """Random inclusive boxes inside each tile's outer window, many of them jittered copies
    of boxes of neighbouring tiles (cross-seam duplicates), with some tied scores."""
    boxes, tiles = [], []
    for tile in grid:
        o = tile.outer
        for _ in range(per_tile):
            h, w = rng.integers(1, 40), rng.integers(1, 40)
            r0, c0 = rng.integers(o.row0, max(o.row1 - h, o.row0 + 1)), rng.integers(o.col0, max(o.col1 - w, o.col0 + 1))
            boxes.append((r0, c0, min(r0 + h, o.row1 - 1), min(c0 + w, o.col1 - 1)))
            tiles.append(tile.index)
    for _ in range(len(boxes)):  # copies of a box, moved by a few px, in a tile whose window holds them
        r0, c0, r1, c1 = boxes[rng.integers(len(boxes))]
        d = rng.integers(-3, 4, size=4)
        box = (max(r0 + d[0], 0), max(c0 + d[1], 0), r1 + d[2], c1 + d[3])
        box = (box[0], box[1], max(box[2], box[0]), max(box[3], box[1]))
        if box[2] >= grid.shape[0] or box[3] >= grid.shape[1]:
            continue
        holders = [t for t in grid if t.outer.row0 <= box[0] and t.outer.col0 <= box[1]
                   and box[2] < t.outer.row1 and box[3] < t.outer.col1]
        boxes.append(box)
        tiles.append(holders[rng.integers(len(holders))].index)
    scores = np.round(rng.uniform(0.8, 1.0, len(boxes)), 2)  # rounding makes ties
    return np.array(boxes, dtype=np.int64), scores, np.array(tiles, dtype=np.int64)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7])
def test_neighbour_nms_equals_global_nms(seed, threshold):
    rng = np.random.default_rng(seed)
    grid = TileGrid((300, 410), (64, 96), 24)
    boxes, scores, tiles = boxes_over_grid(grid, rng, per_tile=12)
    expected = nms(boxes_to_xyxy(torch.from_numpy(boxes)), torch.from_numpy(scores), threshold).numpy()
    kept = neighbour_nms(boxes, scores, tiles, grid, threshold)
    per_tile = [
        i for t in range(len(grid))
        for i in np.flatnonzero(tiles == t)[nms(boxes_to_xyxy(torch.from_numpy(boxes[tiles == t])),
                                                torch.from_numpy(scores[tiles == t]), threshold).numpy()]
    ]
    assert 0 < len(expected) < len(per_tile)  # duplicates across tiles are suppressed too
    np.testing.assert_array_equal(kept, expected)


def test_neighbour_nms_rejects_a_box_outside_its_tile_window():
    grid = TileGrid((100, 100), 50, 10)
    boxes = np.array([[0, 0, 5, 5], [0, 70, 5, 75]])
    with pytest.raises(InvalidInputError, match=r"box 1 \(0, 70, 5, 75\) lies outside the outer window \(0, 0, 60, 60\) of its tile 0"):
        neighbour_nms(boxes, np.ones(2), np.array([0, 0]), grid, 0.7)
    assert neighbour_nms(np.zeros((0, 4), np.int64), np.zeros(0), np.zeros(0, np.int64), grid, 0.7).shape == (0,)


def write_table(path, rows):
    path.write_text("object_id,slice,kind,row,col,row1,col1,label\n" + "\n".join(rows) + "\n")
    return path


def fake_decode(self, window, embedding, points, labels, box, mask, options):
    """``TiledPredictor._decode`` stand-in: the bright components of the window (of the slice
    being predicted) under the positive clicks, plus the (window-local, clipped) box as a
    filled square; uncertainty 0.5 on the mask."""
    pixels = self.embeddings.planes.read(self.slice_index, window)
    components, _ = ndimage.label((pixels[..., 0] if pixels.ndim == 3 else pixels) > 128)
    mask = np.zeros(window.shape, dtype=bool)
    for (r, c), label in zip(points if points is not None else [], labels if labels is not None else []):
        part = components[min(int(r), window.shape[0] - 1), min(int(c), window.shape[1] - 1)]
        if label == 1 and part:
            mask |= components == part
    if box is not None:
        r0, c0, r1, c1 = (int(v) for v in box)
        mask[r0 : r1 + 1, c0 : c1 + 1] = True
    return TileMasks(mask, np.where(mask, 8.0, -8.0).astype(np.float32), mask * np.float32(0.5), 0.9)


def use_fake_decoder(monkeypatch) -> list[PredictOptions]:
    """Patch :func:`fake_decode` into ``TiledPredictor`` (which remembers the slice it predicts);
    returns the options of every predict call."""
    predict = TiledPredictor.predict
    seen: list[PredictOptions] = []

    def remembering(self, *args, slice_index=0, **kwargs):
        self.slice_index = slice_index
        seen.append(kwargs.get("options"))
        return predict(self, *args, slice_index=slice_index, **kwargs)

    monkeypatch.setattr(TiledPredictor, "predict", remembering)
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decode)
    return seen


@pytest.fixture
def fake_prompted(monkeypatch, tiny):
    """Prompts mode with the fake decoder; returns a list counting the tiles encoded."""
    use_fake_decoder(monkeypatch)
    use_model(monkeypatch, tiny)
    encoded = []
    forward = tiny.image_encoder.forward
    monkeypatch.setattr(tiny.image_encoder, "forward", lambda x: encoded.append(x.shape[0]) or forward(x))
    return encoded


def test_prompts_mode_writes_object_ids(tmp_path, tiny, fake_prompted):
    stack = np.zeros((2, 80, 90), dtype=np.uint8)
    stack[0, 10:20, 10:20] = 255
    stack[1, 50:70, 60:80] = 255
    table = write_table(tmp_path / "p.csv", ["7,0,point,15,15,,,1", "9,1,point,60,70,,,1", "4,1,box,2,3,5,8,"])
    group = segment_zarr(stack, tmp_path / "out.zarr", mode="prompts", prompts=table, model=tiny, progress=False)
    labels = group["labels"][...]
    expected = np.zeros_like(labels)
    expected[0, 10:20, 10:20] = 7
    expected[1, 50:70, 60:80] = 9
    expected[1, 2:6, 3:9] = 4
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(group["uncertainty"][...], (expected > 0) * np.float16(0.5))
    assert sum(fake_prompted) == 2  # one tile per slice, encoded once for its two objects


def test_prompts_mode_object_three_tiles_wide_is_written_whole(tmp_path, tiny, fake_prompted):
    image = np.zeros((100, 288), dtype=np.uint8)
    image[40:60, 10:278] = 255  # a bar over tiles 0, 1 and 2 (96 px wide each)
    image[5:15, 5:15] = 255
    table = write_table(tmp_path / "p.csv", ["5,,point,50,30,,,1", "3,,point,10,10,,,1", "8,,box,45,100,70,120,"])
    group = segment_zarr(image, tmp_path / "out.zarr", mode="prompts", prompts=table, model=tiny,
                         tile_shape=(100, 96), halo=16, progress=False)
    expected = np.zeros(image.shape, dtype=np.uint32)
    expected[40:60, 10:278] = 5  # whole, not cut at tile 0's window (column 112)
    expected[5:15, 5:15] = 3
    expected[45:71, 100:121] = 8  # a later id wins where masks overlap
    np.testing.assert_array_equal(group["labels"][...], expected)
    np.testing.assert_array_equal(group["uncertainty"][...], (expected > 0) * np.float16(0.5))
    assert sum(fake_prompted) == 3  # tiles 0, 1, 2 encoded once each for five tile decodes


def test_prompts_outside_volume(tmp_path, fake_prompted):
    stack = np.zeros((2, 40, 40), dtype=np.uint8)
    bad_slice = write_table(tmp_path / "a.csv", ["1,2,point,5,5,,,1"])
    with pytest.raises(InvalidInputError, match="object 1: slice 2 is outside the volume's 2 slice"):
        segment_zarr(stack, tmp_path / "o.zarr", mode="prompts", prompts=bad_slice)
    bad_point = write_table(tmp_path / "b.csv", ["3,0,box,5,5,45,10,"])
    with pytest.raises(InvalidInputError, match=r"object 3 on slice 0: \(45.0, 10.0\) lies outside"):
        segment_zarr(stack, tmp_path / "o.zarr", mode="prompts", prompts=bad_point)
    bad_kind = write_table(tmp_path / "c.csv", ["3,0,circle,5,5,,,"])
    with pytest.raises(InvalidInputError, match="line 2: kind must be 'point' or 'box'"):
        segment_zarr(stack, tmp_path / "o.zarr", mode="prompts", prompts=bad_kind)


@pytest.mark.slow
def test_real_small_model_equals_auto_segment(tmp_path):
    torch.manual_seed(0)
    model = build_from_config(small_vit_config())
    image = blobs((128, 160), seed=5)
    options = AutoOptions(points_per_side=4, pred_iou_thresh=0.0, stability_thresh=0.0)
    group = segment_zarr(image, tmp_path / "out.zarr", model=model, progress=False, options=options)
    labels, unc = auto_segment(image, options, model=model, progress=False)
    assert labels.max() > 0
    assert same_partition(group["labels"][...], labels)
    np.testing.assert_array_equal(group["uncertainty"][...], unc.astype(np.float16))


def block_blobs(blocks: tuple[int, int], seed: int) -> np.ndarray:
    """uint8 image of separate discs on the exact fake's 8-px block grid (radius 2 blocks, whole
    in a window with a 48 px halo), a block away from the image edges."""
    discs = np.pad(blobs((blocks[0] - 2, blocks[1] - 2), seed=seed, radius=2) > 1000, 1)
    return np.kron(discs, np.ones((8, 8), np.uint8)) * np.uint8(200)


class HashCounter:
    """Counts BLAKE2b hashers made (the weights hash and the source data hash use one each; the 8-byte
    per-chunk checksums of the output, :func:`sum_core.batch.writer.chunk_checksum`, are not counted)."""

    def __init__(self, monkeypatch) -> None:
        import hashlib

        self.calls = 0
        real = hashlib.blake2b

        def counted(*args, **kwargs):
            self.calls += kwargs.get("digest_size") != 8
            return real(*args, **kwargs)

        monkeypatch.setattr(hashlib, "blake2b", counted)


def test_a_prompts_job_hashes_the_weights_once_and_the_source_once(tmp_path, monkeypatch):
    model = tiny_model()  # fresh: its weights hash is not memoised yet
    use_fake_decoder(monkeypatch)
    stack = np.zeros((5, 80, 90), dtype=np.uint8)
    for s in range(5):
        stack[s, 10 + s : 30 + s, 20:40] = 255
    table = write_table(tmp_path / "p.csv", [f"{s + 1},{s},point,{20 + s},30,,,1" for s in range(5)])
    hashes = HashCounter(monkeypatch)
    group = segment_zarr(stack, tmp_path / "out.zarr", mode="prompts", prompts=table, model=model, progress=False)
    assert hashes.calls == 2  # the weights (job identity) and the stack (job signature), once each
    expected = np.zeros(stack.shape, np.uint32)
    for s in range(5):
        expected[s][stack[s] > 0] = s + 1
    np.testing.assert_array_equal(group["labels"][...], expected)
    segment_zarr(stack, tmp_path / "out.zarr", mode="prompts", prompts=table, model=model, progress=False)
    assert hashes.calls == 3  # resuming re-reads the source; the weights hash is memoised


def test_an_automatic_job_hashes_the_weights_once_and_the_source_once(tmp_path, monkeypatch):
    from test_automatic import install_exact_fake

    model = tiny_model()
    install_exact_fake(monkeypatch)
    stack = np.stack([block_blobs((40, 45), seed=s) for s in range(3)])
    hashes = HashCounter(monkeypatch)
    group = segment_zarr(stack, tmp_path / "out.zarr", model=model, tile_shape=160, halo=48, progress=False,
                         options=AutoOptions(points_per_side=24, max_area_fraction=0.5))
    assert hashes.calls == 2
    for s in range(3):
        assert same_partition(group["labels"][s], ndimage.label(stack[s] > 0)[0])


def test_prompts_mode_passes_its_predict_options(tmp_path, monkeypatch, tiny):
    seen = use_fake_decoder(monkeypatch)
    use_model(monkeypatch, tiny)
    image = np.zeros((40, 40), dtype=np.uint8)
    image[5:15, 5:15] = 255
    table = write_table(tmp_path / "p.csv", ["1,,point,10,10,,,1"])
    options = PredictOptions(multimask=True, task=2)
    group = segment_zarr(image, tmp_path / "out.zarr", mode="prompts", prompts=table, progress=False, options=options)
    assert seen == [options]
    assert group.attrs["sum_hq_batch"]["signature"]["options"] == {"multimask": True, "task": 2}


def test_cancel_stops_a_job_between_decoder_batches_and_it_resumes(tmp_path, monkeypatch, tiny):
    import threading

    from sum_core import automatic
    from sum_core.errors import Cancelled
    from test_automatic import exact_decode, install_exact_fake

    use_model(monkeypatch, tiny)
    install_exact_fake(monkeypatch)
    cancel = threading.Event()
    batches = []

    def decode(*args):
        batches.append(1)
        if len(batches) == 3:
            cancel.set()  # the user cancels while the second tile decodes its first batch
        return exact_decode(*args)

    monkeypatch.setattr(automatic, "decode_points", decode)
    image = block_blobs((24, 40), seed=7)
    kwargs = dict(tile_shape=160, halo=48, progress=False, scheduler="synchronous",
                  options=AutoOptions(points_per_side=8, points_per_batch=32, max_area_fraction=0.5))
    with pytest.raises(Cancelled):
        segment_zarr(image, tmp_path / "out.zarr", cancel=cancel, **kwargs)
    assert len(batches) == 3  # 2 batches per tile: the second tile stopped after its first
    done = zarr.open_group(str(tmp_path / "out.zarr"))["done/tile"][...]
    assert done.shape == (1, 4) and done.sum() == 1
    group = segment_zarr(image, tmp_path / "out.zarr", cancel=threading.Event(), **kwargs)
    assert len(batches) == 3 + 3 * 2  # the other 3 tiles, the cancelled one again; the first stays done
    assert same_partition(group["labels"][...], ndimage.label(image > 0)[0])
    with pytest.raises(InvalidInputError, match="cancel: only the threads and synchronous dask schedulers"):
        segment_zarr(image, tmp_path / "x.zarr", cancel=cancel, scheduler="distributed")


def test_a_checkpoint_retrained_in_place_is_another_job(tmp_path, monkeypatch):
    """Resuming after the checkpoint file was overwritten with other weights (same path, same size)
    would mix two models' labels in one target: the job is refused as a different model."""
    import os

    monkeypatch.setattr(batch_auto, "window_records", Counter())
    path = tmp_path / "best.pth"
    model = tiny_model()
    torch.save(model.state_dict(), path)
    image = blobs((96, 128), seed=3)
    segment_zarr(image, tmp_path / "out.zarr", model=path, device="cpu", progress=False)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(InvalidInputError, match=r"different job \(differs in model\)"):
        segment_zarr(image, tmp_path / "out.zarr", model=path, device="cpu", progress=False)
