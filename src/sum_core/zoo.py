"""Registry of downloadable checkpoints and their local cache (through pooch).

The built-in registry (the data file ``zoo_models.yaml`` next to this module)
holds the official SAM and HQ-SAM checkpoints and micro-sam's microscopy models
(light microscopy, EM organelles, histopathology, medical imaging) with their
AIS decoder files, with the URLs and xxh128 hashes of micro-sam's registry.
Users add their own entries (for example SUM checkpoints made with
``training/``) with :func:`register_model`, or in a YAML/JSON models file named
by the ``SUM_HQ_MODELS`` environment variable, read every time the registry is
used.

An entry's ``decoder`` field names the registry entry of its AIS decoder file;
:func:`fetch_decoder` fetches it (hash-checked like any download) when
automatic instance segmentation is wanted, and ``sum-hq models download``
fetches it with the model.

Files are cached in the folder named by ``SUM_HQ_CACHE`` or, when that is not
set, in the user cache folder of ``napari-sum-hq``; the file of entry ``NAME``
is ``models/NAME/<file name>`` there, so two entries never share a file. A file
left directly in the cache folder under the entry's file name (the layout of
earlier versions, or a copy put there by hand) is used where it is when its
hash matches, and never touched otherwise.

Every fetch verifies the file's hash, including a file already in the cache;
a file with the wrong hash is never returned. The cache records the files it
downloaded in ``downloads.json`` and only ever removes those: a corrupted
download is deleted and downloaded again (if that fails the error is a
:class:`HashMismatchError` saying it was removed), while a file with the wrong
hash that the cache did not write is left untouched and the error names it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import warnings
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import platformdirs
import yaml

from .errors import DownloadError, HashMismatchError, InvalidInputError, check_cancel

CACHE_ENV = "SUM_HQ_CACHE"
MODELS_FILE_ENV = "SUM_HQ_MODELS"
DEFAULT_MODEL = "sam_hq_vit_b"
MODELS_FOLDER = "models"
RECORD_FILENAME = "downloads.json"
_RECORD_FORMAT = "napari-sum-hq download record"
#: Bytes read between two progress reports (and cancel checks) of a download with a hook.
HOOK_CHUNK_BYTES = 256 * 1024

BUILTIN_FILE = Path(__file__).with_name("zoo_models.yaml")

# xxh128 (micro-sam's hashes) needs the ``xxhash`` package, a dependency of this one.
_HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128, "xxh128": 32}
_HASH_PATTERN = re.compile(r"^(md5|sha1|sha256|sha512|xxh128):([0-9a-f]+)$")


@dataclass(frozen=True)
class ModelEntry:
    """A downloadable checkpoint.

    Parameters
    ----------
    name : str
        Registry name (``"sam_hq_vit_b"``).
    url : str
        Download URL.
    known_hash : str
        ``"<algorithm>:<hex digest>"`` with algorithm ``md5``, ``sha1``,
        ``sha256``, ``sha512`` or ``xxh128``.
    filename : str
        File name of the download; it is cached as ``models/<name>/<filename>``.
    model_type : str or None
        Architecture label (``"vit_b"``, ...), informative only: the loader
        infers the architecture from the weights.
    description : str
        One line for listings.
    purpose : str
        The images the weights are for: ``"generic"``, ``"light microscopy"``,
        ``"EM organelles"``, ``"histopathology"``, ``"medical imaging"`` for the
        built-in entries; free text (or empty) for user entries.
    licence : str
        Licence of the weights as their publisher states it, or ``"see <URL>"``.
    decoder : str or None
        Registry name of the entry holding this model's AIS (automatic instance
        segmentation) decoder file; ``None`` when it has none. Fetch it with
        :func:`fetch_decoder`.
    """

    name: str
    url: str
    known_hash: str
    filename: str
    model_type: str | None = None
    description: str = ""
    purpose: str = ""
    licence: str = ""
    decoder: str | None = None


_user_models: dict[str, ModelEntry] = {}


def _make_entry(
    name: Any,
    url: Any,
    known_hash: Any,
    filename: Any = None,
    model_type: Any = None,
    description: Any = "",
    purpose: Any = "",
    licence: Any = "",
    decoder: Any = None,
    *,
    source: str,
    reserved: Collection[str],
) -> ModelEntry:
    """Validate the fields of an entry; ``source`` says where they came from.

    ``reserved`` are the names the entry may not take (the built-in ones for a user entry).
    """
    for field_name, value in (("name", name), ("url", url), ("known_hash", known_hash)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidInputError(f"{source}: {field_name}={value!r} must be a non-empty string")
    if name in reserved:
        raise InvalidInputError(
            f"{source}: name={name!r} is a built-in model and cannot be replaced; choose another name"
        )
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or name in (".", ".."):
        raise InvalidInputError(
            f"{source}: name={name!r} may only contain letters, digits, '_', '-' and '.' "
            "(and is not '.' or '..': it names the model's cache folder)"
        )
    scheme = urlparse(url).scheme
    if scheme not in ("http", "https", "ftp", "sftp", "doi"):
        raise InvalidInputError(
            f"{source}: url={url!r} must be an http(s), ftp, sftp or doi URL "
            "(for a local file pass its path to load_model instead)"
        )
    known_hash = known_hash.strip().lower()
    match = _HASH_PATTERN.match(known_hash)
    if match is None or len(match.group(2)) != _HASH_LENGTHS[match.group(1)]:
        raise InvalidInputError(
            f"{source}: known_hash={known_hash!r} must be '<algorithm>:<hex digest>' with algorithm "
            f"one of {sorted(_HASH_LENGTHS)} and a digest of the right length, e.g. 'sha256:' "
            "followed by 64 hex digits (compute it with `sha256sum FILE`) or 'xxh128:' followed "
            "by 32 (`xxh128sum FILE`)"
        )
    if filename is None:
        filename = Path(urlparse(url).path).name
    if (
        not isinstance(filename, str)
        or filename in ("", ".", "..")
        or any(char in filename for char in "/\\\0")
    ):
        raise InvalidInputError(
            f"{source}: filename={filename!r} must be a plain file name (no folders, '/', '\\', "
            "NUL, '.' or '..'); give one explicitly when the URL does not end with a file name"
        )
    if model_type is not None and not isinstance(model_type, str):
        raise InvalidInputError(f"{source}: model_type={model_type!r} must be a string or None")
    for field_name, value in (
        ("description", description), ("purpose", purpose), ("licence", licence)
    ):
        if not isinstance(value, str):
            raise InvalidInputError(f"{source}: {field_name}={value!r} must be a string")
    if decoder is not None and (not isinstance(decoder, str) or decoder in ("", name)):
        raise InvalidInputError(
            f"{source}: decoder={decoder!r} must be the registry name of another entry "
            "(the one holding this model's AIS decoder file) or None"
        )
    return ModelEntry(
        name, url, known_hash, filename, model_type, description, purpose, licence, decoder
    )


def _check_decoders(entries: Iterable[ModelEntry], known: Collection[str], source: str) -> None:
    """Refuse an entry whose ``decoder`` names no entry of ``known``."""
    for entry in entries:
        if entry.decoder is not None and entry.decoder not in known:
            raise InvalidInputError(
                f"{source}: model {entry.name!r} has decoder={entry.decoder!r}, which is not a "
                "registry entry; register the decoder file first (or in the same models file) "
                "under that name, or fix the name"
            )


def _parse_entries(data: Any, source: str, reserved: Collection[str]) -> list[ModelEntry]:
    """Validate a list of entry mappings (the models file's or the built-in file's)."""
    if not isinstance(data, list):
        raise InvalidInputError(
            f"{source}: the models file must contain a list of entries "
            "(each with name, url, known_hash and optional filename, model_type, description, "
            f"purpose, licence, decoder), not {type(data).__name__}"
        )
    allowed = {f.name for f in fields(ModelEntry)}
    entries = []
    for index, item in enumerate(data):
        item_source = f"{source}, entry {index}"
        if not isinstance(item, dict):
            raise InvalidInputError(f"{item_source}: expected a mapping, got {type(item).__name__}")
        unknown = sorted(set(item) - allowed, key=str)
        missing = sorted({"name", "url", "known_hash"} - set(item))
        if unknown or missing:
            raise InvalidInputError(
                f"{item_source}: missing fields {missing}, unknown fields {unknown}; "
                f"allowed fields are {sorted(allowed)}"
            )
        entries.append(_make_entry(**item, source=item_source, reserved=reserved))
    names = [entry.name for entry in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInputError(f"{source}: duplicate model names {duplicates}")
    return entries


def _read_builtin() -> dict[str, ModelEntry]:
    """The entries of :data:`BUILTIN_FILE` (its ``models`` list), in file order."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(BUILTIN_FILE.read_text(encoding="utf-8"), Loader=loader)
    entries = _parse_entries(data["models"], str(BUILTIN_FILE), reserved=())
    _check_decoders(entries, {entry.name for entry in entries}, str(BUILTIN_FILE))
    return {entry.name: entry for entry in entries}


BUILTIN_MODELS: dict[str, ModelEntry] = _read_builtin()


def register_model(
    name: str,
    url: str,
    known_hash: str,
    filename: str | None = None,
    model_type: str | None = None,
    description: str = "",
    purpose: str = "",
    licence: str = "",
    decoder: str | None = None,
) -> ModelEntry:
    """Add (or replace) a user entry in the registry for this session.

    Parameters
    ----------
    name : str
        Registry name; must not be a built-in name.
    url : str
        Download URL.
    known_hash : str
        Required ``"<algorithm>:<hex digest>"`` (md5, sha1, sha256, sha512, xxh128).
    filename : str, optional
        Cache file name; defaults to the last part of the URL path.
    model_type : str, optional
        Architecture label for listings.
    description : str
        One line for listings.
    purpose : str
        The images the model is for, for listings.
    licence : str
        Licence of the weights, for listings.
    decoder : str, optional
        Registry name of the model's AIS decoder file (register that entry first).

    Returns
    -------
    ModelEntry

    Raises
    ------
    InvalidInputError
        If a field is missing or malformed, ``name`` is a built-in model, or
        ``decoder`` names no registered entry.
    """
    entry = _make_entry(
        name, url, known_hash, filename, model_type, description, purpose, licence, decoder,
        source="register_model", reserved=BUILTIN_MODELS,
    )
    if entry.decoder is not None:
        _check_decoders([entry], registry(), "register_model")
    _user_models[entry.name] = entry
    return entry


def _read_models_file(path: Path) -> list[ModelEntry]:
    """Parse the ``SUM_HQ_MODELS`` file (a YAML or JSON list of entries)."""
    source = f"{MODELS_FILE_ENV}={str(path)!r}"
    if not path.is_file():
        raise InvalidInputError(f"{source}: the models file does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{source}: the models file is not UTF-8 text ({exc})") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidInputError(f"{source}: the models file is not valid YAML/JSON: {exc}") from exc
    entries = _parse_entries(data, source, reserved=BUILTIN_MODELS)
    _check_decoders(entries, {*BUILTIN_MODELS, *(entry.name for entry in entries)}, source)
    return entries


def registry() -> dict[str, ModelEntry]:
    """Return every known entry: built-ins, then the models file, then :func:`register_model`.

    Raises
    ------
    InvalidInputError
        If the ``SUM_HQ_MODELS`` file is missing or malformed.
    """
    models = dict(BUILTIN_MODELS)
    models_file = os.environ.get(MODELS_FILE_ENV)
    if models_file:
        models.update((entry.name, entry) for entry in _read_models_file(Path(models_file)))
    models.update(_user_models)
    return models


def list_models(decoders: bool = False) -> list[str]:
    """Return the names of the registered models, built-ins first.

    Parameters
    ----------
    decoders : bool
        Also list the AIS decoder files (the entries another entry names as its
        ``decoder``); they are fetched with :func:`fetch_decoder`, not loaded as models.
    """
    models = registry()
    if decoders:
        return list(models)
    decoder_names = {entry.decoder for entry in models.values()}
    return [name for name in models if name not in decoder_names]


def has_decoder(name: object) -> bool | None:
    """Whether the registry model ``name`` names an AIS decoder file; None when ``name`` is not a
    registry name. Reads the registry only: nothing is downloaded or loaded (cheap on a GUI thread).

    Raises
    ------
    InvalidInputError
        A malformed ``SUM_HQ_MODELS`` file.
    """
    entry = registry().get(name) if isinstance(name, str) else None
    return None if entry is None else entry.decoder is not None


def get_entry(name: str) -> ModelEntry:
    """Return the registry entry called ``name``.

    Raises
    ------
    DownloadError
        If ``name`` is not registered (the message lists the known names).
    """
    models = registry()
    if name not in models:
        raise DownloadError(
            f"model {name!r} is not in the registry; known models: {', '.join(models)} "
            "(add your own with register_model or the SUM_HQ_MODELS file)"
        )
    return models[name]


def cache_dir() -> Path:
    """Return the cache folder: ``$SUM_HQ_CACHE`` or the OS user cache of napari-sum-hq."""
    folder = os.environ.get(CACHE_ENV)
    return Path(folder).expanduser() if folder else Path(platformdirs.user_cache_dir("napari-sum-hq"))


def _entry_path(entry: ModelEntry) -> Path:
    """The file an entry downloads to: ``models/<name>/<filename>`` in the cache folder."""
    return cache_dir() / MODELS_FOLDER / entry.name / entry.filename


def _legacy_path(entry: ModelEntry) -> Path:
    """Where earlier versions cached the entry (the cache folder itself, shared by all entries)."""
    return cache_dir() / entry.filename


def cached_path(name: str) -> Path:
    """Return where the file of model ``name`` is (or will be) cached; it may not exist.

    That is ``models/<name>/<file name>`` in :func:`cache_dir`, unless only a file
    of the earlier layout (``<file name>`` directly in the cache folder) exists.
    """
    entry = get_entry(name)
    target, legacy = _entry_path(entry), _legacy_path(entry)
    return legacy if legacy.is_file() and not target.exists() else target


def is_cached(name: str) -> bool:
    """Return whether the file of model ``name`` is in the cache (its hash is not checked)."""
    return cached_path(name).is_file()


def _record_path() -> Path:
    return cache_dir() / RECORD_FILENAME


def _record_key(path: Path) -> str:
    return path.relative_to(cache_dir()).as_posix()


def _read_record() -> dict[str, dict[str, str]]:
    """The files the cache downloaded: ``{"models/NAME/FILE": {"model", "url", "known_hash"}}``.

    Raises
    ------
    InvalidInputError
        If a file that is not a download record of this package is where the record goes.
    """
    path = _record_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_bytes())
        valid = data.get("format") == _RECORD_FORMAT and all(
            isinstance(item, dict) and isinstance(item.get("model"), str)
            for item in data["files"].values()
        )
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        valid = False
    if not valid:
        raise InvalidInputError(
            f"{path} is not a napari-sum-hq download record, so the model cache cannot record "
            "its downloads there and leaves it untouched; move it out of the cache folder "
            f"(or set {CACHE_ENV} to a fresh folder) and fetch again"
        )
    return data["files"]


def _write_record(files: dict[str, dict[str, str]]) -> None:
    """Replace the download record atomically (temporary file + ``os.replace``)."""
    path = _record_path()
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        tmp.write_text(json.dumps({"format": _RECORD_FORMAT, "files": files}, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _update_record(key: str, item: dict[str, str] | None) -> None:
    """Add (``item``) or remove (``None``) one file of the record, re-read just before writing."""
    files = _read_record()
    if item is None:
        files.pop(key, None)
    else:
        files[key] = item
    _write_record(files)


def _manual_instructions(entry: ModelEntry, target: Path) -> str:
    return (
        f"To install it by hand, download {entry.url} and save it as {target} "
        f"(folder {target.parent}, file name {entry.filename}); "
        f"to pre-fetch it while online run `sum-hq models download {entry.name}`."
    )


class _ProgressHook:
    """A pooch progress bar that reports bytes to a callback and stops at a cancel request."""

    def __init__(self, on_progress: Callable[[int, int], None] | None, cancel: threading.Event | None) -> None:
        self.on_progress = on_progress
        self.cancel = cancel
        self.total = 0
        self.done = 0

    def update(self, n: int) -> None:
        check_cancel(self.cancel)
        self.done += n
        if self.total:
            self.done = min(self.done, self.total)
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)

    def reset(self) -> None:
        self.done = 0

    def close(self) -> None:
        pass


def download_size(name: str, timeout: float = 10.0) -> int | None:
    """The size in bytes of the file of registry entry ``name`` as its server announces it.

    One HTTP ``HEAD`` request (redirects followed); nothing is downloaded.

    Returns
    -------
    int or None
        The ``Content-Length``, or ``None`` when the server does not say or cannot be reached.

    Raises
    ------
    DownloadError
        If ``name`` is not registered.
    """
    import requests

    entry = get_entry(name)
    try:
        response = requests.head(entry.url, allow_redirects=True, timeout=timeout)
        response.raise_for_status()
        return int(response.headers["content-length"])
    except (requests.exceptions.RequestException, KeyError, ValueError):
        return None


def fetch(
    name: str,
    progress: bool = True,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Return the local path of model ``name``, downloading it if needed.

    The file (cached or freshly downloaded) always has its hash verified. Only
    files this cache downloaded (listed in its record) are ever removed. A
    download goes to a temporary file in the cache folder, moved to its name
    only once complete and hash-checked: a failed or cancelled download leaves
    no file behind.

    Parameters
    ----------
    name : str
        Registry name (see :func:`list_models`).
    progress : bool
        Show a tqdm progress bar while downloading (not with ``on_progress`` or ``cancel``).
    on_progress : callable, optional
        Called as ``on_progress(bytes_done, bytes_total)`` while downloading (every
        :data:`HOOK_CHUNK_BYTES` bytes; ``bytes_total`` is 0 when the server does not say).
    cancel : threading.Event, optional
        When set, the download stops at its next chunk with :class:`~sum_core.errors.Cancelled`
        and its partial file is removed.

    Returns
    -------
    Path
        The verified file in :func:`cache_dir` (see :func:`cached_path`).

    Raises
    ------
    DownloadError
        If ``name`` is not registered, or the download failed (offline,
        server error); the message then says where to put the file by hand.
    HashMismatchError
        If the downloaded file has the wrong hash (it is not kept), a corrupted
        download was removed and could not be downloaded again, or a file the
        cache did not download is where the model goes and has the wrong hash
        (it is left untouched; the message names it).
    InvalidInputError
        If the ``SUM_HQ_MODELS`` file is malformed, or a foreign file is where
        the download record goes.
    Cancelled
        If ``cancel`` was set during the download.
    """
    import pooch  # imported here: pooch + requests cost ~0.4 s, and only downloads need them
    import requests

    entry = get_entry(name)
    target = _entry_path(entry)
    key = _record_key(target)
    algorithm = entry.known_hash.split(":")[0]
    if algorithm not in pooch.hashes.ALGORITHMS_AVAILABLE:
        raise DownloadError(
            f"model {name!r} is checked with a {algorithm} hash, which needs the xxhash package: "
            "run `pip install xxhash` (a dependency of napari-sum-hq) and try again"
        )
    corrupted_note = ""
    if target.exists():
        if target.is_file() and pooch.hashes.hash_matches(str(target), entry.known_hash):
            return target
        if not target.is_file():
            raise DownloadError(
                f"{target}, where the cache keeps model {name!r}, is not a file; it is left "
                f"untouched: move it away, then run `sum-hq models download {name}`."
            )
        actual = pooch.file_hash(str(target), alg=algorithm)
        recorded = _read_record().get(key)
        if recorded is None or recorded["model"] != entry.name:
            raise HashMismatchError(
                f"The file {target} in the model cache does not have the hash {entry.known_hash} of "
                f"model {name!r} (its hash is {algorithm}:{actual}) and was not downloaded by "
                "napari-sum-hq, so it is left untouched. If it is yours, move it away; then run "
                f"`sum-hq models download {name}` (or set {CACHE_ENV} to a fresh folder and run it there)."
            )
        target.unlink()
        _update_record(key, None)
        corrupted_note = (
            f"The cached file {target} was corrupted (hash {algorithm}:{actual}, expected "
            f"{entry.known_hash}) and has been removed. "
        )
    else:
        legacy = _legacy_path(entry)
        if legacy.is_file() and pooch.hashes.hash_matches(str(legacy), entry.known_hash):
            return legacy
        _read_record()  # a foreign file where the record goes is refused before downloading
    try:
        hooked = on_progress is not None or cancel is not None
        downloader = pooch.HTTPDownloader(
            progressbar=_ProgressHook(on_progress, cancel) if hooked else progress,
            chunk_size=HOOK_CHUNK_BYTES if hooked else 1024,
        )
        check_cancel(cancel)
        pooch.retrieve(
            entry.url,
            known_hash=entry.known_hash,
            fname=entry.filename,
            path=target.parent,
            downloader=downloader,
        )
    except ValueError as exc:
        if "hash" not in str(exc).lower():
            raise
        raise HashMismatchError(
            f"{corrupted_note}The file downloaded for model {name!r} from {entry.url} does not "
            f"have the registered hash {entry.known_hash} and was not kept ({exc}). "
            + _manual_instructions(entry, target)
        ) from exc
    except (requests.exceptions.RequestException, OSError) as exc:
        error_type = HashMismatchError if corrupted_note else DownloadError
        raise error_type(
            f"{corrupted_note}Could not download model {name!r} (file {entry.filename}) from "
            f"{entry.url}: {exc}. " + _manual_instructions(entry, target)
        ) from exc
    try:
        _update_record(key, {"model": entry.name, "url": entry.url, "known_hash": entry.known_hash})
    except OSError as exc:
        warnings.warn(
            f"model {name!r} was downloaded to {target}, but the download record "
            f"{_record_path()} could not be written ({exc}); should the file get corrupted it "
            "will be reported instead of replaced",
            stacklevel=2,
        )
    return target


def fetch_decoder(name: str, progress: bool = True) -> Path | None:
    """Return the local path of the AIS decoder file of model ``name``, downloading it if needed.

    The decoder is the registry entry named by the model's ``decoder`` field
    (``vit_b_lm`` -> ``vit_b_lm_decoder``); it is fetched and hash-checked by
    :func:`fetch` like any other entry.

    Parameters
    ----------
    name : str
        Registry name of the model (see :func:`list_models`).
    progress : bool
        Show a tqdm progress bar while downloading.

    Returns
    -------
    Path or None
        The verified decoder file, or ``None`` when the model has no AIS decoder.

    Raises
    ------
    DownloadError, HashMismatchError, InvalidInputError
        As :func:`fetch`.
    """
    decoder = get_entry(name).decoder
    return None if decoder is None else fetch(decoder, progress=progress)


def locate(name_or_path: str | os.PathLike, progress: bool = True) -> Path:
    """The checkpoint file of a registry name or a path: the one precedence of the package.

    A registry name wins over a file of the same name in the working folder (names are
    what users type; a file is meant when it is given as a path such as ``./model.pth``).
    Registry models are fetched (downloaded once, hash-checked) by :func:`fetch`. An
    existing file is returned even when the ``SUM_HQ_MODELS`` file is malformed.

    Parameters
    ----------
    name_or_path : str or PathLike
        Registry name (see :func:`list_models`; AIS decoder files included) or checkpoint path.
    progress : bool
        Show a download progress bar when a registry file must be fetched.

    Raises
    ------
    InvalidInputError
        Neither a registry name nor an existing file (the message lists the registry), or
        not an existing file while the ``SUM_HQ_MODELS`` file is malformed.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InvalidInputError(
            f"model {name_or_path!r} must be a registry name or a file path, "
            f"not {type(name_or_path).__name__}"
        )
    path = Path(name_or_path).expanduser()
    try:
        names = list_models(decoders=True)
    except InvalidInputError:
        if path.is_file():  # a broken models file does not stop a local checkpoint
            return path
        raise
    if isinstance(name_or_path, str) and name_or_path in names:
        return fetch(name_or_path, progress=progress)
    if path.is_file():
        return path
    raise InvalidInputError(
        f"model {str(name_or_path)!r} is neither a registry model nor an existing file; "
        f"known models: {', '.join(names)}"
    )
