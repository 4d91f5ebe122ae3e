"""Where an export is written: checked before any work, staged under a temporary name, renamed at the end.

An export is never left half-written under its final name: :func:`staged` yields a temporary
sibling of the target (same folder, so the rename is atomic), and only a finished export is moved
to the target. An existing target is replaced only with ``overwrite``; a folder target only
when it is an earlier export of ours (it holds the manifest, and nothing but exported files).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InvalidInputError
from ..imageio import remove_entries

__all__ = ["check_target", "staged"]


def check_target(
    path: str | os.PathLike, name: str, *, folder: bool, overwrite: bool, ours: Collection[str] = (), suffix: str = ""
) -> Path:
    """Check that an export may be written to ``path`` (before the model is loaded).

    Parameters
    ----------
    path : str or PathLike
        The target: a folder (``folder=True``) or a file.
    name : str
        The argument's name, for messages.
    folder : bool
        The export is a folder of files.
    overwrite : bool
        Replace an existing target.
    ours : collection of str
        Folder targets: the names an export of ours writes; the first is its manifest.
    suffix : str
        File targets: the required extension (e.g. ``".zip"``).

    Returns
    -------
    Path

    Raises
    ------
    InvalidInputError
        Wrong extension, missing or read-only parent folder, an existing target without
        ``overwrite``, a target of the other kind, or a folder that is not an export of ours.
    """
    if not isinstance(path, (str, os.PathLike)) or "\x00" in str(path):
        raise InvalidInputError(f"{name}: expected a file path, got {path!r}")
    target = Path(path)
    try:
        info = target.lstat()
    except (FileNotFoundError, NotADirectoryError):
        info = None
    except OSError as error:
        raise InvalidInputError(f"{name}: cannot look at {target}: {error.strerror}") from None
    if suffix and target.suffix.lower() != suffix:
        raise InvalidInputError(f"{name}: {target} must end in {suffix}")
    parent = target.absolute().parent
    if not parent.is_dir():
        raise InvalidInputError(f"{name}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{name}: the folder {parent} is not writable")
    if info is None:
        return target
    kind = "folder" if folder else "file"
    if folder != target.is_dir() or target.is_symlink():
        raise InvalidInputError(f"{name}: {target} exists and is not a {kind}; choose another path")
    if not overwrite:
        raise InvalidInputError(f"{name}: {target} exists; pass overwrite=True (--overwrite) to replace it")
    if folder:
        entries = {entry.name for entry in target.iterdir()}
        if entries and (next(iter(ours), None) not in entries or not entries <= set(ours)):
            raise InvalidInputError(
                f"{name}: {target} is not empty and not an export of sum-hq (it holds "
                f"{', '.join(sorted(entries - set(ours))) or 'no manifest'}); it is kept: choose another path"
            )
    return target


@contextmanager
def staged(target: Path, *, folder: bool, ours: Collection[str] = ()) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to write; move it to ``target`` when the block ends.

    On an error the temporary file or folder is deleted and ``target`` is untouched. An existing
    folder target (checked by :func:`check_target`) loses its files named in ``ours`` only once the
    new export is complete (a file added since the check keeps the folder, and the error says so);
    a file target is replaced atomically.
    """
    parent = target.absolute().parent
    prefix = f".{target.name}.partial-"
    temp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent)) if folder else parent / f"{prefix}{os.getpid()}"
    try:
        yield temp
        if folder:
            if target.exists():
                remove_entries(target, ours)
                try:
                    target.rmdir()
                except OSError:
                    raise InvalidInputError(
                        f"{target} received other files during the export; they are kept, the new export is not written"
                    ) from None
            temp.rename(target)
        else:
            os.replace(temp, target)
    except BaseException:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        elif temp.exists():
            temp.unlink()
        raise
