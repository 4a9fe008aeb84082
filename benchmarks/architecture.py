"""Architecture figures of the package: which subpackage imports which, the longest functions, lines per package.

Run from the repository root: ``python benchmarks/architecture.py`` (``--json`` for machine-readable output).
Computed from the source with :mod:`ast`, so the same measure applies to any checkout. ``tests/test_layers.py`` checks
this graph against the layers of ``docs/architecture.md``.
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import defaultdict
from pathlib import Path

PACKAGE = "sslcluster"


def unit_of(module: str) -> str:
    """The architectural unit of a dotted module name: ``sslcluster.<subpackage>`` or the top-level module."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return ""
    return parts[1] if len(parts) > 1 else "(root)"


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of a source file under ``root``."""
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, current: str, is_pkg: bool) -> str:
    """Absolute module named by a (possibly relative) ``from ... import`` statement."""
    if not node.level:
        return node.module or ""
    base = current.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def figures(root: Path) -> dict:
    """Import graph (module-level and function-local edges), function lengths and line counts of the package."""
    top: dict[str, set[str]] = defaultdict(set)
    local: dict[str, set[str]] = defaultdict(set)
    lines: dict[str, int] = defaultdict(int)
    functions: list[tuple[int, str]] = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        mod = module_name(path, root)
        src_unit = unit_of(mod)
        text = path.read_text()
        lines[src_unit] += len(text.splitlines())
        tree = ast.parse(text)
        func_spans: list[tuple[int, int]] = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                func_spans.append((node.lineno, node.end_lineno))
                functions.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, mod, path.name == "__init__.py")
                targets = [base] if base != PACKAGE else [f"{PACKAGE}.{a.name}" for a in node.names]
            for target in targets:
                dst_unit = unit_of(target)
                if not dst_unit or dst_unit == src_unit:
                    continue
                line = getattr(node, "lineno", 0)
                inside = any(a <= line <= b for a, b in func_spans)
                (local if inside else top)[src_unit].add(dst_unit)
    functions.sort(reverse=True)
    return {
        "imports": {k: sorted(v) for k, v in sorted(top.items())},
        "function_local_imports": {k: sorted(v) for k, v in sorted(local.items())},
        "longest_functions": functions[:5],
        "lines": dict(sorted(lines.items())),
        "total_lines": sum(lines.values()),
    }


def main() -> None:
    """Print the figures for the checkout this file sits in."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    f = figures(args.root)
    if args.json:
        print(json.dumps(f, indent=1))
        return
    print("import graph (module level):")
    for k, v in f["imports"].items():
        print(f"  {k:11s} -> {', '.join(v)}")
    print("function-local imports:")
    for k, v in f["function_local_imports"].items():
        print(f"  {k:11s} -> {', '.join(v)}")
    print("longest functions:")
    for n, where in f["longest_functions"]:
        print(f"  {n:4d} lines  {where}")
    print("lines per package:")
    for k, v in f["lines"].items():
        print(f"  {k:11s} {v:5d}")
    print(f"  {'total':11s} {f['total_lines']:5d}")


if __name__ == "__main__":
    main()
