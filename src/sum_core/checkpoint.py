"""Reading checkpoint files safely and loading them into :class:`SamModel`.

Files are read with ``torch.load(weights_only=True, map_location="cpu")``
only, so a pickle that would run code is refused, and tensors saved on a GPU
(as in the HQ-SAM releases) load on any machine. Nothing that cannot be
trusted is loaded: the CRC-32 of every member of a zip checkpoint (the
``torch.save`` format since PyTorch 1.6) is verified first, in the same file
handle (legacy non-zip files carry no checksum, so flipped bytes in them go
unnoticed); tensors without data (``meta``), sparse, quantized, complex or
bool tensors, empty tensors, NaN / infinite values and files declaring more
than :data:`MAX_PARAMETERS` values are refused. The architecture is inferred
from the key names and shapes (:func:`infer_config`) and built first on the
``meta`` device (no memory), so keys, shapes, dtypes and the model size are
all checked before any weight is allocated; loading is strict: every
missing, unexpected or mis-shaped tensor is reported.

Supported layouts: full SAM / HQ-SAM / SUM state dicts, optionally wrapped in
``{"model": ...}`` or ``{"state_dict": ...}`` and/or with DDP ``module.``
prefixes; and decoder-only files (HQ-SAM / SUM ``epoch_N.pth``, keys without
the ``mask_decoder.`` prefix), which take the encoders from a ``base`` model.
micro-sam's models carry an AIS decoder (:class:`~sum_core.modeling.AISDecoder`),
found in three layouts: a separate decoder-only file (``vit_b_decoder.pt``, the
UNETR decoder state), loaded onto a ``base`` SAM model like any decoder-only
file; the torch_em training layout ``{"model_state": {"sam.<SAM key>": ...},
"decoder_state": {<decoder key>: ...}}`` (other entries, such as the optimizer
state, are ignored); and this package's own layout, a SAM state dict with the
decoder's keys under ``ais_decoder.`` (``SamModel.state_dict()`` of a model that
carries one). Every layout is flattened to that one (:func:`load_state_dict_file`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import pickle
import re
import zipfile
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from collections.abc import Callable
from typing import IO, Any

import torch
from torch.overrides import TorchFunctionMode

from . import zoo
from .device import resolve_device
from .errors import CheckpointError, InvalidInputError
from .modeling import (
    AIS_CHANNELS,
    AIS_PREFIX,
    PRESETS,
    AISDecoder,
    AISDecoderConfig,
    ModelConfig,
    SamModel,
    attach_ais_decoder,
    build_from_config,
)

_MODULES = ("image_encoder", "prompt_encoder", "mask_decoder", AIS_PREFIX[:-1])
_DECODER_ONLY_MARKERS = ("iou_token.weight", "mask_tokens.weight")
# Keys every micro-sam AIS decoder file (torch_em's UNETR state without ``encoder.*``) has.
_AIS_DECODER_MARKERS = ("base.block.1.weight", "out_conv.weight", "decoder_head.block.1.weight")
# torch_em's trainer saves the micro-sam model (TrainableSAM) under this prefix.
_TRAINING_PREFIX = "sam."
_MAX_LISTED = 20

#: Most values (parameters and buffers) a checkpoint, or the model inferred from
#: it, may hold: about 1.56x the largest SAM-family model (HQ-SAM / SUM vit_h,
#: 642.7 M), 4 GB in float32. A crafted file of a few KB can declare tensors far
#: larger than this (one stored element repeated with stride 0); such files are
#: refused before anything of that size is allocated.
MAX_PARAMETERS = 1_000_000_000

# Zip members are read in blocks of _CRC_CHUNK bytes on at most _CRC_THREADS threads.
_CRC_CHUNK = 1 << 22
_CRC_THREADS = 8

# Integer dtypes a weight may have (BatchNorm's ``num_batches_tracked`` is int64).
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

# torch.save's legacy (non-zip) format starts with its pickled magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_ZIP_MAGIC = b"PK\x03\x04"
_FOREIGN_SIGNATURES = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"GIF8", "a GIF image"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x80", "a plain Python pickle (not written by torch.save)"),
)


def _list(items: list[str]) -> str:
    """Format a list of keys for an error message (at most ``_MAX_LISTED`` shown)."""
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" ... and {more} more" if more > 0 else "")


def _check_signature(path: Path) -> bool:
    """Refuse missing, empty and obviously foreign files before ``torch.load``; True for a zip file."""
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path {path} is not a file")
    with path.open("rb") as handle:
        head = handle.read(64)
    if not head:
        raise CheckpointError(f"checkpoint file {path} is empty (0 bytes); download or save it again")
    if head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_TORCH_MAGIC):
        return head.startswith(_ZIP_MAGIC)
    kind = next((name for magic, name in _FOREIGN_SIGNATURES if head.startswith(magic)), None)
    if kind is None and len(head) > 8 and head[8:9] == b"{":
        kind = "a safetensors file (not supported; convert it with torch.save(state_dict, ...))"
    if kind is None:
        text = head.decode("utf-8", errors="ignore")
        is_text = len(text) >= len(head) - 3 and all(c.isprintable() or c in "\r\n\t" for c in text)
        kind = "a text file" if is_text else "of unknown format"
    raise CheckpointError(
        f"{path} is not a PyTorch checkpoint: the file looks like {kind}. "
        "Expected a .pth/.pt file written by torch.save"
    )


def _unsafe_reason(message: str) -> str:
    """Pull torch's one-line reason out of a weights-only refusal message."""
    match = re.search(r"(Unsupported [^\n]*|Trying to load unsupported [^\n]*)", message)
    return match.group(1).strip() if match else "it holds objects other than tensors"


def _flatten_training_layout(obj: Mapping, path: Path) -> dict[Any, Any]:
    """torch_em's ``{"model_state": {"sam.<key>": ...}, "decoder_state": {...}}`` as one flat dict.

    The ``sam.`` prefix is removed where present (as micro-sam does), the decoder's keys
    get the ``ais_decoder.`` prefix, and the other entries (optimizer state, epoch, ...)
    are left out.
    """
    flat = {
        key[len(_TRAINING_PREFIX) :] if isinstance(key, str) and key.startswith(_TRAINING_PREFIX) else key: value
        for key, value in obj["model_state"].items()
    }
    decoder = obj.get("decoder_state")
    if decoder is not None and not isinstance(decoder, Mapping):
        raise CheckpointError(
            f"{path}: 'decoder_state' holds a {type(decoder).__name__}, not the AIS decoder's state dict"
        )
    for key, value in (decoder or {}).items():
        flat[AIS_PREFIX + key if isinstance(key, str) else key] = value
    return flat


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Flatten the training layout; strip ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers, ``module.`` prefixes."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model_state"), Mapping):
        obj = _flatten_training_layout(obj, path)
    while isinstance(obj, Mapping):
        inner = next((obj[key] for key in ("model", "state_dict") if isinstance(obj.get(key), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
    state = dict(obj)
    bad_keys = sorted(repr(key) for key in state if not isinstance(key, str))
    if bad_keys:
        raise CheckpointError(f"{path}: state-dict keys must be strings, found {_list(bad_keys)}")
    if not any(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError(f"{path} holds a dict without any tensors, not a model state dict")
    others = sorted(str(key) for key, value in state.items() if not isinstance(value, torch.Tensor))
    if others:
        raise CheckpointError(f"{path}: these entries are not tensors: {_list(others)}")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def _member_intact(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """Read one member to its end: ``zipfile`` compares its CRC-32 there."""
    try:
        with archive.open(info) as member:
            while member.read(_CRC_CHUNK):
                pass
    except zipfile.BadZipFile:
        return False
    return True


def _check_zip_checksums(handle: IO[bytes], path: Path) -> None:
    """Verify the CRC-32 of every member of the zip checkpoint open in ``handle`` (one streaming pass).

    Members are checked on several threads: the reads share the handle (under
    ``zipfile``'s lock) and ``zlib.crc32`` runs without the GIL.
    """
    try:
        with zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
            with ThreadPoolExecutor(max_workers=min(_CRC_THREADS, os.cpu_count() or 1)) as pool:
                intact = list(pool.map(partial(_member_intact, archive), infos))
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} is truncated or corrupted and cannot be read ({exc}); download or save it again"
        ) from exc
    bad = next((info.filename for info, ok in zip(infos, intact) if not ok), None)
    if bad is not None:
        raise CheckpointError(
            f"{path} is corrupted (checksum of {bad} does not match); download or save it again"
        )


def _stored_values(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` without its stride-0 dimensions, which only repeat the same stored elements."""
    return tensor[tuple(0 if stride == 0 else slice(None) for stride in tensor.stride())]


def _is_finite(tensor: torch.Tensor) -> bool:
    """No NaN / inf in ``tensor``, also after a float64 -> float32 conversion (which could overflow)."""
    values = _stored_values(tensor)
    if values.dtype == torch.float64:
        values = values.float()
    # Any NaN / inf makes the sum NaN / inf, so a finite sum (one fast pass) proves every value finite;
    # only a sum that is not finite (a bad value, or an overflow of large values) needs the exact test.
    return bool(torch.isfinite(values.sum())) or bool(torch.isfinite(values).all())


def _check_size(tensors: Mapping[str, torch.Tensor], what: str, detail: str = "") -> None:
    """Refuse ``tensors`` holding more than :data:`MAX_PARAMETERS` values; ``what`` starts the message."""
    total = sum(tensor.numel() for tensor in tensors.values())
    if total > MAX_PARAMETERS:
        largest = sorted(tensors, key=lambda key: tensors[key].numel(), reverse=True)[:3]
        shown = ", ".join(f"{key} {tuple(tensors[key].shape)}" for key in largest)
        raise CheckpointError(
            f"{what} {total:,} values, more than the {MAX_PARAMETERS:,} allowed (the largest "
            f"SAM-family model, vit_h, has 643 M){detail}; largest tensors: {shown}. It is not a "
            "SAM-family checkpoint"
        )


def _check_tensors(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse tensors no model weight can be: no data, odd types, empty, too many values, NaN / inf."""
    no_data = [key for key, value in state.items() if value.is_meta]
    if no_data:
        raise CheckpointError(
            f"{source} holds tensors without data (saved on the 'meta' device): {_list(no_data)}; "
            "save the weights of a loaded model instead"
        )
    odd = [
        f"{key} ({value.dtype}, {value.layout})"
        for key, value in state.items()
        if value.layout != torch.strided
        or value.is_quantized
        or not (value.is_floating_point() or value.dtype in _INTEGER_DTYPES)
    ]
    if odd:
        raise CheckpointError(
            f"{source} holds tensors of a type no model weight has: {_list(odd)}; weights must be "
            "dense real numbers (float32, float16, bfloat16 or float64)"
        )
    empty = [f"{key} {tuple(value.shape)}" for key, value in state.items() if value.numel() == 0]
    if empty:
        raise CheckpointError(
            f"{source} holds empty tensors (a zero-size dimension): {_list(empty)}; no SAM weight "
            "is empty, so the file is damaged or not a SAM-family checkpoint"
        )
    _check_size(state, f"{source} declares")
    not_finite = [key for key, value in state.items() if value.is_floating_point() and not _is_finite(value)]
    if not_finite:
        raise CheckpointError(
            f"{source} holds NaN or infinite values (or values beyond float32's range) in "
            f"{_list(not_finite)}; the weights are damaged (e.g. a diverged training run): use "
            "another checkpoint"
        )


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint into a flat ``{key: tensor}`` dict on the CPU.

    Only plain weights are accepted (``torch.load(weights_only=True)``), so a
    file that would run code when unpickled is refused without running it.
    The CRC-32 of every member of a zip checkpoint is verified in the same
    file handle before it is unpickled; legacy (non-zip, before PyTorch 1.6)
    files have no checksum, so damage inside their tensors cannot be detected.

    Parameters
    ----------
    path : str or PathLike
        A ``.pth`` / ``.pt`` file written by ``torch.save``.

    Returns
    -------
    dict of str to torch.Tensor
        The state dict, with ``{"model": ...}`` / ``{"state_dict": ...}``
        wrappers and DDP ``module.`` prefixes removed; a torch_em training
        layout flattened (``sam.`` prefix removed, the AIS decoder's keys under
        ``ais_decoder.``, other entries left out).

    Raises
    ------
    CheckpointError
        If the file is missing, empty, truncated or corrupted (a zip member's
        checksum does not match), not a PyTorch checkpoint, not a plain weights
        file, or holds no tensors; or it holds tensors without data (``meta``),
        sparse / quantized / complex / bool or empty tensors, NaN or infinite
        values, or more than :data:`MAX_PARAMETERS` values in total (all named).
    """
    path = Path(path)
    is_zip = _check_signature(path)
    try:
        with path.open("rb") as handle:
            if is_zip:
                _check_zip_checksums(handle, path)
                handle.seek(0)
            obj = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc) and "truncated" not in str(exc):
            raise CheckpointError(
                f"{path} is not a plain weights file: reading it would build arbitrary Python "
                f"objects or run code ({_unsafe_reason(str(exc))}), so it was refused. Only state "
                "dicts of tensors are loaded. If you trust the file, convert it once in an environment "
                "where it loads (for a micro-sam / torch_em training checkpoint, one with micro-sam "
                "installed): state = torch.load(path, weights_only=False), then torch.save("
                "{'model_state': state['model_state'], 'decoder_state': state['decoder_state']}, "
                "'converted.pt') (leave out 'decoder_state' if it has none), or "
                "torch.save(model.state_dict(), ...) for a model object"
            ) from exc
        raise CheckpointError(f"{path} is truncated or corrupted and cannot be read: {exc}") from exc
    except (RuntimeError, EOFError, ValueError, KeyError, OSError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} is truncated or corrupted and cannot be read ({first_line}); "
            "download or save it again"
        ) from exc
    state = _unwrap(obj, path)
    _check_tensors(state, str(path))
    return state


# --- architecture inference -------------------------------------------------


def _shape(state: Mapping[str, Any], key: str, ndim: int) -> tuple[int, ...]:
    """Shape of ``state[key]``, which must have ``ndim`` dimensions, none of them zero."""
    if key not in state:
        raise CheckpointError(f"the state dict has no {key!r}, which is needed to infer the architecture")
    shape = tuple(state[key].shape)
    if len(shape) != ndim or 0 in shape:
        raise CheckpointError(
            f"{key} has shape {shape}; the architecture needs {ndim} non-zero dimensions there"
        )
    return shape


def _count(state: Mapping[str, Any], prefix: str) -> int:
    """Number of consecutive children ``{prefix}.0``, ``{prefix}.1``, ... present in ``state``."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indexes = {int(m.group(1)) for key in state if (m := pattern.match(key))}
    if indexes != set(range(len(indexes))):
        raise CheckpointError(f"{prefix}.* has non-consecutive indexes {sorted(indexes)}")
    return len(indexes)


def _infer_vit(state: Mapping[str, Any]) -> dict[str, Any]:
    embed_dim, _, patch, _ = _shape(state, "image_encoder.patch_embed.proj.weight", 4)
    grid = _shape(state, "image_encoder.pos_embed", 4)[1]
    depth = _count(state, "image_encoder.blocks")
    if depth == 0:
        raise CheckpointError("the ViT image encoder has no blocks (image_encoder.blocks.*)")
    global_blocks, windows, head_dims = [], set(), set()
    for block in range(depth):
        length, head_dim = _shape(state, f"image_encoder.blocks.{block}.attn.rel_pos_h", 2)
        head_dims.add(head_dim)
        if length == 2 * grid - 1:
            global_blocks.append(block)
        else:
            windows.add((length + 1) // 2)
    if len(head_dims) != 1 or len(windows) > 1:
        raise CheckpointError(
            f"inconsistent relative-position tables: head dims {sorted(head_dims)}, "
            f"window sizes {sorted(windows)}"
        )
    head_dim = head_dims.pop()
    if embed_dim % head_dim:
        raise CheckpointError(
            f"the relative-position tables are {head_dim} wide, which does not divide the "
            f"embedding width {embed_dim} into heads"
        )
    hidden = _shape(state, "image_encoder.blocks.0.mlp.lin1.weight", 2)[0]
    changes: dict[str, Any] = {
        "encoder": "vit",
        "embed_dim": embed_dim,
        "patch_size": patch,
        "image_size": grid * patch,
        "depth": depth,
        "num_heads": embed_dim // head_dim,
        "global_attn_indexes": tuple(global_blocks),
        "mlp_ratio": hidden / embed_dim,
    }
    if windows:
        changes["window_size"] = windows.pop()
    return changes


def _infer_tiny_vit(state: Mapping[str, Any]) -> dict[str, Any]:
    preset = PRESETS["vit_tiny"]
    dims = [_shape(state, "image_encoder.patch_embed.seq.2.c.weight", 4)[0]]
    depths = [_count(state, "image_encoder.layers.0.blocks")]
    # Stage 0 is convolutional: its heads / window do not exist in the weights.
    heads = [preset.tiny_num_heads[0]]
    windows = [preset.tiny_window_sizes[0]]
    for stage in range(1, 4):
        prefix = f"image_encoder.layers.{stage}.blocks"
        depths.append(_count(state, prefix))
        dims.append(_shape(state, f"{prefix}.0.attn.norm.weight", 1)[0])
        num_heads, area = _shape(state, f"{prefix}.0.attn.attention_biases", 2)
        window = math.isqrt(area)
        if window * window != area:
            raise CheckpointError(f"{prefix}.0.attn.attention_biases has {area} columns, not a square window")
        heads.append(num_heads)
        windows.append(window)
    hidden = _shape(state, "image_encoder.layers.1.blocks.0.mlp.fc1.weight", 2)[0]
    return {
        "encoder": "tiny_vit",
        "tiny_embed_dims": tuple(dims),
        "tiny_depths": tuple(depths),
        "tiny_num_heads": tuple(heads),
        "tiny_window_sizes": tuple(windows),
        "tiny_mlp_ratio": hidden / dims[1],
    }


def _infer_prompt_and_decoder(state: Mapping[str, Any]) -> dict[str, Any]:
    num_task_tokens = _count(state, "mask_decoder.task_prompt_tokens")
    # Each mask token has its own MLP: a huge token table alone must not build that many modules.
    num_mask_tokens = _shape(state, "mask_decoder.mask_tokens.weight", 2)[0]
    num_mlps = _count(state, "mask_decoder.output_hypernetworks_mlps")
    if num_mlps != num_mask_tokens:
        raise CheckpointError(
            f"mask_decoder.mask_tokens.weight has {num_mask_tokens} tokens but there are {num_mlps} "
            "mask_decoder.output_hypernetworks_mlps; each mask token needs one"
        )
    changes: dict[str, Any] = {
        "prompt_embed_dim": _shape(state, "prompt_encoder.no_mask_embed.weight", 2)[1],
        "mask_in_chans": _shape(state, "prompt_encoder.mask_downscaling.3.weight", 4)[0],
        "decoder_depth": _count(state, "mask_decoder.transformer.layers"),
        "decoder_mlp_dim": _shape(state, "mask_decoder.transformer.layers.0.mlp.lin1.weight", 2)[0],
        "num_multimask_outputs": num_mask_tokens - 1,
        "iou_head_depth": _count(state, "mask_decoder.iou_prediction_head.layers"),
        "iou_head_hidden_dim": _shape(state, "mask_decoder.iou_prediction_head.layers.0.weight", 2)[0],
        "hq": "mask_decoder.hf_token.weight" in state,
        "sum_tokens": num_task_tokens > 0,
    }
    if num_task_tokens:
        changes["num_task_tokens"] = num_task_tokens
        changes["num_task_embeddings"] = _count(state, "mask_decoder.task_prompt_embeddings")
    return changes


def _preset_name(config: ModelConfig) -> str:
    """The preset whose architecture ``config`` has (ignoring HQ / SUM options), else "custom"."""
    for name, preset in PRESETS.items():
        candidate = dataclasses.replace(
            config,
            model_type=name,
            hq=preset.hq,
            sum_tokens=preset.sum_tokens,
            num_task_tokens=preset.num_task_tokens,
            num_task_embeddings=preset.num_task_embeddings,
        )
        if candidate == preset:
            return name
    return "custom"


def infer_config(state_dict: Mapping[str, Any]) -> ModelConfig:
    """Infer the architecture of a full state dict from its key names and shapes.

    Only shapes are read, so tensors on the ``meta`` device work too.
    Not recoverable from the weights, and left at their defaults:
    ``decoder_num_heads``, the TinyViT image size and its stage-0 heads /
    window (stage 0 is convolutional).

    Parameters
    ----------
    state_dict : mapping of str to tensor
        Full model state dict (``image_encoder.*``, ``prompt_encoder.*``,
        ``mask_decoder.*``).

    Returns
    -------
    ModelConfig
        ``model_type`` is the preset name when the encoder and decoder sizes
        equal a preset's, else ``"custom"``; ``hq`` / ``sum_tokens`` follow
        the presence of the HQ and SUM tensors.

    Raises
    ------
    CheckpointError
        If a key needed for the inference is missing (e.g. a decoder-only
        file), has the wrong number of dimensions or a zero-size one, or the
        tables are inconsistent.
    """
    if "image_encoder.patch_embed.proj.weight" in state_dict:
        changes = _infer_vit(state_dict)
    elif "image_encoder.patch_embed.seq.2.c.weight" in state_dict:
        changes = _infer_tiny_vit(state_dict)
    else:
        raise CheckpointError(
            "the state dict has no ViT (image_encoder.patch_embed.proj.weight) or TinyViT "
            "(image_encoder.patch_embed.seq.2.c.weight) image encoder; a decoder-only file needs a base model"
        )
    changes.update(_infer_prompt_and_decoder(state_dict))
    config = ModelConfig(model_type="custom", **changes)
    return config.replace(model_type=_preset_name(config))


def infer_ais_config(state_dict: Mapping[str, Any]) -> AISDecoderConfig:
    """Infer an AIS decoder's sizes and upsampling variant from its keys and shapes.

    Only shapes are read. The variant follows micro-sam's rule: transposed
    convolutions when the decoder's samplers (``decoder.samplers.*``) have
    ``.block.`` weights, bilinear interpolation + 1x1 convolution otherwise.

    Parameters
    ----------
    state_dict : mapping of str to tensor
        A micro-sam decoder state (torch-em's UNETR state without ``encoder.*``),
        keys without the ``ais_decoder.`` prefix.

    Returns
    -------
    AISDecoderConfig

    Raises
    ------
    CheckpointError
        If a key needed for the inference is missing or mis-shaped, or the decoder
        does not have the three AIS output channels.
    """
    out_channels, initial_features = _shape(state_dict, "out_conv.weight", 4)[:2]
    if out_channels != len(AIS_CHANNELS):
        raise CheckpointError(
            f"the AIS decoder has {out_channels} output channels (out_conv.weight); micro-sam's "
            f"AIS decoder has {len(AIS_CHANNELS)} ({', '.join(AIS_CHANNELS)})"
        )
    return AISDecoderConfig(
        embed_dim=_shape(state_dict, "base.block.1.weight", 4)[1],
        initial_features=initial_features,
        conv_transpose=any(".block." in key for key in state_dict if key.startswith("decoder.samplers.")),
    )


# --- loading ------------------------------------------------------------------


def _add_decoder_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Prefix the keys of an un-prefixed decoder-only file: ``mask_decoder.`` or ``ais_decoder.``."""
    if any(key.split(".", 1)[0] in _MODULES for key in state):
        return state
    if any(marker in state for marker in _DECODER_ONLY_MARKERS):
        return {f"mask_decoder.{key}": value for key, value in state.items()}
    if all(marker in state for marker in _AIS_DECODER_MARKERS):
        return {AIS_PREFIX + key: value for key, value in state.items()}
    return state


def _base_state_dict(base: str | os.PathLike | SamModel) -> dict[str, torch.Tensor]:
    """Full state dict of ``base``: a SamModel, a checkpoint path or a registry name."""
    if isinstance(base, SamModel):
        state = base.state_dict()
        _check_tensors(state, "base model")
        return state
    if not isinstance(base, (str, os.PathLike)):
        raise InvalidInputError(
            f"base={base!r} must be a checkpoint path, a registry name or a SamModel, "
            f"not {type(base).__name__}"
        )
    try:
        path = zoo.locate(base)
    except InvalidInputError as error:
        raise InvalidInputError(f"base: {error}") from None
    state = _add_decoder_prefix(load_state_dict_file(path))
    if not any(key.startswith("image_encoder.") for key in state):
        raise CheckpointError(
            f"base={str(base)!r} has no image encoder weights; it must be a full checkpoint"
        )
    return state


def _oversized(config: ModelConfig) -> list[str]:
    """The integer sizes of ``config`` larger than in every preset, as ``name=value`` strings."""
    found = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, int) and not isinstance(value, bool):
            largest = max(getattr(preset, field.name) for preset in PRESETS.values())
            if value > largest:
                found.append(f"{field.name}={value} (presets: at most {largest})")
    return found


class _ShapesOnly(TorchFunctionMode):
    """Skip random initialisation while building on the ``meta`` device: only shapes are wanted.

    On ``meta``, ``normal_`` and ``randn`` run Python references that import
    ``torch._dynamo`` and sympy (0.8 s and 800 modules, once per process); ViT
    models build without them. TinyViT's attention index (``repeat`` on
    ``meta``) still imports them.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init" and func.__name__.endswith("_"):
            return args[0] if args else kwargs["tensor"]
        if func in (torch.randn, torch.rand):
            func = torch.empty
        return func(*args, **kwargs)


def meta_model(config: ModelConfig, source: str) -> SamModel:
    """Build ``config`` on the ``meta`` device (shapes only, no memory) and check its size.

    The one check of an architecture read from an untrusted file before any
    weight is allocated: the result's ``state_dict()`` gives the expected keys,
    shapes and dtypes.

    Parameters
    ----------
    config : ModelConfig
        Architecture, usually from :func:`infer_config`.
    source : str
        What the architecture came from (a file name), for the error messages.

    Returns
    -------
    SamModel
        A model whose tensors are on the ``meta`` device.

    Raises
    ------
    CheckpointError
        If ``config`` cannot be built, or its parameters and buffers hold more
        than :data:`MAX_PARAMETERS` values (the message names the sizes beyond
        every preset's and the largest tensors).
    """
    model = _build_on_meta(partial(build_from_config, config), source)
    oversized = ", ".join(_oversized(config)) or "sizes within the presets"
    _check_size(_tensors(model), f"{source}: the architecture inferred from it would hold", f": {oversized}")
    return model


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """All parameters and buffers of ``module`` by name."""
    return dict(itertools.chain(module.named_parameters(), module.named_buffers()))


def _build_on_meta(build: Callable[[], torch.nn.Module], source: str) -> Any:
    """``build()`` on the ``meta`` device (shapes only); a failure is a :class:`CheckpointError`."""
    try:
        with torch.device("meta"), _ShapesOnly():
            return build()
    except (InvalidInputError, ArithmeticError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: the architecture inferred from it is not valid: {exc}") from exc


def _load_ais_decoder(state: Mapping[str, torch.Tensor], source: str) -> AISDecoder:
    """Build the AIS decoder ``state`` (keys without prefix) describes, checked on ``meta`` first, and load it."""
    try:
        config = infer_ais_config(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    expected = _build_on_meta(partial(AISDecoder, config), source)
    _check_size(_tensors(expected), f"{source}: the AIS decoder inferred from it would hold")
    _check_keys(expected.state_dict(), state, source, f"AIS decoder inferred from it ({config})")
    decoder = AISDecoder(config)
    decoder.load_state_dict(state, strict=True)
    return decoder


def _check_keys(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str, what: str
) -> None:
    """Compare ``state`` with the keys, shapes and dtype kinds of ``expected`` (the ``what``); list them all."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    common = sorted(set(expected) & set(state))
    mismatched = [
        f"{key} (file {tuple(state[key].shape)}, model {tuple(expected[key].shape)})"
        for key in common
        if state[key].shape != expected[key].shape
    ]
    wrong_dtype = [
        f"{key} (file {state[key].dtype}, model {expected[key].dtype})"
        for key in common
        if state[key].is_floating_point() != expected[key].is_floating_point()
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_list(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_list(mismatched)}")
    if wrong_dtype:
        problems.append(f"integer / floating-point mismatches: {_list(wrong_dtype)}")
    if problems:
        raise CheckpointError(f"{source} does not match the {what}: " + "; ".join(problems))


def load_checkpoint(
    path: str | os.PathLike,
    base: str | os.PathLike | SamModel | None = None,
    device: str | torch.device | None = None,
) -> SamModel:
    """Build the model a checkpoint describes and load its weights strictly.

    Parameters
    ----------
    path : str or PathLike
        Full SAM / HQ-SAM / SUM checkpoint (with or without an AIS decoder, in
        any layout of :func:`load_state_dict_file`), or a decoder-only file
        (HQ-SAM / SUM ``epoch_N.pth``, SAM ``*_maskdecoder.pth``, micro-sam's
        AIS decoder ``*_decoder.pt``).
    base : str, PathLike, SamModel or None
        Only for decoder-only files: the model that supplies the image and
        prompt encoders (a full checkpoint path, a registry name such as
        ``"sam_vit_b"``, or a loaded :class:`SamModel`). Each decoder in the
        file (mask decoder, AIS decoder) replaces the base's entirely; the
        base's other decoder is kept.
    device : str, torch.device or None
        Target device; ``None`` picks CUDA, then MPS, then CPU.

    Returns
    -------
    SamModel
        In eval mode, float32, on ``device``; carrying its AIS decoder
        (:func:`sum_core.modeling.ais_decoder_of`) when the file or the base
        holds one.

    Raises
    ------
    CheckpointError
        If the file cannot be read safely or holds weights that cannot be
        trusted (see :func:`load_state_dict_file`), a decoder-only file comes
        without ``base``, an AIS decoder does not have micro-sam's layout or
        reads embeddings of another width than the model's, the inferred architecture is larger than
        :data:`MAX_PARAMETERS` values (checked before anything is allocated),
        or keys are missing, unexpected, mis-shaped or hold integers where the
        model has floats (all listed).
    InvalidInputError
        If ``device`` is not available, or ``base`` is given for a full
        checkpoint or cannot be resolved.
    """
    target = resolve_device(device)
    path = Path(path)
    state = _add_decoder_prefix(load_state_dict_file(path))
    if not any(key.startswith("image_encoder.") for key in state):
        if base is None:
            modules = sorted({key.split(".", 1)[0] for key in state})
            raise CheckpointError(
                f"{path} holds no image encoder, only {', '.join(modules)} weights (a decoder-only "
                "file: HQ-SAM / SUM epoch_N.pth, or a micro-sam AIS decoder such as "
                "vit_b_decoder.pt); pass base= a full SAM / HQ-SAM checkpoint path, a registry "
                "name (e.g. 'sam_hq_vit_b') or a loaded SamModel to take the encoders from"
            )
        in_file = {key.split(".", 1)[0] for key in state}
        base_state = _base_state_dict(base)
        state = {k: v for k, v in base_state.items() if k.split(".", 1)[0] not in in_file} | state
    elif base is not None:
        raise InvalidInputError(
            f"base={base!r} was given but {path} is a full checkpoint (it has image encoder "
            "weights); base is only for decoder-only files"
        )
    ais_state = {k[len(AIS_PREFIX) :]: v for k, v in state.items() if k.startswith(AIS_PREFIX)}
    state = {k: v for k, v in state.items() if not k.startswith(AIS_PREFIX)}
    try:
        config = infer_config(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    what = f"{config.model_type} architecture inferred from it (hq={config.hq}, sum_tokens={config.sum_tokens})"
    _check_keys(meta_model(config, str(path)).state_dict(), state, str(path), what)
    decoder = _load_ais_decoder(ais_state, str(path)) if ais_state else None
    model = build_from_config(config)
    model.load_state_dict(state, strict=True)
    try:
        attach_ais_decoder(model, decoder)
    except InvalidInputError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return model.to(target).eval()
