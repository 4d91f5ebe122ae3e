"""The options of automatic ("segment everything") segmentation, as data (no torch import).

:class:`AutoOptions` is the one definition of SAM's automatic-mask-generator settings and their
defaults, shared by :func:`sum_core.automatic.generate_masks`,
:func:`sum_core.automatic.auto_segment`, :func:`sum_core.batch.segment_zarr`, ``sum-hq batch``,
the napari widgets and ``training``. Each field's ``metadata["help"]`` is its one-line
description (the CLI's help text).

The tiling (``tile_shape``, ``halo``) is not part of it: the options apply to one window, and
the tiling of an image is shared with prompted segmentation (:func:`sum_core.tiling.tile_grid`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInputError
from .validation import check_bool, check_int, check_range, check_task

__all__ = ["AutoOptions"]


@dataclass(frozen=True)
class AutoOptions:
    """Automatic mask generation options (SAM's defaults, SUM's area filter), validated once.

    Attributes
    ----------
    points_per_side : int
        Grid of ``points_per_side²`` clicks per window, >= 1.
    points_per_batch : int
        Clicks decoded per decoder call (memory vs. speed; does not change the result), >= 1.
    pred_iou_thresh : float
        Keep masks whose predicted IoU is above this, in [0, 1] (0: no filter).
    stability_thresh : float
        Keep masks whose stability score is at least this, in [0, 1] (0: no filter).
    stability_offset : float
        Logit offset of the stability score, >= 0.
    box_nms_thresh : float
        Box IoU above which the lower-scoring of two masks is dropped, in [0, 1].
    min_area : int
        Small-region clean-up: fill holes and remove islands below this many pixels (0: off).
    max_area_fraction : float
        Drop masks covering more than this fraction of the window, in (0, 1] (SUM uses 0.95
        against background masks).
    multimask : bool
        Plain SAM: 3 masks per click; HQ / SUM: the best of the 3 SAM tokens per click.
    hq_token_only : bool
        HQ / SUM models: the HQ token's logits alone instead of SAM + HQ.
    task : {0, 1, 2} or None
        SUM task prompt (0 anything, 1 object, 2 entity); None: no task offsets.
    """

    points_per_side: int = field(default=32, metadata={"help": "grid of N x N clicks per window"})
    points_per_batch: int = field(default=64, metadata={"help": "clicks per decoder call (memory vs. speed)"})
    pred_iou_thresh: float = field(default=0.88, metadata={"help": "keep masks whose predicted IoU is above this"})
    stability_thresh: float = field(default=0.95, metadata={"help": "keep masks whose stability score is at least this"})
    stability_offset: float = field(default=1.0, metadata={"help": "logit offset of the stability score"})
    box_nms_thresh: float = field(default=0.7, metadata={"help": "box IoU above which the weaker mask is dropped"})
    min_area: int = field(default=0, metadata={"help": "fill holes and remove islands below this many pixels (0: off)"})
    max_area_fraction: float = field(
        default=1.0, metadata={"help": "drop masks covering more than this fraction of the window"}
    )
    multimask: bool = field(default=True, metadata={"help": "decode 3 candidate masks per click"})
    hq_token_only: bool = field(default=False, metadata={"help": "HQ/SUM models: the HQ token's mask alone"})
    task: int | None = field(default=None, metadata={"help": "SUM task prompt: 0 anything, 1 object, 2 entity"})

    def __post_init__(self) -> None:
        values = {
            "points_per_side": check_int(self.points_per_side, "points_per_side", 1),
            "points_per_batch": check_int(self.points_per_batch, "points_per_batch", 1),
            "pred_iou_thresh": check_range(self.pred_iou_thresh, "pred_iou_thresh", 0.0, 1.0),
            "stability_thresh": check_range(self.stability_thresh, "stability_thresh", 0.0, 1.0),
            "stability_offset": check_range(self.stability_offset, "stability_offset", 0.0, float("inf")),
            "box_nms_thresh": check_range(self.box_nms_thresh, "box_nms_thresh", 0.0, 1.0),
            "min_area": check_int(self.min_area, "min_area", 0),
            "max_area_fraction": check_range(self.max_area_fraction, "max_area_fraction", 0.0, 1.0),
            "multimask": check_bool(self.multimask, "multimask"),
            "hq_token_only": check_bool(self.hq_token_only, "hq_token_only"),
            "task": check_task(self.task, allow_none=True),
        }
        if values["max_area_fraction"] == 0.0:
            raise InvalidInputError("max_area_fraction must be > 0, got 0")
        for name, value in values.items():  # plain Python types (JSON-ready signatures)
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AutoOptions:
        """Options from a mapping of field names (missing fields keep their defaults).

        Raises
        ------
        InvalidInputError
            An unknown name, or a value out of range.
        """
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise InvalidInputError(f"unknown option(s) {unknown}; automatic options are {list(cls.names())}")
        return cls(**values)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in field order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> AutoOptions:
        """A copy with ``changes`` applied (validated; unknown names refused)."""
        return self.from_dict({**self.to_dict(), **changes})
