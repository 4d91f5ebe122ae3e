"""Where an export is written: checked before any work, staged under a temporary name, renamed at the end.

An export is never left half-written under its final name: :func:`staged` yields a temporary
sibling of the target (same folder, so the rename is atomic), and only a finished export is moved
to the target; an old folder export is moved to a backup beside it first and deleted last
(:func:`recover` puts a backup back that a hard kill left). An existing target is replaced only with ``overwrite``; a folder target only
when it is an earlier export of ours (it holds the manifest, and nothing but exported files).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InvalidInputError

__all__ = ["check_target", "recover", "staged"]


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
    """Yield a temporary path beside ``target`` to write; move it to ``target`` when the block ends.

    On an error in the block the temporary file or folder is deleted and ``target`` is untouched.
    A file target is replaced atomically (``os.replace``). An existing folder target (checked by
    :func:`check_target`) is replaced by two renames: it is first renamed into a backup folder
    ``.{name}.replaced-XXXXXXXX`` beside it (it keeps its name inside: ``.{name}.replaced-XXXXXXXX/{name}``),
    then the new export is renamed to ``target``, then the backup is deleted. Until the new export is
    in place, any failure renames the backup back, so the old target is exactly as before; a hard
    kill between the two renames leaves the target missing and its backup beside it, which
    :func:`recover` puts back. A folder target holding files not in ``ours`` is refused before
    anything is touched.

    Raises
    ------
    InvalidInputError
        The folder target holds files that an export of ours does not write (e.g. added since
        :func:`check_target`); the target is kept and the new export is not written.
    """
    target = target.absolute()
    holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    temp = holder if folder else holder / target.name  # a file is written inside a private folder
    try:
        yield temp
        if not folder:
            os.replace(temp, target)
        elif not os.path.lexists(target):
            temp.rename(target)
    except BaseException:
        shutil.rmtree(holder, ignore_errors=True)
        raise
    if not folder:
        holder.rmdir()
    elif temp.exists():
        _replace_folder(temp, target, ours)


def _extra(folder: Path, ours: Collection[str]) -> list[str]:
    return sorted({entry.name for entry in folder.iterdir()} - set(ours))


def _replace_folder(temp: Path, target: Path, ours: Collection[str]) -> None:
    """Replace the folder ``target`` by the new export ``temp`` (see :func:`staged`)."""
    backup = None
    try:
        if extra := _extra(target, ours):
            raise InvalidInputError(
                f"{target} holds files that sum-hq does not write ({', '.join(extra)}); it is kept, "
                "the new export is not written"
            )
        backup = Path(tempfile.mkdtemp(prefix=_backup_prefix(target), dir=target.parent))
        target.rename(backup / target.name)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        if backup is not None:
            backup.rmdir()
        raise
    old = backup / target.name
    try:
        if extra := _extra(old, ours):  # a file added since the check above: the old target goes back
            raise InvalidInputError(
                f"{target} received other files during the export ({', '.join(extra)}); it is kept, "
                "the new export is not written"
            )
        temp.rename(target)
    except BaseException:
        old.rename(target)  # if this fails, both copies stay: the old one in the backup (see recover)
        backup.rmdir()
        shutil.rmtree(temp, ignore_errors=True)  # the old target is back as it was
        raise
    try:
        shutil.rmtree(backup)
    except OSError as error:
        warnings.warn(f"{target} is written; its previous version {old} could not be deleted ({error})", stacklevel=4)


def _backup_prefix(target: Path) -> str:
    return f".{target.name}.replaced-"


def recover(target: str | os.PathLike) -> bool:
    """Put back a folder target that a hard kill left in its backup during :func:`staged`.

    Between the two renames of a folder replacement the target is missing and its previous
    version lies in ``.{name}.replaced-XXXXXXXX/{name}`` beside it. When ``target`` is missing and
    exactly one such backup exists, it is renamed back to ``target``. Call it before reading a
    target that may have been replaced by an interrupted process.

    Parameters
    ----------
    target : str or PathLike
        The export's path.

    Returns
    -------
    bool
        Whether a backup was put back.
    """
    target = Path(target).absolute()
    if os.path.lexists(target) or not target.parent.is_dir():
        return False
    prefix = _backup_prefix(target)
    backups = [entry / target.name for entry in target.parent.iterdir()
               if entry.name.startswith(prefix) and (entry / target.name).is_dir()]
    if len(backups) != 1:
        return False
    backups[0].rename(target)
    shutil.rmtree(backups[0].parent, ignore_errors=True)
    return True
