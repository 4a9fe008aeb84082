"""BYOL, Barlow Twins, VICReg and DINO: each method's own training step against a reference written here from the
paper's formula (which views it pairs, what its target network is, its momentum), the collapse a loss must detect
when given two identical views, DINO's multi-crop, teacher temperature warm-up, centre and last-layer freezing, and
the shared optimiser's weight-decay schedule and no-decay groups."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.ssl.backbones import TinyCNN
from sslcluster.ssl.schedule import StepPlan
from sslcluster.ssl.methods.barlowtwins import BarlowTwins
from sslcluster.ssl.methods.byol import BYOL
from sslcluster.ssl.methods.dino import DINO
from sslcluster.ssl.methods.momentum import MomentumEncoder
from sslcluster.ssl.methods.vicreg import VICReg
from sslcluster.stages.pretrain import build_method


def quiet(model):
    """``model`` with ``self.log`` (which needs a trainer) silenced."""
    model.log = lambda *a, **k: None
    return model


class FakeTrainer:
    """What the methods read of a trainer: step, epoch, planned steps, devices."""

    def __init__(self, step: int = 0, total: int = 100, epoch: int = 0) -> None:
        self.global_step, self.estimated_stepping_batches, self.current_epoch = step, total, epoch
        self.world_size, self.accumulate_grad_batches, self.max_epochs = 1, 1, 10
        self.num_training_batches, self.callbacks, self.train_dataloader = 10, [], ()


def views(n: int = 6, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g), torch.randn(n, 1, size, size, generator=g)


def perturb(module: torch.nn.Module, scale: float = 0.3) -> None:
    """Move a module's weights away from its momentum copy, so a wrong target network would show."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


# -- references from the papers ----------------------------------------------------------------------------------

def reference_byol(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL (Grill et al. 2020, eq. 2): ||p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z), averaged over the batch."""
    p, z = p.double(), z.double()
    return torch.stack([((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum() for i in range(len(p))]).mean()


def reference_barlow(za: torch.Tensor, zb: torch.Tensor, lam: float) -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021, eq. 1-2) by loops: each dimension standardised over the batch (biased
    std, as the paper's BatchNorm), C_ij = sum_b za_bi zb_bj / N, loss sum_i (1 - C_ii)^2 + lam sum_{i!=j} C_ij^2."""
    za, zb = za.double(), zb.double()
    n, d = za.shape
    za = (za - za.mean(0)) / torch.sqrt(za.var(0, unbiased=False) + 1e-5)
    zb = (zb - zb.mean(0)) / torch.sqrt(zb.var(0, unbiased=False) + 1e-5)
    loss = torch.zeros((), dtype=torch.float64)
    for i in range(d):
        for j in range(d):
            c = sum(za[b, i] * zb[b, j] for b in range(n)) / n
            loss = loss + ((1 - c) ** 2 if i == j else lam * c ** 2)
    return loss


def reference_vicreg(za: torch.Tensor, zb: torch.Tensor, lam: float, mu: float, nu: float) -> torch.Tensor:
    """VICReg (Bardes et al. 2022, eq. 1-6): lam s(Z, Z') + mu [v(Z) + v(Z')] / 2 + nu [c(Z) + c(Z')], with
    s the mean squared distance per element, v the mean hinge max(0, 1 - sqrt(Var + 1e-4)) over dimensions
    (the paper's code, followed by lightly, halves the sum of the two variance terms), c the sum of squared
    off-diagonal covariances (unbiased) divided by d."""
    za, zb = za.double(), zb.double()
    n, d = za.shape

    def v(z: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.relu(1 - torch.sqrt(z[:, j].var() + 1e-4)) for j in range(d)]).mean()

    def c(z: torch.Tensor) -> torch.Tensor:
        zc = z - z.mean(0)
        total = sum((zc[:, i] @ zc[:, j] / (n - 1)) ** 2 for i in range(d) for j in range(d) if i != j)
        return total / d

    s = ((za - zb) ** 2).mean()
    return lam * s + mu * (v(za) + v(zb)) / 2 + nu * (c(za) + c(zb))


def reference_dino(teacher: list[torch.Tensor], student: list[torch.Tensor], centre: torch.Tensor, t_teacher: float,
                   t_student: float) -> torch.Tensor:
    """DINO (Caron et al. 2021, eq. 3 and Algorithm 1): for each teacher (global) crop g and each student crop
    v != g, H(P_t, P_s) = -sum_k P_t log P_s with P_t = softmax((t - C) / tau_t), P_s = softmax(s / tau_s),
    averaged over the images and the pairs."""
    terms = []
    for g, t in enumerate(teacher):
        pt = F.softmax((t.double() - centre.double()) / t_teacher, dim=1)
        for v, s in enumerate(student):
            if v != g:
                terms.append(-(pt * F.log_softmax(s.double() / t_student, dim=1)).sum(1).mean())
    return torch.stack(terms).mean()


# -- BYOL ---------------------------------------------------------------------------------------------------------

def byol_model(**kw) -> BYOL:
    torch.manual_seed(0)
    return quiet(BYOL(TinyCNN(1, width=4, depth=1), batch_size_per_device=6, hidden_dim=16, output_dim=8, **kw))


def test_byol_step_predicts_the_target_projection_of_the_other_view():
    model = byol_model(momentum=0.5, momentum_end=None)
    perturb(model.backbone)  # online and target apart: a wrong target network would show
    perturb(model.projection_head, 1.0)
    model.eval()  # BatchNorm on running statistics: a sample's output does not depend on the batch it is in
    x0, x1 = views()
    target_before = [p.clone() for p in model.backbone_momentum.parameters()]
    got = model.training_step(([x0, x1], torch.arange(6)), 0)
    # the step first moved the target by its momentum: target = m * target + (1 - m) * online
    for before, pt, po in zip(target_before, model.backbone_momentum.parameters(), model.backbone.parameters()):
        assert torch.allclose(pt, 0.5 * before + 0.5 * po, atol=1e-6)
    p0, p1 = (model.prediction_head(model.project(x)).detach() for x in (x0, x1))
    z0, z1 = (model.projection_head_momentum(model.backbone_momentum(x)) for x in (x0, x1))
    want = 0.5 * (reference_byol(p0, z1) + reference_byol(p1, z0))
    assert torch.allclose(2 + 2 * got.double(), want, atol=1e-5)  # lightly's -cos: the paper's loss is 2 + 2 x it
    # a view's prediction scored against its own target, or against another image's, gives another loss
    assert abs(float(0.5 * (reference_byol(p0, z0) + reference_byol(p1, z1))) - float(want)) > 1e-4
    assert abs(float(0.5 * (reference_byol(p0, z1.roll(1, 0)) + reference_byol(p1, z0.roll(1, 0))))
               - float(want)) > 1e-4


def test_byol_and_dino_share_the_momentum_encoder_with_a_cosine_to_one():
    byol = byol_model()
    dino = DINO(TinyCNN(1, width=4, depth=1), hidden_dim=16, bottleneck_dim=8, output_dim=16, momentum=0.99)
    assert isinstance(byol, MomentumEncoder) and isinstance(dino, MomentumEncoder)
    for model in (byol, dino):
        want = {0: 0.99, 50: 1 - 0.01 * (math.cos(math.pi * 50 / 99) + 1) / 2, 99: 1.0}  # lightly's cosine_schedule
        model.step_plan = StepPlan(total=100, warmup=0, steps_per_epoch=10)  # the run's 100 optimiser steps
        for step, m in want.items():
            model._trainer = FakeTrainer(step, 100)  # type: ignore[assignment]
            assert model.current_momentum() == pytest.approx(m, abs=1e-9)
        model._trainer = None
        assert not any(p.requires_grad for p in model.backbone_momentum.parameters())
        assert not any(p.requires_grad for p in model.projection_head_momentum.parameters())


# -- Barlow Twins -------------------------------------------------------------------------------------------------

def barlow_model(**kw) -> BarlowTwins:
    torch.manual_seed(0)
    return quiet(BarlowTwins(TinyCNN(1, width=4, depth=1), batch_size_per_device=6, hidden_dim=16, output_dim=6,
                             lambda_param=0.05, **kw)).eval()


def test_barlowtwins_step_matches_the_cross_correlation_formula():
    model = barlow_model()
    x0, x1 = views()
    got = model.training_step(([x0, x1], torch.arange(6)), 0)
    za, zb = model.project(x0).detach(), model.project(x1).detach()
    want = reference_barlow(za, zb, 0.05)
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-4)
    assert abs(float(reference_barlow(za, zb.roll(1, 0), 0.05)) - float(want)) > 1e-2  # pairing matters


def test_barlowtwins_identical_views_leave_the_redundancy_term_and_detect_collapse():
    model = barlow_model()
    x0, _ = views()
    z = model.project(x0).detach()
    got = model.criterion(z, z.clone())
    # identical views: C_ii = 1 (invariance term 0), the loss is lambda x the off-diagonal term, not 0
    assert torch.allclose(got.double(), reference_barlow(z, z, 0.05), rtol=1e-4, atol=1e-5)
    assert float(got) > 1e-3
    # collapsed projections (every image the same output) get the full invariance term: d (1 - 0)^2
    const = torch.ones(6, 6)
    assert float(model.criterion(const, const)) == pytest.approx(6.0, rel=1e-4)


# -- VICReg -------------------------------------------------------------------------------------------------------

def vicreg_model(**kw) -> VICReg:
    torch.manual_seed(0)
    return quiet(VICReg(TinyCNN(1, width=4, depth=1), batch_size_per_device=6, hidden_dim=16, output_dim=6,
                        lambda_param=25.0, mu_param=20.0, nu_param=2.0, **kw)).eval()


def test_vicreg_step_matches_the_paper_formula():
    model = vicreg_model()
    perturb(model, 1.0)  # outputs spread over the images (near-constant at initialisation in eval mode)
    x0, x1 = views()
    got = model.training_step(([x0, x1], torch.arange(6)), 0)
    za, zb = model.project(x0).detach(), model.project(x1).detach()
    want = reference_vicreg(za, zb, 25.0, 20.0, 2.0)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5)
    assert abs(float(reference_vicreg(za, zb.roll(1, 0), 25.0, 20.0, 2.0)) - float(want)) > 1e-3


def test_vicreg_identical_collapsed_views_are_penalised_by_the_variance_term():
    model = vicreg_model()
    const = torch.full((6, 6), 0.3)
    # identical views: invariance 0; collapsed: every std 0, the variance hinge is 1 - sqrt(1e-4) per dimension
    assert float(model.criterion(const, const.clone())) == pytest.approx(20.0 * (1 - 0.01), rel=1e-5)
    with pytest.raises(SSLClusterError, match="mu_param=-1"):
        VICReg(TinyCNN(1), mu_param=-1.0)


# -- DINO ---------------------------------------------------------------------------------------------------------

def dino_model(**kw) -> DINO:
    torch.manual_seed(0)
    args = dict(batch_size_per_device=6, hidden_dim=16, bottleneck_dim=8, output_dim=12, batch_norm=True,
                student_temp=0.1, teacher_temp=0.06, warmup_teacher_temp=0.02, warmup_teacher_temp_epochs=5,
                center_momentum=0.9, momentum=0.5, momentum_end=None)
    args.update(kw)
    return quiet(DINO(TinyCNN(1, width=4, depth=1), **args))


def multi_crop(n: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(n, 1, 8, 8, generator=g) for _ in range(2)] + \
        [torch.randn(n, 1, 4, 4, generator=g) for _ in range(3)]


@pytest.mark.parametrize("epoch,temp", [(0, 0.02), (2, 0.04), (7, 0.06)])
def test_dino_step_multi_crop_teacher_on_global_crops_warmed_up_temperature_and_centre(epoch, temp):
    model = dino_model()
    perturb(model.backbone)
    model.eval()
    model._trainer = FakeTrainer(epoch=epoch)  # type: ignore[assignment]
    crops = multi_crop()
    model.criterion.center.fill_(0.05)  # a non-zero centre, so subtracting it (or not) shows
    centre_before = model.criterion.center.clone()
    got = model.training_step((crops, torch.arange(6)), 0)
    model._trainer = None
    teacher = [model.project_teacher(x) for x in crops[:2]]  # the teacher sees the two global crops only
    student = [model.project(x).detach() for x in crops]  # the student every crop, local ones included
    # teacher temperature: lightly's linear warm-up 0.02 -> 0.06 over 5 epochs, then 0.06
    want = reference_dino(teacher, student, centre_before.view(1, -1), temp, 0.1)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5)
    other = reference_dino(teacher, student, centre_before.view(1, -1), 0.06 if temp != 0.06 else 0.02, 0.1)
    assert abs(float(other) - float(want)) > 1e-4
    # teacher given every crop instead (local crops too): another loss
    assert abs(float(reference_dino(teacher, student[::-1], centre_before.view(1, -1), temp, 0.1)) - float(want)) > 1e-4
    # the centre moved towards the teacher's batch mean: C = m C + (1 - m) mean over global crops and images
    mean = torch.cat(teacher).mean(0)
    assert torch.allclose(model.criterion.center.view(-1), 0.9 * centre_before.view(-1) + 0.1 * mean, atol=1e-6)


def test_dino_last_layer_is_frozen_in_the_first_epoch_only():
    model = dino_model(freeze_last_layer=1, norm_last_layer=False)
    for epoch, frozen in ((0, True), (1, False)):
        model.zero_grad()
        model._trainer = FakeTrainer(epoch=epoch)  # type: ignore[assignment]
        model.training_step((multi_crop(), torch.arange(6)), 0).backward()
        model.on_after_backward()
        last = list(model.projection_head.last_layer.parameters())
        assert all((p.grad is None) == frozen for p in last), epoch
        assert model.projection_head.layers[0].weight.grad is not None  # the rest of the head trains
    model._trainer = None


def test_dino_weight_decay_schedule_and_undecayed_norm_and_bias(tiny):
    """DINO's config: AdamW, the default group's weight decay on a cosine 0.04 -> 0.4 over the run, normalisation
    and bias parameters in a group that stays at 0 (the shared optimiser code)."""
    model = build_method(compose(tiny + ["method=dino"]))
    model._trainer = FakeTrainer(0, 100)  # type: ignore[assignment]
    opt = model.configure_optimizers()["optimizer"]
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"default", "no_weight_decay"} and type(opt).__name__ == "AdamW"
    decayed = {id(p) for p in groups["default"]["params"]}
    undecayed = {id(p) for p in groups["no_weight_decay"]["params"]}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) or name == "bias":
                assert id(p) in undecayed and id(p) not in decayed, (type(module).__name__, name)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and name == "weight":
                assert id(p) in decayed, (type(module).__name__, name)
    want = {0: 0.04, 50: 0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi * 50 / 99)) / 2, 99: 0.4}
    for step, wd in want.items():
        model._trainer = FakeTrainer(step, 100)  # type: ignore[assignment]
        model.on_before_optimizer_step(opt)
        assert groups["default"]["weight_decay"] == pytest.approx(wd, abs=1e-9)
        assert groups["no_weight_decay"]["weight_decay"] == 0.0
    model._trainer = None
    # without a schedule the weight decay stays put
    simclr = build_method(compose(tiny + ["method=simclr"]))
    simclr._trainer = FakeTrainer(50, 100)  # type: ignore[assignment]
    opt = simclr.configure_optimizers()["optimizer"]
    simclr.on_before_optimizer_step(opt)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4]
    simclr._trainer = None


def test_dino_refuses_bad_temperatures():
    with pytest.raises(SSLClusterError, match="teacher_temp=0"):
        DINO(TinyCNN(1), teacher_temp=0.0)


# -- CIFAR-10 presets ---------------------------------------------------------------------------------------------

LIGHTLY_CIFAR10 = {"name": "sgd", "lr": 0.06, "base_batch_size": 128, "momentum": 0.9, "weight_decay": 5e-4,
                   "warmup_epochs": 0}


@pytest.mark.parametrize("method,heads", [("byol", (1024, 256)), ("barlowtwins", (2048, 2048)),
                                          ("dino", (2048, 2048))])
def test_cifar10_presets_follow_lightlys_benchmark(method, heads):
    cfg = compose([f"+experiment=cifar10_{method}", "data.source.root=x"])
    optim = dict(cfg.method.optim)
    assert {k: optim[k] for k in LIGHTLY_CIFAR10} == LIGHTLY_CIFAR10
    assert optim.get("weight_decay_end") is None and not optim.get("no_decay_norm_bias")
    assert (cfg.method.module.hidden_dim, cfg.method.module.output_dim) == heads
    assert cfg.data.batch_size == 128 and cfg.trainer.max_epochs == 200
    assert cfg.backbone.name == "resnet18" and cfg.backbone.module.cifar_stem
    if method == "dino":  # two 32-px global crops, no local crops, no blur; the loss's defaults
        v = cfg.augmentation.views
        assert (v.global_crop_size, v.n_local_views, list(v.gaussian_blur)) == (32, 0, [0.0, 0.0, 0.0])
        m = cfg.method.module
        assert (m.bottleneck_dim, m.batch_norm, m.teacher_temp, m.student_temp, m.freeze_last_layer) == \
            (256, True, 0.04, 0.1, -1)
    else:  # the benchmark's SimCLR views without blur
        assert cfg.augmentation.name == "simclr" and cfg.augmentation.views.gaussian_blur == 0.0


def test_cifar10_vicreg_preset_follows_solo_learn():
    cfg = compose(["+experiment=cifar10_vicreg", "data.source.root=x"])
    m, o = cfg.method.module, cfg.method.optim
    assert (m.lambda_param, m.mu_param, m.nu_param, m.hidden_dim, m.output_dim) == (25.0, 25.0, 1.0, 2048, 2048)
    assert (o.name, o.lr, o.base_batch_size, o.weight_decay, o.warmup_epochs) == ("lars", 0.3, 256, 1e-4, 10)
    for view in (cfg.augmentation.views.view_1_transform, cfg.augmentation.views.view_2_transform):
        assert (view.min_scale, view.solarization_prob, view.gaussian_blur, view.cj_sat) == (0.2, 0.1, 0.0, 0.2)
