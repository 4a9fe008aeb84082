"""The command line as users expect: --help (train.py and every sslcluster command), --cfg job, and the closest
valid key, group or option suggested for a misspelled one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sslcluster.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent


def run_py(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    from tests.proc_helpers import child_env

    return subprocess.run([sys.executable, *args], cwd=cwd, env=child_env(), capture_output=True, text=True,
                          timeout=300)


def test_train_py_help_lists_groups_options_and_main_overrides(tmp_path):
    p = run_py(str(ROOT / "train.py"), "--help", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("usage: python train.py")
    for group in ("method", "backbone", "data", "augmentation", "trainer", "clustering", "logger", "naming"):
        options = sorted(f.stem for f in (ROOT / "configs" / group).glob("*.yaml"))
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(group + " "))
        assert all(o in line for o in options), (group, line)
    assert "simclr*" in out and "kmeans*" in out  # the defaults marked
    for key in ("run.key", "clustering.split", "trainer.max_epochs", "report.images_per_cluster"):
        assert f"  {key} " in out
    assert not (tmp_path / "runs").exists()


def test_cfg_job_prints_the_resolved_config_and_runs_nothing(tmp_path):
    p = run_py(str(ROOT / "train.py"), "method=moco", "trainer.max_epochs=3", "--cfg", "job", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert cfg["method"]["name"] == "moco" and cfg["trainer"]["max_epochs"] == 3
    assert cfg["run"]["tag"] == "moco"  # resolved: ${method.name}
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", [*COMMANDS, "runs", "compare"])
def test_every_command_answers_help(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sslcluster {command}"), out[:200]
    if command in COMMANDS:
        assert "Config groups" in out and "Main overrides" in out
    assert not (tmp_path / "runs").exists()


def test_sslcluster_pretrain_help_in_a_process(tmp_path):
    p = run_py("-m", "sslcluster.cli", "pretrain", "--help", cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.startswith("usage: sslcluster pretrain"), p.stderr


@pytest.mark.parametrize("override,hint", [
    ("trainer.max_epoch=2", "did you mean trainer.max_epochs?"),
    ("seeed=1", "did you mean seed?"),
    ("clustring=kmeans", "did you mean clustering?"),
    ("backbone=resnet19", "did you mean backbone=resnet18?"),
    ("evaluate.plots.max_point=10", "did you mean evaluate.plots.max_points?"),
])
def test_misspelled_key_group_or_option_suggests_the_closest(override, hint, capsys):
    assert main(["pretrain", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and hint in err, err


def test_misspelled_key_of_a_chosen_group_is_found_in_that_group(capsys):
    assert main(["cluster", "clustering=hdbscan", "clustering.algorithm.min_cluster_sz=5"]) == 2
    assert "did you mean clustering.algorithm.min_cluster_size?" in capsys.readouterr().err


def test_misspelled_command_suggests_the_closest(capsys):
    assert main(["clustr"]) == 2
    assert "did you mean cluster?" in capsys.readouterr().err
