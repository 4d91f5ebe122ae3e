"""napari plugin of napari-sum-hq (interactive SAM / HQ-SAM / SUM segmentation).

The contributions are declared in ``napari.yaml`` (npe2). Importing this
package is cheap: the widget (Qt, napari) and the sample data are imported on
first access, and ``sum_core``'s model code (torch) only when a model runs.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "InteractiveSegmentationWidget": "._interactive_widget",
    "AutomaticSegmentationWidget": "._auto_widget",
    "BatchSegmentationWidget": "._batch_widget",
    "cell_sample": "._sample_data",
    "blobs_stack_sample": "._sample_data",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
