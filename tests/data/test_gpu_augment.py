"""The batched GPU augmentations against the CPU path (torchvision / lightly), on CPU.

Three levels: (1) with the same parameters, each op equals torchvision's functional op; (2) the sampled
parameters follow torchvision's distributions (crop areas, aspect ratios, jitter factors and order); (3) the
outputs of the whole pipeline follow the distribution of lightly's ``SimCLRTransform`` outputs on the same
images. Each distribution check is also run on a deliberately wrong variant, which must fail it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from scipy.stats import chi2_contingency, chisquare, ks_2samp

from sslcluster.data import gpu_augment as G
from sslcluster.errors import SSLClusterError

P_OK = 1e-3      # a correct implementation must not be rejected at this level...
P_WRONG = 1e-5   # ...and a wrong one must be rejected at this one (fixed seeds: the outcome is deterministic)


def _simclr_kwargs(**over):
    kw = dict(input_size=32, cj_prob=0.8, cj_strength=0.5, min_scale=0.08, random_gray_scale=0.2,
              gaussian_blur=0.0, hf_prob=0.5, normalize=None)
    kw.update(over)
    return kw


def _view(variant: dict | None = None, **over) -> G.GPUViewTransform:
    spec = G.view_specs_from_config({"_target_": "lightly.transforms.SimCLRTransform", **_simclr_kwargs(**over)})[0]
    return G.GPUViewTransform(spec, **(variant or {}))


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    """256 real photo patches (32x32 RGB uint8) cut from scikit-learn's two sample photographs."""
    from sklearn.datasets import load_sample_images

    imgs = load_sample_images().images
    rng = np.random.default_rng(0)
    out = []
    for k in range(256):
        im = imgs[k % 2]
        y, x = rng.integers(0, im.shape[0] - 64), rng.integers(0, im.shape[1] - 64)
        out.append(np.asarray(Image.fromarray(im[y:y + 64, x:x + 64]).resize((32, 32), Image.BILINEAR)))
    return np.stack(out)


def _to_u8(p: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(p).permute(0, 3, 1, 2).contiguous()


# -- (1) same parameters, same output as torchvision's functional ops --------------------------------------------

def test_ops_equal_torchvision_functional_with_the_same_parameters():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=g)
    boxes = G.sample_crop_params(8, 32, 32, generator=g)
    ref = torch.stack([TF.resized_crop(x[b], *boxes[b].tolist(), [32, 32], antialias=True) for b in range(8)])
    assert torch.allclose(G.resized_crop(x, boxes, 32), ref, atol=1e-5)

    p = G.sample_jitter_params(8, 0.4, 0.4, 0.4, 0.1, prob=1.0, generator=g)
    ref = []
    for b in range(8):
        y = x[b]
        for op in p.order[b].tolist():
            fn = {0: TF.adjust_brightness, 1: TF.adjust_contrast, 2: TF.adjust_saturation, 3: TF.adjust_hue}[op]
            y = fn(y, float([p.brightness, p.contrast, p.saturation, p.hue][op][b]))
        ref.append(y)
    assert torch.allclose(G.color_jitter(x, p), torch.stack(ref), atol=1e-5)
    # a sample whose jitter is not applied is left exactly as it was
    p.applied[:4] = False
    assert torch.equal(G.color_jitter(x, p)[:4], x[:4])

    assert torch.allclose(G.grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6)
    k = torch.tensor([0, 1, 2, 3, 1, 2, 3, 0])
    ref = torch.stack([TF.rotate(x[b], 90.0 * int(k[b])) for b in range(8)])
    assert torch.equal(G.rotate_quarter_turns(x, k), ref)
    angle = torch.tensor([10.0, -15.0, 30.0, 0.0, 5.0, -7.0, 44.0, -1.0])
    ref = torch.stack([TF.rotate(x[b], float(angle[b])) for b in range(8)])
    assert torch.allclose(G.rotate_degrees(x, angle), ref, atol=1e-6)
    sigma = torch.linspace(0.2, 2.0, 8)
    ref = torch.stack([TF.gaussian_blur(x[b], [13, 13], [float(sigma[b])] * 2) for b in range(8)])
    out = G.gaussian_blur(x, sigma, torch.ones(8, dtype=torch.bool), max_sigma=2.0)
    assert torch.allclose(out[..., 6:-6, 6:-6], ref[..., 6:-6, 6:-6], atol=1e-5)  # edges: replicate vs reflect
    sol = G.solarize(x, torch.ones(8, dtype=torch.bool))
    assert torch.allclose(sol, torch.where(x >= 128 / 255, 1 - x, x))


def test_wrong_jitter_order_is_not_torchvisions():
    """The deterministic check above would miss a pipeline that applies its ops in a fixed order; show that the
    order matters, i.e. that the random order is not a no-op."""
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    one = torch.ones(1)
    p = G.JitterParams(brightness=one * 1.4, contrast=one * 1.4, saturation=one * 0.3, hue=one * 0.2,
                       order=torch.tensor([[3, 2, 1, 0]]), applied=torch.ones(1, dtype=torch.bool))
    q = G.JitterParams(**{**p.__dict__, "order": torch.tensor([[0, 1, 2, 3]])})
    assert (G.color_jitter(x, p) - G.color_jitter(x, q)).abs().max() > 0.05


# -- (2) sampled parameters follow torchvision's distributions ----------------------------------------------------

def _torchvision_crops(n: int, height: int, width: int, scale=(0.08, 1.0)) -> np.ndarray:
    torch.manual_seed(0)
    img = torch.zeros(3, height, width)
    return np.array([T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(n)])


@pytest.mark.parametrize("height,width", [(32, 32), (96, 64)])
def test_crop_areas_and_ratios_match_torchvision(height, width):
    n = 6000
    ref = _torchvision_crops(n, height, width)
    g = torch.Generator().manual_seed(0)
    ours = G.sample_crop_params(n, height, width, generator=g).numpy()
    wrong = G.sample_crop_params(n, height, width, generator=g, log_uniform_ratio=False).numpy()

    def area(b):
        return b[:, 2] * b[:, 3] / (height * width)

    def log_ratio(b):
        return np.log(b[:, 3] / b[:, 2])

    assert ks_2samp(area(ref), area(ours)).pvalue > P_OK
    assert ks_2samp(log_ratio(ref), log_ratio(ours)).pvalue > P_OK
    assert ks_2samp(log_ratio(ref), log_ratio(wrong)).pvalue < P_WRONG
    # the boxes lie inside the image, positions uniform over the valid range (mean relative offset ~ 1/2)
    top, left, h, w = ours.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    rel = left[w < width] / (width - w[w < width])
    assert abs(rel.mean() - 0.5) < 0.02


def test_crop_fallback_matches_torchvision():
    # an 8x64 strip: no draw fits, torchvision's fallback is the centred 8 x round(8 * 4/3) box
    ref = _torchvision_crops(50, 8, 64, scale=(0.9, 1.0))
    ours = G.sample_crop_params(50, 8, 64, scale=(0.9, 1.0), generator=torch.Generator().manual_seed(0)).numpy()
    assert (ref == ref[0]).all() and (ours == ref[0]).all()


def test_jitter_parameters_match_torchvision():
    n = 4000
    torch.manual_seed(0)
    cj = T.ColorJitter(0.4, 0.3, 0.2, 0.1)
    ref = [T.ColorJitter.get_params(cj.brightness, cj.contrast, cj.saturation, cj.hue) for _ in range(n)]
    first_ref = np.bincount([int(r[0][0]) for r in ref], minlength=4)
    g = torch.Generator().manual_seed(0)
    ours = G.sample_jitter_params(n, 0.4, 0.3, 0.2, 0.1, prob=0.8, generator=g)
    wrong = G.sample_jitter_params(n, 0.4, 0.3, 0.2, 0.1, prob=0.8, generator=g, random_order=False)
    for k, name in enumerate(("brightness", "contrast", "saturation", "hue")):
        ref_k = np.array([float(r[k + 1]) for r in ref])
        assert ks_2samp(ref_k, getattr(ours, name).numpy()).pvalue > P_OK, name
    for pos in range(4):  # each op is equally likely at each position, as in torchvision's randperm
        counts = np.bincount(ours.order[:, pos].numpy(), minlength=4)
        assert chisquare(counts).pvalue > P_OK
        assert chisquare(np.bincount(wrong.order[:, pos].numpy(), minlength=4)).pvalue < P_WRONG
    assert chisquare(first_ref).pvalue > P_OK
    assert abs(ours.applied.float().mean().item() - 0.8) < 4 * math.sqrt(0.16 / n)


# -- (3) pipeline outputs follow lightly's on the same images -----------------------------------------------------

def _lightly_views(images: np.ndarray, repeats: int, **kw) -> torch.Tensor:
    from lightly.transforms import SimCLRTransform

    torch.manual_seed(0)
    np.random.seed(0)
    tr = SimCLRTransform(**_simclr_kwargs(**kw))
    pil = [Image.fromarray(im) for im in images]
    return torch.stack([tr(im)[0] for _ in range(repeats) for im in pil])


def _gpu_views(images: np.ndarray, repeats: int, variant: dict | None = None, seed: int = 0, **kw) -> torch.Tensor:
    u8 = _to_u8(images).repeat(repeats, 1, 1, 1)
    return _view(variant, **kw)(u8, generator=torch.Generator().manual_seed(seed))


def test_crop_and_flip_of_whole_pipeline_match_lightly():
    """A coordinate image (R = x/31, G = y/31) makes each output tell its crop box and flip: the R range is
    (w-1)/31, the G range (h-1)/31, the sign of R's slope the flip."""
    ramp = np.arange(32, dtype=np.float64) / 31 * 255
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    img[..., 0] = np.round(ramp)[None, :]
    img[..., 1] = np.round(ramp)[:, None]
    img = np.repeat(img[None], 8, axis=0)
    kw = dict(cj_prob=0.0, random_gray_scale=0.0)

    def boxes(v: torch.Tensor):
        r, gch = v[:, 0], v[:, 1]
        w = torch.round((r.amax((1, 2)) - r.amin((1, 2))) * 31 + 1)
        h = torch.round((gch.amax((1, 2)) - gch.amin((1, 2))) * 31 + 1)
        flipped = (r[:, :, -1] - r[:, :, 0]).mean(1) < 0
        return (w * h / 1024).numpy(), torch.log(w / h).numpy(), flipped.float().mean().item()

    area_ref, ratio_ref, flip_ref = boxes(_lightly_views(img, 300, **kw))
    area, ratio, flip_rate = boxes(_gpu_views(img, 300, **kw))
    assert ks_2samp(area_ref, area).pvalue > P_OK
    assert ks_2samp(ratio_ref, ratio).pvalue > P_OK
    assert abs(flip_ref - flip_rate) < 4 * math.sqrt(0.5 / 2400) and abs(flip_rate - 0.5) < 0.05
    _, wrong_ratio, _ = boxes(_gpu_views(img, 300, {"log_uniform_ratio": False}, **kw))
    assert ks_2samp(ratio_ref, wrong_ratio).pvalue < P_WRONG


def _stats(v: torch.Tensor) -> dict[str, np.ndarray]:
    """Per view: brightness (mean luma), contrast (luma std), saturation (mean of max-min over channels),
    red and blue means."""
    luma = G.grayscale(v)[:, 0]
    return {"brightness": luma.mean((1, 2)).numpy(), "contrast": luma.flatten(1).std(1).numpy(),
            "saturation": (v.amax(1) - v.amin(1)).mean((1, 2)).numpy(),
            "red": v[:, 0].mean((1, 2)).numpy(), "blue": v[:, 2].mean((1, 2)).numpy()}


def test_colour_statistics_and_rates_match_lightly(patches):
    """Whole-image views (min_scale=1: identity crop) isolate colour jitter and grayscale: the rates of views
    changed / turned gray and the distributions of brightness, contrast and saturation must match lightly's."""
    kw = dict(min_scale=1.0, hf_prob=0.0)
    reps = 8
    src = _to_u8(patches).float().div(255).repeat(reps, 1, 1, 1)
    ref = _lightly_views(patches, reps, **kw)
    ours = _gpu_views(patches, reps, **kw)

    def rates(v: torch.Tensor) -> tuple[float, float]:
        changed = (v - src).abs().flatten(1).amax(1) > 2.5 / 255
        gray = (v.amax(1) - v.amin(1)).flatten(1).amax(1) < 1.5 / 255
        return changed.float().mean().item(), gray.float().mean().item()

    tol = 4 * math.sqrt(0.25 / len(src))
    (c_ref, g_ref), (c_ours, g_ours) = rates(ref), rates(ours)
    assert abs(c_ref - c_ours) < tol and abs(g_ref - g_ours) < tol
    s_ref, s_ours = _stats(ref), _stats(ours)
    for key in s_ref:
        assert ks_2samp(s_ref[key], s_ours[key]).pvalue > P_OK, key
    # wrong: jitter strength 1 instead of the config's 0.5, and jitter applied always
    strong = _stats(_gpu_views(patches, reps, **kw, cj_strength=1.0))
    assert min(ks_2samp(s_ref[k], strong[k]).pvalue for k in s_ref) < P_WRONG
    always = rates(_gpu_views(patches, reps, **kw, cj_prob=1.0))
    assert abs(always[0] - c_ref) > tol


def test_full_simclr_views_match_lightly_output_statistics(patches):
    reps = 8
    s_ref = _stats(_lightly_views(patches, reps))
    s_ours = _stats(_gpu_views(patches, reps))
    for key in s_ref:
        assert ks_2samp(s_ref[key], s_ours[key]).pvalue > P_OK, key
    s_wrong = _stats(_gpu_views(patches, reps, random_gray_scale=0.0))
    assert min(ks_2samp(s_ref[k], s_wrong[k]).pvalue for k in s_ref) < P_WRONG


def test_two_view_disagreement_matches_lightly(patches):
    """What the contrastive loss sees is a pair: the distance between an image's two views (and their
    sharpness) must follow lightly's, and a pair that shares its crop and flip (a per-image rather than
    per-view draw) must fail the same check."""
    from lightly.transforms import SimCLRTransform

    torch.manual_seed(0)
    tr = SimCLRTransform(**_simclr_kwargs())
    pil = [Image.fromarray(im) for im in patches]
    pairs = [tr(im) for _ in range(4) for im in pil]
    ref = torch.stack([p[0] for p in pairs]) - torch.stack([p[1] for p in pairs])
    both = G.from_views_config({"_target_": "lightly.transforms.SimCLRTransform", **_simclr_kwargs()})
    v0, v1 = both(_to_u8(patches).repeat(4, 1, 1, 1), generator=torch.Generator().manual_seed(0))

    def dist(d: torch.Tensor) -> np.ndarray:
        return d.flatten(1).norm(dim=1).numpy()

    assert ks_2samp(dist(ref), dist(v0 - v1)).pvalue > P_OK
    # wrong: both views with the same crop and flip (only the colour drawn apart)
    view = both.views[0]
    u = torch.rand(len(v0), view.DRAWS, generator=torch.Generator().manual_seed(3))
    u2 = torch.rand(len(v0), view.DRAWS, generator=torch.Generator().manual_seed(4))
    geometry = 2 * G.CROP_ATTEMPTS + 2 + 4  # crop draws, then flips and rotation
    u2[:, :geometry] = u[:, :geometry]
    x = _to_u8(patches).repeat(4, 1, 1, 1)
    shared = view.apply(x, u) - view.apply(x, u2)
    assert ks_2samp(dist(ref), dist(shared)).pvalue < P_WRONG


# -- building from config, shapes, devices -------------------------------------------------------------------

def test_built_from_the_same_config_as_the_cpu_path(compose):
    cfg = compose(["data=cifar10_folder", "data.source.root=/nonexistent", "augmentation=simclr"])
    tr = G.from_views_config(cfg.augmentation.views)
    assert len(tr.views) == 2
    spec = tr.views[0].spec
    assert spec.input_size == 32 and spec.cj_prob == 0.8 and spec.min_scale == 0.08
    assert spec.cj_bright == pytest.approx(0.4) and spec.cj_hue == pytest.approx(0.1)
    assert spec.gaussian_blur == 0.0 and spec.random_gray_scale == 0.2
    x = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    views = tr(x, generator=torch.Generator().manual_seed(0))
    assert [v.shape for v in views] == [(4, 3, 32, 32)] * 2 and views[0].dtype == torch.float32
    assert not torch.equal(views[0], views[1])
    again = tr(x, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(views, again))
    # normalised with the data set's mean / std
    assert abs(float(views[0].mean())) < 3

    digits = compose([])
    d = G.from_views_config(digits.augmentation.views).views[0].spec
    assert d.rr_degrees == (-15.0, 15.0) and d.rr_prob == 0.5 and d.hf_prob == 0.0
    out = G.from_views_config(digits.augmentation.views)(torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8))
    assert out[0].shape == (3, 1, 16, 16)


def test_identical_views_share_one_call_and_stay_independent():
    """SimCLR's two identical views are drawn in one call (one compiled graph) on the batch repeated; each view
    still draws its own crop and flip per image, as two separate calls would."""
    tr = G.GPUMultiViewTransform([_view(cj_prob=0.0, random_gray_scale=0.0) for _ in range(2)])
    assert tr.groups == [[0, 1]]
    byol = G.from_views_config({"_target_": "lightly.transforms.BYOLTransform"})
    assert byol.groups == [[0], [1]]
    ramp = torch.arange(32, dtype=torch.float32) / 31 * 255
    img = torch.zeros(1, 3, 32, 32)
    img[:, 0], img[:, 1] = ramp.view(1, 1, -1), ramp.view(1, -1, 1)
    x = img.round().to(torch.uint8).repeat(2000, 1, 1, 1)
    v0, v1 = tr(x, generator=torch.Generator().manual_seed(0))
    assert v0.shape == v1.shape == (2000, 3, 32, 32)
    # the same generator state and one (2B, DRAWS) draw: the grouped call is exactly the view on the repeated batch
    ref = tr.views[0](x.repeat(2, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([v0, v1]), ref)
    flip0 = (v0[:, 0, :, -1] - v0[:, 0, :, 0]).mean(1) < 0
    flip1 = (v1[:, 0, :, -1] - v1[:, 0, :, 0]).mean(1) < 0
    both = (flip0 & flip1).float().mean().item()
    assert abs(flip0.float().mean().item() - 0.5) < 0.05 and abs(both - 0.25) < 0.05  # independent flips
    width0 = v0[:, 0].amax((1, 2)) - v0[:, 0].amin((1, 2))
    width1 = v1[:, 0].amax((1, 2)) - v1[:, 0].amin((1, 2))
    assert (width0 != width1).float().mean() > 0.8  # crops drawn apart for the two views of an image


def test_byol_views_and_unsupported_targets():
    specs = G.view_specs_from_config({"_target_": "lightly.transforms.BYOLTransform"})
    assert len(specs) == 2 and specs[0].solarization_prob == 0.0 and specs[1].solarization_prob == 0.2
    with pytest.raises(SSLClusterError, match="no GPU equivalent"):
        G.view_specs_from_config({"_target_": "lightly.transforms.SwaVTransform"})
    with pytest.raises(SSLClusterError, match="no parameter"):
        G.view_specs_from_config({"_target_": "lightly.transforms.SimCLRTransform", "bogus": 1})


def test_random_quarter_turns_for_rotnet():
    x = torch.arange(2 * 16, dtype=torch.float32).view(1, 1, 4, 8).repeat(400, 1, 1, 1)[..., :4]
    rotated, k = G.random_quarter_turns(x, generator=torch.Generator().manual_seed(0))
    assert chisquare(np.bincount(k.numpy(), minlength=4)).pvalue > P_OK
    for turns in range(4):
        sel = k == turns
        assert torch.equal(rotated[sel], torch.rot90(x[sel], turns, dims=(2, 3)))


@pytest.mark.slow
def test_compiled_views_equal_eager_views():
    """torch.compile of the pure part (about a minute on a CPU) gives the eager result."""
    view = _view()
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    u = torch.rand(16, view.DRAWS, generator=torch.Generator().manual_seed(0))
    ref = view.apply(x, u)
    view.compile_apply()
    assert torch.allclose(view._view_fn(x, u), ref, atol=1e-4)


ROTATION_VIEWS = {  # augmentation=rotation: a torchvision Compose, one view
    "_target_": "torchvision.transforms.Compose",
    "transforms": [
        {"_target_": "torchvision.transforms.Resize", "size": 32},
        {"_target_": "torchvision.transforms.RandomCrop", "size": 32, "padding": 4, "padding_mode": "reflect"},
        {"_target_": "torchvision.transforms.RandomHorizontalFlip"},
        {"_target_": "torchvision.transforms.ToTensor"},
        {"_target_": "torchvision.transforms.Normalize", "mean": [0.5] * 3, "std": [0.25] * 3},
    ],
}


def test_torchvision_compose_views_pad_crop_matches_torchvision(patches):
    (spec,) = G.view_specs_from_config(ROTATION_VIEWS)
    assert spec.crop == "pad" and spec.pad == 4 and spec.pad_mode == "reflect" and spec.hf_prob == 0.5
    assert spec.cj_prob == 0.0 and spec.random_gray_scale == 0.0 and spec.normalize["std"] == [0.25] * 3
    view = G.GPUViewTransform(spec)
    x = _to_u8(patches[:64])
    params: dict = {}
    out = view(x, generator=torch.Generator().manual_seed(0), params=params)
    xf = x.float() / 255
    for b in range(64):
        top, left, _, _ = params["boxes"][b].tolist()
        ref = TF.crop(TF.pad(xf[b], [4], padding_mode="reflect"), top, left, 32, 32)
        if params["hflip"][b]:
            ref = ref.flip(-1)
        assert torch.allclose(out[b], (ref - 0.5) / 0.25, atol=1e-5)
    # offsets uniform over 0..8 (torchvision's RandomCrop.get_params)
    u = torch.rand(9000, view.DRAWS, generator=torch.Generator().manual_seed(1))
    rec: dict = {}
    view.apply(torch.zeros(9000, 3, 8, 8, dtype=torch.uint8), u, rec)
    counts = np.bincount(rec["boxes"][:, 0].numpy(), minlength=9)
    assert len(counts) == 9 and chisquare(counts).pvalue > P_OK


def test_compose_rrc_and_jitter_and_refusals():
    node = {"_target_": "torchvision.transforms.Compose", "transforms": [
        {"_target_": "torchvision.transforms.RandomResizedCrop", "size": 16, "scale": [0.6, 1.0], "ratio": [0.9, 1.1]},
        {"_target_": "torchvision.transforms.RandomApply", "p": 0.7,
         "transforms": [{"_target_": "torchvision.transforms.ColorJitter", "brightness": 0.4, "hue": 0.1}]},
        {"_target_": "torchvision.transforms.ToTensor"}]}
    (spec,) = G.view_specs_from_config(node)
    assert (spec.crop, spec.input_size, spec.min_scale, spec.ratio) == ("resized", 16, 0.6, (0.9, 1.1))
    assert spec.cj_prob == 0.7 and spec.cj_bright == 0.4 and spec.cj_hue == 0.1 and spec.cj_sat == 0.0
    bad = {"_target_": "torchvision.transforms.Compose", "transforms": [
        {"_target_": "torchvision.transforms.ToTensor"}, {"_target_": "torchvision.transforms.RandomHorizontalFlip"}]}
    with pytest.raises(SSLClusterError, match="comes after"):
        G.view_specs_from_config(bad)
    with pytest.raises(SSLClusterError, match="no GPU equivalent"):
        G.view_specs_from_config({"_target_": "torchvision.transforms.Compose", "transforms": [
            {"_target_": "torchvision.transforms.RandomRotation", "degrees": 10}]})


_REPO = Path(__file__).resolve().parents[2]
# ../shared/data beside the project root (a worktree sits one level deeper: ../../shared/data)
CIFAR_ARCHIVE = next((p for p in (_REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz",
                                  _REPO.parent.parent / "shared" / "data" / "cifar10-jpeg.tar.gz") if p.is_file()),
                     _REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_ARCHIVE.is_file(), reason=f"CIFAR-10 JPEG copy not found at {CIFAR_ARCHIVE} "
                    "(development data, not shipped with the project)")
def test_views_match_lightly_on_cifar10_jpeg():
    """The whole-pipeline comparison on 500 real CIFAR-10 training images (the issue's benchmark data)."""
    import io
    import tarfile

    images = []
    with tarfile.open(CIFAR_ARCHIVE) as tar:
        for member in tar:
            if member.isfile() and member.name.startswith("train/") and member.name.endswith(".jpg"):
                images.append(np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")))
                if len(images) == 500:
                    break
    imgs = np.stack(images)
    s_ref = _stats(_lightly_views(imgs, 6))
    s_ours = _stats(_gpu_views(imgs, 6))
    for key in s_ref:
        assert ks_2samp(s_ref[key], s_ours[key]).pvalue > P_OK, key
    s_wrong = _stats(_gpu_views(imgs, 6, cj_strength=1.0))
    assert min(ks_2samp(s_ref[k], s_wrong[k]).pvalue for k in s_ref) < P_WRONG


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the GPU machine)")
def test_cuda_views_equal_cpu_views_and_never_synchronise():
    view = _view(gaussian_blur=0.5).cuda()
    x = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    u = torch.rand(256, view.DRAWS, generator=torch.Generator().manual_seed(0))
    ref = view.cpu().apply(x, u)
    view.cuda()
    xc, uc = x.cuda(), u.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation on the hot path raises
    try:
        out = view.apply(xc, uc)
        view(xc)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.allclose(out.cpu(), ref, atol=1e-4)


# -- (4) images not at the training size: the device cache and crop against lightly's PIL pipeline --------------

@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    """24 real photographs at many sizes (each side 48-427 px, not square): random crops of scikit-learn's two
    sample photographs, resized."""
    from sklearn.datasets import load_sample_images

    imgs = load_sample_images().images
    rng = np.random.default_rng(0)
    out = []
    for i in range(24):
        im = imgs[i % 2]
        ch, cw = int(rng.integers(200, im.shape[0] + 1)), int(rng.integers(200, im.shape[1] + 1))
        y, x = int(rng.integers(0, im.shape[0] - ch + 1)), int(rng.integers(0, im.shape[1] - cw + 1))
        w, h = int(rng.integers(48, 428)), int(rng.integers(48, 428))
        out.append(Image.fromarray(im[y:y + ch, x:x + cw]).resize((w, h), Image.LANCZOS))
    return out


class _Listed:
    """An in-memory image source (the device cache's input)."""

    def __init__(self, images: list[Image.Image]) -> None:
        self.images, self.paths = images, [f"mem{i}" for i in range(len(images))]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> Image.Image:
        return self.images[i]


def _photo_views(images: list[Image.Image], reps: int, kw: dict, cache: str = "whole", **variant) -> torch.Tensor:
    """Both views of each image ``reps`` times through the device path: the decoded cache (``whole``: the
    project's, whole images up to 4x the training side; ``resized``: the short side resized to the training
    side and centre-cropped, i.e. crop after resize), then the views with each image's size."""
    from sslcluster.data import device_data as D

    s = kw["input_size"]
    if cache == "whole":
        arr, sizes = D.decode_source(_Listed(images), D.DEFAULT_SIDE_FACTOR * s, 3)
        sz = torch.from_numpy(sizes).repeat(reps, 1)
    else:
        arr, sz = np.stack([D.to_square_uint8(im, s, 3) for im in images]), None
    tr = G.from_views_config({"_target_": "lightly.transforms.SimCLRTransform", **kw}, **variant)
    return torch.cat(tr(torch.from_numpy(arr).repeat(reps, 1, 1, 1), generator=torch.Generator().manual_seed(1),
                        sizes=sz))


def _lightly_photo_views(images: list[Image.Image], reps: int, kw: dict) -> torch.Tensor:
    from lightly.transforms import SimCLRTransform

    torch.manual_seed(0)
    np.random.seed(0)
    tr = SimCLRTransform(**kw)
    return torch.stack([v for _ in range(reps) for im in images for v in tr(im)])


def _gradient(v: torch.Tensor) -> np.ndarray:
    """Sharpness of each view (n, C, S, S): its mean absolute horizontal gradient."""
    return (v[..., 1:] - v[..., :-1]).abs().flatten(1).mean(1).numpy()


GEOMETRY_ONLY = dict(cj_prob=0.0, random_gray_scale=0.0, gaussian_blur=0.0, normalize=None)


def test_sharpness_of_views_from_photos_at_many_sizes_matches_lightly(photos):
    """lightly crops the full-resolution image and downsamples with antialiasing; the device path crops its
    cache of whole images (up to 4x the training side) the same way. The sharpness of the views must follow
    lightly's, and both finer defects must fail: crop after resize (views about 35% blurrier) and no
    antialiasing (aliased, about 15% sharper)."""
    kw = _simclr_kwargs(**GEOMETRY_ONLY)
    ref = _gradient(_lightly_photo_views(photos, 8, kw))
    ours = _gradient(_photo_views(photos, 8, kw))
    assert ks_2samp(ref, ours).pvalue > P_OK
    assert abs(ours.mean() / ref.mean() - 1) < 0.1
    for wrong in (_photo_views(photos, 8, kw, cache="resized"), _photo_views(photos, 8, kw, antialias=False)):
        assert ks_2samp(ref, _gradient(wrong)).pvalue < P_WRONG


def _coordinate_images() -> list[Image.Image]:
    """Non-square images whose pixels tell where they are: R = x / (W - 1), G = y / (H - 1) (8-bit)."""
    out = []
    for h, w in ((48, 160), (200, 90), (120, 427), (300, 300), (64, 96)):
        img = np.zeros((h, w, 3), dtype=np.uint8)
        img[..., 0] = np.round(np.arange(w) / (w - 1) * 255)[None, :]
        img[..., 1] = np.round(np.arange(h) / (h - 1) * 255)[:, None]
        out.append(Image.fromarray(img))
    return out


def test_crops_cover_the_whole_image_as_lightlys_do():
    """Random crops see the whole of a non-square image, edges included, as lightly's RandomResizedCrop on the
    full image does: the extent of each view in image coordinates (R and G ranges) follows lightly's. A cache
    that centre-crops the image to a square (the wide images' left and right edges never seen) fails."""
    images = _coordinate_images()
    kw = _simclr_kwargs(hf_prob=0.0, **GEOMETRY_ONLY)

    def extents(v: torch.Tensor) -> dict[str, np.ndarray]:
        r, g = v[:, 0].flatten(1), v[:, 1].flatten(1)
        return {"r_min": r.amin(1).numpy(), "r_max": r.amax(1).numpy(), "g_min": g.amin(1).numpy(),
                "g_max": g.amax(1).numpy()}

    ref = extents(_lightly_photo_views(images, 60, kw))
    ours = extents(_photo_views(images, 60, kw))
    for key in ref:
        assert ks_2samp(ref[key], ours[key]).pvalue > P_OK, key
    old = extents(_photo_views(images, 60, kw, cache="resized"))
    assert min(ks_2samp(ref[k], old[k]).pvalue for k in ref) < P_WRONG


def test_full_views_of_photos_match_lightly_colour_and_sharpness(photos):
    """The whole SimCLR view (crop, flip, colour jitter, grayscale) of photographs at many sizes: colour
    statistics and sharpness follow lightly's; the crop-after-resize cache fails."""
    kw = _simclr_kwargs()
    ref = _lightly_photo_views(photos, 6, kw)
    ours = _photo_views(photos, 6, kw)
    s_ref, s_ours = {**_stats(ref), "sharpness": _gradient(ref)}, {**_stats(ours), "sharpness": _gradient(ours)}
    for key in s_ref:
        assert ks_2samp(s_ref[key], s_ours[key]).pvalue > P_OK, key
    old = _photo_views(photos, 6, kw, cache="resized")
    s_old = {**_stats(old), "sharpness": _gradient(old)}
    assert min(ks_2samp(s_ref[k], s_old[k]).pvalue for k in s_ref) < P_WRONG


def test_8bit_rounding_follows_pil_with_the_same_parameters():
    """With ``quantize`` the crop and each colour-jitter op round (or, for PIL's blends, truncate) to 8 bits as
    lightly's PIL pipeline does: with the same crop boxes and jitter parameters the views equal torchvision's
    PIL ops (what lightly runs) to a fraction of a grey level on average; without rounding they are more than
    a grey level off (PIL's truncating blends darken a little at each op)."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(photos[i % 2][int(rng.integers(0, 300)):][:120, int(rng.integers(0, 500)):][:, :140])
            for i in range(48)]
    x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in imgs]).float() / 255
    g = torch.Generator().manual_seed(0)
    boxes = G.sample_crop_params(48, 120, 140, generator=g)
    p = G.sample_jitter_params(48, 0.4, 0.4, 0.4, 0.1, prob=1.0, generator=g)
    ref = []
    for b in range(48):
        y = TF.resized_crop(imgs[b], *boxes[b].tolist(), [32, 32], antialias=True)
        for op in p.order[b].tolist():
            fn = {0: TF.adjust_brightness, 1: TF.adjust_contrast, 2: TF.adjust_saturation, 3: TF.adjust_hue}[op]
            y = fn(y, float([p.brightness, p.contrast, p.saturation, p.hue][op][b]))
        ref.append(torch.from_numpy(np.array(y)).permute(2, 0, 1).float())
    levels = torch.stack(ref)

    def error(quantize: bool) -> tuple[float, float]:
        crop = G.resized_crop(x, boxes, 32)
        out = G.color_jitter(G.to_8bit(crop) if quantize else crop, p, quantize) * 255
        d = (out - levels).abs()
        return d.mean().item(), (d > 1.01).float().mean().item()

    mean_q, off_q = error(True)
    assert mean_q < 0.3 and off_q < 0.05
    mean_f, off_f = error(False)
    assert mean_f > 0.6 and off_f > 0.2


def test_rotation_and_flips_in_the_installed_lightlys_order():
    """Quarter turns and flips do not commute: the orientations of the views (which corner of a coordinate
    image lands where) follow lightly's own order of the two, and the other order fails."""
    ramp = np.arange(32, dtype=np.float64) / 31 * 255
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    img[..., 0] = np.round(ramp)[None, :]
    img[..., 1] = np.round(ramp)[:, None]
    kw = _simclr_kwargs(min_scale=1.0, hf_prob=0.5, rr_prob=0.5, rr_degrees=None, **GEOMETRY_ONLY)

    def orientation(v: torch.Tensor) -> np.ndarray:
        corner = v[:, :2, 0, 0] > 0.5  # (R, G) of the top-left output pixel: which image corner it shows
        transposed = (v[:, 0, 0, -1] - v[:, 0, 0, 0]).abs() < 0.5  # R constant along the top row
        return np.bincount((corner[:, 0].long() * 4 + corner[:, 1].long() * 2 + transposed.long()).numpy(),
                           minlength=8)

    ref = orientation(torch.stack([v for v in _lightly_views(img[None], 1600, **kw)]))
    (spec,) = G.view_specs_from_config({"_target_": "lightly.transforms.SimCLRViewTransform", **kw})
    assert spec.rotate_first == G.lightly_rotates_first(__import__(
        "lightly.transforms.simclr_transform", fromlist=["SimCLRViewTransform"]).SimCLRViewTransform)
    x = _to_u8(img[None]).repeat(1600, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    ours = orientation(G.GPUViewTransform(spec)(x, generator=g))
    other = orientation(G.GPUViewTransform(replace(spec, rotate_first=not spec.rotate_first))(x, generator=g))

    def same(a: np.ndarray, b: np.ndarray) -> float:
        seen = (a + b) > 0
        return chi2_contingency(np.stack([a[seen], b[seen]])).pvalue

    assert same(ref, ours) > P_OK
    assert same(ref, other) < P_WRONG


# -- DINO multi-crop ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("box,size", [((3, 5, 20, 14), 8), ((0, 0, 32, 32), 16), ((7, 2, 6, 9), 16)])
def test_bicubic_crops_equal_pils_bicubic_resize(box, size):
    """DINO's crops resize with PIL's BICUBIC (lightly's DINOViewTransform): the GPU weights give PIL's pixels
    (to 8-bit rounding) when downscaling (antialiased) and upscaling; bilinear ones would not."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    top, left, h, w = box
    want = np.asarray(Image.fromarray(img).crop((left, top, left + w, top + h)).resize((size, size), Image.BICUBIC))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    boxes = torch.tensor([box])
    got = G.resized_crop(x, boxes, size, interpolation="bicubic")[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(got - want).max() <= 1.0  # PIL rounds (and clips) its 8-bit passes
    bilinear = G.resized_crop(x, boxes, size)[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(bilinear - want).max() > 2.0


def test_dino_multi_crop_views_are_read_from_lightlys_own_transform():
    node = {"_target_": "lightly.transforms.DINOTransform", "global_crop_size": 32, "local_crop_size": 16,
            "n_local_views": 3, "cj_strength": 1.0, "normalize": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    specs = G.view_specs_from_config(node)
    assert [s.input_size for s in specs] == [32, 32, 16, 16, 16]
    assert [(s.min_scale, s.max_scale) for s in specs] == [(0.4, 1.0)] * 2 + [(0.05, 0.4)] * 3
    assert [s.gaussian_blur for s in specs] == [1.0, 0.1, 0.5, 0.5, 0.5]  # DINO's per-view blur
    assert [s.solarization_prob for s in specs] == [0.0, 0.2, 0.0, 0.0, 0.0]  # solarised: second global view only
    assert all(s.interpolation == "bicubic" for s in specs)
    # lightly passes cj_strength to the first global and the local views, not to the second global view
    assert [s.cj_bright for s in specs] == [0.8, 0.4, 0.8, 0.8, 0.8]
    views = G.from_views_config(node)
    out = views(torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in out] == [(5, 3, 32, 32)] * 2 + [(5, 3, 16, 16)] * 3
    assert views.groups == [[0], [1], [2, 3, 4]]  # the local crops share one call
    assert not torch.allclose(out[2], out[3])  # ... each with its own draws
