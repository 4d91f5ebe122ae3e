"""The options of automatic instance segmentation (AIS), importable without torch (as the CLI's parser needs)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import InvalidInputError
from .validation import check_int, check_range

__all__ = ["AisOptions"]


@dataclass(frozen=True)
class AisOptions:
    """The AIS post-processing options (micro-sam 1.8.14's defaults), validated once.

    The fields are the keyword arguments of
    :func:`sum_core.ais_postprocess.instances_from_distance_maps` (see there for each step).

    Attributes
    ----------
    center_distance_threshold : float
        Seeds where the smoothed centre distance is below this, in [0, 1].
    boundary_distance_threshold : float
        ... and the smoothed boundary distance is below this, in [0, 1) (also the threshold of
        the uncertainty's boundary term, :func:`sum_core.ais_uncertainty.ais_pixel_uncertainty`).
    foreground_threshold : float
        Foreground where the smoothed foreground probability is above this, in [0, 1].
    foreground_smoothing : float
        Gaussian sigma (pixels) of the foreground map, >= 0 (0: none).
    distance_smoothing : float
        Gaussian sigma (pixels) of both distance maps, >= 0 (0: none).
    min_size : int
        Objects with fewer pixels are removed, >= 0 (0 keeps all).

    Examples
    --------
    >>> AisOptions(min_size=25).min_size
    25
    >>> AisOptions(foreground_threshold=2)
    Traceback (most recent call last):
    ...
    sum_core.errors.InvalidInputError: foreground_threshold must lie in [0.0, 1.0], got 2
    """

    center_distance_threshold: float = field(
        default=0.5, metadata={"help": "seeds where the centre distance is below this"}
    )
    boundary_distance_threshold: float = field(
        default=0.5, metadata={"help": "seeds where the boundary distance is below this"}
    )
    foreground_threshold: float = field(
        default=0.5, metadata={"help": "foreground where the probability is above this"}
    )
    foreground_smoothing: float = field(
        default=1.0, metadata={"help": "Gaussian sigma of the foreground map (0: none)"}
    )
    distance_smoothing: float = field(default=1.6, metadata={"help": "Gaussian sigma of the distance maps (0: none)"})
    min_size: int = field(default=0, metadata={"help": "remove objects with fewer pixels (0: keep all)"})

    def __post_init__(self) -> None:
        values = {
            "center_distance_threshold": check_range(
                self.center_distance_threshold, "center_distance_threshold", 0.0, 1.0
            ),
            "boundary_distance_threshold": check_range(
                self.boundary_distance_threshold, "boundary_distance_threshold", 0.0, 1.0
            ),
            "foreground_threshold": check_range(self.foreground_threshold, "foreground_threshold", 0.0, 1.0),
            "foreground_smoothing": check_range(self.foreground_smoothing, "foreground_smoothing", 0.0, math.inf),
            "distance_smoothing": check_range(self.distance_smoothing, "distance_smoothing", 0.0, math.inf),
            "min_size": check_int(self.min_size, "min_size", 0),
        }
        if values["boundary_distance_threshold"] == 1.0:
            raise InvalidInputError(
                "boundary_distance_threshold must be below 1 (the uncertainty's boundary term ramps from it to 1)"
            )
        for name, value in values.items():  # plain Python types
            object.__setattr__(self, name, value)
