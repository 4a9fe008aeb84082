"""Backbones from timm (any ``timm.list_models()`` name): the model without its classifier, weights from timm's
hub cache or a local file, the model's own evaluation transform, and the model used as it is (frozen features).

timm does the work: ``timm.create_model(..., num_classes=0)`` removes the head and returns pooled features,
``pretrained_cfg_overlay={"file": PATH}`` loads a local state dict (``.pth`` or ``.safetensors``) through the same
path as hub weights (the model's checkpoint filter, first-conv adaptation to other channel counts, the classifier
dropped), ``timm.data`` gives the evaluation transform from the model's pretrained config (input size,
interpolation, crop, mean, std), ``group_matcher`` names the model's stem and blocks and ``timm.utils.freeze``
freezes them (BatchNorm turned into frozen BatchNorm). What is written here: error messages, grayscale handling,
and the glue to sslcluster's configs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from sslcluster.errors import SSLClusterError
from sslcluster.ssl.methods.base import SSLMethod

log = logging.getLogger(__name__)

CHANNEL_MODES = ("repeat", "adapt")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _pretrained_cfg(model_name: str) -> dict[str, Any]:
    """timm's pretrained config of ``model_name`` (``arch`` or ``arch.tag``); one line for an unknown name."""
    import timm

    arch = model_name.split(".", 1)[0]
    if not timm.is_model(arch):
        raise SSLClusterError(f"unknown timm model backbone.name={model_name!r} (timm.list_models() lists them)")
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None and "." in model_name:
        raise SSLClusterError(f"timm model {arch!r} has no pretrained tag {model_name.split('.', 1)[1]!r} "
                              f"(timm.list_pretrained('{arch}*') lists them)")
    return cfg.to_dict() if cfg is not None else {}


def hub_cache_dirs() -> str:
    """Where timm looks for downloaded weights: the Hugging Face hub cache and torch hub's checkpoints."""
    from huggingface_hub import constants

    return f"{constants.HF_HUB_CACHE} or {Path(torch.hub.get_dir()) / 'checkpoints'}"


def create_timm_model(model_name: str, pretrained: bool = False, weights: str | None = None, in_chans: int = 3,
                      image_size: int | None = None) -> nn.Module:
    """``timm.create_model(model_name, num_classes=0)`` with weights from ``weights`` (a local state dict), from
    timm's hub cache (``pretrained``), or random; every failure in one line naming the model and the file."""
    import timm

    pcfg = _pretrained_cfg(model_name)
    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_chans}
    if image_size is not None and pcfg.get("fixed_input_size"):
        kwargs["img_size"] = image_size  # ViTs: position embeddings for this size (resampled from the weights)
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise SSLClusterError(f"backbone.weights={weights}: no such file")
        if not path.name.endswith(WEIGHT_SUFFIXES):
            raise SSLClusterError(f"backbone.weights={path}: not a state dict file (expected one of "
                                  f"{', '.join(WEIGHT_SUFFIXES)})")
        model = timm.create_model(model_name, pretrained=False, **kwargs)
        load_weights_file(model, path, model_name, in_chans)
        return model
    try:
        return timm.create_model(model_name, pretrained=pretrained, **kwargs)
    except SSLClusterError:
        raise
    except Exception as e:  # noqa: BLE001 - no network and nothing cached, or no weights for this model
        if not pretrained:
            raise SSLClusterError(f"cannot build timm model {model_name!r}: {_one_line(e)}") from None
        raise SSLClusterError(
            f"cannot load pretrained weights of timm model {model_name!r}: not in the hub cache "
            f"({hub_cache_dirs()}) and not downloadable ({type(e).__name__}); fetch them on a machine with network "
            f"or set backbone.weights=PATH to a local .pth or .safetensors state dict") from None


def load_weights_file(model: nn.Module, path: Path, model_name: str, in_chans: int) -> None:
    """Load a local state dict into a timm model through timm's own loader (``load_pretrained`` with the file
    as the pretrained source: the model's checkpoint filter, the first convolution adapted to ``in_chans``, the
    classifier dropped), then check what timm leaves unchecked when the classifier is dropped: every key of the
    model was in the file and nothing else was. Any failure: one line naming the file."""
    import sys

    from timm.models import load_pretrained

    found: list[Any] = []
    handle = model.register_load_state_dict_post_hook(lambda module, keys: found.append(keys))
    pcfg = {**model.pretrained_cfg, "file": str(path.resolve()), "source": "", "state_dict": None}
    # the filter timm's builder passes for hub weights: the model module's checkpoint_filter_fn, where it has one
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    try:
        load_pretrained(model, pretrained_cfg=pcfg, num_classes=0, in_chans=in_chans, filter_fn=filter_fn)
    except Exception as e:  # noqa: BLE001 - unreadable file, wrong shapes: one line naming the file
        raise SSLClusterError(f"backbone.weights={path}: cannot load it into timm model {model_name!r}: "
                              f"{type(e).__name__}: {_one_line(e)}") from None
    finally:
        handle.remove()
    missing = [k for keys in found for k in keys.missing_keys]
    unexpected = [k for keys in found for k in keys.unexpected_keys]
    if not found or missing or unexpected:
        parts = [f"{len(missing)} keys of the model missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
                 if missing else "", f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])}"
                 f"{', ...' if len(unexpected) > 3 else ''})" if unexpected else ""]
        raise SSLClusterError(f"backbone.weights={path}: not a state dict of timm model {model_name!r}: "
                              + ("; ".join(p for p in parts if p) or "nothing loaded"))


def _freeze_leading_blocks(model: nn.Module, n_blocks: int) -> list[str]:
    """Freeze the stem and the first ``n_blocks`` blocks of a timm model (timm's coarse ``group_matcher``: the
    stem, then the stages of a ResNet or the blocks of a ViT); BatchNorm in them becomes frozen BatchNorm. The
    frozen modules' names."""
    from timm.models import group_parameters
    from timm.utils import freeze

    if n_blocks <= 0:
        return []
    groups = group_parameters(model, model.group_matcher(coarse=True))  # ordered: stem first
    order = sorted(groups)
    if n_blocks > len(order) - 1:
        raise SSLClusterError(f"backbone.freeze_blocks={n_blocks}: the model has {len(order) - 1} blocks after "
                              "its stem")
    names = [p for g in order[: n_blocks + 1] for p in groups[g]]
    modules = list(dict.fromkeys(n.rsplit(".", 1)[0] if "." in n else n for n in names))
    params = {n for n, _ in model.named_parameters(recurse=False)}
    for n in names:  # parameters held by the model itself (ViT's cls_token, pos_embed): no module to freeze
        if n in params:
            getattr(model, n).requires_grad_(False)
    freeze(model, [m for m in modules if m not in params])
    return modules


class TimmBackbone(nn.Module):
    """A timm model without its classifier: images (B, C, H, W) -> pooled features (B, out_dim).

    Args:
        model_name: any timm model (``resnet18``, ``vit_small_patch14_dinov2.lvd142m``, ...).
        pretrained: load timm's pretrained weights (its hub cache, or a download when there is network).
        weights: a local state dict (``.pth``, ``.pt``, ``.bin`` or ``.safetensors``) of that model, instead.
        in_channels: channels of the data (1 for grayscale).
        channels: ``repeat``: grayscale images are repeated to 3 channels (the model unchanged) | ``adapt``: the
            model takes ``in_channels`` (timm sums the pretrained first convolution over RGB).
        image_size: input side for models with a fixed input size (ViTs); None: the model's own.
        freeze_blocks: freeze the stem and this many leading blocks (for training from pretrained weights).
    """

    def __init__(self, model_name: str, pretrained: bool = False, weights: str | None = None, in_channels: int = 3,
                 channels: str = "repeat", image_size: int | None = None, freeze_blocks: int = 0) -> None:
        super().__init__()
        if channels not in CHANNEL_MODES:
            raise SSLClusterError(f"backbone.channels={channels!r} is not one of {', '.join(CHANNEL_MODES)}")
        self.repeat = channels == "repeat" and in_channels == 1
        in_chans = 3 if channels == "repeat" else in_channels
        self.model = create_timm_model(model_name, pretrained, weights, in_chans, image_size)
        self.model_name = model_name
        self.out_dim = int(self.model.num_features)
        self.frozen_modules = _freeze_leading_blocks(self.model, int(freeze_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> pooled features (B, out_dim); one-channel images are repeated to three when
        ``channels='repeat'``."""
        if self.repeat and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.model(x)


class ToMode:
    """PIL image -> the same image in ``mode`` (``RGB`` or ``L``); a class, not a lambda, so DataLoader workers
    can pickle it."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, img: Image.Image) -> Image.Image:
        """``img`` converted to ``self.mode`` when it is in another mode."""
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"ToMode({self.mode!r})"


def timm_eval_transform(model_name: str, in_channels: int = 3, channels: str = "repeat",
                        image_size: int | None = None) -> Any:
    """The model's own evaluation transform from its pretrained config (timm's resize to size / crop_pct,
    centre crop, to tensor (C, H, W), normalise with the model's mean and std); ``image_size`` overrides its input
    side. Grayscale data: converted to RGB (``channels='repeat'``) or kept one channel with the mean of the
    model's mean and std (``adapt``)."""
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({}, pretrained_cfg=_pretrained_cfg(model_name))
    if image_size is not None:
        config["input_size"] = (3, int(image_size), int(image_size))
    mode = "L" if channels == "adapt" and in_channels == 1 else "RGB"
    if mode == "L":
        config["mean"] = (float(sum(config["mean"]) / 3),)
        config["std"] = (float(sum(config["std"]) / 3),)
        config["input_size"] = (1, *config["input_size"][1:])
    transform = create_transform(**config, is_training=False)
    transform.transforms.insert(0, ToMode(mode))
    return transform


class PretrainedFeatures(SSLMethod):
    """A backbone used as it is, without a head or training (``stages.pretrain=false``, pretrained baselines):
    export reads ``backbone`` features only."""

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Refused: a backbone used without training has no projection head."""
        raise SSLClusterError("a pretrained backbone used without training has no projection head; use "
                              "export.features=backbone and clustering.features=backbone")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Refused: these features are not trained."""
        raise SSLClusterError("PretrainedFeatures are frozen; pretrain with a method (method=simclr ...)")


def pretrained_features(backbone: nn.Module) -> PretrainedFeatures:
    """``backbone`` wrapped for export, in eval mode."""
    return PretrainedFeatures(backbone).eval()
