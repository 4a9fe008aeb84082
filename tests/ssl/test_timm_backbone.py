"""timm backbones offline: weights from a local file (exactly the saved ones), one-line errors for missing,
wrong and mismatched files and for hub weights without network, grayscale input, the model's own transform,
freezing of leading blocks, and training from a weights file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

timm = pytest.importorskip("timm")

from sslcluster.errors import SSLClusterError  # noqa: E402
from sslcluster.ssl.timm_backbone import TimmBackbone, timm_eval_transform  # noqa: E402

MODEL = "test_resnet"  # timm's own tiny test ResNet (0.37 M parameters): builds and runs in well under a second


def save_random(path: Path, seed: int, model: str = MODEL, **kwargs) -> dict[str, torch.Tensor]:
    """A timm model with random weights (seeded) saved to ``path`` (.pth or .safetensors); its state dict."""
    torch.manual_seed(seed)
    state = timm.create_model(model, **kwargs).state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_file_gives_exactly_the_saved_weights(tmp_path, suffix):
    saved = save_random(tmp_path / f"w{suffix}", seed=1, num_classes=0)
    bb = TimmBackbone(MODEL, weights=str(tmp_path / f"w{suffix}"))
    got = bb.model.state_dict()
    assert sorted(got) == sorted(saved)
    assert all(torch.equal(got[k], saved[k]) for k in saved)
    assert bb.out_dim == 96 and bb(torch.randn(2, 3, 32, 32)).shape == (2, 96)
    # without the file: other (random) weights, so the comparison above can fail
    other = TimmBackbone(MODEL).model.state_dict()
    assert not all(torch.equal(other[k], saved[k]) for k in saved if saved[k].is_floating_point())


def test_a_file_with_the_classifier_loads_without_it(tmp_path):
    saved = save_random(tmp_path / "full.pth", seed=2)  # num_classes=1000: fc.weight, fc.bias in the file
    assert "fc.weight" in saved
    bb = TimmBackbone(MODEL, weights=str(tmp_path / "full.pth"))
    got = bb.model.state_dict()
    assert "fc.weight" not in got and all(torch.equal(got[k], saved[k]) for k in got)


def test_wrong_or_mismatched_weights_files_are_one_line_naming_them(tmp_path):
    save_random(tmp_path / "vit.pth", seed=0, model="test_vit", num_classes=0)
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    (tmp_path / "notes.txt").write_text("hi")
    cases = {tmp_path / "vit.pth": "test_resnet", tmp_path / "junk.pth": "test_resnet",
             tmp_path / "notes.txt": "not a state dict file", tmp_path / "missing.pth": "no such file"}
    for path, words in cases.items():
        with pytest.raises(SSLClusterError) as e:
            TimmBackbone(MODEL, weights=str(path))
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg and words in msg and "backbone.weights" in msg, msg


def test_a_file_missing_blocks_of_the_model_is_refused(tmp_path):
    # resnet-style keys that fit where present but leave a block out: timm alone would load it half
    state = save_random(tmp_path / "w.pth", seed=0, num_classes=0)
    part = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    torch.save(part, tmp_path / "part.pth")
    with pytest.raises(SSLClusterError, match=r"keys of the model missing \(layer4\.") as e:
        TimmBackbone(MODEL, weights=str(tmp_path / "part.pth"))
    assert "\n" not in str(e.value) and "part.pth" in str(e.value)


def test_unknown_model_is_one_line():
    with pytest.raises(SSLClusterError, match="unknown timm model backbone.name='no_such_net'"):
        TimmBackbone("no_such_net")


def test_hub_weights_without_network_or_cache_name_the_model_cache_and_option(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as without network, without the retries
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(SSLClusterError) as e:
        TimmBackbone(MODEL, pretrained=True)
    msg = str(e.value)
    assert "\n" not in msg and f"'{MODEL}'" in msg and str(tmp_path / "hf") in msg and "backbone.weights=PATH" in msg


def test_grayscale_repeat_and_adapt(tmp_path):
    saved = save_random(tmp_path / "w.pth", seed=3, num_classes=0)
    x = torch.rand(2, 1, 32, 32)
    rep = TimmBackbone(MODEL, weights=str(tmp_path / "w.pth"), in_channels=1, channels="repeat").eval()
    with torch.no_grad():
        assert torch.equal(rep(x), rep(x.expand(-1, 3, -1, -1)))
    ada = TimmBackbone(MODEL, weights=str(tmp_path / "w.pth"), in_channels=1, channels="adapt").eval()
    first = timm.models.get_pretrained_cfg(MODEL).first_conv + ".weight"  # the convolution timm adapts
    got = ada.model.state_dict()[first]
    assert got.shape[1] == 1 and torch.allclose(got, saved[first].sum(dim=1, keepdim=True))
    with torch.no_grad():  # a gray image as one channel or as three equal ones: the same features
        assert torch.allclose(ada(x), rep(x), atol=1e-5)


def test_eval_transform_is_the_models_own():
    cfg = timm.models.get_pretrained_cfg(MODEL)
    side = cfg.input_size[-1]
    value = 200
    t = timm_eval_transform(MODEL, in_channels=1)
    out = t(Image.fromarray(np.full((8, 8), value, dtype=np.uint8), mode="L"))
    assert out.shape == (3, side, side)
    expected = (value / 255 - np.array(cfg.mean)) / np.array(cfg.std)
    assert np.allclose(out.mean(dim=(1, 2)).numpy(), expected, atol=1e-4)
    assert timm_eval_transform(MODEL, in_channels=3, image_size=48)(Image.new("RGB", (20, 30))).shape == (3, 48, 48)
    assert timm_eval_transform(MODEL, in_channels=1, channels="adapt")(Image.new("L", (9, 9))).shape == (1, side, side)


def test_freeze_blocks_freezes_the_stem_and_leading_blocks_only(tmp_path):
    from torchvision.ops.misc import FrozenBatchNorm2d  # what timm.utils.freeze turns BatchNorm into

    bb = TimmBackbone(MODEL, freeze_blocks=1)
    frozen = {n for n, p in bb.model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in bb.model.named_parameters() if p.requires_grad}
    groups = timm.models.group_parameters(bb.model, bb.model.group_matcher(coarse=True))
    first_two = {n for g in sorted(groups)[:2] for n in groups[g]}
    assert frozen and trainable and frozen == {n for n in first_two if n in frozen | trainable}
    assert any(isinstance(m, FrozenBatchNorm2d) for m in bb.model.modules())
    with pytest.raises(SSLClusterError, match="backbone.freeze_blocks=99"):
        TimmBackbone(MODEL, freeze_blocks=99)


def test_ssl_training_starts_from_the_weights_file_and_export_does_not_need_it(tiny_timm, compose, tmp_path):
    from sslcluster.pipeline import run_pipeline
    from sslcluster.ssl.factory import load_method

    saved = save_random(tmp_path / "w.pth", seed=4, num_classes=0)
    cfg = compose(tiny_timm + ["run.key=ft", f"backbone.weights={tmp_path / 'w.pth'}", "backbone.freeze_blocks=1",
                               "stages.baseline=false", "stages.cluster=false", "stages.evaluate=false",
                               "+trainer.limit_train_batches=3", "evaluate.validation.fraction=0"])
    run = run_pipeline(cfg)
    (tmp_path / "w.pth").unlink()  # the checkpoint holds the weights; rebuilding it must not look for the file
    trained = load_method(run.path / "checkpoints" / "last.ckpt").backbone.model.state_dict()
    stem = [k for k in saved if k.startswith(("conv1.", "bn1.")) and k in trained]  # frozen BN: no counter
    assert stem and all(torch.equal(trained[k], saved[k]) for k in stem)  # frozen: the file's weights
    later = [k for k in saved if k.startswith("layer4.") and k.endswith(".weight") and saved[k].ndim == 4]
    assert later and not all(torch.equal(trained[k], saved[k]) for k in later)  # trained on from them
