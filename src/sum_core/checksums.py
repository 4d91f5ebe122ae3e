"""BLAKE2b checksums of bytes: the one place the core hashes bytes for integrity.

Embedding-cache tiles, the leaves of :func:`sum_core.embedding_cache.data_hash` and (to be
switched) the batch writer's output chunks all hash their bytes through :func:`checksum`.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .validation import check_int, check_range

__all__ = ["checksum"]

_MAX_SIZE = hashlib.blake2b().digest_size  # 64 bytes


def checksum(*parts: bytes | bytearray | memoryview | np.ndarray, size: int = 32) -> bytes:
    """BLAKE2b digest of the bytes of ``parts``, concatenated in order.

    A numpy array contributes its elements' bytes in C order (whatever its memory order;
    not its shape or dtype: hash those as a part of their own where they matter), so
    ``checksum(a)`` equals ``hashlib.blake2b(a.tobytes(), digest_size=32).digest()``.

    Parameters
    ----------
    *parts : bytes-like or numpy.ndarray
        The data, in order.
    size : int
        Digest size in bytes, 1 to 64.

    Returns
    -------
    bytes
        ``size`` bytes.

    Raises
    ------
    InvalidInputError
        ``size`` is not an integer in 1..64.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(6, dtype=np.uint16).reshape(2, 3)
    >>> checksum(image) == checksum(np.asfortranarray(image)) == checksum(image.tobytes())
    True
    >>> len(checksum(b"header", image, size=8))
    8
    """
    check_range(check_int(size, "size", 1), "size", 1, _MAX_SIZE)
    h = hashlib.blake2b(digest_size=size)
    for part in parts:
        h.update(np.ascontiguousarray(part).reshape(-1).view(np.uint8) if isinstance(part, np.ndarray) else part)
    return h.digest()
