"""A faster executor for the fields every page of users is made of; graphql-core for the rest.

graphql-core spends most of a users page on per-field machinery: for each field of each node
it builds a resolve info, a Strawberry Info, converts arguments, runs the field's extension
chain and completes the value through several generic steps (about 300 field executions for
a page of 50). FastExecutor (the Schema's execution context class, USERGRAPH_FAST_EXECUTION)
completes an object's fields itself when it can, with the same functions graphql-core would
call, decided once per field definition:

- `__typename`: the parent type's name.
- A basic field (no resolver, no extension, no arguments: Strawberry's own default resolver,
  `getattr`) and a synchronous resolver of the source alone (`self`/`root`, maybe `info` for
  its context): called with the source; the value coerced by the field's scalar type.
- The same behind SelfOrAdminOrNull: decided from the request's viewer once it is known (as
  the extension decides, schema/permissions.py), without the extension chain.
- Object and list-of-object fields whose value is already there (an edge's node, a page's
  edges, a user's known roles): their items completed the same way, with no coroutine each.

A resolver's awaitable (a loader's future) goes on to graphql-core's complete_awaitable_value,
and what a resolver raises to its handle_field_error, as from execute_field. Anything else
(arguments, async resolvers, other extensions, abstract types, enums, a null where the type
says non-null, a scalar that does not coerce, is_type_of not true, a resolver that reads more
of its info than the context) goes to graphql-core's `execute_field` for that field, which
gives the value or error it always does: the fast path never words an error itself. The
resolvers it calls are pure reads; in those last cases one runs again.

With a resolve middleware (the OpenTelemetry extension traces every resolver), the fast path
stays off. tests/schema/test_execution.py compares both executors' answers document by
document.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from graphql import (
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
)
from graphql.pyutils import Path, Undefined, gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.field import StrawberryField

from usergraph.schema.permissions import SelfOrAdminOrNull, may_see

TYPENAME = "__typename"


class Kind(enum.Enum):
    SLOW = "graphql-core"
    TYPENAME = "__typename"
    LEAF = "scalar"
    OBJECT = "object"
    OBJECTS = "list of objects"


# What the fast path answers when it cannot answer a field: graphql-core's execute_field does.
# A value, not an exception: a raised instance keeps every traceback it was raised with.
_HANDOVER: Any = object()


@dataclass(frozen=True, slots=True)
class _Pending:
    """A resolver's awaitable (a loader's future): graphql-core completes it, from there on."""

    awaitable: Any


@dataclass(frozen=True, slots=True)
class _Raised:
    """What a resolver raised: graphql-core's handle_field_error takes it, as execute_field's
    own `except` would."""

    error: Exception


@dataclass(frozen=True, slots=True)
class FieldWay:
    """How one field definition is answered: decided once per process."""

    kind: Kind
    field: StrawberryField | None = None
    field_type: Any = None  # the field's GraphQL type, for graphql-core's error handling
    item_type: Any = None  # OBJECTS: the items' GraphQL type
    non_null: bool = False  # the field's type (for OBJECTS: the list's)
    leaf: GraphQLScalarType | None = None
    object_type: GraphQLObjectType | None = None
    self_or_admin: bool = False
    wants_info: bool = False


_SLOW = FieldWay(Kind.SLOW)
# The ways of a type's fields live on the GraphQL type itself: they go when its schema goes,
# and a lookup is one dict access (a WeakKeyDictionary's makes a weak reference each time).
_WAYS_ATTRIBUTE = "_usergraph_field_ways"


def ways_of(parent_type: GraphQLObjectType) -> dict[str, FieldWay]:
    """The ways decided so far for parent_type's fields, by field name."""
    ways: dict[str, FieldWay] | None = parent_type.__dict__.get(_WAYS_ATTRIBUTE)
    if ways is None:
        ways = {}
        setattr(parent_type, _WAYS_ATTRIBUTE, ways)
    return ways


def way_of(parent_type: GraphQLObjectType, field_name: str, schema: Any) -> FieldWay:
    """How parent_type.field_name is answered (memoized on the type)."""
    ways = ways_of(parent_type)
    way = ways.get(field_name)
    if way is None:
        way = ways[field_name] = _decide(parent_type, field_name, schema)
    return way


def _decide(parent_type: GraphQLObjectType, field_name: str, schema: Any) -> FieldWay:
    if field_name == TYPENAME:
        return FieldWay(Kind.TYPENAME)
    field_def = parent_type.fields.get(field_name)
    if field_def is None or field_def.args:
        return _SLOW
    field = field_def.extensions.get("strawberry-definition")
    if not isinstance(field, StrawberryField) or field.arguments:
        return _SLOW
    extensions = list(field.extensions)
    self_or_admin = len(extensions) == 1 and isinstance(extensions[0], SelfOrAdminOrNull)
    if extensions and not self_or_admin:
        return _SLOW
    resolver = field.base_resolver
    wants_info = False
    if resolver is not None:
        if resolver.is_async or resolver.is_graphql_generic or resolver.arguments:
            return _SLOW
        wants_info = resolver.info_parameter is not None
    return _shape(field_def.type, field, self_or_admin=self_or_admin, wants_info=wants_info)


def _shape(
    return_type: GraphQLOutputType, field: StrawberryField, *, self_or_admin: bool, wants_info: bool
) -> FieldWay:
    non_null = isinstance(return_type, GraphQLNonNull)
    inner = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
    common: dict[str, Any] = {
        "field": field,
        "field_type": return_type,
        "non_null": non_null,
        "self_or_admin": self_or_admin,
        "wants_info": wants_info,
    }
    if isinstance(inner, GraphQLScalarType):
        return FieldWay(Kind.LEAF, leaf=inner, **common)
    if isinstance(inner, GraphQLObjectType):
        return FieldWay(Kind.OBJECT, object_type=inner, **common)
    if isinstance(inner, GraphQLList):
        item_type = inner.of_type
        item = item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
        if isinstance(item, GraphQLObjectType):
            return FieldWay(Kind.OBJECTS, object_type=item, item_type=item_type, **common)
    return _SLOW


class _NeedsInfo(AttributeError):
    """A resolver read more of its info than the context."""


class _ContextOnly:
    """What a resolver that asks for `info` gets on the fast path: only the context. One that
    reads anything else is answered by graphql-core, with its info (the resolver runs again)."""

    __slots__ = ("context",)

    def __init__(self, context: Any) -> None:
        self.context = context

    def __getattr__(self, name: str) -> Any:
        raise _NeedsInfo(name)


class FastExecutor(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor, with the fast path above in execute_fields."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        self._fast = not (manager is not None and manager.middlewares)
        self._context_only = _ContextOnly(self.context_value)

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        if not self._fast or path is None:  # the root fields: resolvers with their arguments
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        results: dict[str, Any] = {}
        awaitable_fields: list[str] = []
        is_awaitable = self.is_awaitable
        ways = ways_of(parent_type)
        try:
            for response_name, field_details_list in grouped_field_set.items():
                field_name = field_details_list[0].node.name.value
                way = ways.get(field_name) or way_of(parent_type, field_name, self.schema)
                kind = way.kind
                result: Any
                if kind is Kind.TYPENAME:
                    result = parent_type.name
                else:
                    result = _HANDOVER
                    if kind is not Kind.SLOW:
                        result = self._fast_field(
                            way, parent_type, source_value, field_details_list, path, response_name
                        )
                    if result is _HANDOVER:
                        result = self.execute_field(
                            parent_type,
                            source_value,
                            field_details_list,
                            Path(path, response_name, parent_type.name),
                            position_context,
                        )
                        if result is Undefined:
                            continue
                results[response_name] = result
                if is_awaitable(result):
                    awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:  # as graphql-core: what siblings started still settles
                self.settle_in_background([results[name] for name in awaitable_fields])
            raise
        if not awaitable_fields:
            return results
        return _gathered(results, awaitable_fields)

    # --- one field ---------------------------------------------------------------------------

    def _value(self, way: FieldWay, source: Any) -> Any:
        """The field's value, as its resolver gives it (or _HANDOVER)."""
        if way.self_or_admin:
            known, viewer = self.context_value.known_viewer()
            if not known:
                return _HANDOVER
            if not may_see(viewer, source.id):
                return None
        field = way.field
        assert field is not None
        resolver = field.base_resolver
        try:
            if resolver is None:
                value = field.get_result(source, None, [], {})
                return _Pending(value) if self.is_awaitable(value) else value
            args = [source] if resolver.self_parameter else []
            kwargs: dict[str, Any] = {}
            for parameter in (resolver.parent_parameter, resolver.root_parameter):
                if parameter is not None:
                    kwargs[parameter.name] = source
            if resolver.info_parameter is not None:
                kwargs[resolver.info_parameter.name] = self._context_only
            value = resolver(*args, **kwargs)
        except _NeedsInfo:
            return _HANDOVER
        except Exception as error:
            return _Raised(error)
        if self.is_awaitable(value):
            return _Pending(value)
        return value

    def _fast_field(
        self,
        way: FieldWay,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Path,
        response_name: str,
    ) -> Any:
        """The field's completed value, or _HANDOVER. Its path is made only where it is needed
        (not for a leaf): graphql-core makes one for every field of every node."""
        value = self._value(way, source)
        if value is _HANDOVER:
            return _HANDOVER
        if type(value) is _Raised:
            field_path = Path(path, response_name, parent_type.name)
            self.handle_field_error(value.error, way.field_type, field_details_list, field_path)
            return None
        if type(value) is _Pending:
            field_path = Path(path, response_name, parent_type.name)
            field_info = self._info(way, parent_type, field_details_list, field_path)
            return self.complete_awaitable_value(
                way.field_type, field_details_list, field_info, field_path, value.awaitable, None
            )
        if value is None:
            if way.non_null:
                return _HANDOVER  # graphql-core's "Cannot return null" error, located
            return None
        if way.kind is Kind.LEAF:
            assert way.leaf is not None
            try:
                coerced = way.leaf.coerce_output_value(value)
            except Exception:
                return _HANDOVER
            if coerced is None or coerced is Undefined:
                return _HANDOVER
            return coerced
        object_type = way.object_type
        assert object_type is not None
        field_path = Path(path, response_name, parent_type.name)
        is_type_of = object_type.is_type_of
        # graphql-core asks is_type_of with the field's info (one for all items of a list).
        info: Any = (
            self._info(way, parent_type, field_details_list, field_path) if is_type_of else None
        )
        if way.kind is Kind.OBJECT:
            if is_type_of is not None and not _is(is_type_of(value, info)):
                return _HANDOVER
            return self._object(object_type, way, value, field_details_list, field_path)
        if not isinstance(value, list | tuple):
            return _HANDOVER
        for item in value:
            if item is None or (is_type_of is not None and not _is(is_type_of(item, info))):
                return _HANDOVER
        return self._objects(object_type, way, value, field_details_list, field_path)

    def _info(
        self,
        way: FieldWay,
        parent_type: GraphQLObjectType,
        field_details_list: Any,
        field_path: Path,
    ) -> Any:
        """The field's resolve info, as graphql-core's execute_field builds it."""
        assert way.field is not None
        field_def = parent_type.fields[field_details_list[0].node.name.value]
        nodes = [details.node for details in field_details_list]
        return self.build_resolve_info(field_def, nodes, parent_type, field_path)

    def _object(
        self,
        object_type: GraphQLObjectType,
        way: FieldWay,
        value: Any,
        field_details_list: Any,
        field_path: Path,
    ) -> Any:
        """An object's fields, with graphql-core's error handling at this field."""
        grouped = self.collect_subfields(object_type, field_details_list).grouped_field_set
        field_type = way.field_type
        try:
            completed = self.execute_fields(object_type, value, field_path, grouped, None)
        except Exception as raw_error:
            self.handle_field_error(raw_error, field_type, field_details_list, field_path)
            return None
        if self.is_awaitable(completed):
            return self._settled(completed, field_type, field_details_list, field_path)
        return completed

    def _objects(
        self,
        object_type: GraphQLObjectType,
        way: FieldWay,
        items: list[Any] | tuple[Any, ...],
        field_details_list: Any,
        field_path: Path,
    ) -> Any:
        """A list of objects: each item as graphql-core's complete_list_item_value would."""
        grouped = self.collect_subfields(object_type, field_details_list).grouped_field_set
        item_type, list_type = way.item_type, way.field_type
        completed: list[Any] = []
        awaitable_indices: list[int] = []
        try:
            for index, item in enumerate(items):
                item_path = field_path.add_key(index, None)
                try:
                    done = self.execute_fields(object_type, item, item_path, grouped, None)
                except Exception as raw_error:
                    self.handle_field_error(raw_error, item_type, field_details_list, item_path)
                    done = None
                if self.is_awaitable(done):
                    done = self._settled(done, item_type, field_details_list, item_path)
                    awaitable_indices.append(index)
                completed.append(done)
        except Exception as raw_error:
            if awaitable_indices:
                self.settle_in_background([completed[i] for i in awaitable_indices])
            self.handle_field_error(raw_error, list_type, field_details_list, field_path)
            return None
        if not awaitable_indices:
            return completed
        return self._settled(
            _gathered_list(completed, awaitable_indices), list_type, field_details_list, field_path
        )

    async def _settled(
        self,
        awaitable: Awaitable[Any],
        return_type: GraphQLOutputType,
        field_details_list: Any,
        path: Path,
    ) -> Any:
        try:
            return await awaitable
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None


def _is(answer: Any) -> bool:
    """is_type_of's answer, when it is True now; an awaitable one (graphql-core awaits it) is
    closed and the field handed over, where is_type_of is asked again."""
    if inspect.iscoroutine(answer):
        answer.close()
        return False
    return answer is True


# As graphql-core's execute_fields and complete_iterable_value: one awaitable is awaited as it
# is, several are gathered; so answers (and the order of their errors) come as they would.


async def _gathered(results: dict[str, Any], awaitable_fields: list[str]) -> dict[str, Any]:
    if len(awaitable_fields) == 1:
        name = awaitable_fields[0]
        results[name] = await results[name]
        return results
    awaited = await gather_with_cancel(*(results[name] for name in awaitable_fields))
    results.update(zip(awaitable_fields, awaited, strict=True))
    return results


async def _gathered_list(completed: list[Any], indices: list[int]) -> list[Any]:
    if len(indices) == 1:
        completed[indices[0]] = await completed[indices[0]]
        return completed
    awaited = await gather_with_cancel(*(completed[i] for i in indices))
    for index, value in zip(indices, awaited, strict=True):
        completed[index] = value
    return completed
