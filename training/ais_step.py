"""The forward pass and loss of the ``ais`` scheme: micro-sam's AIS decoder training.

One step encodes the batch's images through the core's encoder path
(:func:`sum_core.encoding.encode`, with gradients only when the encoder trains),
decodes the three maps through the core's differentiable AIS step
(:func:`sum_core.modeling.ais_decoder.ais_map_tensor`, the one decode path that
inference uses too, :func:`~sum_core.modeling.decode_ais_maps`) and compares them with
the targets of all instances of each image (:mod:`training.ais_targets`) by torch-em's
``DiceBasedDistanceLoss`` (:func:`training.losses.distance_dice_loss`).

The images are the trainer's ``S×S`` training frames (any image size is resized and
padded into it by :mod:`training.augment`, as for the other schemes), the targets are
computed from the label image in that same frame, and the maps are decoded at the frame
size, so every pixel of the frame is scored.
"""

from __future__ import annotations

import torch
from torch import nn

from sum_core.encoding import encode
from sum_core.errors import InvalidInputError
from sum_core.modeling import SamModel
from sum_core.modeling.ais_decoder import ais_map_tensor

from . import losses
from .config import FinetuneConfig


class AisStep(nn.Module):
    """Forward pass + loss of one ``ais`` batch (a module so that DDP can wrap it).

    Parameters
    ----------
    model : SamModel
        A model carrying an AIS decoder.
    config : FinetuneConfig
        ``precision`` and ``train_encoder`` are read.
    """

    def __init__(self, model: SamModel, config: FinetuneConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, batch: dict, pseudo: bool = False) -> dict[str, torch.Tensor]:
        """The loss of ``batch`` (``"image"`` ``B×3×S×S`` uint8, ``"ais_targets"`` ``B×3×S×S``).

        Returns
        -------
        dict of str to torch.Tensor
            ``"loss"`` and its ``"foreground"``, ``"center"`` and ``"boundary"`` terms
            (:func:`training.losses.distance_dice_loss` over the whole batch).

        Raises
        ------
        InvalidInputError
            If the batch has no ``"ais_targets"`` or holds pseudo-labels.
        """
        if pseudo or "ais_targets" not in batch:
            raise InvalidInputError(
                "the ais scheme trains on instance label images (InstanceDataset(ais_min_size=...)), "
                "not on pseudo-labels"
            )
        model, config = self.model, self.config
        images = batch["image"]
        frame = tuple(images.shape[-2:])
        with torch.set_grad_enabled(config.train_encoder and torch.is_grad_enabled()):
            encoded = encode(model, list(images), [frame] * len(images), config.precision, hq_features=False)
        embeddings = torch.cat([image.embedding for image in encoded])
        maps = ais_map_tensor(model, embeddings, encoded[0].input_size, frame)
        return losses.distance_dice_loss(maps, batch["ais_targets"].to(maps.device))
