"""Interactive segmentation metric: clicks a simulated user needs to reach a target IoU (NoC).

For one ground-truth object on the predictor's current image, a simulated user clicks, the model segments
from every click so far (the previous logits fed back as the mask prompt, as in
:func:`training.evaluate.score_instance`), and the IoU is recorded after each click, up to ``max_clicks``.
The number of clicks to reach an IoU (NoC@85, NoC@90) is the first click count with ``IoU >= target``;
an object that never reaches it counts ``max_clicks`` in the mean (RITM / micro-sam convention) and is
left out of the "reached" fraction.

Simulated users (:data:`USERS`), each answering a click's label from the ground truth:

- ``suggested``: accepts :func:`sum_core.suggest.suggest_click`'s point on the current mask and
  uncertainty map, its label the ground truth's value there. It has nothing to go on before the first
  segmentation, so its first click is the standard one; with no suggestion (nothing uncertain) it stops.
- ``centre``: the standard user, the centre of the largest error region
  (:func:`training.prompt_sampling.center_click`).
- ``random``: a pixel drawn uniformly from the error region
  (:func:`training.prompt_sampling.sample_error_click`, a seeded generator).

With an empty mask the error region is the whole object, so the first click of ``suggested`` and
``centre`` is the object's centre and that of ``random`` a random pixel of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sum_core.errors import InvalidInputError
from sum_core.image import prepare_image
from sum_core.imageio import read_image
from sum_core.predictor import Predictor
from sum_core.suggest import DEFAULT_THRESHOLD, suggest_click
from sum_core.validation import check_int, check_range

from .dataset import scan_dataset
from .metrics import mask_iou
from .prompt_sampling import center_click, sample_error_click

USERS = ("suggested", "centre", "random")
THRESHOLDS = (0.85, 0.90)
MAX_CLICKS = 10

Click = tuple[np.ndarray, int]
#: ``user(mask, uncertainty, target) -> (point, label) or None``: ``uncertainty`` is None before the first
#: segmentation (``mask`` is then empty).
SimulatedUser = Callable[[np.ndarray, "np.ndarray | None", np.ndarray], "Click | None"]


def centre_user(mask: np.ndarray, uncertainty: np.ndarray | None, target: np.ndarray) -> Click | None:
    """The standard simulated user: the centre of the largest error region, labelled by its side."""
    return center_click(mask, target)


@dataclass
class SuggestedUser:
    """Accepts the suggested click; answers its label from the ground truth.

    Counts, over its calls, the suggestions made (``suggested``), those whose own label was the ground
    truth's (``agreed``) and the calls with nothing to suggest (``none``).
    """

    threshold: float = DEFAULT_THRESHOLD
    suggested: int = 0
    agreed: int = 0
    none: int = 0

    def __call__(self, mask: np.ndarray, uncertainty: np.ndarray | None, target: np.ndarray) -> Click | None:
        if uncertainty is None:
            return center_click(mask, target)
        click = suggest_click(mask, uncertainty, threshold=self.threshold)
        if click is None:
            self.none += 1
            return None
        label = int(target[click.point])
        self.suggested += 1
        self.agreed += int(label == click.label)
        return np.array(click.point, dtype=np.int64), label


@dataclass
class RandomUser:
    """A pixel drawn uniformly from the error region (reproducible from ``seed``)."""

    seed: int = 0
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(check_int(self.seed, "seed", 0))

    def __call__(self, mask: np.ndarray, uncertainty: np.ndarray | None, target: np.ndarray) -> Click | None:
        return sample_error_click(mask, target, generator=self.generator)


def make_user(name: str, seed: int = 0, threshold: float = DEFAULT_THRESHOLD) -> SimulatedUser:
    """The simulated user called ``name`` (one of :data:`USERS`)."""
    if name == "suggested":
        return SuggestedUser(threshold)
    if name == "centre":
        return centre_user
    if name == "random":
        return RandomUser(seed)
    raise InvalidInputError(f"user={name!r} is not valid; choose one of {list(USERS)}")


def iou_per_click(
    predictor: Predictor,
    target: np.ndarray,
    user: SimulatedUser,
    max_clicks: int = MAX_CLICKS,
    stop_at: float = 1.0,
    **predict_options,
) -> list[float]:
    """IoU with ``target`` after each of the user's clicks on the predictor's current image.

    Stops after ``max_clicks``, once the IoU reaches ``stop_at``, or when the user has no click (the list
    is then shorter). ``predict_options`` go to :meth:`Predictor.predict` (``task``, ``uncertainty``).
    """
    max_clicks = check_int(max_clicks, "max_clicks", 1)
    stop_at = check_range(stop_at, "stop_at", 0.0, 1.0)
    target = np.asarray(target, dtype=bool)
    mask, uncertainty, prompt = np.zeros_like(target), None, None
    points: list[np.ndarray] = []
    labels: list[int] = []
    ious: list[float] = []
    while len(ious) < max_clicks:
        click = user(mask, uncertainty, target)
        if click is None:
            break
        points.append(click[0])
        labels.append(click[1])
        pred = predictor.predict(
            points=np.stack(points), labels=np.array(labels), mask_input=prompt, **predict_options
        )
        mask, uncertainty, prompt = pred.mask, pred.uncertainty, pred.mask_prompt()
        ious.append(mask_iou(mask, target))
        if ious[-1] >= stop_at:
            break
    return ious


def score_dataset(
    predictor: Predictor,
    root: str | Path,
    users: dict[str, SimulatedUser],
    max_clicks: int = MAX_CLICKS,
    stop_at: float = max(THRESHOLDS),
    **predict_options,
) -> list[dict]:
    """One row per (object, user) of a dataset folder (``images/`` + ``masks/``): ``image``, ``instance``,
    ``user`` and ``ious`` (:func:`iou_per_click`)."""
    rows = []
    for sample in scan_dataset(root, val_fraction=0.0).train:
        labels = read_image(sample.mask)
        if labels.ndim == 3:
            labels = labels[..., 0]
        predictor.set_image(prepare_image(read_image(sample.image)))
        for instance in np.unique(labels[labels != 0]):
            for name, user in users.items():
                ious = iou_per_click(predictor, labels == instance, user, max_clicks, stop_at, **predict_options)
                rows.append({"image": sample.image.name, "instance": int(instance), "user": name, "ious": ious})
    return rows


def clicks_to_reach(ious: Sequence[float], threshold: float) -> int | None:
    """The first click count (1-based) with ``IoU >= threshold``; None if never."""
    return next((n for n, iou in enumerate(ious, start=1) if iou >= threshold), None)


def summarise(
    rows: Iterable[dict], thresholds: Sequence[float] = THRESHOLDS, max_clicks: int = MAX_CLICKS
) -> list[dict]:
    """Per (model, user): objects, mean NoC at each threshold (``max_clicks`` for an object that never
    reached it), the fraction that reached it, the mean IoU after the first click and the mean best IoU (0 for
    a user that never clicked; best = first: later clicks never helped).

    ``rows`` hold ``model``, ``user`` and ``ious`` (one object's :func:`iou_per_click`).
    """
    groups: dict[tuple[str, str], list[list[float]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["user"]), []).append(row["ious"])
    table = []
    for (model, user), traces in groups.items():
        entry: dict = {"model": model, "user": user, "objects": len(traces)}
        for threshold in thresholds:
            counts = [clicks_to_reach(trace, threshold) for trace in traces]
            entry[f"NoC@{round(100 * threshold)}"] = float(np.mean([max_clicks if n is None else n for n in counts]))
            entry[f"reached {round(100 * threshold)}"] = sum(n is not None for n in counts) / len(counts)
        entry["IoU 1st click"] = float(np.mean([trace[0] if trace else 0.0 for trace in traces]))
        entry["best IoU"] = float(np.mean([max(trace, default=0.0) for trace in traces]))
        table.append(entry)
    return table


def markdown_table(table: list[dict], thresholds: Sequence[float] = THRESHOLDS) -> str:
    """The summary as a Markdown table (NoC with two decimals, reached as a percentage, IoUs with three)."""
    head = ["model", "user", "objects"]
    for threshold in thresholds:
        head += [f"NoC@{round(100 * threshold)}", f"reached {round(100 * threshold)} %"]
    head += ["IoU 1st click", "best IoU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in table:
        cells = [entry["model"], entry["user"], str(entry["objects"])]
        for threshold in thresholds:
            key = round(100 * threshold)
            cells += [f"{entry[f'NoC@{key}']:.2f}", f"{100 * entry[f'reached {key}']:.0f}"]
        cells += [f"{entry['IoU 1st click']:.3f}", f"{entry['best IoU']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
