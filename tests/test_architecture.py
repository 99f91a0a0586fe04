"""The shape of the code: imports run one way, no module imports itself back, no two modules share a name.

Read from the source (AST) of every module of gateway/, parsers/, store/, notifiers/ and web/. An import
inside a function counts like one at the top: it hides a cycle, it does not remove it.

Layers, lowest first (README.md "Architecture"); a layer imports only the layers below it:

    gateway.core   errors, clock, private files, descriptors, threads: nothing else of Inlet
    parsers        raw input -> Signals                      -> gateway.core
    store          models, database, migrations, wakeups     -> gateway.core
    notifiers      outbox, delivery, templates               -> store, gateway.core
    gateway        config, intake, pipeline, lifecycle, ...  -> parsers, notifiers, store, gateway.core
    web            the Flask app                             -> gateway (and what it may import)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "parsers", "store", "notifiers", "web")

# What each layer may import directly, besides itself; the layers further down come with them.
BELOW = {
    "gateway.core": (),
    "parsers": ("gateway.core",),
    "store": ("gateway.core",),
    "notifiers": ("store", "gateway.core"),
    "gateway": ("parsers", "notifiers", "store", "gateway.core"),
    "web": ("gateway",),
}
# Upward imports allowed, each for a reason.
ROOTS = {
    ("gateway.service", "web.app"): "the composition root: builds the web app on its services and serves it",
    ("gateway.cli.main", "web.reports"): "the `inlet` entry point: `inlet report --format html` is the web's report",
}
# Modules that may import Inlet modules inside functions: entry points that load only what is run.
LAZY = {
    "gateway.cli.main": "each command imports what it runs: `inlet --help` and quick commands stay fast",
    "gateway.service": "a role process imports only its roles' servers (aiosmtpd, imapclient, Flask, waitress)",
    "gateway.cli.common": "as gateway.cli.main: the store and the lifecycle are loaded by the commands that use them",
    "gateway.cli.account_commands": "as gateway.cli.main: the `inlet user`, `group` and `incident assign` commands",
}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file, for every module of the five packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported module of Inlet, inside a function?) for each import in the module's source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nested = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for node in ast.walk(function)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from gateway.core import errors` names the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, id(node) in nested))
    return found


def graph(found: dict[str, Path]) -> dict[str, dict[str, bool]]:
    """module -> {imported module: only inside functions?}"""
    edges: dict[str, dict[str, bool]] = {}
    for name, path in found.items():
        mine = edges.setdefault(name, {})
        for target, inside in imports(name, path, set(found)):
            mine[target] = mine.get(target, True) and inside
    return edges


def layer(module: str) -> str:
    return "gateway.core" if module == "gateway.core" or module.startswith("gateway.core.") else module.split(".")[0]


def allowed(source: str) -> set[str]:
    """The layers ``source``'s layer may import: itself and every layer below it."""
    seen, todo = set(), [layer(source)]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(BELOW[current])
    return seen


def upward(edges) -> list[str]:
    return [
        f"{source} -> {target}"
        for source, targets in sorted(edges.items())
        for target in sorted(targets)
        if layer(target) not in allowed(source) and (source, target) not in ROOTS
    ]


def cycles(edges) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


@pytest.fixture(scope="module")
def edges():
    return graph(modules())


def test_no_import_cycle_between_modules(edges):
    assert cycles(edges) == []


def test_imports_run_from_higher_layers_to_lower_ones(edges):
    assert upward(edges) == []


def test_gateway_core_imports_nothing_else_of_inlet(edges):
    core = {m: sorted(t for t in targets if layer(t) != "gateway.core") for m, targets in edges.items()}
    assert {m: t for m, t in core.items() if layer(m) == "gateway.core" and t} == {}


def test_inlet_modules_are_imported_inside_functions_only_by_the_entry_points(edges):
    lazy = {
        f"{source} -> {target}"
        for source, targets in edges.items()
        for target, inside in targets.items()
        if inside and source not in LAZY
    }
    assert sorted(lazy) == []


def test_every_exception_is_still_needed(edges):
    """An exception that no import uses any more is a door left open: remove it."""
    assert [pair for pair in ROOTS if pair[1] not in edges.get(pair[0], {})] == []
    assert [m for m in LAZY if not any(edges.get(m, {}).values())] == []


def test_no_two_modules_share_a_name():
    names: dict[str, list[str]] = {}
    for name, path in modules().items():
        if path.name != "__init__.py":
            names.setdefault(path.stem, []).append(name)
    assert {stem: found for stem, found in names.items() if len(found) > 1} == {}


def test_the_checks_see_a_cycle_hidden_in_a_function_and_an_upward_import(tmp_path):
    """The checker itself, on a made-up tree: it must catch what the rules forbid."""
    files = {
        "store/__init__.py": "",
        "store/models.py": "def lazy():\n    from store.db import db\n",
        "store/db.py": "from store import models\n",
        "parsers/__init__.py": "",
        "parsers/signal.py": "from store.models import Incident\n",
        "gateway/__init__.py": "",
        "gateway/core/__init__.py": "",
        "gateway/core/clock.py": "from . import errors\nfrom gateway.lifecycle import x\n",
        "gateway/core/errors.py": "",
        "gateway/lifecycle.py": "from .core.clock import Clock\n",
        "notifiers/__init__.py": "",
        "web/__init__.py": "",
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    made_up = graph(modules(tmp_path))
    assert cycles(made_up) == [["gateway.core.clock", "gateway.lifecycle"], ["store.db", "store.models"]]
    assert upward(made_up) == ["gateway.core.clock -> gateway.lifecycle", "parsers.signal -> store.models"]
    assert made_up["store.models"] == {"store.db": True}  # found inside a function
    assert made_up["gateway.core.clock"]["gateway.core.errors"] is False  # a relative import, at the top
