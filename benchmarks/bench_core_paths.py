"""Costs of the one-core paths that issue 10 changed, on this machine, one run.

Sections (``--only``):

- ``revisit``: serving a tile embedding that was encoded before, at vit_b size (random weights):
  from memory (the LRU of :class:`sum_core.tiled_embedding.TiledEmbeddings`: tensors with their
  HQ features) and from the persistent zarr cache after eviction (read + HQ features), against
  the previous design, where every visit went tensor -> zarr -> numpy -> tensor and recomputed the
  HQ features (the "reread" path is exactly that work). Also the whole second click on the same
  tile through ``Predictor.predict`` on a tiled 2048 x 2048 image (decoder included).
- ``tiling``: the size rule's choice for images above the encoder size, per camera size: tiles
  (no downscaling, 1 encoder run per tile an object reaches, all tiles for automatic / batch work)
  against one downscaled window (``tile_shape=image.shape[:2]``, SAM's behaviour, 1 encoder run):
  encoder runs, pixel scale, and the seconds of a ``set_image`` + first ``predict`` and of
  encoding every tile, with the real-size vit_tiny (and ``--models vit_b``).
- ``hashes``: weight hashes per session: several ``set_image`` with a cache folder and the
  ``sum_core.embed`` of a second image with the same model hash the weights once.

    python benchmarks/bench_core_paths.py                  # all sections, CPU
    python benchmarks/bench_core_paths.py --only revisit --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from sum_core.modeling import build_from_config  # noqa: E402
from sum_core.modeling.config import preset_config  # noqa: E402
from sum_core.predictor import Predictor  # noqa: E402
from sum_core.tiled_embedding import TiledEmbeddings, embed  # noqa: E402
from sum_core.tiling import tile_grid  # noqa: E402

SECTIONS = ("revisit", "tiling", "hashes")
CAMERA_SIZES = ((1040, 1392), (2048, 2048), (2160, 2560))


def _image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(*shape, 3), dtype=np.uint8)


def _model(name: str):
    torch.manual_seed(0)
    return build_from_config(preset_config(name, hq=True)).eval()


def revisit(repeats: int) -> dict:
    model = _model("vit_b")
    image = _image((2048, 2048))
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "cache.zarr"
        tiles = TiledEmbeddings(model, image, cache=cache)
        start = time.perf_counter()
        tiles.embedding(0, 4)
        first = time.perf_counter() - start
        memory, _ = common.timed(lambda: tiles.embedding(0, 4), repeats)

        def reread():
            fresh = TiledEmbeddings(model, image, cache=cache)  # empty memory, persisted tile
            start = time.perf_counter()
            fresh.embedding(0, 4)
            return time.perf_counter() - start

        reread_s = sorted(reread() for _ in range(repeats))[repeats // 2]

        # random weights follow arbitrary masks across tiles: encode every tile first, so the
        # clicks measure serving and decoding, not how far a random mask reaches
        embed(image, model=model, cache=cache, progress=False)
        predictor = Predictor(model, device="cpu")
        predictor.set_image(image, cache=cache)
        click = [[1024, 1024]]  # the centre tile
        start = time.perf_counter()
        predictor.predict(points=click)
        first_click = time.perf_counter() - start
        second_click, _ = common.timed(lambda: predictor.predict(points=click), repeats)
        visited = predictor.tiled.predict(points=click).tiles
    return {
        "tile encode (first visit), s": first,
        "revisit from memory, ms": memory * 1e3,
        "revisit from the zarr cache (read + HQ features; the old per-visit path), ms": reread_s * 1e3,
        "first click on a tiled 2048^2 image, tiles read from the zarr cache, s": first_click,
        "second click, same object (tiles from memory: decoder + paste), ms": second_click * 1e3,
        "tiles visited per click": len(visited),
    }


def tiling(models: list[str]) -> list[dict]:
    rows = []
    for name in models:
        model = _model(name)
        size = model.config.image_size
        for shape in CAMERA_SIZES:
            image = _image(shape)
            grid = tile_grid(shape, size)
            window = max(max(t.outer.shape) for t in grid)
            predictor = Predictor(model, device="cpu")
            start = time.perf_counter()
            predictor.set_image(image, tile_shape=shape)
            predictor.predict(points=[[shape[0] // 2, shape[1] // 2]])
            resized = time.perf_counter() - start
            start = time.perf_counter()
            embed(image, model=model, progress=False)
            all_tiles = time.perf_counter() - start
            rows.append({
                "model": name,
                "image": f"{shape[0]}x{shape[1]}",
                "tiles": len(grid),
                "downscaled window: pixel scale": round(size / max(shape), 3),
                "tiles: pixel scale (>= 1: no downscaling)": round(size / window, 3),
                "downscaled window: set_image + predict, s": round(resized, 2),
                "tiles: every tile encoded (automatic / batch), s": round(all_tiles, 2),
                "tiles: one tile (an object inside one tile), s": round(all_tiles / len(grid), 2),
            })  # fmt: skip
    return rows


def hashes() -> dict:
    model = build_from_config(preset_config("vit_tiny", hq=True)).eval()
    calls = {"n": 0}
    blake = hashlib.blake2b

    def counting(*args, **kwargs):
        if kwargs.get("digest_size") == 20:
            calls["n"] += 1
        return blake(*args, **kwargs)

    hashlib.blake2b = counting
    try:
        with tempfile.TemporaryDirectory() as folder:
            image = _image((1200, 1600))
            predictor = Predictor(model, device="cpu")
            for i in range(3):
                predictor.set_image(image, cache=Path(folder) / "a.zarr")
            embed(_image((1100, 1100), seed=1), model=model, cache=Path(folder) / "b.zarr", progress=False)
    finally:
        hashlib.blake2b = blake
    # each cache signature hashes its data once (one BLAKE2b each); the weights once in all
    return {"caches opened": 4, "BLAKE2b digests (data + weights)": calls["n"], "weights hashed": calls["n"] - 4}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--models", default="vit_tiny", help="tiling section: comma-separated vit_tiny, vit_b")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results: dict = {"machine": common.machine_description("cpu")}
    for section in args.only.split(","):
        print(f"== {section}", file=sys.stderr, flush=True)
        if section == "revisit":
            results[section] = revisit(args.repeats)
        elif section == "tiling":
            results[section] = tiling(args.models.split(","))
        elif section == "hashes":
            results[section] = hashes()
        else:
            parser.error(f"unknown section {section!r}")
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)
    return results


if __name__ == "__main__":
    main()
