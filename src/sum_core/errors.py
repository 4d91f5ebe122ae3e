"""Exception types raised by :mod:`sum_core`.

Every error a user can cause (bad input, bad checkpoint, failed download) is
raised as a subclass of :class:`SumError` with a message that names the
argument or file and says what was wrong, before any heavy work is done.
"""

from __future__ import annotations

from typing import Any


class SumError(Exception):
    """Base class of every error raised by ``sum_core`` on purpose."""


class InvalidInputError(SumError, ValueError):
    """An argument (image, prompt, option) is not valid."""


class CheckpointError(SumError):
    """A checkpoint file is missing, truncated, foreign, unsafe or mismatched."""


class DownloadError(SumError):
    """A model file could not be fetched (offline, server error, unknown name)."""


class HashMismatchError(DownloadError):
    """A downloaded or cached file does not have the registered hash."""


class DamagedTileError(SumError):
    """A tile of an embedding cache is unreadable or does not match its checksum."""


class DamagedTargetError(InvalidInputError):
    """A batch target is damaged (unreadable or altered chunks, flags, records or metadata)."""


class Cancelled(SumError):
    """Long work (encoding tiles, decoding batches) was stopped by a cancel request."""


def check_cancel(cancel: Any) -> None:
    """Raise :class:`Cancelled` if ``cancel`` (a ``threading.Event`` or None) is set: the one check
    between tiles, decoder batches, slices and batch tasks."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")
