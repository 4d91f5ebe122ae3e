"""Suggested next click as an interactive metric: clicks to IoU 0.85 / 0.90 for three simulated users (issue 16).

On the synthetic dataset of the fine-tuning walk-through (``examples/finetune_walkthrough.py``: gray
64 x 64 images with 1-3 bright discs), with its tiny random HQ model (one 16-wide ViT block, real 1024
input) as the untrained control and the same model fine-tuned on a training split (16 images, 8 epochs) by
``training.finetune`` (hq scheme, lr 1e-2: the full scheme at 1e-3 / 3e-3 / 1e-2 left this model at an empty
or near-empty mask in some runs), every disc of a held-out split is segmented click by click by three simulated users
(``training.interactive_metric``): ``suggested`` (accepts ``sum_core.suggest_click``'s point, its label
from the ground truth; one such user per ``--uncertainty`` method: the HQ model's default disagreement map
and the entropy map), ``centre`` (the standard user: centre of the largest error region) and ``random``
(a random pixel of the error region). Printed: a Markdown table (mean clicks to reach IoU 0.85 and 0.90,
an object that never does counting ``--max-clicks``; the fraction that does; the mean best IoU), and how
often the suggestion's own label was the ground truth's.

    python benchmarks/bench_suggested_click.py                  # the README numbers (a few minutes, 1 thread)
    python benchmarks/bench_suggested_click.py --quick          # smoke run: 2 images each way, one epoch
    python benchmarks/bench_suggested_click.py --model sam_hq_vit_b --lr 1e-3 --device cuda   # a real base model
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from finetune_walkthrough import make_dataset, tiny_model  # noqa: E402

from sum_core.loading import load_model  # noqa: E402
from sum_core.predictor import Predictor  # noqa: E402
from sum_core.suggest import DEFAULT_THRESHOLD  # noqa: E402
from training import finetune  # noqa: E402
from training.interactive_metric import (  # noqa: E402
    MAX_CLICKS,
    THRESHOLDS,
    RandomUser,
    SuggestedUser,
    centre_user,
    markdown_table,
    score_dataset,
    summarise,
)


def fine_tune(base: str, data: Path, run: Path, args: argparse.Namespace) -> Path:
    """``python -m training.finetune`` (HQ-SAM's scheme: HQ modules and SUM tables) on ``data``; the final
    checkpoint."""
    finetune.main([
        "--checkpoint", base, "--data", str(data), "--output", str(run), "--scheme", "hq",
        "--lr", str(args.lr), "--epochs", "1" if args.quick else str(args.epochs), "--batch-size", "2",
        "--max-instances", "3", "--seed", str(args.seed), "--no-progress",
        *(["--device", args.device] if args.device else []),
    ])
    return run / "final.pth"


def main(argv: list[str] | None = None) -> int:
    """Build the data, fine-tune, score both models with the three users; print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="base model instead of the walk-through's tiny one (path or registry name)")
    parser.add_argument("--train-images", type=int, default=16)
    parser.add_argument("--eval-images", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2, help="fine-tuning learning rate (hq scheme)")
    parser.add_argument("--max-clicks", type=int, default=MAX_CLICKS)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="suggest_click threshold")
    parser.add_argument("--uncertainty", nargs="+", default=["disagreement", "entropy"],
                        help="uncertainty methods the suggestion is measured with (one suggested user each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the tiny model on the CPU, else the best available)")
    parser.add_argument("--workdir", type=Path, help="keep data and checkpoints here (default: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 images each way, one epoch")
    args = parser.parse_args(argv)
    if args.device is None and not args.model:
        args.device = "cpu"
    torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_suggested_click_"))
    train = make_dataset(work / "train", 2 if args.quick else args.train_images, seed=0)
    held_out = make_dataset(work / "eval", 2 if args.quick else args.eval_images, seed=2)
    base = args.model or str(tiny_model(work / "base.pth"))
    start = time.perf_counter()
    tuned = fine_tune(base, train, work / "run", args)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); fine-tuning {time.perf_counter() - start:.0f} s")

    rows = []
    for name, path in (("base" if args.model else "untrained", base), ("fine-tuned", tuned)):
        predictor = Predictor(load_model(str(path), device=args.device), device=args.device)
        for n, method in enumerate(args.uncertainty):
            # the masks do not depend on the uncertainty method: the other users run once
            suggested = SuggestedUser(args.threshold)
            users = {f"suggested ({method})": suggested}
            if n == 0:
                users.update(centre=centre_user, random=RandomUser(args.seed))
            found = score_dataset(predictor, held_out, users, args.max_clicks, max(THRESHOLDS), uncertainty=method)
            rows += [{"model": name, **row} for row in found]
            print(f"{name}, {method}: the suggestion's own label was the ground truth's in {suggested.agreed} of "
                  f"{suggested.suggested} suggestions; nothing to suggest {suggested.none} time(s)")
    print(markdown_table(summarise(rows, THRESHOLDS, args.max_clicks), THRESHOLDS))
    print(f"data and checkpoints in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
