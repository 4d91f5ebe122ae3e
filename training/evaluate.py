"""Evaluate checkpoints side by side: ``python -m training.evaluate``.

For every instance of every dataset folder (``images/`` + ``masks/``):

* **box**: one box prompt (the tight box of the ground truth);
* **clicks**: SAM's deterministic protocol: each click is placed at the
  centre of the largest error region (:func:`training.prompt_sampling.center_click`),
  the previous logits are fed back as the mask prompt, and the mask after 1, 3
  and 5 clicks (``--clicks``) is scored;
* **uncertainty** (on the box prediction): the predictor's uncertainty map
  (``uncertainty="auto"``: disagreement for HQ / SUM models, else entropy)
  scored as a detector of the error pixels (AUROC, AUPRC), and the pixel
  accuracy in the certain (``1 - u > threshold``) and uncertain regions.

Images of every size go through the same code: :class:`sum_core.Predictor` returns
full-size masks at every size (an image larger than the encoder is tiled at full
resolution), and the mask prompt is the previous prediction's ``Prediction.mask_prompt()``:
SAM's own low-resolution logits when the image is one encoder window (SAM's iterative-click
protocol, so scores compare with the reference's), the full-size logits when it is tiled.

Scores are mIoU and mean boundary IoU per dataset (mean over instances) and
overall (mean over datasets).  A Markdown table is printed; the summary CSV
and a per-instance CSV are written.

Example::

    python -m training.evaluate --checkpoints sam_hq_vit_b runs/sum/final.pth \\
        --data DATASET_A DATASET_B --output results.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sum_core.errors import SumError
from sum_core.image import prepare_image
from sum_core.imageio import read_image
from sum_core.loading import load_model
from sum_core.predictor import Predictor

from .dataset import scan_dataset
from .metrics import boundary_iou, certainty_accuracy, mask_iou, uncertainty_auprc, uncertainty_auroc
from .prompt_sampling import box_from_mask, center_click

DEFAULT_CLICKS = (1, 3, 5)
UNCERTAINTY_COLUMNS = ("AUROC", "AUPRC", "acc certain", "acc uncertain")


def metric_columns(clicks: Sequence[int]) -> list[str]:
    """Score columns, in table order."""
    columns = ["box mIoU", "box mBIoU"]
    for n in clicks:
        columns += [f"{n}pt mIoU", f"{n}pt mBIoU"]
    return columns + list(UNCERTAINTY_COLUMNS)


def score_instance(
    predictor: Predictor,
    target: np.ndarray,
    clicks: Sequence[int],
    task: int,
    threshold: float,
) -> dict[str, float]:
    """All scores of one ground-truth instance on the predictor's current image."""
    scores: dict[str, float] = {}
    pred = predictor.predict(box=box_from_mask(target), task=task)
    scores["box mIoU"] = mask_iou(pred.mask, target)
    scores["box mBIoU"] = boundary_iou(pred.mask, target)
    error = pred.mask != target
    scores["AUROC"] = uncertainty_auroc(pred.uncertainty, error)
    scores["AUPRC"] = uncertainty_auprc(pred.uncertainty, error)
    split = certainty_accuracy(pred.mask, target, 1.0 - pred.uncertainty, threshold)
    scores["acc certain"], scores["acc uncertain"] = split.certain, split.uncertain

    mask = np.zeros_like(target, dtype=bool)
    points: list[np.ndarray] = []
    labels: list[int] = []
    prompt = None
    for n in range(1, max(clicks) + 1):
        click = center_click(mask, target)
        if click is not None:
            points.append(click[0])
            labels.append(click[1])
            pred = predictor.predict(
                points=np.stack(points), labels=np.array(labels), mask_input=prompt, task=task
            )
            mask, prompt = pred.mask, pred.mask_prompt()
        if n in clicks:
            scores[f"{n}pt mIoU"] = mask_iou(mask, target)
            scores[f"{n}pt mBIoU"] = boundary_iou(mask, target)
    return scores


def evaluate_dataset(
    predictor: Predictor,
    root: str | Path,
    clicks: Sequence[int] = DEFAULT_CLICKS,
    task: int = 1,
    threshold: float = 0.6,
    progress: bool = True,
) -> list[dict]:
    """Per-instance score rows (``image``, ``instance`` and :func:`metric_columns`) of one folder."""
    samples = scan_dataset(root, val_fraction=0.0).train
    rows = []
    for sample in tqdm(samples, desc=Path(root).name, disable=not progress, leave=False):
        labels = read_image(sample.mask)
        if labels.ndim == 3:
            labels = labels[..., 0]
        predictor.set_image(prepare_image(read_image(sample.image)))
        for instance in np.unique(labels[labels != 0]):
            scores = score_instance(predictor, labels == instance, clicks, task, threshold)
            rows.append({"image": sample.image.name, "instance": int(instance), **scores})
    return rows


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarise(rows: list[dict], columns: Sequence[str]) -> list[dict]:
    """Mean scores per (checkpoint, dataset), then per checkpoint over datasets ("overall").

    NaN values (e.g. AUROC of a perfect prediction) are left out of the means.
    """
    table = []
    for checkpoint in dict.fromkeys(r["checkpoint"] for r in rows):
        per_dataset = []
        for dataset in dict.fromkeys(r["dataset"] for r in rows if r["checkpoint"] == checkpoint):
            chosen = [r for r in rows if r["checkpoint"] == checkpoint and r["dataset"] == dataset]
            entry = {"checkpoint": checkpoint, "dataset": dataset, "instances": len(chosen)}
            entry.update({c: _mean([r[c] for r in chosen]) for c in columns})
            per_dataset.append(entry)
        overall = {"checkpoint": checkpoint, "dataset": "overall",
                   "instances": sum(e["instances"] for e in per_dataset)}
        overall.update({c: _mean([e[c] for e in per_dataset]) for c in columns})
        table += per_dataset + [overall]
    return table


def markdown_table(table: list[dict], columns: Sequence[str]) -> str:
    """The summary as a Markdown table (scores as percentages with one decimal)."""
    head = ["checkpoint", "dataset", "instances", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in table:
        cells = [str(entry["checkpoint"]), str(entry["dataset"]), str(entry["instances"])]
        cells += ["n/a" if math.isnan(entry[c]) else f"{100 * entry[c]:.1f}" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict], fields: Sequence[str]) -> None:
    """Write rows (dicts) with the given column order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m training.evaluate``."""
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="mIoU / boundary IoU (box and click protocols) and uncertainty scores of checkpoints.",
    )
    parser.add_argument("--checkpoints", nargs="+", required=True, help="checkpoint paths or registry names")
    parser.add_argument("--data", nargs="+", required=True, type=Path, help="dataset folders (images/, masks/)")
    parser.add_argument("--base", help="full model for decoder-only checkpoints (epoch_N.pth)")
    parser.add_argument("--clicks", nargs="+", type=int, default=list(DEFAULT_CLICKS), help="click counts")
    parser.add_argument("--task", type=int, default=1, choices=(0, 1, 2), help="SUM task prompt")
    parser.add_argument("--certainty-threshold", type=float, default=0.6)
    parser.add_argument("--output", type=Path, default=Path("evaluation.csv"), help="summary CSV")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; print the Markdown table, write the CSVs; return 0 (2 on errors)."""
    args = build_parser().parse_args(argv)
    clicks = sorted(set(args.clicks))
    if clicks[0] < 1:
        print(f"error: --clicks must be >= 1, got {clicks}", file=sys.stderr)
        return 2
    columns = metric_columns(clicks)
    rows: list[dict] = []
    try:
        for checkpoint in args.checkpoints:
            predictor = Predictor(load_model(checkpoint, device=args.device, base=args.base), device=args.device)
            for root in args.data:
                for row in evaluate_dataset(
                    predictor, root, clicks, args.task, args.certainty_threshold, not args.no_progress
                ):
                    rows.append({"checkpoint": str(checkpoint), "dataset": root.name, **row})
    except SumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = summarise(rows, columns)
    print(markdown_table(table, columns))
    write_csv(args.output, table, ["checkpoint", "dataset", "instances", *columns])
    per_instance = args.output.with_name(args.output.stem + "_instances.csv")
    write_csv(per_instance, rows, ["checkpoint", "dataset", "image", "instance", *columns])
    print(f"wrote {args.output} and {per_instance}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
