"""SUM fine-tuning: ``python -m training.finetune``.

Examples
--------
HQ-SAM lightweight scheme (only the HQ modules and SUM task tables train),
human data mixed 1 : 1 with uncertainty-aware pseudo-labels::

    python -m training.finetune --checkpoint sam_hq_vit_b --scheme hq \\
        --data DATASET --pseudo PSEUDO --output runs/sum_hq

Start from micro-sam's light-microscopy SAM (a plain SAM checkpoint: the HQ
modules are added as HQ-SAM adds them, see
:func:`training.checkpointing.load_base_model`)::

    python -m training.finetune --checkpoint vit_b_lm --scheme hq \\
        --data DATASET --output runs/sum_lm

Full fine-tuning on 4 GPUs with bf16 autocast::

    torchrun --nproc_per_node=4 -m training.finetune --config run.yaml --scheme full --precision bf16

Train micro-sam's AIS decoder (automatic instance segmentation) on the instance masks,
starting from micro-sam's light-microscopy model and its decoder; add
``--train-encoder`` to train the image encoder too::

    python -m training.finetune --checkpoint vit_b_lm --scheme ais \\
        --data DATASET --val-fraction 0.1 --output runs/ais_lm

Continue an interrupted run (Ctrl+C saves a resumable state)::

    python -m training.finetune --output runs/sum_hq --resume

Every field of :class:`training.config.FinetuneConfig` is a flag
(``--max-instances``) and a YAML key (``max_instances``).  Precedence: defaults
< scheme defaults < ``--config`` file (or, with ``--resume``, the run's saved
``config.yaml``) < flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from sum_core.errors import SumError

from .config import (
    PRECISIONS,
    SCHEMES,
    FinetuneConfig,
    config_fields,
    config_from_dict,
    load_config,
    save_config,
)
from .trainer import Trainer

CONFIG_NAME = "config.yaml"
EXIT_INTERRUPTED = 130

_HELP = {
    "checkpoint": "base model: checkpoint path or registry name (SAM-HQ / SUM, or plain SAM such as "
    "micro-sam's vit_b_lm: the HQ modules are then added, untrained)",
    "output": "run folder",
    "data": "human-labelled dataset folders (images/, masks/)",
    "entity_data": "folders of --data whose masks are entities (task token 2)",
    "pseudo": "pseudo-label folder (training.pseudolabel + training.refine)",
    "pseudo_images": "images of the pseudo-label folder (default: from its manifest)",
    "pseudo_ratio": "human steps per pseudo-label step (1 = 1:1 mixing)",
    "interactive": "SAM-style interactive rounds (error clicks, final mask-only round)",
    "box_jitter": "jitter box prompts (default: off in the hq scheme, on in decoder / full)",
    "task_prompt_every_round": "task prompt in every interactive round (as the predictor); "
    "--no-task-prompt-every-round: first round only (the paper)",
    "min_uncertainty_area": "pseudo masks smaller than this (px, 1024 frame) ignore their uncertainty map",
    "precision": "autocast precision: bf16 (CUDA or CPU) or fp16 (CUDA only, with a GradScaler)",
    "max_steps": "stop resumably after this many steps (0 = no limit)",
    "scheme": "what trains: hq (HQ modules + SUM tables), decoder (prompt encoder + mask decoder), "
    "full (everything), ais (the AIS decoder on instance masks, as micro-sam)",
    "train_encoder": "ais scheme: train the image encoder too (layer-wise lr decay)",
    "ais_min_size": "ais scheme: objects smaller than this (px, 1024 frame) are background in the targets",
    "ais_features": "ais scheme: initial_features of a new AIS decoder (base without one)",
    "val_fraction": "held-out fraction of each --data folder (ais scheme: its loss is logged as kind 'val')",
}


def _scalar_type(text: str) -> type | None:
    return {"int": int, "float": float, "str": str}.get(text)


def _add_field(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
    flag = "--" + field.name.replace("_", "-")
    kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": _HELP.get(field.name)}
    annotation = str(field.type)
    if annotation.replace(" | None", "") == "bool":
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        return
    if annotation.startswith("list["):
        kwargs["nargs"] = "+"
        annotation = annotation[5:-1]
    elif annotation.startswith("tuple["):
        kwargs["nargs"] = 2
        annotation = "float"
    kwargs["type"] = _scalar_type(annotation.replace(" | None", ""))
    if field.name == "scheme":
        kwargs["choices"] = SCHEMES
    if field.name == "precision":
        kwargs["choices"] = PRECISIONS
    parser.add_argument(flag, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options: ``--config``, ``--resume``, ``--no-progress`` and one flag per config field."""
    parser = argparse.ArgumentParser(
        prog="python -m training.finetune",
        description="SUM uncertainty-aware fine-tuning of SAM / HQ-SAM.",
    )
    parser.add_argument("--config", type=Path, help="YAML file of settings (FinetuneConfig fields)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    for field in config_fields().values():
        _add_field(parser, field)
    return parser


def resolve_config(args: argparse.Namespace) -> FinetuneConfig:
    """Merge defaults, the YAML file (or the resumed run's config) and explicit flags."""
    flags = {name: value for name, value in vars(args).items() if name in config_fields()}
    values: dict[str, Any] = {}
    if args.resume:
        output = flags.get("output")
        if output is None and args.config is not None:
            output = load_config(args.config).output
        if output is None:
            raise SumError("--resume needs --output (the run folder to continue)")
        values = load_config(Path(output) / CONFIG_NAME).to_dict()
    elif args.config is not None:
        values = load_config(args.config).to_dict()
    values.update(flags)
    return config_from_dict(values, "settings").resolved()


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m training.finetune``; returns 0, or 130 after Ctrl+C (state saved)."""
    args = build_parser().parse_args(argv)
    try:
        config = resolve_config(args)
        trainer = Trainer(config, resume=args.resume, progress=not args.no_progress)
        if trainer.is_main:
            save_config(config, Path(config.output) / CONFIG_NAME)
        outcome = trainer.run()
    except SumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if trainer.is_main:
        print(f"{outcome}: run folder {config.output}")
    return EXIT_INTERRUPTED if outcome == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
