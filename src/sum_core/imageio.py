"""Read images (TIFF, PNG, JPEG, zarr / OME-Zarr) and write TIFF, OME-TIFF or PNG atomically.

:func:`read_image` returns the stored array unchanged (any dtype and number
of dimensions); use :func:`sum_core.image.prepare_image` to get a plane SAM
can segment. :func:`write_image` writes to a temporary file in the target's
folder and renames it into place, so a failed write never leaves a
half-written file behind (:func:`write_images`: several files, all or
nothing; :func:`check_image_target` refuses a bad target before any data
exist). :func:`open_zarr` opens one array of a zarr store lazily
(``sum_core.sources.open_image`` builds on it; this module imports nothing
of ``sum_core`` but its errors).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr
from PIL import Image

from .errors import InvalidInputError

__all__ = [
    "READABLE_SUFFIXES",
    "TIFF_SUFFIXES",
    "check_image_target",
    "check_input_path",
    "is_ome_tiff",
    "is_zarr_path",
    "open_zarr",
    "read_image",
    "remove_entries",
    "write_image",
    "write_images",
]

TIFF_SUFFIXES = (".tif", ".tiff")
_PIL = (".png", ".jpg", ".jpeg", ".bmp")
#: File name endings :func:`read_image` reads (zarr stores: also any folder with zarr metadata).
READABLE_SUFFIXES = TIFF_SUFFIXES + _PIL + (".zarr",)
_WRITABLE = TIFF_SUFFIXES + (".png",)
_OME_AXES = {2: "YX", 3: "ZYX"}  # the axes of an OME-TIFF written by write_images, by number of dimensions

# PIL modes that np.asarray does not turn into plain intensities.
_PIL_CONVERT = {
    "P": None,
    "PA": "RGBA",
    "LA": "L",
    "La": "L",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
}


def is_zarr_path(path: Path) -> bool:
    """Whether ``path`` is a zarr store: a ``.zarr`` path or a folder with zarr (v2/v3) metadata."""
    return path.suffix.lower() == ".zarr" or (
        path.is_dir() and any((path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))
    )


def _read_pil(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        if img.mode in _PIL_CONVERT:
            mode = _PIL_CONVERT[img.mode]
            if mode is None:  # palette: keep transparency if there is any
                mode = "RGBA" if "transparency" in img.info else "RGB"
            img = img.convert(mode)
        return np.asarray(img).copy()


def _multiscale_paths(group: zarr.Group) -> list[str] | None:
    attrs = group.attrs.asdict()
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    try:
        return [str(d["path"]) for d in multiscales[0]["datasets"]]
    except (TypeError, KeyError, IndexError):
        return None


def _array_in_group(group: zarr.Group, key: str | None, level: int, where: str) -> zarr.Array:
    if key is not None:
        if level != 0:
            raise InvalidInputError(f"level: use either key= or level=, not both (got key={key!r})")
        if not isinstance(key, str):
            raise InvalidInputError(
                f"key: expected the path of an array inside zarr group {where} as a string, got {key!r}"
            )
        node = _node(group, key, where, f"key: {key!r}")
        if not isinstance(node, zarr.Array):
            raise InvalidInputError(f"key: {key!r} in {where} is a group, not an array")
        return node
    paths = _multiscale_paths(group)
    if paths is None:
        arrays = sorted(group.array_keys())
        if not arrays:
            raise InvalidInputError(f"source: zarr group {where} holds no arrays at its top level; pass key=")
        paths = arrays[:1]
    if level >= len(paths):
        raise InvalidInputError(
            f"level: {where} has {len(paths)} level(s) (0..{len(paths) - 1}), got {level}"
        )
    node = _node(group, paths[level], where, f"level {level}: {paths[level]!r} (named by its OME-Zarr metadata)")
    if not isinstance(node, zarr.Array):
        raise InvalidInputError(f"level {level}: {paths[level]!r} in {where} is a group, not an array")
    return node


def _node(group: zarr.Group, path: str, where: str, what: str) -> Any:
    """``group[path]``, or an error saying ``what`` asked for it and which arrays there are."""
    try:
        return group[path]
    except (KeyError, ValueError):  # ValueError: zarr refuses '.' / '..' segments
        raise InvalidInputError(
            f"{what} not found in zarr group {where}; its arrays are {sorted(group.array_keys())}"
        ) from None


def open_zarr(
    store: zarr.Group | str | os.PathLike, key: str | None = None, level: int = 0, *, name: str | None = None
) -> zarr.Array:
    """Open one array of a zarr store (v2 or v3) lazily: nothing is read until it is indexed.

    Parameters
    ----------
    store : zarr.Group, str or path-like
        An open group (also tifffile's ``aszarr`` store of a pyramidal TIFF), or the path
        of a zarr store (a ``.zarr`` path or a folder with zarr metadata).
    key : str, optional
        Path of the array inside a group. Without it, level ``level`` of an OME-Zarr
        multiscale image (0 = full resolution), else the group's first array by name.
    level : int
        Resolution level of a multiscale group (0 = full resolution); an int >= 0.
    name : str, optional
        How error messages call the store (default: its path, or "(given group)").

    Raises
    ------
    InvalidInputError
        Unreadable store, missing key or level, key and level together, key or level for
        a single array, or a group without arrays.
    """
    if isinstance(store, zarr.Group):
        return _array_in_group(store, key, level, name or "(given group)")
    path = Path(store)
    where = name or str(path)
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - any zarr failure means an unreadable store
        raise InvalidInputError(f"source: could not open zarr store {where}: {exc}") from exc
    if isinstance(node, zarr.Array):
        if key is not None or level != 0:
            raise InvalidInputError(f"key/level: {where} is a single zarr array without levels")
        return node
    return _array_in_group(node, key, level, where)


def _check_path(path: str | os.PathLike, name: str) -> tuple[Path, os.stat_result | None]:
    """``path`` as a ``Path`` and its ``os.stat`` (None when nothing is there): the one place that
    turns what the operating system says about a path into a message naming ``name``.

    Raises
    ------
    InvalidInputError
        Not a path, a NUL character in it, a symbolic-link loop on the way, or a path that cannot
        be looked at (no permission on a folder, a name too long).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInputError(f"{name}: expected a file path, got {type(path).__name__}")
    p = Path(path)
    if "\x00" in str(p):
        raise InvalidInputError(f"{name}: {str(p)!r} contains a NUL character; no file name can hold one")
    try:
        return p, os.stat(p)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return p, None
        if error.errno == errno.ELOOP:
            raise InvalidInputError(
                f"{name}: {p} is a symbolic-link loop (a link that leads back to itself); fix or remove the link"
            ) from None
        raise InvalidInputError(f"{name}: cannot look at {p}: {error.strerror}") from None


def check_input_path(path: str | os.PathLike, name: str) -> Path:
    """An existing regular file or folder to read, as a ``Path``.

    Raises
    ------
    InvalidInputError
        Missing, a NUL character in the name, a symbolic-link loop, or neither a file nor a
        folder (a named pipe or a device would block a reader).
    """
    p, info = _check_path(path, name)
    if info is None:
        raise InvalidInputError(f"{name}: {p} does not exist")
    if not (p.is_file() or p.is_dir()):
        raise InvalidInputError(f"{name}: {p} is not a regular file or folder (a named pipe or a device?)")
    return p


def read_image(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Read an image file or zarr store into a numpy array.

    Parameters
    ----------
    path : str or path-like
        ``.tif`` / ``.tiff`` (tifffile, first series), ``.png`` / ``.jpg`` /
        ``.jpeg`` / ``.bmp`` (PIL; palette images become RGB or RGBA), or a
        zarr store (v2 or v3; a ``.zarr`` path or a folder with zarr metadata).
    key : str, optional
        For a zarr group, the path of the array to read. Without it, an
        OME-Zarr group gives its full-resolution level (the first dataset of
        its first multiscale) and any other group its first array (by name).

    Returns
    -------
    numpy.ndarray
        The stored array, unchanged.

    Raises
    ------
    InvalidInputError
        Missing file, unknown format, missing zarr key, or unreadable file.
    """
    p = check_input_path(path, "path")
    suffix = p.suffix.lower()
    if key is not None and not is_zarr_path(p):
        raise InvalidInputError(f"key: only used for zarr stores, but {p} is not one")
    try:
        if is_zarr_path(p):
            return np.asarray(open_zarr(p, key=key)[...])
        if suffix in TIFF_SUFFIXES:
            return tifffile.imread(p)
        if suffix in _PIL:
            return _read_pil(p)
    except InvalidInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unreadable file
        raise InvalidInputError(f"path: could not read {p}: {type(exc).__name__}: {exc}") from exc
    raise InvalidInputError(
        f"path: unknown image format {suffix or '(no extension)'!r} for {p}; supported: {', '.join(READABLE_SUFFIXES)}"
    )


def is_ome_tiff(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an OME-TIFF (``.ome.tif`` / ``.ome.tiff``, any case)."""
    return Path(path).name.lower().endswith((".ome.tif", ".ome.tiff"))


def _check_png(shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    gray = len(shape) == 2
    color = len(shape) == 3 and shape[-1] in (3, 4)
    ok = (dtype in (np.bool_, np.uint8) and (gray or color)) or (dtype == np.uint16 and gray)
    if not ok:
        raise InvalidInputError(
            f"{name}: PNG holds bool or uint8 (H, W), (H, W, 3), (H, W, 4) or uint16 (H, W) images, got "
            f"shape {shape} and dtype {dtype}; write a .tif instead"
        )


def check_image_target(
    path: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype | type, name: str | None = None
) -> Path:
    """Check that :func:`write_image` can write an array of ``shape`` and ``dtype`` to ``path``.

    Everything :func:`write_image` refuses is refused here, before any data exist (a command
    line checks its outputs before it loads a model). An existing ``path`` is allowed (it
    would be replaced); whether that is wanted is the caller's decision.

    Parameters
    ----------
    path : str or path-like
        Target file; its extension (``.tif``, ``.tiff``, ``.ome.tif``, ``.ome.tiff`` or
        ``.png``) picks the format.
    shape : tuple of int
        Shape of the array that will be written.
    dtype : numpy dtype
        Its dtype.
    name : str, optional
        How error messages call the target (e.g. ``"--out"``); default ``"path"`` for
        problems of the path and ``"array"`` for those of the array.

    Returns
    -------
    pathlib.Path
        ``path`` as a Path.

    Raises
    ------
    InvalidInputError
        Unknown extension, a missing or non-writable folder, a folder at ``path``, a NUL
        character or a symbolic-link loop in ``path``, an empty or non-numeric array, an
        array PNG cannot hold, or an OME-TIFF that is not (Y, X) or (Z, Y, X).
    """
    where, what = (name, name) if name else ("path", "array")
    p, _ = _check_path(path, where)
    suffix = p.suffix.lower()
    if suffix not in _WRITABLE:
        raise InvalidInputError(
            f"{where}: cannot write {suffix or '(no extension)'!r} files ({p}); use one of {', '.join(_WRITABLE)}"
        )
    if not p.parent.is_dir():
        raise InvalidInputError(f"{where}: folder {p.parent} does not exist")
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{where}: folder {p.parent} is not writable")
    if p.is_dir():
        raise InvalidInputError(f"{where}: {p} is a folder")
    dtype = np.dtype(dtype)
    if dtype.kind not in "biufc" or 0 in shape:
        raise InvalidInputError(f"{what}: expected a non-empty numeric array, got shape {shape} dtype {dtype}")
    if suffix == ".png":
        _check_png(tuple(shape), dtype, what)
    if is_ome_tiff(p) and len(shape) not in _OME_AXES:
        raise InvalidInputError(f"{what}: an OME-TIFF is written as (Y, X) or (Z, Y, X), got shape {tuple(shape)}")
    return p


def write_image(
    path: str | os.PathLike, array, physical_size: Sequence[tuple[float, str | None]] | None = None
) -> None:
    """Write an array to a TIFF (zlib-compressed), OME-TIFF or PNG file, atomically.

    The data go to a temporary file in the same folder, which then replaces
    ``path`` (``os.replace``); on any failure the temporary file is removed and
    an existing ``path`` is left untouched.

    Parameters
    ----------
    path : str or path-like
        Target file; the extension (``.tif``, ``.tiff``, ``.ome.tif``, ``.ome.tiff`` or
        ``.png``) picks the format. Its folder must exist.
    array : array_like
        Any numeric array for TIFF (``(H, W, 3)`` and ``(H, W, 4)`` are stored as RGB(A),
        anything else as grayscale pages); ``(Y, X)`` or ``(Z, Y, X)`` for OME-TIFF; for PNG,
        bool or uint8 grayscale / RGB / RGBA, or uint16 grayscale.
    physical_size : sequence of (float, str or None), optional
        For an OME-TIFF: the pixel size along each axis of ``array`` and its OME-XML unit
        symbol (e.g. ``(0.5, "µm")``), written as ``PhysicalSizeZ/Y/X`` and their units; an
        axis without a unit gets no physical size. Other formats ignore it.

    Raises
    ------
    InvalidInputError
        As :func:`check_image_target`.
    """
    write_images([(path, array)], physical_size)


def remove_entries(folder: Path, names: Iterable[str]) -> None:
    """Delete the named entries of ``folder``, in the given order, and nothing else.

    The one deletion of what sum-hq wrote into a folder (batch targets, embedding caches): a
    folder entry is removed whole, a file or a symbolic link is unlinked (never what a link
    points to), a name that is not there is skipped.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "labels").mkdir(); (folder / "notes.txt").write_text("mine")
    4
    >>> remove_entries(folder, ["labels", "zarr.json"])
    >>> sorted(p.name for p in folder.iterdir())
    ['notes.txt']
    """
    for name in names:
        entry = folder / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.is_symlink() or entry.exists():
            entry.unlink()


def write_images(
    items: Sequence[tuple[str | os.PathLike, Any]], physical_size: Sequence[tuple[float, str | None]] | None = None
) -> None:
    """Write several images all or nothing: every array to a temporary file first, then replace.

    All targets are checked (:func:`check_image_target`), then each array is written to a
    temporary file in its target's folder; only when every one is written do they replace
    their targets (``os.replace``), so a failure while writing (a full disk, an interrupt)
    leaves every target as it was and no temporary file behind.

    Parameters
    ----------
    items : sequence of (path, array)
        Targets and their arrays, as for :func:`write_image`.
    physical_size : sequence of (float, str or None), optional
        Pixel size and unit per axis of the OME-TIFF targets, as for :func:`write_image`.

    Raises
    ------
    InvalidInputError
        As :func:`check_image_target`, for the first bad item, before anything is written.
    """
    arrays = [(Path(path), np.asarray(array)) for path, array in items]
    for path, array in arrays:
        check_image_target(path, array.shape, array.dtype)
        if physical_size is not None and is_ome_tiff(path) and len(physical_size) != array.ndim:
            raise InvalidInputError(f"physical_size: {len(physical_size)} values for {path} of shape {array.shape}")
    written: list[tuple[Path, Path]] = []
    try:
        for path, array in arrays:
            tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
            # os.open with mode 0o666 honours the umask, unlike tempfile.mkstemp (always 0o600).
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            written.append((tmp, path))
            if path.suffix.lower() in TIFF_SUFFIXES:
                _write_tiff(tmp, array, physical_size, is_ome_tiff(path))
            else:
                Image.fromarray(array).save(tmp, format="PNG")
        for tmp, path in written:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise


def _write_tiff(
    path: Path, array: np.ndarray, physical_size: Sequence[tuple[float, str | None]] | None, ome: bool
) -> None:
    """One zlib-compressed TIFF; ``photometric`` always given (RGB only for (H, W, 3|4) plain TIFFs)."""
    if not ome:
        rgb = array.ndim == 3 and array.shape[-1] in (3, 4)
        tifffile.imwrite(path, array, compression="zlib", photometric="rgb" if rgb else "minisblack")
        return
    axes = _OME_AXES[array.ndim]
    metadata: dict[str, Any] = {"axes": axes}
    for letter, (size, unit) in zip(axes, physical_size or ()):
        if unit is not None:
            metadata[f"PhysicalSize{letter}"] = float(size)
            metadata[f"PhysicalSize{letter}Unit"] = unit
    tifffile.imwrite(path, array, compression="zlib", photometric="minisblack", ome=True, metadata=metadata)
