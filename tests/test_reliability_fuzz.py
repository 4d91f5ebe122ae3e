"""Issue 11: property-based checks of the prompted-segmentation API (hypothesis).

Random images (every real dtype and bool, NaN and infinite values, constant images, empty,
one-pixel, gray / RGB / RGBA and bad channel counts), random prompts (in and out of the image,
NaN, huge, wrong shapes and types) and random options go through :func:`sum_core.segment`,
:meth:`sum_core.Predictor.predict` and :func:`sum_core.propagation.propagate`. Every call either
returns a result of the documented shapes and dtypes whose values are all finite (masks equal
``logits > 0``, uncertainties and scores where they belong), or raises a
:class:`~sum_core.errors.SumError`: never another exception type, never a NaN.

The examples are derandomized (the same on every machine and run) and bounded; the models are
small random-weight ones with a 128-pixel input, so images up to 300 pixels are also tiled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from small_models import small_vit_config
from sum_core import Predictor, segment
from sum_core.errors import SumError
from sum_core.modeling import build_from_config
from sum_core.prediction import Prediction
from sum_core.propagation import propagate

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SIZE = 128  # the models' input: images larger than this are tiled


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    torch.manual_seed(0)
    return {
        "hq": build_from_config(small_vit_config(hq=True).replace(image_size=SIZE)),
        "sam": build_from_config(small_vit_config(hq=False).replace(image_size=SIZE)),
    }


# --- strategies -------------------------------------------------------------------------------------------


def mostly(good: list, bad: list) -> st.SearchStrategy:
    """A value of ``good`` about seven times in eight, else one of ``bad``: most examples get past
    the argument checks, and every refusal is still tried."""
    return st.sampled_from(good * max(1, 7 * len(bad) // len(good)) + bad)


DTYPES = [np.bool_, np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64]
SIDES = st.one_of(mostly([1, 2, 17, 90, 128, 129, 200, 300], [0]), st.integers(3, 300))


@st.composite
def images(draw: st.DrawFn) -> np.ndarray:
    """Any dtype, (H, W) or (H, W, C) with good and bad C, random or constant values, NaN/inf."""
    shape = (draw(SIDES), draw(SIDES))
    channels = draw(mostly([None, None, 3, 4, 1], [2, 5]))
    if channels is not None:
        shape = (*shape, channels)
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype == np.bool_:
        image = rng.random(shape) < 0.5
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    else:
        image = (rng.standard_normal(shape) * draw(st.sampled_from([1.0, 1e30, 1e-30]))).astype(dtype)
        special = draw(mostly([None], [np.nan, np.inf, -np.inf]))
        if special is not None and image.size:
            n = max(1, image.size // draw(st.sampled_from([1, 10, 1000])))
            image.flat[rng.integers(0, image.size, n)] = special
    if draw(mostly([False], [True])) and image.size:  # constant
        image[...] = image.flat[0]
    return image


BAD_COORDINATES = [-1.0, np.nan, np.inf, -np.inf, 1e30, -1e30, 1e6]


@st.composite
def coordinates(draw: st.DrawFn, plane: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """(row, col) pairs inside ``plane`` (edges included), some replaced by bad values."""
    n = int(np.prod(shape))
    fractions = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]) | st.floats(0, 1), min_size=n, max_size=n))
    values = np.array(fractions, dtype=float).reshape(shape)
    if len(shape) and shape[-1] in (2, 4):
        values = values * np.resize(np.array(plane[:2], dtype=float), shape[-1])
    if draw(mostly([False], [True])) and n:
        values.flat[draw(st.integers(0, n - 1))] = draw(st.sampled_from(BAD_COORDINATES))
    return draw(st.sampled_from([values, values.tolist()]))


@st.composite
def prompts(draw: st.DrawFn, plane: tuple[int, ...]) -> dict[str, Any]:
    """points / labels / box / mask_input for an image plane, mostly valid; at least one prompt."""
    out: dict[str, Any] = {"points": None, "labels": None, "box": None, "mask_input": None}
    if draw(st.booleans()):
        shape = draw(mostly([(1, 2), (2, 2), (3, 2)], [(0, 2), (2,), (1, 3), (1, 1, 2)]))
        out["points"] = draw(coordinates(plane, shape))
        if draw(st.booleans()):
            n = shape[0] if len(shape) == 2 else 1
            out["labels"] = draw(st.one_of(
                st.lists(mostly([0, 1], [-1, 2]), min_size=n, max_size=n),
                st.sampled_from([[1] * (n + 1), [True] * n, [0.5] * n, ["1"] * n, [np.nan] * n]),
            ))  # fmt: skip
    if draw(st.booleans()):
        shape = draw(mostly([(4,), (1, 4), (2, 4)], [(3,), (0, 4), (1, 4, 1)]))
        box = np.asarray(draw(coordinates(plane, shape)), dtype=float)
        if box.shape[-1:] == (4,):  # ordered corners, mostly
            box = np.concatenate([np.minimum(box[..., :2], box[..., 2:]), np.maximum(box[..., :2], box[..., 2:])], -1)
        out["box"] = box
    out["mask_input"] = draw(mask_inputs(plane))
    if out["points"] is None and out["box"] is None and out["mask_input"] is None:
        out["points"] = [[plane[0] / 2, plane[1] / 2]]
    return out


@st.composite
def mask_inputs(draw: st.DrawFn, plane: tuple[int, ...]) -> Any:
    """None, a bool mask or logits at the image's size, low-resolution logits, or a wrong shape."""
    kind = draw(mostly(["none", "none", "bool", "logits", "low-res"], ["wrong"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    plane = tuple(plane[:2])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random(plane) < 0.3
    if kind == "low-res":
        low = SIZE // 4
        return rng.standard_normal(draw(mostly([(1, low, low)], [(1, low + 1, low + 1), (2, low, low)])))
    if kind == "wrong":
        return rng.standard_normal(draw(st.sampled_from([(3, 3), (1,), (plane[0] + 1, max(plane[1], 1))])))
    logits = rng.standard_normal(plane) * draw(mostly([1.0, 30.0], [1e7]))
    if draw(mostly([False], [True])) and logits.size:
        logits.flat[0] = draw(st.sampled_from([np.nan, np.inf]))
    return logits.astype(draw(st.sampled_from([np.float32, np.float64])))


OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "task": mostly([0, 1, 2, np.int64(2)], [3, -1, "1", None]),
        "multimask": mostly([True, False, np.True_], ["no", 1]),
        "hq_token_only": mostly([True, False], ["False"]),
        "uncertainty": mostly(["auto", "disagreement", "entropy", "ensemble"], ["bad", None]),
    },
)
TILING = st.fixed_dictionaries(
    {},
    optional={
        "tile_shape": mostly([None, 64, (48, 80), 1000], [0, -5, (1,), 2.5, "64"]),
        "halo": mostly([None, 0, 8, (4, 12), 500], [-1, 1.5]),
    },
)


# --- what every result must be ----------------------------------------------------------------------------


def objects(box: Any) -> int:
    """K: one object per box of a (K, 4) box array, else one."""
    shape = np.shape(box)
    return shape[0] if len(shape) == 2 else 1


def check_prediction(pred: Prediction, k: int, plane: tuple[int, int]) -> None:
    assert isinstance(pred, Prediction)
    assert pred.masks.shape == pred.logits.shape == pred.uncertainties.shape == (k, *plane)
    assert pred.scores.shape == (k,)
    assert pred.masks.dtype == np.bool_
    assert pred.logits.dtype == pred.uncertainties.dtype == pred.scores.dtype == np.float32
    assert np.isfinite(pred.logits).all() and np.isfinite(pred.scores).all()
    assert np.isfinite(pred.uncertainties).all()
    assert ((pred.uncertainties >= 0) & (pred.uncertainties <= 1)).all()
    np.testing.assert_array_equal(pred.masks, pred.logits > 0)
    if pred.low_res_logits is not None:
        assert pred.low_res_logits.shape == (k, 1, SIZE // 4, SIZE // 4)
        assert np.isfinite(pred.low_res_logits).all()


def returns_or_refuses(call, check) -> None:
    """``call()`` returns a result that passes ``check``, or raises a SumError (anything else fails)."""
    try:
        result = call()
    except SumError as error:
        event("refused: " + str(error)[:70])  # see pytest --hypothesis-show-statistics
        return
    event("returned")
    check(result)


# --- the properties ---------------------------------------------------------------------------------------


@FUZZ
@given(data=st.data(), image=images(), options=OPTIONS, tiling=TILING, kind=st.sampled_from(["hq", "sam"]))
def test_segment_returns_finite_results_or_a_sum_error(models, data, image, options, tiling, kind):
    given_prompts = data.draw(prompts(image.shape))
    returns_or_refuses(
        lambda: segment(image, **given_prompts, model=models[kind], device="cpu", **options, **tiling),
        lambda pred: check_prediction(pred, objects(given_prompts["box"]), image.shape[:2]),
    )


@pytest.fixture(scope="module")
def predictors(models) -> dict[tuple[str, str], Predictor]:
    """One Predictor per model and image size: a plane of one window and one that is tiled."""
    rng = np.random.default_rng(7)
    out = {}
    for kind, model in models.items():
        for name, shape in (("window", (90, 110)), ("tiled", (200, 170))):
            predictor = Predictor(model, device="cpu")
            predictor.set_image(rng.integers(0, 255, shape, dtype=np.uint8))
            out[kind, name] = predictor
    return out


@FUZZ
@given(data=st.data(), options=OPTIONS, kind=st.sampled_from(["hq", "sam"]), size=st.sampled_from(["window", "tiled"]),
       ensemble=st.fixed_dictionaries({}, optional={"ensemble_size": mostly([2, 3], [1, 0, 2.0]),
                                                     "seed": mostly([0, 5], [-1, 1.5, None])}))  # fmt: skip
def test_predict_returns_finite_results_or_a_sum_error(predictors, data, options, kind, size, ensemble):
    predictor = predictors[kind, size]
    plane = predictor.original_size
    given_prompts = data.draw(prompts(plane))
    returns_or_refuses(
        lambda: predictor.predict(**given_prompts, **options, **ensemble),
        lambda pred: check_prediction(pred, objects(given_prompts["box"]), plane),
    )


@FUZZ
@given(image=images(), kind=st.sampled_from(["hq", "sam"]), tiling=TILING)
def test_set_image_takes_any_image_or_refuses_it(models, image, kind, tiling):
    """Any image is bound (then a click in its middle gives a finite full-size result) or refused."""
    predictor = Predictor(models[kind], device="cpu")
    try:
        predictor.set_image(image, **tiling)
    except SumError as error:
        event("refused: " + str(error)[:70])
        return
    plane = image.shape[:2]
    returns_or_refuses(lambda: predictor.predict(points=[[plane[0] / 2, plane[1] / 2]]),
                       lambda pred: check_prediction(pred, 1, plane))  # fmt: skip


@settings(FUZZ, max_examples=40)
@given(data=st.data(), n_slices=st.sampled_from([1, 2, 3]), side=st.sampled_from([1, 40, 150]),
       dtype=st.sampled_from([np.uint8, np.float32, np.bool_]), axis=mostly([0], [1, 2, -1, 3, None]),
       index=mostly([0, 1], [2, -1, 5]), thresholds=mostly([(0.0, 0.0), (0.5, 0.5)], [(1.5, 0.5), (np.nan, 0.5)]))
def test_propagate_returns_a_bool_volume_or_a_sum_error(models, data, n_slices, side, dtype, axis, index, thresholds):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    volume = (rng.random((n_slices, side, side)) * 255).astype(dtype)
    plane = (side, side)
    given_prompts = data.draw(prompts(plane))
    start = data.draw(mostly(
        [{"points": given_prompts["points"], "labels": given_prompts["labels"]}, {"box": given_prompts["box"]},
         rng.random(plane) < 0.2],
        [np.zeros(plane, bool), {"points": [[side / 2, side / 2]], "color": 1}],
    ))  # fmt: skip

    def call():
        return propagate(volume, axis=axis, index=index, mask_or_prompts=start, model=models["hq"], device="cpu",
                         iou_threshold=thresholds[0], score_threshold=thresholds[1], progress=False)  # fmt: skip

    def check(out: np.ndarray) -> None:
        assert out.dtype == np.bool_ and out.shape == volume.shape

    returns_or_refuses(call, check)
