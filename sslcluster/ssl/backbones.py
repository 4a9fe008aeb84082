"""Backbones: image tensor (B, C, H, W) -> feature vector (B, out_dim).

Backbones know nothing of the method or the data set; each exposes ``out_dim``.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from sslcluster.errors import SSLClusterError


class TinyCNN(nn.Module):
    """A small convolutional network for tests and the embedded digits default.

    Stages of (conv 3x3, norm, ReLU) ending with a stride-2 conv, then global average pooling.
    ``norm='none'`` gives a network without BatchNorm (used by the exact distributed-equivalence tests).
    """

    def __init__(self, in_channels: int = 3, width: int = 32, depth: int = 3, norm: str = "batch") -> None:
        super().__init__()
        if norm not in ("batch", "none"):
            raise SSLClusterError(f"backbone.norm={norm!r} is not one of batch, none")
        layers: list[nn.Module] = []
        c_in = in_channels
        for d in range(depth):
            c_out = width * 2**d
            for stride in (1, 2):
                layers.append(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=norm == "none"))
                if norm == "batch":
                    layers.append(nn.BatchNorm2d(c_out))
                layers.append(nn.ReLU(inplace=True))
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> pooled features (B, out_dim)."""
        return self.pool(self.features(x)).flatten(1)


_RESNETS = ("resnet18", "resnet34", "resnet50")


class ResNet(nn.Module):
    """torchvision ResNet without its classifier; ``cifar_stem`` swaps the 7x7/2 conv + max-pool for a 3x3/1
    conv (as in SimCLR's CIFAR experiments, Chen et al. 2020, appendix B.9)."""

    def __init__(self, arch: str = "resnet18", cifar_stem: bool = False, in_channels: int = 3) -> None:
        super().__init__()
        if arch not in _RESNETS:
            raise SSLClusterError(f"unknown ResNet {arch!r}; valid: {', '.join(_RESNETS)}")
        net = getattr(torchvision.models, arch)(weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> pooled features (B, out_dim)."""
        return self.net(x)


class ViT(nn.Module):
    """torchvision Vision Transformer (Dosovitskiy et al. 2021) without its classification head.

    ``arch='vit_b_16'`` (or ``vit_b_32``, ``vit_l_16``...) takes torchvision's sizes with ``image_size`` /
    ``patch_size`` set; ``arch='custom'`` builds a smaller :class:`torchvision.models.VisionTransformer` from
    ``num_layers``, ``num_heads``, ``hidden_dim`` and ``mlp_dim`` (e.g. a ViT-Tiny for 32x32 images with 4x4
    patches). Images (B, C, H, W) with ``H == W == image_size`` -> class-token features (B, hidden_dim).
    """

    def __init__(self, arch: str = "vit_b_16", image_size: int = 224, patch_size: int = 16, in_channels: int = 3,
                 num_layers: int = 12, num_heads: int = 12, hidden_dim: int = 768, mlp_dim: int = 3072) -> None:
        super().__init__()
        from torchvision.models.vision_transformer import VisionTransformer

        if image_size % patch_size != 0:
            raise SSLClusterError(f"backbone.image_size={image_size} is not a multiple of "
                                  f"backbone.patch_size={patch_size}")
        if arch == "custom":
            if hidden_dim % num_heads != 0:
                raise SSLClusterError(f"backbone.hidden_dim={hidden_dim} is not a multiple of "
                                      f"backbone.num_heads={num_heads}")
            net = VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=num_layers,
                                    num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim)
        else:
            valid = sorted(n for n in torchvision.models.list_models(torchvision.models) if n.startswith("vit_"))
            if arch not in valid:
                raise SSLClusterError(f"unknown ViT {arch!r}; valid: custom, {', '.join(valid)}")
            # torchvision's builders take the patch size from the name; image_size is free.
            net = getattr(torchvision.models, arch)(weights=None, image_size=image_size)
            patch_size = net.patch_size
        if in_channels != 3:
            hidden = net.conv_proj.out_channels
            net.conv_proj = nn.Conv2d(in_channels, hidden, kernel_size=patch_size, stride=patch_size)
        net.heads = nn.Identity()
        self.image_size = image_size
        self.out_dim = net.hidden_dim
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, image_size, image_size) -> class-token features (B, hidden_dim); other sizes raise."""
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise SSLClusterError(f"ViT built for {self.image_size}x{self.image_size} images got "
                                  f"{x.shape[-2]}x{x.shape[-1]}; set backbone.module.image_size")
        return self.net(x)
