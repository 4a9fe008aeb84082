"""Speed options of the trainer config (``trainer.speed``), applied to the model before fitting.

bf16 autocast and cuDNN's autotuner are plain Lightning ``Trainer`` arguments (``trainer.precision=bf16-mixed``,
``trainer.benchmark=true``); ``trainer.speed`` holds what the Trainer does not take:

- ``channels_last``: the model's weights in NHWC layout (the device data path also hands its views over in it),
  which lets cuDNN use its fastest bf16 convolution kernels;
- ``compile``: ``torch.compile`` of the backbone in place (``nn.Module.compile``, so parameter names and
  checkpoints are unchanged), with ``compile_mode``;
- ``matmul_precision``: ``torch.set_float32_matmul_precision`` (``high`` lets float32 matmuls use TF32).
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

SPEED_KEY = "speed"
DEFAULTS: dict[str, Any] = {"channels_last": False, "compile": False, "compile_mode": "default",
                            "matmul_precision": None}


def split_trainer_config(trainer: DictConfig | dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(keyword arguments for ``pl.Trainer``, speed options with defaults filled in)."""
    kwargs = OmegaConf.to_container(trainer, resolve=True) if isinstance(trainer, DictConfig) else dict(trainer)
    speed = dict(DEFAULTS)
    speed.update(kwargs.pop(SPEED_KEY, None) or {})
    return kwargs, speed


def apply_speed(model: nn.Module, speed: dict[str, Any]) -> nn.Module:
    """Apply the speed options to ``model`` (in place; returned for convenience)."""
    if speed.get("matmul_precision"):
        torch.set_float32_matmul_precision(str(speed["matmul_precision"]))
    if speed.get("channels_last"):
        model.to(memory_format=torch.channels_last)
    if speed.get("compile"):
        target = getattr(model, "backbone", model)
        target.compile(mode=None if speed.get("compile_mode") in (None, "default") else speed["compile_mode"])
    return model
