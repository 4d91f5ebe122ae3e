"""Many sources in one batch job: :func:`segment_many` (``sum-hq batch FOLDER|GLOB|LIST.txt OUT_DIR``).

Each source gets its own :func:`~sum_core.batch.segment_zarr` target in the output folder, and the
job keeps a summary table, ``summary.csv``, rewritten atomically after every file.

**One file after another, not one merged dask graph.** Each file's tiles already run on a pool
of all the cores (and a GPU runs one encoder call at a time anyway), so merging the files' graphs
would not make the work faster; it would cost what the per-file jobs avoid: every file's target
locked, volume opened, intensity window computed and task graph built before the first tile runs
(memory and open files growing with the number of files), and one file's error would stop the
merged computation (dask returns at the first exception), where a failed file must only be
recorded while the others go on. Run one after another, each file is one resumable
``segment_zarr`` job with its own lock, signature and integrity checks, so rerunning the command
skips the finished files (returned from their complete targets, nothing recomputed) and resumes an
interrupted one at its unfinished tiles. What merging would gain, overlapping the tail of one file
(its last tiles, its plan stage) with the start of the next, is small next to a file's own work.
The model is resolved once per process (:func:`sum_core.loading.resolve_model` keeps names and
paths loaded), so it is loaded once for all files.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import Cancelled, InvalidInputError
from ..imageio import READABLE_SUFFIXES, check_input_path, is_zarr_path
from .writer import Target

__all__ = ["FileResult", "IMAGE_SUFFIXES", "SUMMARY", "is_many", "list_sources", "output_names", "segment_many"]

#: The summary table written in the output folder.
SUMMARY = "summary.csv"
#: File name endings of the images a folder source is searched for (zarr stores: any folder with zarr metadata).
IMAGE_SUFFIXES = READABLE_SUFFIXES
#: File name endings of a list file: one source path per line.
LIST_SUFFIXES = (".txt", ".lst")
_GLOB_CHARS = frozenset("*?[")
# Endings taken off a file name to name its output ("a.ome.tif" -> "a"), longest first.
_STRIPPED = (".ome.tiff", ".ome.tif", ".ome.zarr", *IMAGE_SUFFIXES)


@dataclass
class FileResult:
    """One source of a :func:`segment_many` job: one row of its summary table.

    Attributes
    ----------
    file : str
        The source (absolute path).
    output : str
        Its target, a folder name inside the output folder.
    status : {"pending", "done", "failed", "interrupted"}
    objects : int or None
        Objects segmented (done files of automatic jobs).
    slices : int or None
        Planes of the source (done files).
    seconds : float
        Time spent on the file, summed over the runs of the job.
    error : str
        Why the file failed or stopped ("" otherwise).
    """

    file: str
    output: str
    status: str = "pending"
    objects: int | None = None
    slices: int | None = None
    seconds: float = 0.0
    error: str = ""


COLUMNS = tuple(field.name for field in fields(FileResult))


def is_many(source: Any) -> bool:
    """Whether ``source`` names several sources (a folder that is not a zarr store, a glob pattern
    matching no file of its own name, a list file, a list or tuple of paths), rather than one image."""
    if isinstance(source, (list, tuple)):
        return True
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = Path(source)
    if path.is_dir():
        return not is_zarr_path(path)
    if path.exists():
        return path.suffix.lower() in LIST_SUFFIXES
    return bool(_GLOB_CHARS & set(str(source)))


def list_sources(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The sources of a many-file job, absolute, without duplicates.

    Parameters
    ----------
    source : str, path or sequence of paths
        - a folder (not a zarr store): its images (:data:`IMAGE_SUFFIXES`, zarr stores; hidden
          entries skipped), sorted by name, not recursive;
        - a glob pattern (``"images/*.tif"``, ``"**"`` recursive), sorted;
        - a list file (:data:`LIST_SUFFIXES`): one path per line, relative to the list file's
          folder; blank lines and lines starting with ``#`` skipped;
        - a sequence of paths, in its order.

    Raises
    ------
    InvalidInputError
        Nothing found, a listed path missing, or a source that is one image (use
        :func:`~sum_core.batch.segment_zarr`).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir() and not is_zarr_path(path):
            found = [p for p in sorted(path.iterdir()) if _is_image(p)]
            what = f"folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)} files or zarr stores)"
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            found = _read_list(path)
            what = f"list file {path} names no image"
        elif not path.exists() and _GLOB_CHARS & set(str(source)):
            found = [Path(p) for p in sorted(glob.glob(str(source), recursive=True)) if _is_image(Path(p))]
            what = f"pattern {str(source)!r} matches no image"
        else:
            raise InvalidInputError(
                f"sources: {source} is one image, not a folder, glob pattern or list file "
                f"({', '.join(LIST_SUFFIXES)}); segment it with segment_zarr"
            )
    elif isinstance(source, Sequence):
        found = [check_input_path(p, f"sources[{i}]") for i, p in enumerate(source)]
        what = "sources: the list is empty"
    else:
        raise InvalidInputError(
            f"sources: expected a folder, glob pattern, list file or list of paths, got {type(source).__name__}"
        )
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise InvalidInputError(f"sources: {what}")
    return unique


def _is_image(path: Path) -> bool:
    return not path.name.startswith(".") and (
        is_zarr_path(path) or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    )


def _read_list(path: Path) -> list[Path]:
    """The paths of a list file, checked to exist (naming the line of one that does not)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"sources: cannot read list file {path}: {error}") from None
    found = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            found.append(check_input_path(path.parent / entry, f"sources: {path} line {number}"))
    return found


def output_names(sources: Sequence[Path], taken: dict[Path, str] | None = None, suffix: str = ".zarr") -> list[str]:
    """One output name per source: its file name without its image ending, plus ``suffix``;
    names that would collide get ``-2``, ``-3``... in the order of ``sources``.

    ``taken`` (source -> name, from an earlier run's summary) keeps the names already given, so
    a source added later never takes the output of another.

    Examples
    --------
    >>> output_names([Path("/a/x.tif"), Path("/a/x.png"), Path("/b/x.ome.tif"), Path("/a/y.zarr")])
    ['x.zarr', 'x-2.zarr', 'x-3.zarr', 'y.zarr']
    """
    taken = taken or {}
    used = {name.lower() for name in taken.values()}
    names = []
    for source in sources:
        name = taken.get(source)
        if name is None:
            stem = next((source.name[: -len(s)] for s in _STRIPPED if source.name.lower().endswith(s)), source.stem)
            name, n = f"{stem}{suffix}", 1
            while name.lower() in used:  # case-insensitive: one folder on macOS and Windows
                n += 1
                name = f"{stem}-{n}{suffix}"
            used.add(name.lower())
        names.append(name)
    return names


def segment_many(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
    on_progress: Callable[[int, int, float, int], None] | None = None,
    on_file: Callable[[FileResult], None] | None = None,
    **segment_zarr_kwargs: Any,
) -> list[FileResult]:
    """Segment many images, one :func:`~sum_core.batch.segment_zarr` target each, into a folder.

    Files are segmented one after another (see the module docstring for why), in the order of
    :func:`list_sources`. Each gets the target ``out_dir/<name>.zarr`` (:func:`output_names`).
    ``out_dir/summary.csv`` (columns ``file, output, status, objects, slices, seconds, error``)
    is rewritten atomically (a temporary file renamed) when each file starts and ends.

    **Errors**: an error in one file (unreadable, refused target, a crash in a task) is recorded
    in its row (status ``failed``) and the job goes on with the next file. ``KeyboardInterrupt``
    or ``cancel`` stop the job: the running file is recorded as ``interrupted`` and the exception
    is raised once its target is released.

    **Resuming**: rerun the same call. Finished files are not recomputed (their complete targets
    are returned and verified), an interrupted file resumes its own target at its unfinished
    tiles, failed files are tried again; output names given by an earlier run are kept.

    Parameters
    ----------
    sources : str, path or sequence of paths
        A folder, glob pattern, list file or list of paths (see :func:`list_sources`).
    out_dir : str or path
        Output folder (created). Not one of the sources' folders. Sources under it (a recursive
        pattern or a folder list reaching the job's own outputs) are left out, with a warning.
    progress : bool
        A progress bar over the files (each file's own bar of tasks below it).
    on_progress : callable, optional
        ``on_progress(files_done, n_files, tasks_done, tasks_total)``: called when a file starts
        and ends, and with the running file's task count (``segment_zarr``'s ``on_progress``).
    on_file : callable, optional
        ``on_file(result)``: called with each file's :class:`FileResult` when it ends.
    **segment_zarr_kwargs
        Passed to every :func:`~sum_core.batch.segment_zarr` call (``mode``, ``model``,
        ``tile_shape``, ``options``, ``cancel``...; not ``prompts``: a prompt table belongs to
        one image).

    Returns
    -------
    list of FileResult
        One per source, in order; check ``status`` for failed files.

    Raises
    ------
    InvalidInputError
        Bad sources (see :func:`list_sources`), an ``out_dir`` that is a file, a zarr store or a
        source folder, a ``summary.csv`` there that is not ours, a prompt table, or
        ``on_progress`` / ``on_file`` not callable; all before any file is segmented.
    KeyboardInterrupt, Cancelled
        The job was stopped (rerun to resume).
    """
    for name, value in (("on_progress", on_progress), ("on_file", on_file)):
        if value is not None and not callable(value):
            raise InvalidInputError(f"{name} must be a callable or None, got {type(value).__name__}")
    for name in ("source", "target"):
        if name in segment_zarr_kwargs:
            raise InvalidInputError(f"{name}: set by segment_many, not a segment_zarr argument to pass through")
    if segment_zarr_kwargs.get("prompts") is not None or segment_zarr_kwargs.get("mode") == "prompts":
        raise InvalidInputError("prompts: a prompt table belongs to one image; segment it with segment_zarr")
    out = _check_out_dir(out_dir, sources)
    files = _outside(list_sources(sources), out)
    earlier = {Path(row.file): row for row in _read_summary(out)}
    names = output_names(files, {path: row.output for path, row in earlier.items()}, _output_suffix(segment_zarr_kwargs))
    # rows of an earlier run kept until their file is reached (a done file stays done if this run stops first)
    results = [earlier.get(path) or FileResult(str(path), name) for path, name in zip(files, names)]
    # rows of files not in this run stay in the summary, so their outputs stay theirs in later runs
    summary = results + [row for path, row in earlier.items() if path not in set(files)]
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(files), desc="sum-hq batch files", unit="file", disable=not progress)
    try:
        for index, result in enumerate(results):
            bar.set_postfix_str(Path(result.file).name)
            _segment_one(result, out, index, len(results), summary, progress, on_progress, segment_zarr_kwargs)
            bar.update(1)
            if on_file is not None:
                on_file(result)
    finally:
        bar.close()
    return results


def _segment_one(result, out, index, n_files, results, progress, on_progress, kwargs) -> None:
    """Run one file's job, recording its outcome in ``result`` and the summary."""
    _write_summary(out, results)
    relay = None
    if on_progress is not None:
        on_progress(index, n_files, 0.0, 0)
        relay = lambda done, total: on_progress(index, n_files, done, total)  # noqa: E731
    start = time.perf_counter()
    try:
        from .job import segment_zarr  # torch loads with the first job, not with the module

        group = segment_zarr(result.file, out / result.output, progress=progress, on_progress=relay, **kwargs)
    except (KeyboardInterrupt, Cancelled) as stop:
        _record(result, "interrupted", start, _described(stop) + "; rerun to resume")
        _write_summary(out, results)
        raise
    except Exception as error:  # noqa: BLE001 - one file's failure is recorded, the job goes on
        _record(result, "failed", start, _described(error))
    else:
        _record(result, "done", start, "")
        labels = Target(group).labels  # "labels", or the level 0 of an OME-Zarr label image
        result.slices = int(np.prod(labels.shape[: labels.ndim - 2], dtype=np.int64))
        result.objects = int(group["counts"][...].sum()) if "counts" in group else None
    _write_summary(out, results)
    if on_progress is not None:
        on_progress(index + 1, n_files, 0.0, 0)


def _described(error: BaseException) -> str:
    """``"Type: message"`` (the type alone without a message) on one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _record(result: FileResult, status: str, start: float, error: str) -> None:
    result.status, result.error = status, error
    result.seconds = round(result.seconds + time.perf_counter() - start, 3)
    result.objects = result.slices = None


def _outside(files: list[Path], out: Path) -> list[Path]:
    """The sources that do not lie under the output folder ``out`` (a recursive pattern or an input folder
    holding ``out`` would list the job's own outputs as sources); a warning names the ones left out.

    Raises
    ------
    InvalidInputError
        Every source lies under ``out``.
    """
    folder = out.resolve()
    kept = [p for p in files if not p.is_relative_to(folder)]
    left = len(files) - len(kept)
    if left:
        warnings.warn(
            f"sources: {left} path(s) under the output folder {out} left out (the job's own outputs are never "
            f"segmented as sources), e.g. {next(p for p in files if p.is_relative_to(folder))}",
            stacklevel=3,
        )
    if not kept:
        raise InvalidInputError(f"sources: every source lies under the output folder {out}; nothing to segment")
    return kept


def _output_suffix(kwargs: dict[str, Any]) -> str:
    """``.ome.zarr`` for OME-Zarr outputs (``format="ome-zarr"``), else ``.zarr``."""
    return ".ome.zarr" if kwargs.get("format") == "ome-zarr" else ".zarr"


def _check_out_dir(out_dir: Any, sources: Any) -> Path:
    """``out_dir`` as a path, refused when it cannot be the output folder.

    Raises
    ------
    InvalidInputError
        Not a path, a file, a zarr store, or the folder the sources are listed from (its outputs
        would be listed as sources on the next run).
    """
    if not isinstance(out_dir, (str, os.PathLike)):
        raise InvalidInputError(f"out_dir: expected a folder path, got {type(out_dir).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"out_dir: {out} is a file; many sources need an output folder")
    if out.is_dir() and is_zarr_path(out):
        raise InvalidInputError(f"out_dir: {out} is a zarr store; many sources need an output folder, one target each")
    if isinstance(sources, (str, os.PathLike)) and Path(sources).is_dir() and out.resolve() == Path(sources).resolve():
        raise InvalidInputError(f"out_dir: {out} is the source folder; write the results to another folder")
    return out


def _read_summary(out: Path) -> list[FileResult]:
    """The rows of an earlier run's summary (none when there is no summary).

    Raises
    ------
    InvalidInputError
        A ``summary.csv`` that is not ours (other columns) or cannot be read.
    """
    path = out / SUMMARY
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise InvalidInputError(
                    f"out_dir: {path} is not a summary of sum-hq batch (columns {reader.fieldnames}, expected "
                    f"{list(COLUMNS)}); choose another output folder or move that file"
                )
            return [
                FileResult(row["file"], row["output"], row["status"], _count(row["objects"]), _count(row["slices"]),
                           float(row["seconds"] or 0.0), row["error"])
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, csv.Error) as error:
        if isinstance(error, InvalidInputError):
            raise
        raise InvalidInputError(f"out_dir: cannot read the summary {path}: {error}") from None


def _count(text: str) -> int | None:
    return int(text) if text else None


def _write_summary(out: Path, results: Sequence[FileResult]) -> None:
    """Write ``summary.csv`` atomically: a temporary file in the folder, renamed over the old one."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow({k: "" if v is None else v for k, v in asdict(result).items()})
    partial = out / f".{SUMMARY}.{os.getpid()}.partial"
    partial.write_text(text.getvalue(), encoding="utf-8")
    os.replace(partial, out / SUMMARY)
