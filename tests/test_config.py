import pytest

from sslcluster.config import compose
from sslcluster.errors import SSLClusterError


def test_default_composes_every_group():
    cfg = compose([])
    for group in ("method", "backbone", "data", "augmentation", "trainer", "clustering", "logger"):
        assert group in cfg, group
    assert cfg.method.name == "simclr"
    assert cfg.data.name == "digits"
    assert cfg.backbone.module.in_channels == cfg.data.channels == 1


def test_overrides_and_group_choice():
    cfg = compose(["backbone=resnet18", "data=cifar10", "trainer.max_epochs=3", "clustering.algorithm.k=7"])
    assert cfg.backbone.module.arch == "resnet18"
    assert cfg.backbone.module.in_channels == 3
    assert cfg.trainer.max_epochs == 3
    assert cfg.clustering.algorithm.k == 7


def test_unknown_key_is_one_clear_line():
    with pytest.raises(SSLClusterError) as e:
        compose(["trainer.max_epochz=3"])
    msg = str(e.value)
    assert "max_epochz" in msg and "\n" not in msg


def test_unknown_group_option_lists_valid_ones():
    with pytest.raises(SSLClusterError) as e:
        compose(["method=nosuch"])
    msg = str(e.value)
    assert "nosuch" in msg and "simclr" in msg and "\n" not in msg


def test_missing_required_value_is_named():
    with pytest.raises(SSLClusterError) as e:
        compose(["data=image_folder"])
    assert "root" in str(e.value)


def test_a_method_sets_its_clustered_features_and_the_command_line_wins():
    assert compose([]).clustering.features == "projection"  # a method saying nothing: the projection head's
    assert compose(["method=vicreg"]).clustering.features == "backbone"  # chosen on val_nmi in vicreg.yaml
    assert compose(["method=vicreg", "clustering.features=projection"]).clustering.features == "projection"
    assert compose(["method=simclr", "clustering.features=backbone"]).clustering.features == "backbone"


def test_a_method_sets_its_digits_length_and_batch_and_experiments_and_the_command_line_win():
    plain, byol = compose([]), compose(["method=byol"])
    assert (plain.trainer.max_epochs, plain.data.batch_size) == (60, 128)
    assert (byol.trainer.max_epochs, byol.data.batch_size) == (100, 64)  # byol.yaml, chosen on val_nmi
    assert compose(["method=byol", "trainer.max_epochs=3", "data.batch_size=32"]).trainer.max_epochs == 3
    cifar = compose(["+experiment=cifar10_byol"])
    assert (cifar.trainer.max_epochs, cifar.data.batch_size) == (200, 128)  # lightly's benchmark values


def test_a_method_sets_its_digits_kmeans_preprocessing_only_on_digits_and_the_command_line_wins():
    def pre(overrides: list[str]) -> tuple:
        p = compose(overrides).clustering.preprocess
        return p.l2, p.pca_dim, p.whiten

    assert pre([]) == (True, None, False)  # SimCLR on digits: L2 only
    assert pre(["method=dino"]) == pre(["method=vicreg"]) == (True, 16, True)  # chosen on val_nmi (the method yamls)
    assert pre(["method=dino", "clustering.preprocess.pca_dim=32"]) == (True, 32, True)
    assert pre(["method=dino", "clustering.preprocess.pca_dim=null", "clustering.preprocess.whiten=false"]) == \
        (True, None, False)
    assert pre(["+experiment=cifar10_dino"]) == (True, None, False)  # a digits choice: no other data set takes it
    assert pre(["method=vicreg", "data=image_folder", "data.source.root=/x"]) == (True, None, False)
    assert pre(["method=dino", "clustering=minibatch_kmeans"])[1:] == (None, False)  # measured for k-means only
