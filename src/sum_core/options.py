"""Option names shared by the API, the CLI and the napari widgets (no heavy imports)."""

from __future__ import annotations

#: Per-pixel uncertainty maps, see :meth:`sum_core.Predictor.predict`.
UNCERTAINTY_METHODS: tuple[str, ...] = ("disagreement", "entropy", "ensemble")

#: Inference / training precisions (``torch.autocast`` dtypes), see :mod:`sum_core.acceleration`.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")

#: SUM task prompts by index.
TASKS: dict[int, str] = {0: "anything", 1: "object", 2: "entity"}
