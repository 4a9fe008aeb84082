"""The logger group: csv, tensorboard (when installed), wandb, none; a wrong name is one clear error."""

from __future__ import annotations

import pytest

from sslcluster.config import compose
from sslcluster.errors import SSLClusterError
from sslcluster.tracking.loggers import build_logger, tensorboard_available, wandb_group, wandb_init_kwargs
from sslcluster.store.rundir import RunDir


def test_csv_and_none(tmp_path):
    import pytorch_lightning as pl

    run = RunDir.create(tmp_path, "r")
    assert isinstance(build_logger(compose(["logger=csv"]), run), pl.loggers.CSVLogger)
    assert build_logger(compose(["logger=none"]), run) is False


def test_tensorboard_logger_or_a_clear_error(tmp_path):
    import pytorch_lightning as pl

    run = RunDir.create(tmp_path, "r")
    cfg = compose(["logger=tensorboard"])
    if tensorboard_available():
        assert isinstance(build_logger(cfg, run), pl.loggers.TensorBoardLogger)
    else:
        with pytest.raises(SSLClusterError, match="pip install tensorboard"):
            build_logger(cfg, run)


def test_unknown_logger_name(tmp_path):
    cfg = compose(["logger=csv"])
    cfg.logger.name = "mlflow"
    with pytest.raises(SSLClusterError, match="unknown logger 'mlflow'.*tensorboard"):
        build_logger(cfg, RunDir.create(tmp_path, "r"))


def test_wandb_init_arguments_from_config(tmp_path):
    cfg = compose(["logger=wandb", "logger.project=abl", "logger.group=g1", "logger.run_name=first",
                   "method.optim.lr=0.5"])
    kw = wandb_init_kwargs(cfg, tmp_path, "key1", job_type="train")
    assert kw["project"] == "abl" and kw["group"] == "g1" and kw["name"] == "first" and kw["mode"] == "offline"
    assert kw["tags"] == ["simclr", "tiny_cnn", "digits"]
    assert kw["config"]["method"]["optim"]["lr"] == 0.5 and kw["dir"] == str(tmp_path)
    cfg = compose(["logger=wandb"])
    assert wandb_group(cfg) is None and wandb_init_kwargs(cfg, tmp_path, "key1", "train")["name"] == "key1"
