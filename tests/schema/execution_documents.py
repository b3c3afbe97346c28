"""The suite's own query documents, for tests/schema/test_execution.py.

Every string constant in tests/ (f-strings aside) that parses and validates against the schema
is a document some test sends; each query operation in it is one Operation (a named operation
of a document with several is sent with its operationName). Variables come from the declared
types: real ids and usernames, small numbers and the page sizes at either edge.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphql

PAGE_SIZES = [3, 0, 101]  # a small page, the empty page, one over the largest


@dataclass(frozen=True)
class Operation:
    document: str
    name: str | None  # the operationName to send (documents with several operations)
    variables: tuple[graphql.VariableDefinitionNode, ...]
    found_in: str

    def __str__(self) -> str:
        named = f" ({self.name})" if self.name else ""
        return f"{self.found_in}{named}: {self.document!r}"


def string_constants(path: Path) -> Iterable[str]:
    """The str constants of a module, without the literal parts of f-strings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_fstrings = {
        id(part)
        for joined in ast.walk(tree)
        if isinstance(joined, ast.JoinedStr)
        for part in ast.walk(joined)
    }
    for node in ast.walk(tree):
        is_str = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if is_str and id(node) not in in_fstrings:
            yield node.value


def suite_operations(
    schema: graphql.GraphQLSchema, root: Path, *, exclude: Iterable[Path] = ()
) -> list[Operation]:
    """The query operations of every valid document under root, each document once.

    Mutations are left out: they change what the next request sees (a session revoked, a
    password changed), so the two executors would no longer answer the same question.
    """
    excluded = {path.resolve() for path in exclude}
    seen: set[str] = set()
    found: list[Operation] = []
    for path in sorted(root.rglob("*.py")):
        if path.resolve() in excluded:
            continue
        for text in string_constants(path):
            if text in seen:
                continue
            seen.add(text)
            try:
                document = graphql.parse(text)
            except graphql.GraphQLError:
                continue
            if graphql.validate(schema, document):
                continue
            operations = [
                definition
                for definition in document.definitions
                if isinstance(definition, graphql.OperationDefinitionNode)
            ]
            for operation in operations:
                if operation.operation is not graphql.OperationType.QUERY:
                    continue
                name = operation.name.value if operation.name and len(operations) > 1 else None
                found.append(
                    Operation(
                        document=text,
                        name=name,
                        variables=tuple(operation.variable_definitions or ()),
                        found_in=str(path.relative_to(root.parent)),
                    )
                )
    return found


@dataclass(frozen=True)
class Values:
    """What a variable of each scalar type may be: every value is tried in turn."""

    ids: list[str]
    strings: list[str]
    ints: list[int] = field(default_factory=lambda: list(PAGE_SIZES))
    booleans: list[bool] = field(default_factory=lambda: [True, False])

    def of(self, type_: graphql.GraphQLInputType) -> list[Any]:
        """The values to try for type_; empty when it cannot be supplied."""
        if isinstance(type_, graphql.GraphQLNonNull):
            return self.of(type_.of_type)
        if isinstance(type_, graphql.GraphQLList):
            return [[value] for value in self.of(type_.of_type)]
        if isinstance(type_, graphql.GraphQLEnumType):
            return [next(iter(type_.values))]
        if isinstance(type_, graphql.GraphQLInputObjectType):
            value: dict[str, Any] = {}
            for name, input_field in type_.fields.items():
                if graphql.is_required_input_field(input_field):
                    options = self.of(input_field.type)
                    if not options:
                        return []
                    value[name] = options[0]
            return [value]
        assert isinstance(type_, graphql.GraphQLScalarType)
        scalars: dict[str, list[Any]] = {
            "ID": self.ids,
            "String": self.strings,
            "Int": self.ints,
            "Boolean": self.booleans,
        }
        return scalars.get(type_.name, [])


def variable_sets(
    operation: Operation, schema: graphql.GraphQLSchema, values: Values
) -> list[dict[str, Any]] | None:
    """Variables for operation, as many sets as the longest list of values (each variable starts
    at its own offset, so two ID variables are not always the same id); None when a required
    variable cannot be supplied."""
    choices: list[tuple[str, list[Any]]] = []
    for definition in operation.variables:
        type_ = graphql.type_from_ast(schema, definition.type)
        assert type_ is not None and graphql.is_input_type(type_)
        options = values.of(type_)  # type: ignore[arg-type]
        if not options:
            if isinstance(type_, graphql.GraphQLNonNull) and definition.default_value is None:
                return None
            continue
        choices.append((definition.variable.name.value, options))
    count = max((len(options) for _, options in choices), default=1)
    return [
        {
            name: options[(index + offset) % len(options)]
            for offset, (name, options) in enumerate(choices)
        }
        for index in range(count)
    ]
