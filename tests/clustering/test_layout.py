"""The layout of ``sslcluster/clustering/``: every ``_target_`` path older configs and stored runs name still builds
the class it names today; the configs name the family modules; ``base.py`` and ``checks.py`` import no algorithm
module (no import circle); the old paths (``algorithms.py``, ``optics.py``, ``dask_kmeans.py``) only re-export, and
the package itself never imports them."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra.utils import get_class
from omegaconf import OmegaConf
from sklearn.metrics import adjusted_rand_score

from sslcluster.clustering.base import ClusteringAlgorithm
from sslcluster.factory import build
from sslcluster.store.runconfig import read_run_config

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "sslcluster" / "clustering"

#: every ``clustering.algorithm._target_`` the configs of commit 81f6cc4 (before one module per family) named,
#: and the path of the same class now. Stored runs' ``config.yaml`` and ``stage_configs/`` keep the old ones.
OLD_TARGETS = {
    "sslcluster.clustering.algorithms.KMeans": "sslcluster.clustering.kmeans.KMeans",
    "sslcluster.clustering.algorithms.MiniBatchKMeans": "sslcluster.clustering.kmeans.MiniBatchKMeans",
    "sslcluster.clustering.dask_kmeans.DaskKMeans": "sslcluster.clustering.kmeans.DaskKMeans",
    "sslcluster.clustering.algorithms.HDBSCAN": "sslcluster.clustering.density.HDBSCAN",
    "sslcluster.clustering.algorithms.DBSCAN": "sslcluster.clustering.density.DBSCAN",
    "sslcluster.clustering.optics.OPTICS": "sslcluster.clustering.density.OPTICS",
    "sslcluster.clustering.algorithms.GaussianMixture": "sslcluster.clustering.mixture.GaussianMixture",
    "sslcluster.clustering.algorithms.Agglomerative": "sslcluster.clustering.hierarchical.Agglomerative",
    "sslcluster.clustering.algorithms.Birch": "sslcluster.clustering.hierarchical.Birch",
    "sslcluster.clustering.algorithms.Spectral": "sslcluster.clustering.spectral.Spectral",
    "sslcluster.clustering.som.SOM": "sslcluster.clustering.som.SOM",
    "sslcluster.clustering.heads.scan.SCANHeads": "sslcluster.clustering.heads.scan.SCANHeads",
    "sslcluster.clustering.heads.temi.TEMIHeads": "sslcluster.clustering.heads.temi.TEMIHeads",
}
#: modules that only keep old paths importable: no definitions, never imported by the package.
COMPAT = ("algorithms", "optics", "dask_kmeans")


def config_targets() -> dict[str, str]:
    """``configs/clustering/<name>.yaml`` -> its ``algorithm._target_``."""
    return {p.stem: yaml.safe_load(p.read_text())["algorithm"]["_target_"]
            for p in sorted((REPO / "configs" / "clustering").glob("*.yaml"))}


@pytest.mark.parametrize("old", sorted(OLD_TARGETS))
def test_an_old_target_resolves_to_the_class_of_its_new_path(old):
    cls = get_class(old)
    assert cls is get_class(OLD_TARGETS[old])
    assert issubclass(cls, ClusteringAlgorithm)


def test_the_configs_name_the_family_modules():
    targets = config_targets()
    assert [name for name, t in targets.items() if t.split(".")[2] in COMPAT] == [], "configs naming an old path"
    assert set(OLD_TARGETS.values()) <= set(targets.values()), "a new path above that no config names"


def blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = np.eye(6, dtype=np.float32)[y] * 8 + rng.standard_normal((len(y), 6)).astype(np.float32) * 0.3
    return x, y


# algorithm settings of a stored run: what its config.yaml holds under clustering.algorithm (seed resolved)
STORED = {
    "sslcluster.clustering.algorithms.KMeans": {"k": 3, "backend": "sklearn", "n_init": 2, "seed": 0},
    "sslcluster.clustering.algorithms.GaussianMixture": {"k": 3, "seed": 0},
    "sslcluster.clustering.algorithms.Birch": {"k": 3, "threshold": 0.5},
    "sslcluster.clustering.algorithms.DBSCAN": {"eps": 2.0, "min_samples": 5},
    "sslcluster.clustering.optics.OPTICS": {"min_samples": 20, "min_cluster_size": 0.05},
    "sslcluster.clustering.som.SOM": {"grid": [3, 3], "iterations": 500, "k": 3, "seed": 0},
}


@pytest.mark.parametrize("old", sorted(STORED))
def test_a_stored_run_config_naming_an_old_path_still_clusters(tmp_path, old):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"seed": 0, "clustering": {"name": "x", "split": "test", "algorithm": {"_target_": old, **STORED[old]}}}))
    node = OmegaConf.create(read_run_config(tmp_path)["clustering"]["algorithm"])
    algo = build(node)
    assert type(algo) is get_class(OLD_TARGETS[old])
    x, y = blobs()
    labels = algo.fit_predict_shuffled(x, seed=0)
    assert labels.shape == (len(x),) and adjusted_rand_score(y, labels) == 1.0
    # the same settings under the new path: the same class, so the same labels for the same seed
    new = build(OmegaConf.create({"_target_": OLD_TARGETS[old], **STORED[old]}))
    np.testing.assert_array_equal(new.fit_predict_shuffled(x, seed=0), labels)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside a function (``from a import b``: ``a`` and
    ``a.b``, since ``b`` may be a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: a relative import"
            out.add(str(node.module))
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("name, allowed", [("base", set()),
                                           ("checks", {"sslcluster.errors", "sslcluster.clustering.base"})])
def test_base_and_checks_import_no_algorithm_module(name, allowed):
    ours = {m for m in imported_modules(PACKAGE / f"{name}.py") if m.startswith("sslcluster")}
    # ``from sslcluster.clustering.base import X`` also yields sslcluster.clustering.base.X: a name, not a module
    modules = {m for m in ours if not any(m.startswith(a + ".") for a in allowed)}
    assert modules <= allowed, f"clustering/{name}.py imports {sorted(modules - allowed)}"


@pytest.mark.parametrize("name", COMPAT)
def test_an_old_path_module_only_re_exports(name):
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    for i, node in enumerate(tree.body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom):
            continue
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and (node.targets[0].id == "__all__" or isinstance(node.value, (ast.Name, ast.Attribute)))):
            continue  # __all__, or an alias of a name defined elsewhere
        raise AssertionError(f"clustering/{name}.py line {node.lineno}: {type(node).__name__}; it only re-exports")


def test_the_package_never_imports_an_old_path():
    old = {f"sslcluster.clustering.{name}" for name in COMPAT}
    wrong = []
    for path in sorted((REPO / "sslcluster").rglob("*.py")):
        if path.parent == PACKAGE and path.stem in COMPAT:
            continue
        hits = imported_modules(path) & old
        wrong += [f"{path.relative_to(REPO)} imports {m}" for m in sorted(hits)]
    assert wrong == []
