"""sum_core against the reference implementation, in one process, printed as one table.

Both sides carry the same random weights (ours copied into the reference HQ-SAM with
``strict=True``), run on the same inputs, one after the other, in this process; the
speed-up column is reference time / our time (> 1: we are faster). The reference
(PyPI ``segment-anything-hq``) is reached through ``tests/reference_impl.py`` (torchvision
and timm stubbed) and always runs float32, as shipped; ``--precision`` and ``--compile``
apply to ours. Achieved FLOP/s of the encoders is given as a fraction of a square matmul
measured at the start of the same run.

Sections (``--only``):

- ``encoder``: s/image for each of ``--models`` (1024 x 1024 RGB through
  ``Predictor.set_image`` / ``SamPredictor.set_image``), achieved GFLOP/s; on CUDA also
  images/s of a batch of ``--batch-size`` images through the encoders alone.
- ``decoder``: HQ decoder + postprocessing, ms per point prompt (``predict``).
- ``automatic``: automatic masks per image with the image already encoded on both sides
  (``sum_core.automatic.generate_masks`` against ``SamAutomaticMaskGenerator``, 16 x 16 points,
  filters off, box NMS 0.7).
- ``tiled``: ``sum_core.tiled_embedding.embed`` of a synthetic uint16 zarr image into a fresh
  zarr cache: Mpixel/s, peak host memory (sampled RSS) and, on CUDA, peak GPU memory, and the
  reopen time of the cache (0 tiles encoded). The reference has no tiling.

    python benchmarks/harness.py                          # everything, CPU: vit_tiny and vit_b
    python benchmarks/harness.py --quick                  # smoke run with small random models
    python benchmarks/harness.py --only encoder --models vit_tiny --repeats 1
    python benchmarks/harness.py --device cuda --precision bf16 --json results.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

import reference_impl  # noqa: E402  (on sys.path through common)
from small_models import small_tiny_vit_config, small_vit_config  # noqa: E402

from sum_core.acceleration import PRECISIONS, autocast  # noqa: E402
from sum_core.auto_options import AutoOptions  # noqa: E402
from sum_core.automatic import generate_masks  # noqa: E402
from sum_core.device import resolve_device  # noqa: E402
from sum_core.modeling import SamModel, build_from_config  # noqa: E402
from sum_core.modeling.config import ModelConfig, preset_config  # noqa: E402
from sum_core.nms import nms  # noqa: E402
from sum_core.predictor import Predictor  # noqa: E402
from sum_core.tiled_embedding import embed  # noqa: E402

SECTIONS = ("encoder", "decoder", "automatic", "tiled")

#: Model names accepted by ``--models`` and the per-section model options: the official
#: architectures (HQ, random weights) and the small test architectures of tests/small_models.py.
MODELS: dict[str, Callable[[], ModelConfig]] = {
    "vit_tiny": lambda: preset_config("vit_tiny", hq=True),
    "vit_b": lambda: preset_config("vit_b", hq=True),
    "vit_l": lambda: preset_config("vit_l", hq=True),
    "vit_h": lambda: preset_config("vit_h", hq=True),
    "small_vit": lambda: small_vit_config(hq=True),
    "small_tiny_vit": lambda: small_tiny_vit_config(hq=True),
}

#: Sizes of a full run and of ``--quick``.
FULL = {"image": 1024, "prompts": 20, "points_per_side": 16, "tiled_size": 2048, "repeats": 3}
QUICK = {"image": 256, "prompts": 2, "points_per_side": 1, "tiled_size": 1280, "repeats": 1}


@dataclass
class Row:
    """One measurement: the reference's and our value, and how they compare.

    ``speedup`` is reference time / our time (for a rate: our rate / the reference's),
    None where the reference has no counterpart. ``fraction_of_matmul`` maps ``reference``
    / ``ours`` to the achieved FLOP/s over the same-run matmul rate.
    """

    key: str
    measurement: str
    unit: str
    reference: float | None
    ours: float
    speedup: float | None = None
    fraction_of_matmul: dict[str, float] | None = None
    reference_note: str = ""
    details: dict = field(default_factory=dict)


def _time_row(key: str, measurement: str, unit: str, reference: float, ours: float, **extra) -> Row:
    """A row of two times (or of two "per" quantities): speed-up = reference / ours."""
    return Row(key, measurement, unit, reference, ours, reference / ours, **extra)


def _rate_row(key: str, measurement: str, unit: str, reference: float, ours: float, **extra) -> Row:
    """A row of two rates: speed-up = ours / reference."""
    return Row(key, measurement, unit, reference, ours, ours / reference, **extra)


class Bench:
    """Models, predictors and the matmul rates of one run, shared by its sections."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = resolve_device(args.device)
        self.sizes = QUICK if args.quick else FULL
        self.repeats = args.repeats if args.repeats is not None else self.sizes["repeats"]
        self.warmup = not args.quick
        self._models: dict[str, tuple[SamModel, torch.nn.Module]] = {}
        precisions = ["fp32"] + (["bf16"] if self.device.type == "cuda" else [])
        if args.precision not in precisions:
            precisions.append(args.precision)
        self.matmul = {p: common.matmul_gflops(self.device, p) for p in precisions}

    def models(self, name: str) -> tuple[SamModel, torch.nn.Module]:
        """Our model ``name`` (random weights, seed 0) and the reference carrying its weights."""
        if name not in self._models:
            torch.manual_seed(0)
            ours = build_from_config(MODELS[name]())
            self._models[name] = (ours, common.reference_model(ours, self.device))
        return self._models[name]

    def predictor(self, ours: SamModel) -> Predictor:
        """Our predictor; ``precision`` / ``compile`` are passed only when not the default."""
        options = {}
        if self.args.precision != "fp32":
            options["precision"] = self.args.precision
        if self.args.compile:
            options["compile"] = True
        return Predictor(ours, device=self.device, **options)

    def fraction(self, gflop_per_s: float, precision: str) -> float:
        """``gflop_per_s`` over the same-run matmul rate at ``precision``."""
        return gflop_per_s / self.matmul[precision][0]

    def image(self) -> np.ndarray:
        """The RGB test image of this run (resized to the model's 1024 input by both sides)."""
        return common.synthetic_rgb(self.sizes["image"])


def matmul_rows(bench: Bench) -> list[Row]:
    """The same-run matmul rates (the scale of every "fraction of matmul")."""
    return [
        Row(f"matmul.{p}", f"{p} matmul {size}x{size}, GFLOP/s (the scale of 'fraction of matmul')",
            "GFLOP/s", None, rate, fraction_of_matmul={"ours": 1.0})
        for p, (rate, size) in bench.matmul.items()
    ]


def encoder_rows(bench: Bench, name: str) -> list[Row]:
    """Encoder s/image and achieved GFLOP/s of model ``name``; on CUDA batched images/s too."""
    ours, reference = bench.models(name)
    image = bench.image()
    ours_predictor = bench.predictor(ours)
    ref_predictor = reference_impl.sam_hq().SamPredictor(reference)
    t_ours, _ = common.timed(lambda: ours_predictor.set_image(image), bench.repeats, bench.device, bench.warmup)
    t_ref, _ = common.timed(lambda: ref_predictor.set_image(image), bench.repeats, bench.device, bench.warmup)
    gflop = common.encoder_gflop(ours.config)
    precision = bench.args.precision
    rows = [
        _time_row(f"encoder.{name}.s_per_image", f"{name} encoder, s/image (set_image, batch 1)",
                  "s", t_ref, t_ours),
        _rate_row(f"encoder.{name}.gflops", f"{name} encoder, achieved GFLOP/s ({gflop:.1f} GFLOP/image)",
                  "GFLOP/s", gflop / t_ref, gflop / t_ours,
                  fraction_of_matmul={"reference": bench.fraction(gflop / t_ref, "fp32"),
                                      "ours": bench.fraction(gflop / t_ours, precision)}),
    ]
    if bench.device.type == "cuda":
        batch = bench.args.batch_size
        size = ours.config.image_size
        pixels = torch.rand(batch, 3, size, size, device=bench.device) * 255

        def run_ours():  # compiled with --compile: the Predictor compiles the model in place
            with torch.inference_mode(), autocast(bench.device, precision):
                return ours.image_encoder(ours.preprocess(pixels))

        def run_ref():
            with torch.inference_mode():
                return reference.image_encoder(reference.preprocess(pixels))

        b_ours, _ = common.timed(run_ours, bench.repeats, bench.device, bench.warmup)
        b_ref, _ = common.timed(run_ref, bench.repeats, bench.device, bench.warmup)
        rows.append(_rate_row(
            f"encoder.{name}.batched_images_per_s",
            f"{name} encoder alone, images/s (batch {batch})", "images/s",
            batch / b_ref, batch / b_ours,
            fraction_of_matmul={"reference": bench.fraction(gflop * batch / b_ref, "fp32"),
                                "ours": bench.fraction(gflop * batch / b_ours, precision)}))
    return rows


def decoder_rows(bench: Bench) -> list[Row]:
    """HQ decoder + postprocessing, ms per point prompt, image already encoded."""
    name = bench.args.decoder_model
    ours, reference = bench.models(name)
    image = bench.image()
    ours_predictor = bench.predictor(ours)
    ref_predictor = reference_impl.sam_hq().SamPredictor(reference)
    ours_predictor.set_image(image)
    ref_predictor.set_image(image)
    n = bench.sizes["prompts"]
    points = np.random.default_rng(0).uniform(0, image.shape[0], (n, 2))

    def decode_ours():
        for point in points:
            ours_predictor.predict(points=point[None], labels=[1])

    def decode_ref():
        for point in points:
            ref_predictor.predict(point_coords=point[None, ::-1], point_labels=np.array([1]),
                                  multimask_output=False)

    t_ours, _ = common.timed(decode_ours, 1, bench.device, bench.warmup)
    t_ref, _ = common.timed(decode_ref, 1, bench.device, bench.warmup)
    side = image.shape[0]
    return [_time_row("decoder.ms_per_prompt",
                      f"HQ decoder + postprocess, ms/prompt ({name}, point, {side}x{side} image, {n} prompts)",
                      "ms", 1e3 * t_ref / n, 1e3 * t_ours / n)]


def _plain_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float):
    """``torchvision.ops.batched_nms`` for a single category (what the reference generator passes)."""
    if idxs.numel() and bool((idxs != idxs[0]).any()):
        raise NotImplementedError("_plain_batched_nms handles one category only")
    return nms(boxes, scores, iou_threshold)


def automatic_rows(bench: Bench) -> list[Row]:
    """Automatic masks per image, encoder excluded on both sides.

    Both sides encode the image first; the reference generator's ``set_image`` /
    ``reset_image`` then become no-ops, so only decode + filter + NMS + output are timed.
    Its NMS calls torchvision's ``batched_nms``, missing from the test stub: plain NMS from
    :func:`sum_core.nms.nms` stands in (the generator passes one category, so it is the
    same operation). The predicted-IoU and stability filters are off (every mask goes
    through every stage).
    """
    name = bench.args.automatic_model
    ours, reference = bench.models(name)
    image = bench.image()
    per_side = bench.sizes["points_per_side"]
    options = AutoOptions(points_per_side=per_side, points_per_batch=64, pred_iou_thresh=0.0, stability_thresh=0.0,
                          stability_offset=1.0, box_nms_thresh=0.7, min_area=0, multimask=True)
    amg = importlib.import_module("segment_anything_hq.automatic_mask_generator")
    amg.batched_nms = _plain_batched_nms
    generator = reference_impl.sam_hq().SamAutomaticMaskGenerator(
        reference, points_per_side=per_side, points_per_batch=options.points_per_batch,
        pred_iou_thresh=options.pred_iou_thresh, stability_score_thresh=options.stability_thresh,
        stability_score_offset=options.stability_offset, box_nms_thresh=options.box_nms_thresh,
        crop_n_layers=0, min_mask_region_area=0, output_mode="binary_mask")
    generator.predictor.set_image(image)
    generator.predictor.set_image = lambda *a, **k: None
    generator.predictor.reset_image = lambda: None
    predictor = bench.predictor(ours)
    predictor.set_image(image)
    embedding = predictor.get_embedding()
    t_ours, masks_ours = common.timed(lambda: generate_masks(predictor.model, embedding, options),
                                      bench.repeats, bench.device, bench.warmup)
    t_ref, masks_ref = common.timed(lambda: generator.generate(image, multimask_output=True),
                                    bench.repeats, bench.device, bench.warmup)
    side = image.shape[0]
    return [_time_row(
        "automatic.s_per_image",
        f"automatic masks, s/image ({name}, {side}x{side}, {per_side}x{per_side} points, encoder excluded; "
        f"masks ref {len(masks_ref)} / ours {len(masks_ours)})",
        "s", t_ref, t_ours, details={"masks_reference": len(masks_ref), "masks_ours": len(masks_ours)})]


def tiled_rows(bench: Bench) -> list[Row]:
    """Tiled embedding (ours only): Mpixel/s, peak memory, cache reopen time.

    ``--precision`` is passed to :func:`sum_core.tiled_embedding.embed` when not fp32;
    with ``--compile`` the model is compiled in place by a :class:`Predictor` first.
    """
    from sum_core.tiling import encoded_pixel_ratio

    name = bench.args.tiled_model
    ours, _ = bench.models(name)
    bench.predictor(ours)  # moves ours to the device (and, with --compile, compiles it in place)
    size = bench.args.tiled_size or bench.sizes["tiled_size"]
    batch = bench.args.batch_size if bench.device.type == "cuda" else 1
    precision = bench.args.precision
    options = {"precision": precision} if precision != "fp32" else {}
    with tempfile.TemporaryDirectory() as tmp:
        image = common.synthetic_zarr(Path(tmp) / "image.zarr", size)
        cache = Path(tmp) / "cache.zarr"
        with common.PeakMemory(bench.device) as memory:
            start = time.perf_counter()
            tiled = embed(image, model=ours, cache=cache, batch_size=batch, progress=False, **options)
            seconds = time.perf_counter() - start
        if tiled.tiles_encoded != len(tiled.grid):
            raise RuntimeError(f"first embed encoded {tiled.tiles_encoded} of {len(tiled.grid)} tiles")
        start = time.perf_counter()
        reopened = embed(image, model=ours, cache=cache, batch_size=batch, progress=False, **options)
        reopen = time.perf_counter() - start
        if reopened.tiles_encoded:
            raise RuntimeError(f"reopening the cache encoded {reopened.tiles_encoded} tiles")
    grid = tiled.grid
    gflop = common.encoder_gflop(ours.config) * len(grid)
    what = (f"{name}, {size}x{size} uint16 zarr, {len(grid)} tiles {grid.tile_shape[0]}+{grid.halo[0]} px, "
            f"{encoded_pixel_ratio(grid):.2f}x pixels encoded, batch {batch}, {precision}")
    no_tiling = "no tiling"
    rows = [
        Row("tiled.mpixel_per_s", f"tiled embedding into a zarr cache, Mpixel/s ({what})", "Mpixel/s",
            None, size * size / 1e6 / seconds, reference_note=no_tiling,
            fraction_of_matmul={"ours": bench.fraction(gflop / seconds, precision)},
            details={"seconds": seconds, "tiles": len(grid)}),
        Row("tiled.peak_rss_mib", f"tiled embedding, peak RSS MiB (sampled; {memory.rss_before_mib:.0f} at start)",
            "MiB", None, memory.rss_peak_mib, reference_note=no_tiling,
            details={"rss_before_mib": memory.rss_before_mib}),
        Row("tiled.reopen_s", "tiled cache reopen, s (signature check, 0 tiles encoded)", "s",
            None, reopen, reference_note=no_tiling),
    ]
    if memory.gpu_peak_mib is not None:
        rows.insert(2, Row("tiled.peak_gpu_mib", "tiled embedding, peak GPU memory allocated, MiB", "MiB",
                           None, memory.gpu_peak_mib, reference_note=no_tiling))
    return rows


def _number(value: float) -> str:
    """A table cell: 3 significant digits, no exponent below a million."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def table(rows: list[Row]) -> str:
    """The rows as one Markdown table."""
    lines = ["| measurement | reference | ours | speed-up (ref / ours) | fraction of matmul (ref / ours) |",
             "|---|---|---|---|---|"]
    for row in rows:
        reference = row.reference_note if row.reference is None else _number(row.reference)
        speedup = "" if row.speedup is None else f"{row.speedup:.2f}x"
        fraction = ""
        if row.fraction_of_matmul:
            ref = row.fraction_of_matmul.get("reference")
            fraction = ("" if ref is None else f"{ref:.0%} / ") + f"{row.fraction_of_matmul['ours']:.0%}"
        lines.append(f"| {row.measurement} | {reference} | {_number(row.ours)} | {speedup} | {fraction} |")
    return "\n".join(lines)


def header(bench: Bench, m: dict) -> str:
    """One line: the machine ``m`` (:func:`common.machine_description`), the run's settings, the date."""
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ", no GPU"
    return (f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB{gpu}; torch {m['torch']}, "
            f"{m['torch_threads']} threads; device {m['device']}, ours {bench.args.precision}"
            f"{' + torch.compile' if bench.args.compile else ''}, reference fp32; "
            f"{'quick smoke run (no warm-up), ' if bench.args.quick else ''}median of {bench.repeats}"
            f"{' after a warm-up' if bench.warmup else ''}; "
            f"{m['date']}")


def _csv(choices: tuple[str, ...] | list[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {', '.join(choices)}, got {text!r}")
        return items
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: CUDA, then MPS, then CPU)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="ours; the reference runs fp32")
    parser.add_argument("--compile", action="store_true", help="Predictor(..., compile=True) for ours")
    parser.add_argument("--only", type=_csv(SECTIONS), default=list(SECTIONS),
                        help=f"comma-separated sections (default all: {','.join(SECTIONS)})")
    parser.add_argument("--models", type=_csv(tuple(MODELS)),
                        help="encoder rows (default vit_tiny,vit_b; on CUDA also vit_l,vit_h)")
    parser.add_argument("--decoder-model", choices=sorted(MODELS), help="default vit_b")
    parser.add_argument("--automatic-model", choices=sorted(MODELS), help="default vit_tiny")
    parser.add_argument("--tiled-model", choices=sorted(MODELS), help="default vit_tiny")
    parser.add_argument("--tiled-size", type=int, help="side of the tiled image (default 2048; --quick 1280)")
    parser.add_argument("--batch-size", type=int, default=8, help="CUDA only: images per batched encoder call "
                        "and tiles per embed call")
    parser.add_argument("--repeats", type=int, help="timed runs after one warm-up (default 3; --quick 1)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: small random models (tests/small_models.py), small image, few prompts")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    cuda = resolve_device(args.device).type == "cuda"
    if args.models is None:
        args.models = (["small_vit", "small_tiny_vit"] if args.quick
                       else ["vit_tiny", "vit_b"] + (["vit_l", "vit_h"] if cuda else []))
    args.decoder_model = args.decoder_model or ("small_vit" if args.quick else "vit_b")
    args.automatic_model = args.automatic_model or ("small_vit" if args.quick else "vit_tiny")
    args.tiled_model = args.tiled_model or ("small_vit" if args.quick else "vit_tiny")
    return args


def _progress(section: str) -> None:
    """Say on stderr which section runs (a full CPU run takes about a quarter of an hour)."""
    print(f"[{time.strftime('%H:%M:%S')}] {section} ...", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict:
    """Run the selected sections, print the header line and the table; return the results."""
    args = parse_args(argv)
    bench = Bench(args)
    rows = matmul_rows(bench)
    if "encoder" in args.only:
        for name in args.models:
            _progress(f"encoder {name}")
            rows += encoder_rows(bench, name)
    for section, rows_of in (("decoder", decoder_rows), ("automatic", automatic_rows), ("tiled", tiled_rows)):
        if section in args.only:
            _progress(section)
            rows += rows_of(bench)
    for row in rows:
        values = [row.ours] + [v for v in (row.reference, row.speedup) if v is not None]
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise RuntimeError(f"{row.key}: a measurement is not a positive finite number: {row}")
    machine = common.machine_description(bench.device)
    results = {
        "machine": machine,
        "options": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "header": header(bench, machine),
        "matmul_gflops": {precision: rate for precision, (rate, _) in bench.matmul.items()},
        "rows": [asdict(row) for row in rows],
    }
    print(results["header"])
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
