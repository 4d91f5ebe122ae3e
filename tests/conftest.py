"""Shared fixtures: small random-weight checkpoints in the official key layout."""

from __future__ import annotations

import pytest
import torch

from small_models import small_vit_config
from sum_core.modeling import build_from_config


@pytest.fixture(scope="session")
def small_hq_checkpoint(tmp_path_factory) -> str:
    """Path of a small HQ-SAM checkpoint (plain state dict, like the official files)."""
    torch.manual_seed(0)
    model = build_from_config(small_vit_config(hq=True))
    path = tmp_path_factory.mktemp("checkpoints") / "small_hq.pth"
    torch.save(model.state_dict(), path)
    return str(path)
