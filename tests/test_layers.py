"""The layers of docs/architecture.md hold: no package or top-level module of sslcluster imports one above it or
beside it on its line, at module level or inside a function; every one is on the list; ``store/`` uses ``errors``
only. The import graph comes from ``benchmarks/architecture.py`` (read from the source with ``ast``)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def documented_layers(doc: Path = REPO / "docs" / "architecture.md") -> list[list[str]]:
    """The lines of the layer list (top first), each the packages (``stages/``) and modules (``cli.py``) it names,
    as units: ``stages``, ``cli``."""
    text = doc.read_text()
    block = text.split("## Packages and layers", 1)[1].split("```", 2)[1]
    rows = []
    for line in block.splitlines():
        names = []
        for token in line.split():
            m = re.fullmatch(r"(\w+)(?:/|\.py)", token)
            if m is None:
                break
            names.append(m.group(1))
        if names:
            rows.append(names)
    return rows


def import_graph() -> dict[str, set[str]]:
    """Unit -> the units it imports (module level and inside functions), from benchmarks/architecture.py."""
    spec = importlib.util.spec_from_file_location("architecture", REPO / "benchmarks" / "architecture.py")
    assert spec is not None and spec.loader is not None
    arch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(arch)
    f = arch.figures(REPO)
    graph: dict[str, set[str]] = {}
    for part in ("imports", "function_local_imports"):
        for src, dsts in f[part].items():
            graph.setdefault(src, set()).update(dsts)
    return graph


def test_every_import_points_down_the_documented_layers():
    rows = documented_layers()
    level = {name: i for i, names in enumerate(rows) for name in names}
    assert len(level) == sum(map(len, rows)), f"a name is on two lines of the layer list: {rows}"
    assert {"cli", "pipeline", "stages", "report", "store", "errors"} <= set(level)
    units = {p.parent.name if p.name == "__init__.py" and p.parent.name != "sslcluster" else p.stem
             for p in (REPO / "sslcluster").glob("*.py")} | {p.name for p in (REPO / "sslcluster").iterdir()
                                                             if (p / "__init__.py").is_file()}
    units -= {"__init__"}
    assert sorted(units - set(level)) == [], "not in docs/architecture.md's layer list"
    graph = import_graph()
    wrong = sorted(f"{src} imports {dst}" for src, dsts in graph.items() if src in level
                   for dst in dsts if dst in level and level[dst] <= level[src])
    assert wrong == [], "imports against the layers of docs/architecture.md (a lower line imports a higher or " \
                        "a sibling): " + "; ".join(wrong)
    assert graph.get("store", set()) <= {"errors"}, graph.get("store")
