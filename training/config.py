"""Run configuration of ``python -m training.finetune``: one dataclass, YAML load/save.

Every hyper-parameter of a fine-tuning run is a field of :class:`FinetuneConfig`.
Values are resolved in this order (later wins): the dataclass defaults, the
scheme defaults (:data:`SCHEME_DEFAULTS`, for fields the user did not set), a
YAML file (``--config run.yaml``), explicit command-line flags.  The resolved
configuration is written to ``<output>/config.yaml`` so that a run can be
reproduced or resumed.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sum_core.errors import InvalidInputError
from sum_core.options import PRECISIONS
from sum_core.validation import check_int

from .ais_targets import AIS_MIN_SIZE
from .losses import UA_DICE_THRESHOLD

SCHEMES = ("hq", "decoder", "full", "ais")
PROMPT_KINDS = ("box", "points", "mask")

#: Per-scheme defaults (HQ-SAM lightweight recipe vs SUM full/decoder fine-tuning).  Box jitter:
#: HQ-SAM and SUM's HQ-SAM variant train with tight boxes; SUM's interactive recipe jitters them.
SCHEME_DEFAULTS: dict[str, dict[str, Any]] = {
    "hq": {
        "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "epochs": 12, "lr_step": 10, "box_jitter": False,
    },
    "decoder": {
        "optimizer": "adamw", "lr": 1e-5, "weight_decay": 0.1, "epochs": 1, "lr_step": 0, "box_jitter": True,
    },
    "full": {
        "optimizer": "adamw", "lr": 1e-5, "weight_decay": 0.1, "epochs": 1, "lr_step": 0, "box_jitter": True,
    },
    # micro-sam's train_instance_segmentation: AdamW (torch's default weight decay 0.01), lr 1e-5,
    # 100 epochs (its ReduceLROnPlateau schedule is not reproduced: constant lr).
    "ais": {
        "optimizer": "adamw", "lr": 1e-5, "weight_decay": 0.01, "epochs": 100, "lr_step": 0, "box_jitter": False,
    },
}


@dataclass
class FinetuneConfig:
    """All settings of one fine-tuning run.

    Attributes
    ----------
    checkpoint : str
        Base model: a checkpoint path or registry name (SAM, HQ-SAM or SUM).
    output : str
        Run folder (config, metrics, checkpoints, training state).
    data : list of str
        Human-labelled dataset folders (``images/`` + ``masks/``).
    entity_data : list of str
        Those of ``data`` whose masks are entities (task token 2, else 1).
    pseudo : str or None
        Pseudo-label folder (``training.pseudolabel`` / ``training.refine``).
    pseudo_images : str or None
        Folder with the pseudo-labelled images (default: from the manifest).
    scheme : {"hq", "decoder", "full", "ais"}
        Which parameters train (see :mod:`training.schemes`); ``ais`` trains the AIS
        decoder on distance targets instead of prompted masks.
    train_encoder : bool
        ``ais`` scheme: train the image encoder too (with ``layer_decay``).
    ais_min_size : int
        ``ais`` scheme: objects smaller than this (pixels of the 1024 training frame)
        are background in the targets (micro-sam's ``min_size``, 25).
    ais_features : int
        ``ais`` scheme: width (``initial_features``) of a new AIS decoder, when the base
        model has none (micro-sam's: 64).
    optimizer, lr, weight_decay, betas, eps : optimiser settings
        ``None`` means the scheme default.
    layer_decay : float
        Layer-wise lr decay of the image encoder (``full``, and ``ais`` with ``train_encoder``).
    epochs : int or None
        Number of epochs (scheme default if None).
    lr_step, lr_gamma : StepLR settings (``lr_step`` 0 disables the schedule).
    batch_size : int
        Human-labelled images per optimiser step (per process).
    max_instances : int
        Masks sampled per human image.
    max_pseudo_masks : int
        Masks sampled per pseudo-labelled image.
    pseudo_batch_size : int
        Pseudo-labelled images per (separate) optimiser step.
    pseudo_ratio : int
        Human steps per pseudo step (1 = SUM's 1 : 1 mixing).
    min_pseudo_area : int
        Pseudo masks smaller than this (area in pixels of the 1024 frame) are dropped
        before the ``max_pseudo_masks`` are sampled (the reference's ``100 * min_ratio``;
        its code default is 100, the authors' command uses 10,000).
    min_uncertainty_area : int
        Only pseudo masks of at least this area (pixels, 1024 frame) use their
        uncertainty map; smaller ones count as certain (u = 0), as in the reference
        (``100 * min_refine_ratio``, 10,000 in its code and command).
    focal_weight, dice_weight, iou_weight : float
        SAM loss weights (20 : 1 : 1).
    ua_threshold : float
        Certainty threshold of the uncertainty-aware Dice: 0.5 as both released code
        paths (the paper's text says 0.6).
    ua_dice_mode : {"hard", "soft"}
    num_points : int
        Positive points per point prompt.
    prompt_kinds : list of str
        Prompt types drawn uniformly per image (box, points, mask).
    box_jitter : bool or None
        Apply SUM's box jitter (None: the scheme default, off for ``hq`` as HQ-SAM).
    interactive : bool
        SAM-style interactive rounds instead of one prompt.
    task_prompt_every_round : bool
        Give the task prompt in every interactive round, as the predictor and
        ``training.evaluate`` do at every click (train as it is used); False gives it
        in the first round only (the paper's recipe, which the predictor does not follow).
    interactive_rounds : int
        Rounds per example (first prompt, error clicks, final mask-only round).
    augment : bool
        HQ-SAM flip + large-scale jitter on human data.
    val_fraction : float
        Held-out fraction of each human folder (not trained on; the ``ais`` scheme logs its
        loss on it before training and after every epoch, ``kind`` ``val`` in metrics.csv).
    workers : int
        DataLoader worker processes.
    device : str or None
        ``cpu``, ``cuda``, ``cuda:1``...; None picks CUDA if available.
    precision : {"fp32", "bf16", "fp16"}
        Autocast precision; weights stay float32.  bf16 works on CUDA and
        CPU; fp16 uses a GradScaler and needs CUDA.
    seed : int
    max_steps : int
        Stop (resumably) after this many human steps in total; 0 = no limit.
    log_every : int
        Write a metrics row every N steps.
    find_unused_parameters : bool
        DDP option (needed: unused task-token rows get no gradient).
    """

    checkpoint: str = ""
    output: str = "runs/sum"
    data: list[str] = field(default_factory=list)
    entity_data: list[str] = field(default_factory=list)
    pseudo: str | None = None
    pseudo_images: str | None = None
    scheme: str = "hq"
    train_encoder: bool = False
    ais_min_size: int = AIS_MIN_SIZE
    ais_features: int = 64
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    layer_decay: float = 0.8
    epochs: int | None = None
    lr_step: int | None = None
    lr_gamma: float = 0.1
    batch_size: int = 4
    max_instances: int = 8
    max_pseudo_masks: int = 40
    pseudo_batch_size: int = 1
    pseudo_ratio: int = 1
    min_pseudo_area: int = 100
    min_uncertainty_area: int = 10_000
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    ua_threshold: float = UA_DICE_THRESHOLD
    ua_dice_mode: str = "hard"
    num_points: int = 10
    prompt_kinds: list[str] = field(default_factory=lambda: list(PROMPT_KINDS))
    box_jitter: bool | None = None
    interactive: bool = False
    task_prompt_every_round: bool = True
    interactive_rounds: int = 7
    augment: bool = True
    val_fraction: float = 0.0
    workers: int = 0
    device: str | None = None
    precision: str = "fp32"
    seed: int = 42
    max_steps: int = 0
    log_every: int = 1
    find_unused_parameters: bool = True

    def resolved(self) -> "FinetuneConfig":
        """Fill the scheme defaults into unset fields and validate; returns a copy."""
        if self.scheme not in SCHEMES:
            raise InvalidInputError(f"scheme={self.scheme!r} is not known; choose one of {SCHEMES}")
        changes = {
            name: value
            for name, value in SCHEME_DEFAULTS[self.scheme].items()
            if getattr(self, name) is None
        }
        config = dataclasses.replace(self, **changes)
        config.betas = tuple(float(b) for b in config.betas)
        config.validate()
        return config

    def validate(self) -> None:
        """Check values; raise :class:`InvalidInputError` naming the field."""
        if not self.checkpoint:
            raise InvalidInputError("checkpoint is required (a base model path or registry name)")
        if not self.data and not self.pseudo:
            raise InvalidInputError("data: give at least one dataset folder (or pseudo)")
        if self.scheme == "ais" and not self.data:
            raise InvalidInputError("scheme='ais' trains on instance masks: give dataset folders in data")
        if self.scheme == "ais" and self.pseudo:
            raise InvalidInputError(
                "scheme='ais' trains on the instance masks of data folders; pseudo-labels (pseudo) are "
                "overlapping per-object masks, not instance label images: leave pseudo out"
            )
        if self.train_encoder and self.scheme != "ais":
            raise InvalidInputError(
                f"train_encoder is an option of scheme='ais' (scheme={self.scheme!r}: 'full' trains the encoder)"
            )
        check_int(self.ais_min_size, "ais_min_size", 0)
        check_int(self.ais_features, "ais_features", 1)
        unknown = sorted(set(self.entity_data) - set(self.data))
        if unknown:
            raise InvalidInputError(f"entity_data lists folders not in data: {unknown}")
        if self.precision not in PRECISIONS:
            raise InvalidInputError(f"precision={self.precision!r} is not one of {PRECISIONS}")
        if self.optimizer not in ("adam", "adamw"):
            raise InvalidInputError(f"optimizer={self.optimizer!r} must be 'adam' or 'adamw'")
        bad_kinds = sorted(set(self.prompt_kinds) - set(PROMPT_KINDS))
        if not self.prompt_kinds or bad_kinds:
            raise InvalidInputError(
                f"prompt_kinds={self.prompt_kinds!r} must be a non-empty subset of {PROMPT_KINDS}"
            )
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "max_instances": self.max_instances,
            "max_pseudo_masks": self.max_pseudo_masks,
            "pseudo_batch_size": self.pseudo_batch_size,
            "pseudo_ratio": self.pseudo_ratio,
            "num_points": self.num_points,
            "interactive_rounds": self.interactive_rounds,
            "log_every": self.log_every,
        }
        for name, value in positive.items():
            check_int(value, name, 1)
        if self.interactive and self.interactive_rounds < 2:
            raise InvalidInputError("interactive_rounds must be >= 2 with interactive training")
        if not self.lr or self.lr <= 0:
            raise InvalidInputError(f"lr must be > 0, got {self.lr!r}")
        if not 0 < self.layer_decay <= 1:
            raise InvalidInputError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if not 0 <= self.ua_threshold < 1:
            raise InvalidInputError(f"ua_threshold must be in [0, 1), got {self.ua_threshold}")
        if self.max_steps < 0 or self.lr_step < 0 or self.workers < 0:
            raise InvalidInputError("max_steps, lr_step and workers must be >= 0")
        check_int(self.min_pseudo_area, "min_pseudo_area", 0)
        check_int(self.min_uncertainty_area, "min_uncertainty_area", 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-friendly dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out


def config_fields() -> dict[str, dataclasses.Field]:
    """The fields of :class:`FinetuneConfig` by name."""
    return {f.name: f for f in dataclasses.fields(FinetuneConfig)}


def config_from_dict(values: dict[str, Any], source: str = "config") -> FinetuneConfig:
    """Build a config from a dict; unknown keys are an error naming ``source``."""
    if not isinstance(values, dict):
        raise InvalidInputError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    unknown = sorted(set(values) - set(config_fields()))
    if unknown:
        raise InvalidInputError(
            f"{source}: unknown setting(s) {unknown}; valid settings are {sorted(config_fields())}"
        )
    values = dict(values)
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    return FinetuneConfig(**values)


def load_config(path: str | os.PathLike) -> FinetuneConfig:
    """Read a YAML run configuration (a mapping of :class:`FinetuneConfig` fields)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"config file {path} does not exist")
    with path.open("r", encoding="utf-8") as handle:
        values = yaml.safe_load(handle) or {}
    return config_from_dict(values, str(path))


def save_config(config: FinetuneConfig, path: str | os.PathLike) -> None:
    """Write ``config`` as YAML, atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        yaml.safe_dump(config.to_dict(), handle, sort_keys=False)
    os.replace(tmp, path)
