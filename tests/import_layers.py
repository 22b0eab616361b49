"""The project's import graph and the contract it must keep.

Layers, lowest first: `resources` (resources and the domain libraries) ← `assets`
(`assets.components` below the pipeline folders) ← `sensors` ← `ai_pipelines` ← `evals`,
`bench`. A module may import its own layer and the layers below it, never above; the
pipeline folders never import each other; and no set of modules imports itself round a
loop, even lazily inside a function. The contract is read from the source with `ast`, so
an import written anywhere in a file counts.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("resources", "assets", "sensors", "ai_pipelines", "evals", "bench")

# Lowest first: a module may import any prefix at or below its own rank.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("resources",),
    ("assets.components",),
    ("assets",),
    ("sensors",),
    ("ai_pipelines",),
    ("evals", "bench"),
)
# Siblings that are independent of each other: each pipeline folder stands alone.
INDEPENDENT: tuple[tuple[str, ...], ...] = (("assets.digest", "assets.triage"),)


class Violation(BaseModel):
    importer: str
    imported: str
    line: int
    rule: str

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.imported} ({self.rule})"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    return {
        module_name(path, root): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _resolve(name: str, known: Mapping[str, Path]) -> str | None:
    """The project module an imported name lives in (`a.b.c` may be module `a.b` exporting `c`)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, known: Mapping[str, Path]) -> list[tuple[str, int]]:
    """Every project module `module` imports, with the line, wherever in the file the import is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, known)
            if target is not None and target != module:
                found.append((target, node.lineno))
    return found


def import_graph(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, list[tuple[str, int]]]:
    known = project_modules(root, packages)
    return {module: imports_of(module, path, known) for module, path in known.items()}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int:
    """The rank of the most specific layer holding `module`."""
    best, rank = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if _within(module, prefix) and len(prefix) > best:
                best, rank = len(prefix), index
    return rank


def layer_violations(graph: Mapping[str, list[tuple[str, int]]]) -> list[Violation]:
    violations = []
    for importer, imported in graph.items():
        for target, line in imported:
            if layer_of(target) > layer_of(importer):
                violations.append(Violation(importer=importer, imported=target, line=line, rule="upward import"))
            for siblings in INDEPENDENT:
                mine = [s for s in siblings if _within(importer, s)]
                theirs = [s for s in siblings if _within(target, s)]
                if mine and theirs and mine != theirs:
                    violations.append(
                        Violation(importer=importer, imported=target, line=line, rule="independent pipelines")
                    )
    return violations


def import_cycles(graph: Mapping[str, list[tuple[str, int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        work = [(node, iter(graph.get(node, [])))]
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        while work:
            current, edges = work[-1]
            for target, _ in edges:
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph.get(target, []))))
                    break
                if target in on_stack:
                    low[current] = min(low[current], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[current])
                if low[current] == index[current]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == current:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles
