"""Headless segmentation with SAM, HQ-SAM and SUM models, with uncertainty maps.

Never imports napari or Qt.
"""

from .errors import CheckpointError, DownloadError, HashMismatchError, InvalidInputError, SumError

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DownloadError",
    "HashMismatchError",
    "InvalidInputError",
    "SumError",
    "__version__",
]
