"""Speed options of the trainer config (``trainer.speed``), applied to the model before fitting.

bf16 autocast and cuDNN's autotuner are plain Lightning ``Trainer`` arguments (``trainer.precision=bf16-mixed``,
``trainer.benchmark=true``); ``trainer.speed`` holds what the Trainer does not take:

- ``channels_last``: the model's weights in NHWC layout (the device data path also hands its views over in it),
  which lets cuDNN use its fastest bf16 convolution kernels;
- ``compile``: ``torch.compile`` in place (``nn.Module.compile``, so parameter names and checkpoints are
  unchanged), with ``compile_mode``, of the modules the method names in ``compile_targets()`` (the backbone;
  MoCo's momentum backbone too), or of ``model.backbone`` / the model itself;
- ``matmul_precision``: ``torch.set_float32_matmul_precision`` (``high`` lets float32 matmuls use TF32);
- ``progress_bar_refresh_rate``: steps between progress-bar updates (each update reads the loss back from the
  device, which drains the GPU queue);
- ``checkpoint_every_n_epochs``: epochs between epoch checkpoints (writing a checkpoint with its optimiser state
  is a sizeable pause beside a short GPU epoch); ``last.ckpt`` always
  gets the final weights, and Ctrl-C / SIGTERM still save where training stopped.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sslcluster.ssl.methods.base import SSLMethod

SPEED_KEY = "speed"
DEFAULTS: dict[str, Any] = {"channels_last": False, "compile": False, "compile_mode": "default",
                            "matmul_precision": None, "progress_bar_refresh_rate": 1, "checkpoint_every_n_epochs": 1}


def native_bf16(accelerator: str | None = "auto") -> bool:
    """Whether the device training will run on computes bfloat16 natively: a CUDA GPU with bf16 support, or a CPU
    whose oneDNN reports bf16 instructions (AMX or AVX-512 BF16). Elsewhere bf16 is emulated and slower than
    float32, so ``precision=auto`` keeps float32 there."""
    wants_cuda = str(accelerator or "auto") in ("auto", "gpu", "cuda")
    if wants_cuda and torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # private, but the only bf16 probe torch has
    except (AttributeError, RuntimeError):
        return False


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
        mode = None if speed.get("compile_mode") in (None, "default") else speed["compile_mode"]
        targets = model.compile_targets() if isinstance(model, SSLMethod) else [getattr(model, "backbone", model)]
        for target in targets:
            target.compile(mode=mode)
    return model
