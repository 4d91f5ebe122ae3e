"""Walk-through of SUM fine-tuning: pseudo-label -> refine -> fine-tune -> evaluate.

Run ``python examples/finetune_walkthrough.py --small`` to try the four steps on
a synthetic dataset with a tiny random model (about a minute on a CPU).  With
your own data the same steps are four commands::

    # 1. SAM pseudo-labels for the unlabeled images (DATASET/unlabeled/)
    python -m training.pseudolabel --model sam_hq_vit_b --images DATASET --out PSEUDO
    # 2. train the mask-refinement module on DATASET/images + masks, write uncertainty maps
    python -m training.refine --model sam_hq_vit_b --data DATASET --pseudo PSEUDO --out REFINER
    # 3. fine-tune (HQ-SAM lightweight scheme, human : pseudo = 1 : 1)
    python -m training.finetune --checkpoint sam_hq_vit_b --scheme hq \\
        --data DATASET --pseudo PSEUDO --output runs/sum_hq
    # 4. compare the base model and the fine-tuned one
    python -m training.evaluate --checkpoints sam_hq_vit_b runs/sum_hq/final.pth \\
        --data VALSET --output runs/sum_hq/evaluation.csv
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tifffile
import torch

from sum_core.modeling import build_from_config, preset_config
from training import evaluate, finetune, pseudolabel, refine


def make_dataset(root: Path, count: int, seed: int) -> Path:
    """Gray 64 x 64 images with 1-3 bright discs, instance label TIFFs in images/ and masks/."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.ogrid[:64, :64]
    for i in range(count):
        image = np.full((64, 64), 20, np.uint8)
        labels = np.zeros((64, 64), np.uint16)
        for k in range(int(rng.integers(1, 4))):
            r, c = rng.integers(14, 50, 2)
            disc = (yy - r) ** 2 + (xx - c) ** 2 <= int(rng.integers(6, 11)) ** 2
            image[disc] = 220
            labels[disc] = k + 1
        tifffile.imwrite(root / "images" / f"im{i}.tif", image)
        tifffile.imwrite(root / "masks" / f"im{i}.tif", labels)
    return root


def tiny_model(path: Path) -> Path:
    """A random one-block HQ model (real 1024 input) saved with torch.save."""
    config = preset_config(
        "vit_b", model_type="custom", embed_dim=16, depth=1, num_heads=1, global_attn_indexes=(0,),
        prompt_embed_dim=32, decoder_mlp_dim=64, iou_head_hidden_dim=32, mask_in_chans=4,
    )
    torch.manual_seed(0)
    torch.save(build_from_config(config).state_dict(), path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Build the synthetic folders and run the four steps; print where the results are."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny random model, few images (CPU, ~1 min)")
    parser.add_argument("--model", default="sam_hq_vit_b", help="base model without --small")
    parser.add_argument("--workdir", type=Path, help="keep the outputs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sum_walkthrough_"))
    data = make_dataset(work / "dataset", 2 if args.small else 8, seed=0)
    make_dataset(work / "extra", 1 if args.small else 4, seed=1)
    shutil.move(work / "extra" / "images", data / "unlabeled")
    model = str(tiny_model(work / "base.pth")) if args.small else args.model
    pseudo, run = work / "pseudo", work / "run"
    # A random model's masks would not pass SAM's quality filters: --small switches them off.
    loose = ["--pred-iou-thresh", "0", "--stability-thresh", "0"] if args.small else []

    print("1/4 pseudo-labels")
    pseudolabel.main(["--model", model, "--images", str(data), "--out", str(pseudo),
                      "--points-per-side", "2" if args.small else "32", *loose])
    print("2/4 mask refinement and uncertainty maps")
    refine.main(["--model", model, "--data", str(data), "--pseudo", str(pseudo), "--out", str(work / "refiner"),
                 "--epochs", "1", *loose, *(["--min-iou", "0", "--max-area-fraction", "1"] if args.small else [])])
    print("3/4 fine-tuning")
    finetune.main(["--checkpoint", model, "--data", str(data), "--pseudo", str(pseudo), "--output", str(run),
                   "--epochs", "1", "--batch-size", "1", "--max-instances", "2", "--max-pseudo-masks", "4"])
    print("4/4 evaluation")
    evaluate.main(["--checkpoints", model, str(run / "final.pth"), "--data", str(data),
                   "--output", str(run / "evaluation.csv"), *(["--clicks", "1"] if args.small else [])])
    print(f"outputs in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
