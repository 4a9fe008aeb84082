"""Batched image augmentation with per-sample random parameters, in plain torch, on any device.

The same views as the CPU path (lightly's ``SimCLRTransform`` family on PIL images in DataLoader workers), built
from the same ``augmentation.views`` config node (:func:`from_views_config`), but applied to a whole batch of
uint8 images (B, C, H, W) already on the device, with every random choice drawn per sample:

- RandomResizedCrop: torchvision's ``RandomResizedCrop.get_params`` semantics (area uniform in ``scale``, aspect
  ratio log-uniform in ``ratio``, 10 attempts, integer boxes, the same centre-crop fallback), then a bilinear
  resize of each integer box (half-pixel centres, edge-clamped inside the box: crop-then-resize).
- horizontal / vertical flip, rotation by 90 degrees with probability or by a uniform angle (nearest, fill 0).
- colour jitter with probability: brightness, contrast, saturation factors uniform in [max(0, 1-s), 1+s], hue
  shift uniform in [-h, h], applied in an independent random order per sample, clamped to [0, 1] after each op;
  contrast blends towards the mean of the grayscale image, saturation towards the grayscale image
  (torchvision's ``ColorJitter``).
- grayscale (ITU-R 601 luma, 3 channels kept), Gaussian blur (sigma uniform in ``sigmas``, kernel radius
  ceil(3 sigma) as PIL's ``GaussianBlur(radius=sigma)`` that lightly uses), solarisation (pixels >= 128/255
  inverted, as PIL's ``ImageOps.solarize``), normalisation.
- rotation for RotNet: :func:`rotate_quarter_turns` / :func:`random_quarter_turns` (0/90/180/270, per sample).
- for a torchvision ``Compose`` (e.g. the rotation method's views): Resize, RandomCrop with integer padding
  (constant / reflect / edge), and the ops above.

A view draws all its randomness in one ``torch.rand`` call (B, DRAWS); the rest is a pure function of the images
and those uniforms (:meth:`GPUViewTransform.apply`), which ``torch.compile`` fuses into a few kernels
(``trainer.speed.compile``).

Why this is written by hand: on a fast GPU, lightly's CPU pipeline and kornia's GPU augmentation feed the model
far fewer images per second than it trains on, and plain batched torch ops do not (benchmarks/RESULTS.md).
No well-kept library gives per-sample parameters with torchvision's sampling semantics at that speed, so the few
ops above are implemented here with no per-image Python loop: every op is a handful of batched kernels, and
per-sample choices are masks (``torch.where``), so there are no host-device synchronisations on the hot path.
"""

from __future__ import annotations

import importlib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from sslcluster.errors import SSLClusterError

#: ITU-R 601-2 luma weights, as torchvision's ``rgb_to_grayscale`` (and PIL's ``convert('L')``).
LUMA = (0.2989, 0.587, 0.114)

#: Colour-jitter op ids, as torchvision's ``ColorJitter.get_params`` ``fn_idx``.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def _rand(shape: Sequence[int], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(*shape, device=device, generator=generator)


def _per_sample(mask: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) for broadcasting over images (B, C, H, W)."""
    return mask.view(-1, 1, 1, 1)


def to_8bit(images: torch.Tensor) -> torch.Tensor:
    """Round images in [0, 1] to the nearest of the 256 levels of an 8-bit image (as PIL stores every
    intermediate result of lightly's pipeline)."""
    return torch.round(images.clamp(0.0, 1.0) * 255.0) / 255.0


# -- random resized crop -------------------------------------------------------------------------------------

CROP_ATTEMPTS = 10


def sample_crop_params(n: int, height: int, width: int, scale: tuple[float, float] = (0.08, 1.0),
                       ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = CROP_ATTEMPTS,
                       device: torch.device | str = "cpu", generator: torch.Generator | None = None,
                       log_uniform_ratio: bool = True) -> torch.Tensor:
    """Crop boxes of torchvision's ``RandomResizedCrop.get_params``, for n samples at once.

    Each sample makes ``attempts`` draws of (area fraction uniform in ``scale``, aspect ratio log-uniform in
    ``ratio``), rounds w = sqrt(area * r), h = sqrt(area / r) to integers and keeps the first draw that fits,
    with its top-left corner uniform over the valid positions; when none fits, the whole image clipped to the
    ratio range, centred. ``log_uniform_ratio=False`` draws the ratio uniformly instead (a deliberately wrong
    variant, used by the fidelity tests to show that they detect it).

    Returns:
        (n, 4) int64: top, left, h, w.
    """
    u = _rand((n, 2 * attempts + 2), torch.device(device), generator)
    return crop_params_from_uniform(u, height, width, scale, ratio, log_uniform_ratio)


def crop_params_from_uniform(u: torch.Tensor, height: int | torch.Tensor, width: int | torch.Tensor,
                             scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                             log_uniform_ratio: bool = True) -> torch.Tensor:
    """:func:`sample_crop_params` from given uniforms u (n, 2 * attempts + 2) in [0, 1): area draws, ratio
    draws, then the two position draws. ``height`` / ``width`` are one size for all samples or each sample's
    own (n,) integer tensors (images of mixed sizes stored in one padded batch). No random state is touched
    (so it can be compiled)."""
    attempts = (u.shape[1] - 2) // 2
    u = u.double()
    hh = torch.as_tensor(height, device=u.device).double().reshape(-1, 1).expand(u.shape[0], 1)
    ww = torch.as_tensor(width, device=u.device).double().reshape(-1, 1).expand(u.shape[0], 1)
    target = hh * ww * (scale[0] + (scale[1] - scale[0]) * u[:, :attempts])
    ur = u[:, attempts:2 * attempts]
    if log_uniform_ratio:
        lo, hi = math.log(ratio[0]), math.log(ratio[1])
        aspect = torch.exp(lo + (hi - lo) * ur)
    else:
        aspect = ratio[0] + (ratio[1] - ratio[0]) * ur
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= ww) & (h > 0) & (h <= hh)
    first = torch.argmax(ok.int(), dim=1, keepdim=True)  # first fitting attempt (0 when none fits)
    any_ok = ok.any(dim=1)
    w = torch.gather(w, 1, first).squeeze(1)
    h = torch.gather(h, 1, first).squeeze(1)
    hh, ww = hh.squeeze(1), ww.squeeze(1)
    # fallback: the whole image, clipped to the ratio range, centred
    in_ratio = ww / hh
    lo_r, hi_r = min(ratio), max(ratio)
    fw = torch.where(in_ratio > hi_r, torch.round(hh * hi_r), ww)
    fh = torch.where(in_ratio < lo_r, torch.round(ww / lo_r), hh)
    w = torch.where(any_ok, w, fw)
    h = torch.where(any_ok, h, fh)
    pos = u[:, 2 * attempts:2 * attempts + 2]
    top = torch.minimum(torch.floor(pos[:, 0] * (hh - h + 1)), hh - 1)
    left = torch.minimum(torch.floor(pos[:, 1] * (ww - w + 1)), ww - 1)
    top = torch.where(any_ok, top, torch.div(hh - fh, 2, rounding_mode="floor"))
    left = torch.where(any_ok, left, torch.div(ww - fw, 2, rounding_mode="floor"))
    top = torch.minimum(top, hh - h)
    left = torch.minimum(left, ww - w)
    return torch.stack([top, left, h, w], dim=1).long()


def resize_weights(start: torch.Tensor, length: torch.Tensor, out: int, src: int,
                   antialias: bool = True, interpolation: str = "bilinear") -> torch.Tensor:
    """Interpolation matrices of PIL's bilinear (or bicubic) resize of the pixel range [start, start + length) of
    an axis of ``src`` pixels to ``out`` pixels, one per sample (written by hand: a per-sample crop box within a
    padded batch has no library equivalent).

    As PIL's ``Image.resize(..., BILINEAR)`` (and ``F.interpolate(..., antialias=True)``): output pixel i is
    centred at start + (i + 0.5) * scale (scale = length / out), its weights a triangle of half-width
    max(scale, 1) in source pixels (wider than one pixel when downscaling: the antialiasing), restricted to
    the range and normalised. ``interpolation="bicubic"``: PIL's BICUBIC filter instead of the triangle (Keys'
    cubic with a = -0.5, support 2, stretched by max(scale, 1) the same way; DINO's crops). ``antialias=False``
    keeps the stretch at 1 pixel (plain sampling, which aliases when downscaling; a deliberately wrong variant
    for the tests).

    Args:
        start, length: (B,) the range of each sample, in pixels.
    Returns:
        (B, out, src) float32 weights; rows sum to 1, zero outside each sample's range.
    """
    start = start.to(torch.float32).view(-1, 1, 1)
    length = length.to(torch.float32).view(-1, 1, 1)
    scale = length / out
    support = scale.clamp(min=1.0) if antialias else torch.ones_like(scale)
    i = torch.arange(out, device=start.device, dtype=torch.float32).view(1, -1, 1)
    j = torch.arange(src, device=start.device, dtype=torch.float32).view(1, 1, -1) + 0.5  # source pixel centres
    centre = start + (i + 0.5) * scale
    d = ((j - centre) / support).abs()
    if interpolation == "bicubic":
        a = -0.5  # PIL's bicubic_filter
        w = torch.where(d < 1.0, ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0,
                        torch.where(d < 2.0, (((d - 5.0) * d + 8.0) * d - 4.0) * a, torch.zeros_like(d)))
    elif interpolation == "bilinear":
        w = (1.0 - d).clamp(min=0.0)
    else:
        raise SSLClusterError(f"interpolation {interpolation!r}: the GPU path has bilinear and bicubic")
    w = w * ((j > start) & (j < start + length)).to(w.dtype)
    return w / w.sum(dim=2, keepdim=True).clamp(min=1e-12)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int],
                 antialias: bool = True, interpolation: str = "bilinear") -> torch.Tensor:
    """Crop each image to its integer box and resize it as PIL's bilinear resize does (antialiased when
    downscaling, as lightly's ``RandomResizedCrop`` on a PIL image; equal to cropping then
    ``F.interpolate(..., mode='bilinear', antialias=True)``): two batched matrix products with
    :func:`resize_weights` (rows, then columns). Pixels outside the box (e.g. the padding of a smaller image
    in a padded batch) are never read.

    Args:
        images: (B, C, H, W) float.
        boxes: (B, 4) int64 top, left, h, w.
        size: output side, or (out_h, out_w).
        antialias: False: plain bilinear sampling (aliases when downscaling; the tests' wrong variant).
        interpolation: "bilinear" or "bicubic" (PIL's filters; bicubic overshoots, and is clipped to [0, 1]
            after each pass as PIL clips its 8-bit intermediate image).
    Returns:
        (B, C, out_h, out_w) float.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    _, _, height, width = images.shape
    b = boxes.to(images.device)
    wy = resize_weights(b[:, 0], b[:, 2], out_h, height, antialias, interpolation).to(images.dtype)  # (B, out_h, H)
    wx = resize_weights(b[:, 1], b[:, 3], out_w, width, antialias, interpolation).to(images.dtype)   # (B, out_w, W)
    x = torch.matmul(images, wx.transpose(1, 2).unsqueeze(1))  # (B, C, H, out_w): PIL's horizontal pass first
    if interpolation == "bicubic":
        x = x.clamp(0.0, 1.0)
    x = torch.matmul(wy.unsqueeze(1), x)  # (B, C, out_h, out_w)
    return x.clamp(0.0, 1.0) if interpolation == "bicubic" else x


# -- geometry ------------------------------------------------------------------------------------------------

def flip(images: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Flip along ``dim`` (3: horizontal, 2: vertical) the images (B, C, H, W) where ``mask`` (B,) is True."""
    return torch.where(_per_sample(mask), images.flip(dim), images)


def rotate_quarter_turns(images: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each square image (B, C, S, S) counter-clockwise by k[b] * 90 degrees (k (B,) int in 0..3)."""
    if images.shape[-1] != images.shape[-2]:
        raise SSLClusterError("quarter-turn rotation needs square images")
    k = k.remainder(4)
    out = images
    for turns in (1, 2, 3):
        out = torch.where(_per_sample(k == turns), torch.rot90(images, turns, dims=(2, 3)), out)
    return out


def random_quarter_turns(images: torch.Tensor, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """RotNet's pretext task: each image (B, C, S, S) turned by a uniform k in {0, 1, 2, 3} quarter turns.

    Returns:
        rotated images (B, C, S, S) and the labels k (B,) int64.
    """
    k = torch.randint(0, 4, (images.shape[0],), device=images.device, generator=generator)
    return rotate_quarter_turns(images, k), k


def rotate_degrees(images: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate each image (B, C, H, W) counter-clockwise by ``angle`` (B,) degrees about its centre, nearest
    neighbour, corners filled with 0, size kept (torchvision's ``RandomRotation`` defaults)."""
    _, _, height, width = images.shape
    a = angle.to(images.device, torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(a), torch.sin(a)
    # output (x, y) in pixels about the centre -> input pixels: rotate by -angle on screen (y down)
    theta = torch.zeros(images.shape[0], 2, 3, device=images.device, dtype=torch.float32)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * height / width
    theta[:, 1, 0] = sin * width / height
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


# -- colour --------------------------------------------------------------------------------------------------

def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma (B, 1, H, W) of RGB images (B, 3, H, W); a 1-channel image is returned as it is."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) HSV, each in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = images.unbind(1)
    maxc, _ = images.max(dim=1)
    minc, _ = images.min(dim=1)
    chroma = maxc - minc
    sat = chroma / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    hue = (hue / 6.0).remainder(1.0)
    return torch.stack([hue, sat, maxc], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) HSV in [0, 1] -> (B, 3, H, W) RGB in [0, 1].

    Channel n (R: 5, G: 3, B: 1) is v - v s clamp(min(k, 4 - k), 0, 1) with k = (n + 6 h) mod 6: the six-sector
    formula without a lookup table (no per-call host-to-device copy, element-wise only, so it fuses).
    """
    h, s, v = hsv.unbind(1)
    offsets = torch.arange(5, 0, -2, device=hsv.device, dtype=hsv.dtype).view(1, 3, 1, 1)  # 5, 3, 1
    k = (offsets + 6.0 * h.unsqueeze(1)).remainder(6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return v.unsqueeze(1) * (1.0 - s.unsqueeze(1) * ramp)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor, quantize: bool = False) -> torch.Tensor:
    """Rotate the hue of RGB images (B, 3, H, W) by ``shift`` (B,) turns (in [-0.5, 0.5]).

    ``quantize``: as torchvision's ``adjust_hue`` on a PIL image (what lightly runs): the image goes to 8-bit
    HSV (hue and saturation truncated to 0..255, as PIL's ``convert('HSV')``), the hue byte is shifted by
    trunc(255 shift) modulo 256, and the result goes back to 8-bit RGB.
    """
    hsv = rgb_to_hsv(images)
    if quantize:
        h8 = torch.floor(hsv[:, 0] * 255.0 + 1e-4).clamp(0, 255)
        s8 = torch.floor(hsv[:, 1] * 255.0 + 1e-4).clamp(0, 255)
        h8 = (h8 + torch.trunc(shift * 255.0).view(-1, 1, 1)).remainder(256.0)
        hsv = torch.stack([(h8 / 255.0).remainder(1.0), s8 / 255.0, hsv[:, 2]], dim=1)
        return to_8bit(hsv_to_rgb(hsv))
    hue = (hsv[:, 0] + shift.view(-1, 1, 1)).remainder(1.0)
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)).clamp(0.0, 1.0)


@dataclass
class JitterParams:
    """Per-sample colour-jitter parameters, each (B,): factors, hue shift, the op order (B, 4), applied mask."""

    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    order: torch.Tensor
    applied: torch.Tensor


JITTER_DRAWS = 9


def sample_jitter_params(n: int, brightness: float, contrast: float, saturation: float, hue: float, prob: float,
                         device: torch.device | str = "cpu", generator: torch.Generator | None = None,
                         random_order: bool = True) -> JitterParams:
    """torchvision's ``ColorJitter.get_params`` for n samples: factors uniform in [max(0, 1-s), 1+s], hue shift
    uniform in [-h, h], a uniform random permutation of the four ops per sample; applied with probability
    ``prob`` (``RandomApply``). ``random_order=False`` (a deliberately wrong variant, for the fidelity tests)
    applies brightness, contrast, saturation, hue always in that order."""
    u = _rand((n, JITTER_DRAWS), torch.device(device), generator)
    return jitter_params_from_uniform(u, brightness, contrast, saturation, hue, prob, random_order)


def jitter_params_from_uniform(u: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float,
                               prob: float, random_order: bool = True) -> JitterParams:
    """:func:`sample_jitter_params` from given uniforms u (n, 9): four factors, four order keys, applied."""

    def factor(col: torch.Tensor, s: float) -> torch.Tensor:
        lo, hi = max(0.0, 1.0 - s), 1.0 + s
        return lo + (hi - lo) * col

    n = u.shape[0]
    if random_order:
        order = torch.argsort(u[:, 4:8], dim=1)  # the ranks of 4 i.i.d. uniforms: a uniform permutation
    else:
        order = torch.arange(4, device=u.device).expand(n, 4)
    return JitterParams(brightness=factor(u[:, 0], brightness), contrast=factor(u[:, 1], contrast),
                        saturation=factor(u[:, 2], saturation), hue=-hue + 2 * hue * u[:, 3], order=order,
                        applied=u[:, 8] < prob)


def color_jitter(images: torch.Tensor, params: JitterParams, quantize: bool = False) -> torch.Tensor:
    """Apply per-sample colour jitter to images (B, C, H, W) in [0, 1].

    At each of the four positions every sample applies the op its permutation puts there. Brightness, contrast
    and saturation are all ``clamp(f * x + (1 - f) * ref)`` with ref = 0, the grayscale mean, or the grayscale
    image, so one blend serves all three (factor 1 where another op or no jitter is due: exact identity); the
    hue rotation is computed for the batch and kept where due. 1-channel images get brightness and contrast only.

    ``quantize``: each op in 8 bits as PIL's ``ImageEnhance`` (what lightly runs): the reference is the rounded
    luma image (saturation) or its mean rounded to an integer level (contrast), and each blend is truncated to
    an integer level (PIL's ``Image.blend``); images are expected on the 8-bit grid already.
    """
    applied = params.applied
    rgb = images.shape[1] == 3
    x = images
    for pos in range(4):
        op = params.order[:, pos]
        f = torch.ones_like(params.brightness)
        f = torch.where(op == BRIGHTNESS, params.brightness, f)
        f = torch.where(op == CONTRAST, params.contrast, f)
        if rgb:
            f = torch.where(op == SATURATION, params.saturation, f)
        f = torch.where(applied, f, torch.ones_like(f))
        gray = grayscale(x)
        if quantize:
            gray = to_8bit(gray)
            mean = torch.floor(gray.mean(dim=(1, 2, 3), keepdim=True) * 255.0 + 0.5) / 255.0
        else:
            mean = gray.mean(dim=(1, 2, 3), keepdim=True)
        ref = torch.where(_per_sample(op == CONTRAST), mean, gray)
        ref = torch.where(_per_sample(op == BRIGHTNESS), torch.zeros_like(ref), ref)
        fb = _per_sample(f)
        if quantize:  # in 0..255 units, float32 like PIL's blend, truncated; identity stays exact
            ref8, x8 = ref * 255.0, torch.round(x * 255.0)
            x = (torch.floor(ref8 + fb * (x8 - ref8) + 1e-4).clamp(0.0, 255.0)) / 255.0
        else:
            x = (fb * x + (1.0 - fb) * ref).clamp(0.0, 1.0)
        if rgb:
            due = applied & (op == HUE) & (params.hue != 0)
            x = torch.where(_per_sample(due), adjust_hue(x, params.hue, quantize), x)
    return x


def random_grayscale(images: torch.Tensor, mask: torch.Tensor, quantize: bool = False) -> torch.Tensor:
    """Replace images (B, 3, H, W) by their luma on all channels where ``mask`` (B,) is True (rounded to 8 bits
    with ``quantize``, as PIL's ``convert('L')``)."""
    if images.shape[1] == 1:
        return images
    gray = to_8bit(grayscale(images)) if quantize else grayscale(images)
    return torch.where(_per_sample(mask), gray.expand_as(images), images)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor,
                  max_sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample ``sigma`` (B,) where ``mask`` (B,) is True; edges replicated.

    The kernel radius is ceil(3 * max_sigma) for the whole batch (PIL's support for ``radius=sigma``; pass the
    top of the sigma range to avoid reading ``sigma.max()`` back from the device), the weights of each sample
    its own normalised Gaussian.
    """
    b, c, height, width = images.shape
    top = float(sigma.max()) if max_sigma is None and sigma.numel() else (max_sigma or 0.0)
    radius = int(math.ceil(3.0 * top))
    radius = max(1, min(radius, height - 1, width - 1))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    s = sigma.to(images.device, torch.float32).clamp(min=1e-3).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / s) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K)
    kernel = kernel.repeat_interleave(c, dim=0)  # (B*C, K)
    x = images.reshape(1, b * c, height, width)
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(b * c, 1, 1, -1), groups=b * c)
    x = F.conv2d(x, kernel.view(b * c, 1, -1, 1), groups=b * c)
    return torch.where(_per_sample(mask), x.view(b, c, height, width), images)


def solarize(images: torch.Tensor, mask: torch.Tensor, threshold: float = 128 / 255) -> torch.Tensor:
    """Invert the pixels >= ``threshold`` of images (B, C, H, W) in [0, 1] where ``mask`` (B,) is True."""
    inverted = torch.where(images >= threshold - 1e-6, 1.0 - images, images)
    return torch.where(_per_sample(mask), inverted, images)


# -- one view, many views --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ViewSpec:
    """The parameters of one view, with lightly's names (``cj_*`` already multiplied by ``cj_strength``)."""

    input_size: int = 224
    min_scale: float = 0.08
    max_scale: float = 1.0
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hf_prob: float = 0.5
    vf_prob: float = 0.0
    rr_prob: float = 0.0
    rr_degrees: tuple[float, float] | None = None
    cj_prob: float = 0.8
    cj_bright: float = 0.8
    cj_contrast: float = 0.8
    cj_sat: float = 0.8
    cj_hue: float = 0.2
    random_gray_scale: float = 0.2
    gaussian_blur: float = 0.5
    sigmas: tuple[float, float] = (0.1, 2.0)
    solarization_prob: float = 0.0
    normalize: dict[str, list[float]] | None = field(default=None)
    #: "resized" (RandomResizedCrop), "pad" (torchvision RandomCrop with ``pad`` pixels of ``pad_mode`` padding),
    #: or "none" (the image as it is, resized to ``input_size`` if needed)
    crop: str = "resized"
    pad: int = 0
    pad_mode: str = "constant"
    #: rotation before the flips (lightly before 1.6, whose pull request 1865 moved it after them); read from the
    #: installed lightly's own Compose by :func:`lightly_rotates_first`
    rotate_first: bool = False
    #: the crop's resize filter: "bilinear" (torchvision's default) or "bicubic" (lightly's DINO views)
    interpolation: str = "bilinear"


class GPUViewTransform(torch.nn.Module):
    """One augmented view of a batch, in lightly's order: crop, flips and rotation (in the installed lightly's
    order, ``spec.rotate_first``), colour jitter, grayscale, blur, solarisation, normalisation.

    ``quantize`` rounds to 8 bits after each op, as PIL does in lightly's pipeline (``augmentation.quantize``).
    Variants (``log_uniform_ratio``, ``random_jitter_order``, ``antialias``) exist only to show that the
    fidelity tests catch them."""

    def __init__(self, spec: ViewSpec, log_uniform_ratio: bool = True, random_jitter_order: bool = True,
                 quantize: bool = False, antialias: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.log_uniform_ratio = log_uniform_ratio
        self.random_jitter_order = random_jitter_order
        self.quantize = quantize
        self.antialias = antialias
        norm = spec.normalize
        self.register_buffer("mean", torch.tensor(norm["mean"]).view(1, -1, 1, 1) if norm else torch.zeros(0),
                             persistent=False)
        self.register_buffer("std", torch.tensor(norm["std"]).view(1, -1, 1, 1) if norm else torch.zeros(0),
                             persistent=False)

    #: uniforms per sample: crop (2 * attempts + 2), flips 2, rotation 2, jitter 9, gray 1, blur 2, solarise 1
    DRAWS = 2 * CROP_ATTEMPTS + 2 + 2 + 2 + JITTER_DRAWS + 1 + 2 + 1

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None,
                params: dict[str, Any] | None = None, sizes: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            images: (B, C, H, W) uint8 (0..255) or float in [0, 1], on any device.
            generator: random generator on that device (default: torch's global one, seeded by the run).
            params: if a dict is given, the sampled parameters are stored into it (for tests and inspection).
            sizes: (B, 2) int64 (h, w): each image's own size at the top-left of its padded (H, W) slot
                (the device cache of images of mixed sizes); None: every image fills (H, W).
        Returns:
            (B, C, input_size, input_size) float32, normalised if ``normalize`` is set.

        All randomness is one ``torch.rand`` call (B, DRAWS); the rest is :meth:`apply`, a pure function of the
        images and those uniforms (compiled by :meth:`compile_apply`).
        """
        u = torch.rand(images.shape[0], self.DRAWS, device=images.device, generator=generator)
        if params is not None:
            return self.apply(images, u, params, sizes)
        return self._view_fn(images, u, sizes)

    def compile_apply(self, **kwargs: Any) -> "GPUViewTransform":
        """Fuse :meth:`apply` with ``torch.compile`` (hundreds of small element-wise kernels become a few)."""
        compiled = torch.compile(self.apply, dynamic=False, **kwargs)
        self._view_fn = lambda images, u, sizes=None: compiled(images, u, None, sizes)  # type: ignore[method-assign]
        return self

    def _view_fn(self, images: torch.Tensor, u: torch.Tensor, sizes: torch.Tensor | None = None
                 ) -> torch.Tensor:  # replaced by compile_apply
        return self.apply(images, u, None, sizes)

    def apply(self, images: torch.Tensor, u: torch.Tensor, params: dict[str, Any] | None = None,
              sizes: torch.Tensor | None = None) -> torch.Tensor:
        """The view of images (B, C, H, W) for given uniforms u (B, DRAWS); ``sizes`` as in :meth:`forward`."""
        s = self.spec
        q = self.quantize
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        _, _, height, width = x.shape
        if sizes is None:
            hs = torch.full((x.shape[0],), height, dtype=torch.long, device=x.device)
            ws = torch.full((x.shape[0],), width, dtype=torch.long, device=x.device)
        else:
            hs, ws = sizes[:, 0].to(x.device), sizes[:, 1].to(x.device)
        k = 2 * CROP_ATTEMPTS + 2
        if s.crop == "resized":
            boxes = crop_params_from_uniform(u[:, :k], hs, ws, (s.min_scale, s.max_scale), s.ratio,
                                             self.log_uniform_ratio)
            x = resized_crop(x, boxes, s.input_size, self.antialias, s.interpolation)
            if q:
                x = to_8bit(x)
        else:
            if sizes is not None or (height, width) != (s.input_size, s.input_size):
                # Resize(size) then a crop of the output side: the centred square of each image, resized
                # (a non-square image's random offset along its long side is not drawn)
                side = torch.minimum(hs, ws)
                centre = torch.stack([(hs - side) // 2, (ws - side) // 2, side, side], dim=1)
                x = resized_crop(x, centre, s.input_size, self.antialias).clamp(0.0, 1.0)
                if q:
                    x = to_8bit(x)
            boxes = torch.zeros(x.shape[0], 4, dtype=torch.long, device=x.device)
            boxes[:, 2:] = s.input_size
            if s.crop == "pad" and s.pad > 0:
                mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[s.pad_mode]
                x = F.pad(x, (s.pad, s.pad, s.pad, s.pad), mode=mode)
                offsets = torch.floor(u[:, 2 * CROP_ATTEMPTS:k].double() * (2 * s.pad + 1)).long()
                boxes[:, :2] = offsets.clamp(max=2 * s.pad)
                x = resized_crop(x, boxes, s.input_size)  # integer boxes of the output size: a pure crop
        hflip, vflip = u[:, k] < s.hf_prob, u[:, k + 1] < s.vf_prob
        rotate = u[:, k + 2] < s.rr_prob

        def rotation(x: torch.Tensor) -> torch.Tensor:
            if s.rr_prob <= 0:
                return x
            if s.rr_degrees is None:
                return rotate_quarter_turns(x, rotate.long())
            angle = s.rr_degrees[0] + (s.rr_degrees[1] - s.rr_degrees[0]) * u[:, k + 3]
            return torch.where(_per_sample(rotate), rotate_degrees(x, angle), x)

        if s.rotate_first:
            x = rotation(x)
        x = flip(x, hflip, 3)
        x = flip(x, vflip, 2)
        if not s.rotate_first:
            x = rotation(x)
        k += 4
        jitter = jitter_params_from_uniform(u[:, k:k + JITTER_DRAWS], s.cj_bright, s.cj_contrast, s.cj_sat,
                                            s.cj_hue, s.cj_prob, self.random_jitter_order)
        k += JITTER_DRAWS
        if s.cj_prob > 0:
            x = color_jitter(x, jitter, q)
        gray = u[:, k] < s.random_gray_scale
        if s.random_gray_scale > 0:
            x = random_grayscale(x, gray, q)
        blur = u[:, k + 1] < s.gaussian_blur
        if s.gaussian_blur > 0:
            sigma = s.sigmas[0] + (s.sigmas[1] - s.sigmas[0]) * u[:, k + 2]
            x = gaussian_blur(x, sigma, blur, max_sigma=s.sigmas[1])
            if q:
                x = to_8bit(x)
        sol = u[:, k + 3] < s.solarization_prob
        if s.solarization_prob > 0:
            x = solarize(x, sol)
        if self.mean.numel():
            x = (x - self.mean) / self.std
        if params is not None:
            params.update(boxes=boxes, hflip=hflip, vflip=vflip, rotate=rotate, jitter=jitter, gray=gray,
                          blur=blur, solarize=sol)
        return x


class GPUMultiViewTransform(torch.nn.Module):
    """Several views of one batch: uint8 (B, C, H, W) -> list of (B, C, S, S) float, one per view.

    Views with identical settings (SimCLR's and MoCo's two views) are drawn in one call on the batch repeated
    (n B images, every sample with its own uniforms): one set of kernels and, under ``torch.compile``, one compiled
    graph instead of one per view. The result is the same in distribution as calling each view on its own.
    """

    def __init__(self, views: Sequence[GPUViewTransform]) -> None:
        super().__init__()
        self.views = torch.nn.ModuleList(views)
        #: lists of view positions that share one call (same spec and variant flags), in first-seen order
        self.groups: list[list[int]] = []
        for i, view in enumerate(views):
            for group in self.groups:
                first = views[group[0]]
                if (first.spec, first.log_uniform_ratio, first.random_jitter_order, first.quantize,
                        first.antialias) == (view.spec, view.log_uniform_ratio, view.random_jitter_order,
                                             view.quantize, view.antialias):
                    group.append(i)
                    break
            else:
                self.groups.append([i])

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None,
                sizes: torch.Tensor | None = None) -> list[torch.Tensor]:
        """images (B, C, H, W) uint8, ``sizes`` (B, 2) each image's own (h, w) in its padded slot or None."""
        out: list[torch.Tensor | None] = [None] * len(self.views)
        for group in self.groups:
            view = self.views[group[0]]
            if len(group) == 1:
                out[group[0]] = view(images, generator, sizes=sizes)
                continue
            batch = images.repeat(len(group), *([1] * (images.dim() - 1)))  # (n B, C, H, W)
            rep_sizes = None if sizes is None else sizes.repeat(len(group), 1)
            for pos, chunk in zip(group, view(batch, generator, sizes=rep_sizes).chunk(len(group))):
                out[pos] = chunk
        return out  # type: ignore[return-value]

    def compile_apply(self, **kwargs: Any) -> "GPUMultiViewTransform":
        """``torch.compile`` the pure part of each distinct view (see :meth:`GPUViewTransform.compile_apply`)."""
        for group in self.groups:
            self.views[group[0]].compile_apply(**kwargs)
        return self


# -- from the config that drives the CPU path ------------------------------------------------------------------

_SIMCLR_FAMILY = ("SimCLRTransform", "SimCLRViewTransform", "MoCoV1Transform", "MoCoV2Transform")
_BYOL_VIEWS = ("BYOLView1Transform", "BYOLView2Transform")


def _resolve(target: str) -> type:
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise SSLClusterError(f"augmentation.views: cannot import {target}") from None


def lightly_rotates_first(view_cls: type) -> bool:
    """Whether the installed lightly's view transform ``view_cls`` (e.g. ``SimCLRViewTransform``) rotates
    before it flips: read from the order of its own ``Compose`` (lightly changed it in version 1.6)."""
    names = [type(t).__name__ for t in view_cls(rr_prob=0.5).transform.transforms]
    rot = [i for i, n in enumerate(names) if "Rotat" in n]
    flips = [i for i, n in enumerate(names) if n in ("RandomHorizontalFlip", "RandomVerticalFlip")]
    return bool(rot and flips and rot[0] < flips[0])


def _view_class(cls: type) -> type:
    """The single-view lightly class whose Compose ``cls`` applies (SimCLR / MoCo: ``SimCLRViewTransform``)."""
    if cls.__name__ in _BYOL_VIEWS or cls.__name__ == "SimCLRViewTransform":
        return cls
    from lightly.transforms.simclr_transform import SimCLRViewTransform

    return SimCLRViewTransform


def _spec_from_kwargs(cls: type, kwargs: dict[str, Any]) -> ViewSpec:
    """A :class:`ViewSpec` from a lightly view class's own defaults overridden by ``kwargs``."""
    sig = inspect.signature(cls)  # the constructor's parameters
    args = {k: p.default for k, p in sig.parameters.items()
            if k != "self" and p.default is not inspect.Parameter.empty}
    unknown = set(kwargs) - set(args)
    if unknown:
        raise SSLClusterError(f"augmentation.views: {cls.__name__} has no parameter(s) {', '.join(sorted(unknown))}")
    args.update(kwargs)
    supported = {"input_size", "cj_prob", "cj_strength", "cj_bright", "cj_contrast", "cj_sat", "cj_hue",
                 "min_scale", "random_gray_scale", "gaussian_blur", "sigmas", "vf_prob", "hf_prob", "rr_prob",
                 "rr_degrees", "normalize", "solarization_prob", "kernel_size", "scale"}
    extra = set(args) - supported
    if extra:
        raise SSLClusterError(f"augmentation.views: {cls.__name__} parameter(s) {', '.join(sorted(extra))} "
                              "have no GPU equivalent; use data.pipeline=cpu")
    strength = float(args.get("cj_strength", 1.0))
    rr = args.get("rr_degrees")
    if rr is not None:
        rr = (-float(rr), float(rr)) if isinstance(rr, (int, float)) else (float(rr[0]), float(rr[1]))
    norm = args.get("normalize")
    size = args["input_size"]
    if not isinstance(size, int):
        raise SSLClusterError(f"augmentation.views.input_size={size!r}: the GPU path needs one integer side")
    return ViewSpec(input_size=size, min_scale=float(args["min_scale"]), hf_prob=float(args["hf_prob"]),
                    vf_prob=float(args["vf_prob"]), rr_prob=float(args["rr_prob"]), rr_degrees=rr,
                    cj_prob=float(args["cj_prob"]), cj_bright=strength * float(args["cj_bright"]),
                    cj_contrast=strength * float(args["cj_contrast"]), cj_sat=strength * float(args["cj_sat"]),
                    cj_hue=strength * float(args["cj_hue"]), random_gray_scale=float(args["random_gray_scale"]),
                    gaussian_blur=float(args["gaussian_blur"]),
                    sigmas=(float(args["sigmas"][0]), float(args["sigmas"][1])),
                    solarization_prob=float(args.get("solarization_prob", 0.0)),
                    normalize={"mean": list(norm["mean"]), "std": list(norm["std"])} if norm else None,
                    rotate_first=lightly_rotates_first(_view_class(cls)))


# torchvision transforms understood inside a Compose, in the order the GPU view applies them
_COMPOSE_RANK = {"Resize": 0, "RandomResizedCrop": 1, "RandomCrop": 1,
                 "RandomHorizontalFlip": 2, "RandomVerticalFlip": 3, "RandomApply": 4, "ColorJitter": 4,
                 "RandomGrayscale": 5, "ToTensor": 6, "PILToTensor": 6, "ToImage": 6, "Normalize": 7}


def _spec_from_compose(items: Sequence[Any]) -> ViewSpec:
    """A :class:`ViewSpec` from a torchvision ``Compose`` list of ``_target_`` nodes (the subset above, in that
    order); anything else raises :class:`SSLClusterError`."""
    spec: dict[str, Any] = dict(crop="none", min_scale=1.0, hf_prob=0.0, vf_prob=0.0, cj_prob=0.0, cj_bright=0.0,
                                cj_contrast=0.0, cj_sat=0.0, cj_hue=0.0, random_gray_scale=0.0, gaussian_blur=0.0,
                                normalize=None)
    size: int | None = None
    last = -1

    def jitter_args(node: dict[str, Any]) -> dict[str, float]:
        out = {}
        for key, name in (("brightness", "cj_bright"), ("contrast", "cj_contrast"), ("saturation", "cj_sat"),
                          ("hue", "cj_hue")):
            v = node.get(key, 0) or 0
            if not isinstance(v, (int, float)):
                raise SSLClusterError(f"augmentation.views: ColorJitter {key}={v!r}: only a single number has a "
                                      "GPU equivalent")
            out[name] = float(v)
        return out

    for item in items:
        node = dict(item)
        name = str(node.pop("_target_", "")).rpartition(".")[2]
        if name not in _COMPOSE_RANK:
            raise SSLClusterError(f"augmentation.views: {name or item!r} in a Compose has no GPU equivalent; "
                                  "use data.pipeline=cpu")
        if _COMPOSE_RANK[name] < last:
            raise SSLClusterError(f"augmentation.views: {name} comes after a transform the GPU view applies "
                                  "later; use data.pipeline=cpu")
        last = _COMPOSE_RANK[name]
        if name in ("Resize", "RandomResizedCrop", "RandomCrop"):
            sz = node.get("size")
            sz = sz[0] if isinstance(sz, (list, tuple)) and len(sz) == 1 else sz
            if not isinstance(sz, int):
                raise SSLClusterError(f"augmentation.views: {name} size={sz!r}: the GPU path needs one side")
            size = sz
        if name == "RandomResizedCrop":
            scale = node.get("scale", (0.08, 1.0))
            spec.update(crop="resized", min_scale=float(scale[0]), max_scale=float(scale[1]),
                        ratio=tuple(float(r) for r in node.get("ratio", (3 / 4, 4 / 3))))
        elif name == "RandomCrop":
            pad = node.get("padding") or 0
            if not isinstance(pad, int) or node.get("pad_if_needed"):
                raise SSLClusterError(f"augmentation.views: RandomCrop padding={pad!r}: only one integer")
            spec.update(crop="pad", pad=pad, pad_mode=str(node.get("padding_mode", "constant")))
            if spec["pad_mode"] not in ("constant", "reflect", "edge") or node.get("fill", 0) not in (0, None):
                raise SSLClusterError("augmentation.views: RandomCrop padding_mode symmetric / fill != 0 have no "
                                      "GPU equivalent")
        elif name == "RandomHorizontalFlip":
            spec["hf_prob"] = float(node.get("p", 0.5))
        elif name == "RandomVerticalFlip":
            spec["vf_prob"] = float(node.get("p", 0.5))
        elif name == "ColorJitter":
            spec.update(cj_prob=1.0, **jitter_args(node))
        elif name == "RandomApply":
            inner = list(node.get("transforms") or [])
            if len(inner) != 1 or str(dict(inner[0]).get("_target_", "")).rpartition(".")[2] != "ColorJitter":
                raise SSLClusterError("augmentation.views: RandomApply has a GPU equivalent only around one "
                                      "ColorJitter")
            spec.update(cj_prob=float(node.get("p", 0.5)), **jitter_args(dict(inner[0])))
        elif name == "RandomGrayscale":
            spec["random_gray_scale"] = float(node.get("p", 0.1))
        elif name == "Normalize":
            spec["normalize"] = {"mean": list(node["mean"]), "std": list(node["std"])}
    if size is None:
        raise SSLClusterError("augmentation.views: a Compose without Resize or a crop has no fixed output side "
                              "for the GPU path")
    return ViewSpec(input_size=size, **spec)


def _spec_from_lightly_view(view: Any) -> ViewSpec:
    """A :class:`ViewSpec` read from a built lightly view transform (its ``transform``, a torchvision Compose):
    the values lightly itself passes to each view of a multi-view transform such as ``DINOTransform``, whose
    views differ (blur, solarisation, crop size and scale)."""
    spec: dict[str, Any] = dict(hf_prob=0.0, vf_prob=0.0, rr_prob=0.0, cj_prob=0.0, random_gray_scale=0.0,
                                gaussian_blur=0.0, solarization_prob=0.0, normalize=None)
    names: list[str] = []
    for t in view.transform.transforms:
        name = type(t).__name__
        names.append(name)
        if name == "RandomResizedCrop":
            interp = str(getattr(t.interpolation, "value", t.interpolation))
            if interp not in ("bilinear", "bicubic") or not t.antialias:
                raise SSLClusterError(f"augmentation.views: RandomResizedCrop interpolation {interp} has no GPU "
                                      "equivalent; use data.pipeline=cpu")
            spec.update(input_size=int(t.size[0]), min_scale=float(t.scale[0]), max_scale=float(t.scale[1]),
                        ratio=(float(t.ratio[0]), float(t.ratio[1])), interpolation=interp)
        elif name in ("RandomHorizontalFlip", "RandomVerticalFlip"):
            spec["hf_prob" if "Horizontal" in name else "vf_prob"] = float(t.p)
        elif name == "RandomRotateDegrees":  # RandomApply(RandomRotation(degrees))
            spec.update(rr_prob=float(t.transform.p), rr_degrees=tuple(float(d) for d in
                                                                       t.transform.transforms[0].degrees))
        elif name == "RandomRotate":  # quarter turns
            spec["rr_prob"] = float(t.prob)
        elif name == "RandomApply" and type(t.transforms[0]).__name__ == "ColorJitter":
            cj = t.transforms[0]
            spec.update(cj_prob=float(t.p), cj_bright=round(cj.brightness[1] - 1, 12),
                        cj_contrast=round(cj.contrast[1] - 1, 12), cj_sat=round(cj.saturation[1] - 1, 12),
                        cj_hue=round(cj.hue[1], 12))
        elif name == "RandomGrayscale":
            spec["random_gray_scale"] = float(t.p)
        elif name == "GaussianBlur":
            spec.update(gaussian_blur=float(t.prob), sigmas=(float(t.sigmas[0]), float(t.sigmas[1])))
        elif name == "RandomSolarization":
            if float(t.threshold) != 128:
                raise SSLClusterError("augmentation.views: solarisation threshold other than 128 has no GPU equivalent")
            spec["solarization_prob"] = float(t.prob)
        elif name == "Normalize":
            spec["normalize"] = {"mean": [float(v) for v in t.mean], "std": [float(v) for v in t.std]}
        elif name != "ToTensor":
            raise SSLClusterError(f"augmentation.views: {name} in {type(view).__name__} has no GPU equivalent; "
                                  "use data.pipeline=cpu")
    if "input_size" not in spec:
        raise SSLClusterError(f"augmentation.views: {type(view).__name__} has no RandomResizedCrop")
    rot = [i for i, n in enumerate(names) if n.startswith("RandomRotate")]
    flips = [i for i, n in enumerate(names) if n in ("RandomHorizontalFlip", "RandomVerticalFlip")]
    return ViewSpec(rotate_first=bool(rot and flips and rot[0] < flips[0]), **spec)


def view_specs_from_config(node: Any) -> list[ViewSpec]:
    """The view specs of an ``augmentation.views`` node (dict or DictConfig with ``_target_``).

    Supported: lightly's SimCLR / MoCo transforms (two identical views), ``BYOLTransform`` with
    ``view_1_transform`` / ``view_2_transform`` nodes, ``DINOTransform`` (2 global + N local crops, each view's
    settings read from the transform lightly builds), and a torchvision ``Compose`` (one view) of Resize,
    RandomResizedCrop, RandomCrop (integer padding), flips, (RandomApply of) ColorJitter,
    RandomGrayscale, ToTensor, Normalize. Anything else raises :class:`SSLClusterError` (the
    caller then keeps the CPU path).
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    node = dict(node)
    target = node.pop("_target_", None)
    if target is None:
        raise SSLClusterError("augmentation.views has no _target_")
    cls = _resolve(target)
    name = cls.__name__
    if name in _SIMCLR_FAMILY:
        spec = _spec_from_kwargs(cls, node)
        return [spec] if name == "SimCLRViewTransform" else [spec, spec]
    if name in _BYOL_VIEWS:
        return [_spec_from_kwargs(cls, node)]
    if name == "Compose":
        return [_spec_from_compose(node.get("transforms") or [])]
    if name == "DINOTransform":
        try:
            built = cls(**node)
        except (TypeError, ValueError) as e:
            raise SSLClusterError(f"augmentation.views: {target}: {e}") from None
        return [_spec_from_lightly_view(view) for view in built.transforms]
    if name == "BYOLTransform":
        specs = []
        for key, default in (("view_1_transform", "BYOLView1Transform"), ("view_2_transform", "BYOLView2Transform")):
            sub = node.get(key) or {"_target_": f"lightly.transforms.byol_transform.{default}"}
            specs += view_specs_from_config(sub)
        return specs
    raise SSLClusterError(f"augmentation.views: {target} has no GPU equivalent; use data.pipeline=cpu")


def from_views_config(node: Any, quantize: bool = False, **variant: bool) -> GPUMultiViewTransform:
    """The GPU pipeline equivalent to the lightly transform that ``node`` builds for the CPU path
    (``quantize``: the ``augmentation.quantize`` setting, 8-bit rounding after each op)."""
    return GPUMultiViewTransform([GPUViewTransform(s, quantize=quantize, **variant)
                                  for s in view_specs_from_config(node)])


__all__ = ["ViewSpec", "GPUViewTransform", "GPUMultiViewTransform", "from_views_config", "view_specs_from_config",
           "sample_crop_params", "resized_crop", "sample_jitter_params", "color_jitter", "JitterParams",
           "rotate_quarter_turns", "random_quarter_turns", "rotate_degrees", "gaussian_blur", "solarize",
           "random_grayscale", "grayscale", "adjust_hue", "rgb_to_hsv", "hsv_to_rgb", "resize_weights", "to_8bit",
           "lightly_rotates_first"]
