"""Segment the bundled sample image from clicks and save a figure of mask and uncertainty.

    python examples/segment_sample.py                          # default model (downloads once)
    python examples/segment_sample.py --model my_sum.pth --out figure.png

The figure has three panels: the image with the clicks, the mask outline, and
the per-pixel uncertainty map (the default ``uncertainty="auto"``:
|sigmoid(SAM token) - sigmoid(HQ token)| for HQ-SAM / SUM models, the mask's
binary entropy for plain SAM).
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

import sum_core  # noqa: E402
from sum_core.sample_data import sample_image  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=sum_core.DEFAULT_MODEL, help="registry name or checkpoint path")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="segment_sample.png", help="figure file")
    args = parser.parse_args(argv)

    image = sample_image()
    points = np.array([[88, 203], [300, 300]])  # (row, col): a nucleus (+) and the background (-)
    labels = np.array([1, 0])
    prediction = sum_core.segment(image, points=points, labels=labels, model=args.model, device=args.device)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5), constrained_layout=True)
    axes[0].imshow(image)
    axes[0].scatter(points[:, 1], points[:, 0], c=["lime" if lab else "red" for lab in labels], s=60, marker="*")
    axes[0].set_title("image and clicks (green +, red -)")
    overlay = image.copy()
    overlay[find_boundaries(prediction.mask)] = (255, 255, 0)
    axes[1].imshow(overlay)
    axes[1].set_title(f"mask ({int(prediction.mask.sum())} px, predicted IoU {prediction.score:.2f})")
    shown = axes[2].imshow(prediction.uncertainty, cmap="magma", vmin=0, vmax=1)
    axes[2].set_title("uncertainty")
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    for axis in axes:
        axis.set_axis_off()
    fig.savefig(args.out, dpi=100)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
