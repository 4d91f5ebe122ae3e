"""The exported ONNX decoder (onnxruntime, CPU) against our decode path, per prompt (issue 17).

Both compute the same thing for one object on an encoded image: masks at the image's size, the
predicted IoU and the uncertainty map. Ours is ``sum_core.decoding.decode_window`` (the library's
one prompted path, torch); the ONNX side is ``decoder.onnx`` from ``sum_core.export.export_onnx``,
fed as SAM's web demo feeds it (one click + the padding point, zero mask input). The decoder has
the real vit_b/l/h size (it is the same for every encoder size); weights are random. The image is
1024 x 1024 (one window), HQ-SAM decoder (with the HQ fusion of the early feature in the graph).

With ``--encoder vit_b`` the vit_b image encoder is exported too and compared with torch on one
image (time and largest difference of the embedding, relative to its largest value).

With ``--ais`` the AIS decoder (micro-sam's size, random weights) is exported and its maps compared
with ``decode_ais_maps`` in float32 and with the same decoder in float64 (time, largest difference
relative to the maps' largest value); ``--ais-repeats`` runs each (median).

Times are medians of ``--repeats`` runs after one warm-up run.

    python benchmarks/bench_onnx.py                     # decoder per prompt
    python benchmarks/bench_onnx.py --encoder vit_b     # also the vit_b encoder (slow: minutes)
    python benchmarks/bench_onnx.py --ais               # also the AIS decoder (about a minute)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from small_models import small_vit_config  # noqa: E402
from sum_core.decoding import decode_window  # noqa: E402
from sum_core.encoding import encode_image, to_pixels  # noqa: E402
from sum_core.export import export_onnx  # noqa: E402
from sum_core.modeling import (  # noqa: E402
    AISDecoder, ImageEmbedding, attach_ais_decoder, build_from_config, build_model, decode_ais_maps,
)  # fmt: skip
from sum_core.prediction import PredictOptions  # noqa: E402
from sum_core.prompts import validate_prompts  # noqa: E402


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bench_decoder(repeats: int, threads: int, folder: Path) -> dict:
    torch.manual_seed(0)
    model = build_from_config(small_vit_config(hq=True))  # narrow encoder, the real decoder
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    embedding = encode_image(model, image)
    export = export_onnx(model, folder / "decoder_bench")
    session = _session(export.decoder, threads)
    prompts = validate_prompts([[512, 400]], [1], image_shape=(1024, 1024))
    feeds = {
        "image_embeddings": embedding.embedding.numpy(),
        "early_features": embedding.early.numpy(),
        "point_coords": np.array([[[400.0, 512.0], [0.0, 0.0]]], np.float32),
        "point_labels": np.array([[1.0, -1.0]], np.float32),
        "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([1024.0, 1024.0], np.float32),
    }
    ours_s, ours = common.timed(lambda: decode_window(model, embedding, prompts, PredictOptions()), repeats)
    onnx_s, onnx_out = common.timed(lambda: session.run(None, feeds), repeats)
    err = float(np.abs(onnx_out[0][:, 0] - ours.logits.numpy()).max() / np.abs(ours.logits.numpy()).max())
    return {"ours_s": ours_s, "onnx_s": onnx_s, "onnx_over_ours": onnx_s / ours_s, "masks_rel_err": err}


def bench_encoder(model_type: str, threads: int, folder: Path) -> dict:
    torch.manual_seed(0)
    model = build_model(model_type, hq=True)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    ours_s, reference = common.timed(lambda: encode_image(model, image), 1, warmup=False)
    export = export_onnx(model, folder / "encoder_bench")
    session = _session(export.encoder, threads)
    pixels = model.preprocess(to_pixels(image, 1024).float()).numpy()
    onnx_s, (embedding, early) = common.timed(lambda: session.run(None, {"image": pixels}), 1, warmup=False)
    scale = float(np.abs(reference.embedding.numpy()).max())
    return {
        "model_type": model_type,
        "ours_s": ours_s,
        "onnx_s": onnx_s,
        "embedding_rel_err": float(np.abs(embedding - reference.embedding.numpy()).max()) / scale,
        "early_rel_err": float(np.abs(early - reference.early.numpy()).max() / np.abs(reference.early.numpy()).max()),
    }


def bench_ais(repeats: int, threads: int, folder: Path) -> dict:
    torch.manual_seed(0)
    model = attach_ais_decoder(build_from_config(small_vit_config(hq=False)), AISDecoder().eval())
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(1))
    image = ImageEmbedding(embedding, None, None, (1024, 1024), (1024, 1024))
    export = export_onnx(model, folder / "ais_bench")
    session = _session(export.ais_decoder, threads)
    feeds = {"image_embeddings": embedding.numpy(), "orig_im_size": np.array([1024.0, 1024.0], np.float32)}
    ours_s, ours = common.timed(lambda: decode_ais_maps(model, image), repeats)
    onnx_s, (maps,) = common.timed(lambda: session.run(None, feeds), repeats)
    with torch.no_grad():
        exact = model.ais_decoder.double()(embedding.double())[0].numpy()
    scale = float(np.abs(exact).max())
    return {
        "ours_s": ours_s,
        "onnx_s": onnx_s,
        "onnx_vs_ours_rel_err": float(np.abs(maps[0] - ours).max()) / scale,
        "onnx_vs_float64_rel_err": float(np.abs(maps[0] - exact).max()) / scale,
        "ours_vs_float64_rel_err": float(np.abs(ours - exact).max()) / scale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="onnxruntime intra-op threads")
    parser.add_argument("--encoder", choices=["vit_b", "vit_l", "vit_h"], help="also export and compare this encoder")
    parser.add_argument("--ais", action="store_true", help="also export and compare the AIS decoder")
    parser.add_argument("--ais-repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        results = {"threads": args.threads, "decoder_per_prompt": bench_decoder(args.repeats, args.threads, Path(scratch))}
        if args.encoder:
            results["encoder"] = bench_encoder(args.encoder, args.threads, Path(scratch))
        if args.ais:
            results["ais_decoder"] = bench_ais(args.ais_repeats, args.threads, Path(scratch))
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
