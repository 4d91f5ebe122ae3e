"""The batch jobs' view of a source: :class:`sum_core.volume.Volume` and :func:`sum_core.volume.open_volume`.

Defined in :mod:`sum_core.volume` (``sum-hq segment`` reads its input through it too, without
importing the batch package); imported here under the name the batch modules use.
"""

from ..volume import Volume, open_volume

__all__ = ["Volume", "open_volume"]
