"""The layers of docs/architecture.md hold: no package or top-level module of sslcluster imports one above it or
beside it on its line, at module level or inside a function; every one is on the list; ``store/`` and
``integrations/`` use ``errors`` only; FiftyOne is imported by ``integrations/`` alone, inside its functions, and
``integrations/`` only inside functions. The import graph comes from ``benchmarks/architecture.py`` (read from the
source with ``ast``)."""

from __future__ import annotations

import ast
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


def import_graph(parts: tuple[str, ...] = ("imports", "function_local_imports")) -> dict[str, set[str]]:
    """Unit -> the units it imports (``parts``: module level, inside functions), from benchmarks/architecture.py."""
    spec = importlib.util.spec_from_file_location("architecture", REPO / "benchmarks" / "architecture.py")
    assert spec is not None and spec.loader is not None
    arch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(arch)
    f = arch.figures(REPO)
    graph: dict[str, set[str]] = {}
    for part in parts:
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


def test_outside_tools_are_imported_only_when_used():
    """docs/architecture.md's rule on ``integrations/``: it uses ``errors`` only; it is imported by the others only
    inside their functions; FiftyOne is imported by ``integrations/`` alone, inside its functions."""
    assert import_graph().get("integrations", set()) <= {"errors"}, import_graph()["integrations"]
    at_module_level = sorted(src for src, dsts in import_graph(("imports",)).items() if "integrations" in dsts)
    assert at_module_level == [], f"import sslcluster.integrations at module level in: {at_module_level}"
    wrong = []
    for path in sorted((REPO / "sslcluster").rglob("*.py")):
        tree = ast.parse(path.read_text())
        inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f)}
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n.split(".")[0] == "fiftyone" for n in names):
                rel = path.relative_to(REPO)
                if rel.parts[1] != "integrations" or id(node) not in inside:
                    wrong.append(f"{rel}:{node.lineno}")
    assert wrong == [], f"fiftyone imported outside integrations/ or at module level: {wrong}"
