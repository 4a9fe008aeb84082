"""The clustering stage's settings live under ``clustering`` (``clustering.split``, ``.features``, ``.key``,
``.overwrite``) beside the algorithm the ``clustering`` group chooses. The older spelling ``cluster.<setting>``
still works, on every command and in multiruns, rewritten with one warning line."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from omegaconf import OmegaConf

from sslcluster.cli import main
from sslcluster.config import compose

ROOT = Path(__file__).resolve().parent.parent
STAGE_KEYS = {"split": "all", "features": "backbone", "key": "mine", "overwrite": True}
DEFAULTS = {"split": "test", "features": "projection", "key": None, "overwrite": False}


def _plain(cfg):
    return OmegaConf.to_container(cfg, resolve=True)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_stage_settings_are_under_clustering_for_every_algorithm():
    options = sorted(p.stem for p in (ROOT / "configs" / "clustering").glob("*.yaml"))
    assert "kmeans" in options and "hdbscan" in options
    for option in options:
        cfg = compose([f"clustering={option}"])
        assert cfg.clustering.name == option
        assert {k: cfg.clustering[k] for k in DEFAULTS} == DEFAULTS, option
        assert "cluster" not in cfg
        # a group file setting one of them would be overruled by config.yaml without a word: none does
        assert not set(DEFAULTS) & set(yaml.safe_load((ROOT / "configs" / "clustering" / f"{option}.yaml").read_text()))
    assert {k: compose(["clustering=hdbscan", f"clustering.{k}={v}"]).clustering[k] for k, v in STAGE_KEYS.items()} \
        == STAGE_KEYS


@pytest.mark.parametrize("prefix", ["", "++"])
@pytest.mark.parametrize("name", sorted(STAGE_KEYS))
def test_the_old_spelling_gives_the_same_config_with_one_warning(name, prefix, caplog):
    value = str(STAGE_KEYS[name]).lower()
    new = compose(["clustering=gmm", f"{prefix}clustering.{name}={value}"])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        old = compose(["clustering=gmm", f"{prefix}cluster.{name}={value}"])
    assert _plain(old) == _plain(new)
    assert old.clustering[name] == STAGE_KEYS[name]
    (line,) = _warnings(caplog)
    assert f"cluster.{name}" in line and f"clustering.{name}" in line and "\n" not in line


def test_other_keys_are_left_alone():
    from sslcluster.config import rename_old_keys

    kept = ["clustering.algorithm.k=5", "stages.cluster=false", "+cluster_extra=1", "clustering=gmm",
            "hydra.sweep.dir=x", "-m"]
    assert rename_old_keys(kept) == kept
    assert rename_old_keys(["~cluster.key", "cluster.split=test,all"]) == ["~clustering.key",
                                                                          "clustering.split=test,all"]


def test_sslcluster_commands_take_the_old_spelling(capsys, caplog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert main(["cluster", "cluster.key=mine", "cluster.split=all", "--cfg", "job"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["clustering"]["key"] == "mine" and cfg["clustering"]["split"] == "all" and "cluster" not in cfg
    assert len(_warnings(caplog)) == 2
    # a stage that runs: the override reaches the stage's config
    import sslcluster.pipeline as pipeline

    seen = []
    monkeypatch.setattr(pipeline, "stage_evaluate", lambda cfg: seen.append(cfg.clustering.key))
    assert main(["evaluate", "run.key=x", "cluster.key=mine"]) == 0
    assert seen == ["mine"]


def test_multirun_takes_the_old_spelling(tmp_path, monkeypatch, caplog, capsys):
    import sslcluster.pipeline as pipeline

    seen = []

    def fake_run(cfg):
        seen.append((cfg.clustering.key, cfg.clustering.split))
        return SimpleNamespace(path=tmp_path / "runs" / str(cfg.clustering.key))

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert main(["run", "-m", f"run.root={tmp_path / 'runs'}", "cluster.key=a,b", "cluster.split=all",
                     "logger=none"]) == 0
    assert sorted(seen) == [("a", "all"), ("b", "all")]
    assert len([w for w in _warnings(caplog) if "cluster." in w]) == 2


def test_train_py_takes_the_old_spelling(tmp_path):
    from tests.proc_helpers import child_env

    p = subprocess.run([sys.executable, str(ROOT / "train.py"), "cluster.features=backbone", "--cfg", "job"],
                       cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load(p.stdout)["clustering"]["features"] == "backbone"
    lines = [ln for ln in p.stderr.splitlines() if "cluster.features" in ln]
    assert len(lines) == 1 and "clustering.features" in lines[0], p.stderr


def test_a_config_tree_of_the_old_layout_is_refused_in_one_line(tmp_path, monkeypatch):
    from sslcluster.errors import SSLClusterError

    tree = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", tree)
    text = (tree / "config.yaml").read_text()
    assert "\nclustering:\n  split:" in text
    (tree / "config.yaml").write_text(text.replace("\nclustering:\n  split:", "\ncluster:\n  split:"))
    monkeypatch.setenv("SSLCLUSTER_CONFIG_DIR", str(tree))
    with pytest.raises(SSLClusterError) as e:
        compose([])
    msg = str(e.value)
    assert "clustering.split" in msg and "cluster:" in msg and "\n" not in msg
