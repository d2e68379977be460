"""The shape of the code, checked: the data flows one way, nothing reaches into another
module's privates, classes stay small."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("monitor", "detectors", "sinks")


def modules(package: str) -> dict[str, ast.Module]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return out


def imports(name: str, tree: ast.Module) -> set[str]:
    """Every module of ours ``name`` imports, type-only imports included."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                parent = (
                    name.split(".")[: -node.level]
                    if not name.endswith("__init__")
                    else name.split(".")
                )
                base = ".".join([*parent, node.module])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    mods = {n: t for p in PACKAGES for n, t in modules(p).items()}
    return {n: {m for m in imports(n, t) if m in mods and m != n} for n, t in mods.items()}


def test_no_import_cycle_among_our_modules_type_only_imports_included() -> None:
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(m) :], m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)


def test_detectors_and_sinks_never_import_the_daemon() -> None:
    for n, deps in graph().items():
        if n.startswith("detectors"):
            assert not {d for d in deps if not d.startswith("detectors")}, n
        if n.startswith("sinks"):
            assert not {d for d in deps if d.startswith("monitor")}, n


def test_sub_packages_depend_one_way() -> None:
    """Each sub-package of monitor/ imports only those before it in this order."""
    order = [
        "errors",
        "logs",
        "backoff",
        "config",
        "ingest",
        "alerting",
        "serve",
        "online",
        "state",
        "app",
        "replay",
        "demo",
        "cli",
        "__main__",
    ]
    rank = {p: i for i, p in enumerate(order)}
    for n, deps in graph().items():
        if not n.startswith("monitor.") or n.count(".") < 1:
            continue
        here = n.split(".")[1]
        for d in deps:
            if d.startswith("monitor.") and d.count(".") >= 1:
                there = d.split(".")[1]
                assert rank[there] <= rank[here], f"{n} imports {d}"


def private_names(tree: ast.Module) -> set[str]:
    """The private names a module defines: its functions, methods, classes and the
    attributes it assigns."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_no_module_reads_another_modules_private_attributes() -> None:
    offenders = []
    for p in PACKAGES:
        for name, tree in modules(p).items():
            own = private_names(tree)
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and node.attr not in own
                    and not (isinstance(node.value, ast.Name) and node.value.id == "sys")
                ):
                    offenders.append(f"{name}:{node.lineno} .{node.attr}")
    assert not offenders, offenders


def test_no_class_is_over_about_250_lines() -> None:
    sizes = defaultdict(int)
    for p in PACKAGES:
        for name, tree in modules(p).items():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    sizes[f"{name}.{node.name}"] = (node.end_lineno or 0) - node.lineno + 1
    big = {k: v for k, v in sizes.items() if v > 260}
    assert not big, big
