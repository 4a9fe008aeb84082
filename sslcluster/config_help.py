"""What the command line tells a user about the config tree: the groups and their options (``--help``), the main
overrides (the commented keys of ``configs/config.yaml`` and a few of the groups'), and, for a misspelled key,
group or option, the closest valid one (:func:`suggestion`, by :func:`difflib.get_close_matches`)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from omegaconf import DictConfig, OmegaConf

#: keys of the groups' files that users change most, with what they do (the root config's own are read from its
#: comments by :func:`main_overrides`).
GROUP_OVERRIDES: tuple[tuple[str, str], ...] = (
    ("trainer.max_epochs", "pretraining epochs"),
    ("+trainer.limit_train_batches", "train on this many batches (or fraction) per epoch (a Lightning argument)"),
    ("data.source.root", "image folder to train on (data=image_folder or cifar10_folder)"),
    ("data.batch_size", "pretraining batch size"),
    ("data.num_workers", "DataLoader worker processes"),
    ("method.optim.lr", "learning rate (for method.optim.base_batch_size, scaled linearly)"),
    ("clustering.algorithm.k", "number of clusters (k-means, GMM, agglomerative, ...)"),
    ("clustering.select_k.method", "choose k by a sweep: elbow | silhouette | bic"),
    ("logger.max_embedding_rows", "logger=wandb: rows of the embeddings table (W&B's 2-D projection panel)"),
)


def groups(config_dir: Path) -> dict[str, list[str]]:
    """Config group -> its options (``configs/<group>/<option>.yaml``), sorted."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(config_dir.iterdir()) if d.is_dir() and any(d.glob("*.yaml"))}


def default_options(config_dir: Path) -> dict[str, str]:
    """Group -> the option the root config's ``defaults`` list chooses."""
    doc = OmegaConf.load(config_dir / "config.yaml")
    out: dict[str, str] = {}
    for item in doc.get("defaults", []):
        if isinstance(item, (dict, DictConfig)):
            for k, v in item.items():
                if not str(k).startswith("override "):
                    out[str(k)] = str(v)
    return out


_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w]*):\s*(?P<value>[^#]*?)\s*(?:#\s*(?P<comment>.*))?$")


def main_overrides(config_dir: Path) -> list[tuple[str, str, str]]:
    """``(dotted key, default, comment)`` of every commented leaf of ``config.yaml`` outside ``hydra``/
    ``defaults`` (the file's own comments are the documentation)."""
    stack: list[tuple[int, str]] = []
    out = []
    for line in (config_dir / "config.yaml").read_text().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([k for _, k in stack] + [m["key"]])
        if m["value"] == "":
            stack.append((indent, m["key"]))
            continue
        if key.split(".")[0] in ("hydra", "defaults") or not m["comment"]:
            continue
        out.append((key, m["value"], m["comment"]))
    return out


def help_text(config_dir: Path, usage: str) -> str:
    """``usage`` followed by the config groups (default marked ``*``) and the main overrides."""
    defaults = default_options(config_dir)
    lines = [usage.rstrip(), "", "Config groups (choose one option: GROUP=OPTION; * = default):"]
    for g, opts in groups(config_dir).items():
        lines.append(f"  {g:<13} " + ", ".join(f"{o}*" if defaults.get(g) == o else o for o in opts))
    lines += ["", "Main overrides (KEY=VALUE; default in brackets):"]
    for key, value, comment in main_overrides(config_dir):
        lines.append(f"  {key:<28} [{value}] {comment}")
    for key, comment in GROUP_OVERRIDES:
        lines.append(f"  {key:<28} {comment}")
    lines += ["", "--cfg job prints the resolved config of the overrides given (nothing runs); "
              "every key: configs/*.yaml."]
    return "\n".join(lines)


def flat_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config, nodes and leaves (interpolations are not resolved)."""
    out: list[str] = []
    if isinstance(cfg, DictConfig):
        for k in cfg.keys():
            key = f"{prefix}{k}"
            out.append(key)
            out += flat_keys(cfg._get_node(k), key + ".")
    return out


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest ``word`` (difflib ratio at least 0.6), or None."""
    cands = list(dict.fromkeys(candidates))
    found = difflib.get_close_matches(word, cands, n=1, cutoff=0.6)
    if found:
        return found[0]
    # a misspelled last part of a dotted key: compare it among its siblings only
    if "." in word:
        parent, last = word.rsplit(".", 1)
        siblings = [c.rsplit(".", 1)[1] for c in cands if c.startswith(parent + ".") and c.count(".") == word.count(".")]
        hit = difflib.get_close_matches(last, siblings, n=1, cutoff=0.5)
        if hit:
            return f"{parent}.{hit[0]}"
    return None


def suggestion(message: str, overrides: Sequence[str], config_dir: Path,
               compose_keys: Callable[[Sequence[str]], list[str]]) -> str | None:
    """``did you mean ...?`` for a Hydra error ``message`` about a misspelled key, group or option, or None.

    ``compose_keys(overrides)`` composes a config and returns its :func:`flat_keys` (the keys of the groups
    actually chosen, so ``clustering=hdbscan clustering.algorithm.min_cluster_sz=5`` finds HDBSCAN's key)."""
    m = re.search(r"Could not find '([^'/]+)/([^']+)'", message)
    if m:
        group, option = m.groups()
        hit = closest(option, groups(config_dir).get(group, []))
        return f"did you mean {group}={hit}?" if hit else None
    m = re.search(r"Could not (?:override|append to|delete from) '([^']+)'", message) or \
        re.search(r"Key '([^']+)' is not in struct", message)
    if not m:
        return None
    bad = m.group(1)
    others = [o for o in overrides if not o.lstrip("+~").startswith(bad + "=") and o.lstrip("+~") != bad]
    try:
        keys = compose_keys(others)
    except Exception:  # the other overrides are bad too: the defaults' keys
        keys = compose_keys([])
    hit = closest(bad, [*keys, *groups(config_dir)])
    if hit is None:
        return None
    return f"did you mean {hit}? (a group: {hit}=OPTION)" if hit in groups(config_dir) and "." not in hit \
        else f"did you mean {hit}?"
