"""The project's layers: a module imports only from its own layer or lower ones, and no modules
import each other in a cycle.

Read from the source (``ast``), every import counted, also those inside functions: a lazy
import still makes the lower layer depend on the higher one. Lowest first:

===  ============================  ==========================================================
 0   base                          ``fedmoe`` (the package itself), ``fedmoe.errors``, ``registry``,
                                   ``files``, ``device_series``, ``memory``, ``npzfile``, ``config``, ``arguments``,
                                   ``overrides``,
                                   ``scenarios``, ``flower``, ``fedmoe.federated.protocol`` (the
                                   message vocabulary: it imports only ``config``), the plugins'
                                   ``clock``, ``checks``, ``validation`` and ``compression`` (no torch,
                                   no model)
 1   wireless                      ``fedmoe.wireless``
 2   data and models               ``fedmoe.data``, ``fedmoe.models``, ``fedmoe.v2i``, ``fedmoe.plugins.costs``
 3   training                      ``fedmoe.training``, ``fedmoe.centralised``, ``fedmoe.pareto``
 4   learning set-ups              ``fedmoe.federated``, ``fedmoe.split``, ``fedmoe.plugins`` (selection)
 5   server and client parts       ``fedmoe.strategies``, ``fedmoe.clients`` (strategies, loops, handlers)
 6   modes                         ``fedmoe.strategies.modes``
 7   the Flower apps               ``fedmoe.strategies.server_app``, ``fedmoe.clients.app``
 8   simulation                    ``fedmoe.simulation``
 9   deployment and entry points   ``fedmoe.deploy``; ``strategies`` and ``clients`` (the modules ``flwr run .``
                                   loads, nothing else imports them)
10   command line                  ``fedmoe.cli``
11   benchmarks                    ``sims`` (``sims.bench``: they measure everything, deployments included,
                                   and nothing imports them)
===  ============================  ==========================================================

A name stands for that module or package and everything under it, unless a longer name of
the table claims it; ``fedmoe`` alone is only the package's ``__init__``, so a new module of
``fedmoe`` needs its place in :data:`LAYERS` (the test says so).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fedmoe", "clients", "strategies", "sims")
"""The top-level packages checked (the test suite itself may import anything)."""

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("fedmoe", "fedmoe.errors", "fedmoe.registry", "fedmoe.files", "fedmoe.device_series",
              "fedmoe.memory", "fedmoe.npzfile",
              "fedmoe.config", "fedmoe.arguments", "fedmoe.overrides", "fedmoe.scenarios", "fedmoe.flower",
              "fedmoe.federated.protocol", "fedmoe.plugins.clock", "fedmoe.plugins.checks",
              "fedmoe.plugins.validation", "fedmoe.plugins.compression")),
    ("wireless", ("fedmoe.wireless",)),
    ("data and models", ("fedmoe.data", "fedmoe.models", "fedmoe.v2i", "fedmoe.plugins.costs")),
    ("training", ("fedmoe.training", "fedmoe.centralised", "fedmoe.pareto")),
    ("learning set-ups", ("fedmoe.federated", "fedmoe.split", "fedmoe.plugins")),
    ("server and client parts", ("fedmoe.strategies", "fedmoe.clients")),
    ("modes", ("fedmoe.strategies.modes",)),
    ("the Flower apps", ("fedmoe.strategies.server_app", "fedmoe.clients.app")),
    ("simulation", ("fedmoe.simulation",)),
    ("deployment and entry points", ("fedmoe.deploy", "strategies", "clients")),
    ("command line", ("fedmoe.cli",)),
    ("benchmarks", ("sims",)),
]
"""Layers, lowest first: (name, the modules and packages in it)."""

PACKAGE_ONLY = {"fedmoe"}
"""Names that stand for the package's ``__init__`` only, not for what is under it."""

Graph = dict[str, list[tuple[int, str]]]
"""Module -> ``(line, project module)`` of each of its imports."""


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of :data:`PACKAGES` by dotted name (a package by its own name)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of the longest name that claims ``module`` (``None``: no layer)."""
    best, best_len = None, -1
    for i, (_, names) in enumerate(LAYERS):
        for name in names:
            claims = module == name or (name not in PACKAGE_ONLY and module.startswith(name + "."))
            if claims and len(name) > best_len:
                best, best_len = i, len(name)
    return best


def imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """``(line, project module)`` of every import in ``path`` (module ``module``) of a project module:
    ``from a.b import c`` is ``a.b.c`` if that is a module, else ``a.b``."""

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1 packages
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = known(name)
            if target is not None and target != module:
                found.append((node.lineno, target))
    return found


def import_graph(modules: dict[str, Path]) -> Graph:
    return {module: imports(module, path, modules) for module, path in modules.items()}


def layer_violations(modules: dict[str, Path], graph: Graph, root: Path = ROOT) -> list[str]:
    """``file:line: a (layer) imports b (higher layer)`` for every import that points up."""
    problems = []
    for module, found in graph.items():
        here = layer_of(module)
        for line, target in found:
            there = layer_of(target)
            if here is not None and there is not None and there > here:
                problems.append(f"{modules[module].relative_to(root)}:{line}: {module} (layer {here}, "
                                f"{LAYERS[here][0]}) imports {target} (layer {there}, {LAYERS[there][0]})")
    return problems


def import_cycles(graph: Graph) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan)."""
    edges = {m: sorted({t for _, t in found}) for m, found in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return project_modules()


@pytest.fixture(scope="module")
def graph(modules) -> Graph:
    return import_graph(modules)


def test_every_module_has_a_layer(modules):
    missing = [f"{path.relative_to(ROOT)} ({module})" for module, path in modules.items() if layer_of(module) is None]
    assert not missing, "modules in no layer of tests/test_layers.py LAYERS (add them): " + ", ".join(missing)


def test_every_name_of_the_layers_exists(modules):
    absent = [name for _, names in LAYERS for name in names if name not in modules]
    assert not absent, f"LAYERS names what is not a module or package: {', '.join(absent)}"


def test_no_layer_imports_a_higher_one(modules, graph):
    problems = layer_violations(modules, graph)
    assert not problems, "a lower layer imports a higher one:\n" + "\n".join(problems)


def test_no_modules_import_each_other(graph):
    cycles = import_cycles(graph)
    assert not cycles, "modules that import each other (in a cycle): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_checks_find_what_they_look_for(tmp_path):
    """On a small made-up project: an import that points up (also a lazy or relative one) and a cycle."""
    files = {
        "fedmoe/__init__.py": "",
        "fedmoe/config.py": "def f():\n    from fedmoe.cli import main\n",
        "fedmoe/cli.py": "from fedmoe import config\n",
        "fedmoe/training.py": "from . import config\nfrom .models import moe\n",
        "fedmoe/models/__init__.py": "",
        "fedmoe/models/moe.py": "import fedmoe.training\n",
        "clients/__init__.py": "", "strategies/__init__.py": "", "sims/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = project_modules(tmp_path)
    graph = import_graph(found)
    assert graph["fedmoe.training"] == [(1, "fedmoe.config"), (2, "fedmoe.models.moe")]
    assert layer_violations(found, graph, tmp_path) == [
        "fedmoe/config.py:2: fedmoe.config (layer 0, base) imports fedmoe.cli (layer 10, command line)",
        "fedmoe/models/moe.py:1: fedmoe.models.moe (layer 2, data and models) imports fedmoe.training "
        "(layer 3, training)",
    ]
    assert import_cycles(graph) == [["fedmoe.cli", "fedmoe.config"], ["fedmoe.models.moe", "fedmoe.training"]]
