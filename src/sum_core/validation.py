"""Shared argument validators: one wording of every "bad number / flag / task" error.

Each validator returns the value converted to its plain Python type, or raises
:class:`~sum_core.errors.InvalidInputError` naming the argument. No heavy imports (numpy only),
so option dataclasses, the CLI and the napari widgets can use them cheaply.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import InvalidInputError
from .options import TASKS

__all__ = ["check_bool", "check_index", "check_int", "check_options", "check_range", "check_task"]


def check_range(value: Any, name: str, low: float, high: float) -> float:
    """A real number in the closed interval ``[low, high]``.

    Parameters
    ----------
    value : Any
        Python or numpy int/float (``bool`` is refused).
    name : str
        The argument's name, for the error message.
    low, high : float
        Inclusive bounds (``math.inf`` for none).

    Returns
    -------
    float

    Raises
    ------
    InvalidInputError
        Not a number, NaN, or outside ``[low, high]``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    if math.isnan(float(value)) or not low <= float(value) <= high:
        raise InvalidInputError(f"{name} must lie in [{low}, {high}], got {value!r}")
    return float(value)


def check_int(value: Any, name: str, minimum: int) -> int:
    """An integer ``>= minimum`` (Python or numpy; ``bool`` is refused).

    Raises
    ------
    InvalidInputError
        Not an integer, or below ``minimum``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    """``True`` or ``False`` (Python or numpy bool).

    Raises
    ------
    InvalidInputError
        Anything else (``0`` / ``1`` included).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_task(value: Any, name: str = "task", *, allow_none: bool = False) -> int | None:
    """A SUM task prompt index (see :data:`sum_core.options.TASKS`), or None when allowed.

    Raises
    ------
    InvalidInputError
        Not one of the task indices.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or int(value) not in TASKS:
        choices = ([None] if allow_none else []) + list(TASKS)
        raise InvalidInputError(f"{name}={value!r} is not valid; choose one of {choices}")
    return int(value)


def check_index(value: Any, name: str, n: int) -> int:
    """An integer index in ``[0, n)`` (Python or numpy; ``bool`` is refused).

    Raises
    ------
    InvalidInputError
        Not an integer, or out of range.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value < n:
        raise InvalidInputError(f"{name} must be an integer in [0, {n}), got {value!r}")
    return int(value)


def check_options(value: Any, kind: type, name: str = "options") -> Any:
    """An options object of dataclass type ``kind`` (``kind()``, its defaults, for None).

    Raises
    ------
    InvalidInputError
        Anything that is not a ``kind``.
    """
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise InvalidInputError(f"{name} must be a {kind.__module__}.{kind.__name__}, got {type(value).__name__}")
    return value
