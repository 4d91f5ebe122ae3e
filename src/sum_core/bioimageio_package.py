"""Load SAM-family models from BioImage.IO model packages (a zip, or its unpacked folder).

A package describes itself in ``rdf.yaml`` (or ``bioimageio.yaml``); its ``weights`` entry
``pytorch_state_dict`` names the weights file inside the package and its ``sha256``. Our packages
(:func:`sum_core.export.export_bioimageio`) and micro-sam's exported SAM packages both hold a SAM
state dict there (micro-sam's in any layout :func:`sum_core.checkpoint.load_state_dict_file`
reads). micro-sam also attaches its AIS decoder as a separate file (``attachments``:
``<model>_decoder.pt``; the only place it was before micro-sam put it into the weights too): that
file is loaded onto the model when the weights hold no AIS decoder. Every file's sha256 is checked
before it is unpickled; a package whose weights or decoder are not inside it (a URL) or carry no
sha256 is refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import torch
import yaml

from .checkpoint import MAX_PARAMETERS, load_checkpoint
from .errors import CheckpointError
from .modeling import SamModel, ais_decoder_of

__all__ = ["RDF_NAMES", "is_package", "load_package"]

#: Names of a package's description file, at its top level.
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: Largest package member read: a weights file of MAX_PARAMETERS float64 values (a zip member that
#: declares more is refused before anything is unpacked, so a zip bomb cannot fill the disk).
MAX_MEMBER_BYTES = 8 * MAX_PARAMETERS
#: Largest description file read.
MAX_RDF_BYTES = 16 << 20
#: How micro-sam names the AIS decoder it attaches to a package (``vit_b_decoder.pt``).
DECODER_SUFFIX = "_decoder.pt"


def _rdf_member(path: Path) -> str | None:
    """The description file's name in a package folder or zip, or None (not a package)."""
    if path.is_dir():
        return next((name for name in RDF_NAMES if (path / name).is_file()), None)
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return None
    return next((name for name in RDF_NAMES if name in names), None)


def _check_member_size(archive: zipfile.ZipFile, name: str, limit: int, path: Path) -> None:
    """Refuse a zip member that declares more than ``limit`` bytes (zipfile never yields more)."""
    size = archive.getinfo(name).file_size
    if size > limit:
        raise CheckpointError(f"{path}: {name} declares {size:,} bytes, more than the {limit:,} a package member may have")


def is_package(path: str | os.PathLike) -> bool:
    """True for a BioImage.IO package: a folder or zip with ``rdf.yaml`` / ``bioimageio.yaml`` at its top."""
    return _rdf_member(Path(path)) is not None


def _checked_source(entry: dict, what: str, source: str) -> tuple[str, str]:
    """``(file, sha256)`` of a package entry (weights or attachment): a file inside the package with a sha256."""
    file, digest = entry.get("source"), entry.get("sha256")
    if not isinstance(file, str) or "://" in file:
        raise CheckpointError(f"{source}: the {what} {file!r} are not a file inside the package")
    parts = PurePosixPath(file).parts
    if not parts or PurePosixPath(file).is_absolute() or ".." in parts:
        raise CheckpointError(f"{source}: the {what} path {file!r} leads outside the package")
    if not isinstance(digest, str) or len(digest) != 64:
        raise CheckpointError(f"{source}: the {what} {file!r} declare no sha256; refusing unverified weights")
    return file, digest.lower()


def _weights_entry(description: object, source: str) -> tuple[str, str]:
    """``(source, sha256)`` of the package's ``pytorch_state_dict`` weights."""
    weights = description.get("weights") if isinstance(description, dict) else None
    entry = weights.get("pytorch_state_dict") if isinstance(weights, dict) else None
    if not isinstance(entry, dict):
        formats = ", ".join(weights) if isinstance(weights, dict) else "none"
        raise CheckpointError(
            f"{source}: the BioImage.IO package has no pytorch_state_dict weights (it has: {formats}); "
            "only SAM-family packages with state-dict weights can be loaded"
        )
    return _checked_source(entry, "pytorch_state_dict weights", source)


def _decoder_attachment(description: dict, source: str) -> tuple[str, str] | None:
    """``(source, sha256)`` of the AIS decoder attached as micro-sam attaches it (``<model>_decoder.pt``), or None."""
    attachments = description.get("attachments")
    entries = attachments if isinstance(attachments, list) else []
    named = [
        e for e in entries
        if isinstance(e, dict) and isinstance(e.get("source"), str) and e["source"].endswith(DECODER_SUFFIX)
    ]  # fmt: skip
    if len(named) > 1:
        files = ", ".join(e["source"] for e in named)
        raise CheckpointError(f"{source}: the package attaches several AIS decoder files ({files}); expected one")
    return _checked_source(named[0], "AIS decoder attachment", source) if named else None


def _copy_checked(reader, target: Path, digest: str, what: str) -> None:
    """Copy ``reader`` to ``target`` while hashing it; a sha256 that differs from ``digest`` is an error."""
    sha = hashlib.sha256()
    with open(target, "wb") as out:
        for block in iter(lambda: reader.read(1 << 22), b""):
            sha.update(block)
            out.write(block)
    if sha.hexdigest() != digest:
        raise CheckpointError(
            f"{what}: sha256 {sha.hexdigest()} differs from the {digest} the package declares; the weights "
            "are damaged or were altered: get the package again"
        )


def load_package(path: str | os.PathLike, device: str | torch.device | None = None) -> SamModel:
    """Load the SAM-family model of a BioImage.IO package.

    Parameters
    ----------
    path : str or PathLike
        The package: a ``.zip`` or an unpacked folder.
    device : str, torch.device or None
        As :func:`sum_core.checkpoint.load_checkpoint`.

    Returns
    -------
    SamModel
        With its AIS decoder when the weights hold one or the package attaches one.

    Raises
    ------
    CheckpointError
        Not a package, unreadable description, no state-dict weights inside the package, weights
        or a decoder attachment with no or a wrong sha256, or weights or a decoder that
        :func:`~sum_core.checkpoint.load_checkpoint` refuses.
    """
    path = Path(path)
    member = _rdf_member(path)
    if member is None:
        raise CheckpointError(f"{path} is not a BioImage.IO package (no {' or '.join(RDF_NAMES)} at its top)")
    with tempfile.TemporaryDirectory(prefix="sum-hq-package-") as scratch:
        try:
            description = _read_description(path, member)
            file, digest = _weights_entry(description, str(path))
            weights = _extract(path, file, digest, Path(scratch) / "weights")
            attached = _decoder_attachment(description, str(path))
            decoder = None if attached is None else _extract(path, *attached, Path(scratch) / "decoder")
        except (yaml.YAMLError, UnicodeDecodeError, zipfile.BadZipFile) as error:
            raise CheckpointError(f"{path}: cannot read the package ({error})") from None
        except OSError as error:
            raise CheckpointError(f"{path}: cannot read the package ({error.strerror or error})") from None
        try:
            model = load_checkpoint(weights, device=device)
        except CheckpointError as error:
            raise CheckpointError(f"{path} ({file}): {error}") from None
        if decoder is None or ais_decoder_of(model) is not None:  # micro-sam >= 1.8.10 has it in both
            return model
        try:
            return load_checkpoint(decoder, base=model, device=device)
        except CheckpointError as error:
            raise CheckpointError(f"{path} ({attached[0]}): {error}") from None


def _read_description(path: Path, member: str) -> dict:
    """The package's parsed description (a size-checked zip member, or the folder's file)."""
    if path.is_dir():
        description = yaml.safe_load((path / member).read_text(encoding="utf-8"))
    else:
        with zipfile.ZipFile(path) as archive:
            _check_member_size(archive, member, MAX_RDF_BYTES, path)
            description = yaml.safe_load(archive.read(member).decode("utf-8"))
    if not isinstance(description, dict):
        raise CheckpointError(f"{path}: {member} is not a BioImage.IO description (a mapping)")
    return description


def _extract(path: Path, file: str, digest: str, scratch: Path) -> Path:
    """Copy the package's ``file`` into the new folder ``scratch`` (sha256 checked, a zip member's size first)."""
    scratch.mkdir()
    target = scratch / PurePosixPath(file).name
    if path.is_dir():
        source = path / file
        if not source.is_file():
            raise CheckpointError(f"{path}: the file {file} is missing from the package")
        with open(source, "rb") as reader:
            _copy_checked(reader, target, digest, f"{path}/{file}")
        return target
    with zipfile.ZipFile(path) as archive:
        if file not in archive.namelist():
            raise CheckpointError(f"{path}: the file {file} is missing from the package")
        _check_member_size(archive, file, MAX_MEMBER_BYTES, path)
        with archive.open(file) as reader:
            _copy_checked(reader, target, digest, f"{path}:{file}")
    return target
