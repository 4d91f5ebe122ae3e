"""Plain words for the interactive widget's model choices: SUM tasks and uncertainty methods."""

from __future__ import annotations

#: SUM task prompt -> (name shown, one-line explanation). Offered only for SUM models.
TASK_WORDS: dict[int, tuple[str, str]] = {
    1: ("salient object", "the main object under the click, with fine detail (SUM's default)"),
    2: ("entity", "one whole thing (a cell, a nucleus), not its parts"),
    0: ("anything, as SAM", "no task prompt: what plain SAM would segment"),
}

#: Uncertainty method -> one-line explanation.
UNCERTAINTY_WORDS: dict[str, str] = {
    "auto": "disagreement for HQ-SAM / SUM models, entropy for plain SAM",
    "disagreement": "where SAM's and HQ-SAM's masks of the same object differ (HQ-SAM / SUM models; no extra cost)",
    "entropy": "how close each pixel's mask probability is to 50 % (any model; no extra cost)",
    "ensemble": "entropy of the mean of several runs with slightly moved prompts (several decoder runs: slower)",
}


def lines(words: dict) -> str:
    """``name: explanation`` lines for a tooltip."""
    return "\n".join(f"{name}: {text}" for name, text in words.items())
