"""Measure the package layout: rooms, floors and imports that run back up.

A room is a top-level module or subpackage of ``deployopt``; floors are the longest chain of imports between
rooms; a cycle is a pair of rooms importing each other. Typing-only imports (``if TYPE_CHECKING:``) do not
count; ``--all`` counts function-local imports too, not only module-level ones.

    python benchmarks/layout.py deployopt --all
"""

from __future__ import annotations

import argparse
import ast
import re
from functools import cache
from pathlib import Path


def _modules(root: Path) -> dict[str, Path]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    remapped = root.parent / "models"  # the layout before models/ moved into the package
    for path in sorted(remapped.glob("*.py")) if remapped.is_dir() else []:
        modules["deployopt.models" + ("" if path.stem == "__init__" else f".{path.stem}")] = path
    return modules


def _imports(path: Path, everywhere: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    found: set[str] = set()
    for node in ast.walk(tree) if everywhere else tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deployopt"):
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("deployopt")}
    return found


def room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def measure(root: Path, everywhere: bool) -> dict:
    modules = _modules(root)
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        for target in _imports(path, everywhere) & set(modules):
            if room(target) != room(name):
                edges.setdefault(room(name), set()).add(room(target))

    @cache
    def floors(current: str, seen: frozenset = frozenset()) -> int:
        if current in seen:
            return 0
        return 1 + max((floors(t, seen | {current}) for t in edges.get(current, ())), default=0)

    rooms = {room(m) for m in modules}
    cycles = sorted({tuple(sorted((a, b))) for a, targets in edges.items() for b in targets if a in edges.get(b, ())})
    options = sum(len(re.findall(r"click\.option\(", p.read_text(encoding="utf-8"))) for p in modules.values())
    return {
        "modules": len(modules),
        "rooms": len(rooms),
        "floors": max(floors(r) for r in rooms),
        "cycles": cycles,
        "click.option calls": options,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", type=Path, help="the package folder, e.g. deployopt")
    parser.add_argument("--all", action="store_true", help="count function-local imports too")
    args = parser.parse_args()
    for key, value in measure(args.package.resolve(), args.all).items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
