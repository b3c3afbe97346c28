"""The package's imports follow the order of DESIGN.md ("What a request does").

Each module of usergraph belongs to a layer; a module may import its own layer and the layers
below it, never one above. Layers are folders (or top-level modules), except `schema/`, which
DESIGN.md splits in two: its roots (the Schema, Query, Mutation) import the resolvers, and the
resolvers import the types (everything else in schema/). Folders of one layer (db, auth, mail)
may import one another in one direction only. Imports under `if TYPE_CHECKING:` never run and
do not count: types and resolvers name the Context in annotations only.

The domain (services, db, auth, mail) never imports the web frameworks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "usergraph"

# Top to bottom. A unit is a top-level module, a folder, or one half of schema/.
LAYERS: list[set[str]] = [
    {"cli"},
    {"app"},
    {"pages", "wellknown", "exposition"},
    {"middleware", "tracing"},
    {"http", "graphiql"},
    {"context"},
    {"runtime"},
    {"guards"},
    {"schema roots"},
    {"resolvers"},
    {"schema types"},
    {"services"},
    {"db", "auth", "mail"},
    {"settings", "logs", "metrics"},
]
SCHEMA_ROOTS = {"usergraph.schema", "usergraph.schema.query", "usergraph.schema.mutation"}
DOMAIN = {"services", "db", "auth", "mail"}
WEB_FRAMEWORKS = ("strawberry", "starlette", "graphql", "uvicorn")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    if module in SCHEMA_ROOTS:
        return "schema roots"
    parts = module.split(".")
    if parts[1:2] == ["schema"]:
        return "schema types"
    return parts[1] if len(parts) > 1 else "usergraph"


def rank_of(unit: str) -> int:
    return next(rank for rank, layer in enumerate(LAYERS) if unit in layer)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.AST, module: str, *, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, imported module) of every import that runs, in functions too."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from usergraph.db import sessions` imports a module, not a name.
                yield (
                    node.lineno,
                    f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base,
                )
        stack.extend(ast.iter_child_nodes(node))


def _is_module(name: str) -> bool:
    if not name.startswith("usergraph."):
        return False
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def all_imports() -> list[tuple[str, int, str]]:
    """(importing module, line, imported module) for every import in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        for line, imported in imports(tree, module, is_package=path.name == "__init__.py"):
            found.append((module, line, imported))
    return found


def test_every_module_has_a_layer() -> None:
    units = {unit_of(module_name(path)) for path in PACKAGE.rglob("*.py")} - {"usergraph"}
    layered = set().union(*LAYERS)
    assert units <= layered, f"units with no layer in LAYERS: {sorted(units - layered)}"


def test_imports_point_down_the_layers() -> None:
    wrong = [
        f"{module}:{line} imports {imported} ({unit_of(module)} -> {unit_of(imported)})"
        for module, line, imported in all_imports()
        if imported.startswith("usergraph.")
        and unit_of(imported) != unit_of(module)
        and rank_of(unit_of(imported)) < rank_of(unit_of(module))
    ]
    assert wrong == []


def test_no_two_units_import_each_other() -> None:
    edges = {
        (unit_of(module), unit_of(imported))
        for module, _line, imported in all_imports()
        if imported.startswith("usergraph.") and unit_of(imported) != unit_of(module)
    }
    assert sorted((a, b) for a, b in edges if (b, a) in edges) == []


def test_the_domain_does_not_import_web_frameworks() -> None:
    wrong = [
        f"{module}:{line} imports {imported}"
        for module, line, imported in all_imports()
        if unit_of(module) in DOMAIN and imported.split(".")[0] in WEB_FRAMEWORKS
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from usergraph.schema.types import User", True),
        ("import usergraph.schema.query", True),
        ("def f():\n    from usergraph.resolvers import users", True),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from usergraph.app import x",
            False,
        ),
    ],
)
def test_the_check_sees_imports_that_run(source: str, expected: bool) -> None:
    # The check itself must be able to fail: a wrong-way import in a db module is caught.
    found = [
        imported
        for _line, imported in imports(ast.parse(source), "usergraph.db.users", is_package=False)
        if imported.startswith("usergraph.")
        and rank_of(unit_of(imported)) < rank_of(unit_of("usergraph.db.users"))
    ]
    assert bool(found) is expected
