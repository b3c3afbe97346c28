"""What an operation may cost to run, from its document and its variables.

Every field counts 1 for each time it may be resolved. A connection field (one with `first` or
`last` arguments) is resolved once but its children once per item it may return: their cost is
multiplied by `last`, else `first`, else the field's default page size (by at least 1, since
`pageInfo` and `totalCount` still resolve on an empty page). So
`{ users(first: 50) { edges { node { id } } } }` costs 1 + 50 * (1 + 1 + 1) = 151. A
federated subgraph's `_entities(representations: [...])` multiplies its children by the
number of representations the same way.

The estimate errs high: the branches of `... on User` and `... on Session` under one field both
count, and fields that execution would merge count once each. Fields skipped by `@skip` or
`@include` with a known value do not count. A page size outside 0..MAX_PAGE_SIZE is a
BAD_USER_INPUT error here already, before anything runs.

No recursion (a document of a few thousand tokens can nest deeper than Python's stack allows):
fragments are costed once each, in dependency order, and a spread costs its fragment's total.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    BooleanValueNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    OperationDefinitionNode,
    SchemaMetaFieldDef,
    SelectionNode,
    SelectionSetNode,
    TypeMetaFieldDef,
    TypeNameMetaFieldDef,
    Undefined,
    ValueNode,
    VariableNode,
    get_named_type,
    get_operation_ast,
    value_from_ast_untyped,
)

from usergraph.schema.errors import ErrorCode
from usergraph.schema.relay import MAX_PAGE_SIZE, page_size_problem

PAGE_SIZE_ARGUMENTS = frozenset({"first", "last"})
# A federated subgraph's entry point (USERGRAPH_FEDERATION): its children cost once per
# representation asked for.
ENTITIES_FIELD = "_entities"
_META_FIELDS = {
    "__schema": SchemaMetaFieldDef,
    "__type": TypeMetaFieldDef,
    "__typename": TypeNameMetaFieldDef,
}


def query_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None = None,
    operation_name: str | None = None,
) -> int:
    """The cost of the operation that would run; 0 when none would (execution reports that).

    Raises a BAD_USER_INPUT GraphQLError for a page size outside 0..MAX_PAGE_SIZE.
    """
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return 0
    root = schema.get_root_type(operation.operation)
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    costing = _Costing(schema, fragments, _variable_values(operation, variables))
    for name in _dependency_order(operation.selection_set, fragments) if fragments else ():
        fragment = fragments[name]
        costing.fragment_costs[name] = costing.cost(
            schema.get_type(fragment.type_condition.name.value), fragment.selection_set
        )
    return costing.cost(root, operation.selection_set)


def _variable_values(
    operation: OperationDefinitionNode, variables: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The request's variables, with the operation's defaults for those it did not send.

    Only scalar defaults matter here (page sizes and @skip/@include conditions); others are
    left out rather than converted.
    """
    values: dict[str, Any] = {}
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        default = definition.default_value
        if variables is not None and name in variables:
            values[name] = variables[name]
        elif isinstance(default, IntValueNode | BooleanValueNode):
            values[name] = value_from_ast_untyped(default)
    return values


def _selections(selection_set: SelectionSetNode) -> Iterator[SelectionNode]:
    """Every selection under selection_set, fragment spreads not followed."""
    stack = [selection_set]
    while stack:
        for selection in stack.pop().selections:
            yield selection
            nested = getattr(selection, "selection_set", None)
            if nested is not None:
                stack.append(nested)


def _dependency_order(
    root: SelectionSetNode, fragments: Mapping[str, FragmentDefinitionNode]
) -> list[str]:
    """The fragments reachable from root, each after the fragments it spreads.

    A fragment that spreads itself (directly or not) is invalid, and validation says so; here
    the spread that closes the cycle is simply not followed.
    """

    def spreads(selection_set: SelectionSetNode) -> Iterator[str]:
        for selection in _selections(selection_set):
            if isinstance(selection, FragmentSpreadNode) and selection.name.value in fragments:
                yield selection.name.value

    order: list[str] = []
    state: dict[str, bool] = {}  # False while being visited, True when done
    for start in spreads(root):
        if start in state:
            continue
        state[start] = False
        stack = [(start, spreads(fragments[start].selection_set))]
        while stack:
            name, pending = stack[-1]
            following = next((n for n in pending if n not in state), None)
            if following is None:
                stack.pop()
                state[name] = True
                order.append(name)
            else:
                state[following] = False
                stack.append((following, spreads(fragments[following].selection_set)))
    return order


class _Costing:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.fragment_costs: dict[str, int] = {}

    def cost(self, parent: GraphQLNamedType | None, selection_set: SelectionSetNode) -> int:
        total = 0
        stack: list[tuple[GraphQLNamedType | None, SelectionSetNode, int]] = [
            (parent, selection_set, 1)
        ]
        while stack:
            parent_type, selections, multiplier = stack.pop()
            for selection in selections.selections:
                if not self._included(selection):
                    continue
                if isinstance(selection, FieldNode):
                    total += multiplier
                    if selection.selection_set is None:
                        continue
                    field = _field(parent_type, selection.name.value)
                    if field is None:  # unknown: invalid, but still count what is under it
                        stack.append((None, selection.selection_set, multiplier))
                        continue
                    size = self._page_size(field, selection)
                    if size is None and selection.name.value == ENTITIES_FIELD:
                        size = self._representations(selection)
                    below = multiplier if size is None else multiplier * max(size, 1)
                    stack.append((get_named_type(field.type), selection.selection_set, below))
                elif isinstance(selection, InlineFragmentNode):
                    condition = selection.type_condition
                    type_ = self.schema.get_type(condition.name.value) if condition else parent_type
                    stack.append((type_, selection.selection_set, multiplier))
                elif isinstance(selection, FragmentSpreadNode):
                    # Not yet costed: unknown, or the spread that closes a cycle (both invalid).
                    total += multiplier * self.fragment_costs.get(selection.name.value, 0)
        return total

    def _page_size(self, field: GraphQLField, node: FieldNode) -> int | None:
        """Items the connection field may return; None when it is not a connection."""
        args = field.args
        if "first" not in args and "last" not in args:
            return None
        written: dict[str, int] = {}
        for argument in node.arguments or ():
            name = argument.name.value
            if name not in PAGE_SIZE_ARGUMENTS:
                continue
            value = self._value(argument.value)
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # JSON may say 20.0; GraphQL's Int accepts it
            # Anything else that is not an int fails to coerce when it runs; null means unset.
            if isinstance(value, int) and not isinstance(value, bool):
                problem = page_size_problem(name, value)
                if problem:
                    raise GraphQLError(
                        problem, argument, extensions={"code": ErrorCode.BAD_USER_INPUT.value}
                    )
                written[name] = value
        if written:
            return max(written.values())
        first = args.get("first")
        default = first.default_value if first is not None else Undefined
        if isinstance(default, int) and not isinstance(default, bool):
            return default
        return MAX_PAGE_SIZE

    def _representations(self, node: FieldNode) -> int:
        """How many entities a federation `_entities` call asks for: one result each."""
        for argument in node.arguments or ():
            if argument.name.value != "representations":
                continue
            value = argument.value
            if isinstance(value, ListValueNode):
                return len(value.values)
            if isinstance(value, VariableNode):
                given = self.variables.get(value.name.value)
                return len(given) if isinstance(given, list) else 1
        return 1

    def _value(self, node: ValueNode) -> Any:
        if isinstance(node, VariableNode):
            return self.variables.get(node.name.value)
        if isinstance(node, IntValueNode):
            return int(node.value)
        return None

    def _included(self, selection: SelectionNode) -> bool:
        """False when @skip or @include says the selection does not run, as far as known."""
        for directive in selection.directives or ():
            name = directive.name.value
            if name not in ("skip", "include"):
                continue
            arguments = directive.arguments or ()
            condition = next((a.value for a in arguments if a.name.value == "if"), None)
            if isinstance(condition, BooleanValueNode):
                value: Any = condition.value
            elif isinstance(condition, VariableNode):
                value = self.variables.get(condition.name.value)
            else:
                continue
            if isinstance(value, bool) and value == (name == "skip"):
                return False
        return True


def _field(parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
    meta = _META_FIELDS.get(name)
    if meta is not None:
        return meta
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        field: GraphQLField | None = parent.fields.get(name)
        return field
    return None
