"""Query limits: a document over any of them is refused before anything runs.

Each refusal is a GraphQL error with extensions
`{"code": "QUERY_TOO_COMPLEX", "limit": <name>, "maximum": <configured value>}` (and "actual"
where it is known). Where each limit is checked, and why there:

- tokens: by graphql-core's parser, inside the ParserCache step (TokenLimitedParserCache), so
  a huge document is abandoned after `tokens` tokens instead of being read whole.
- depth, aliases, directives: validation rules. Their classes are made once per schema with the
  limits bound in (`validation_rules`), so every request passes the same tuple of rules and
  ValidationCache, keyed on (schema, document, rules), validates a document once. A limiter
  made per request (Strawberry's QueryDepthLimiter, MaxAliasesLimiter) is a new class each time
  and misses the cache on every request (strawberry #4635).
- cost (usergraph.guards.cost): depends on the variables and the operation name, so it cannot
  be part of the cached validation. QueryCostLimiter checks it after validation, just before
  execution; the walk is linear in the document and costs each fragment once.

Depth counts fields below the root fields, as Strawberry's QueryDepthLimiter and
graphql-depth-limit do: `{ me { id } }` is 1 deep. A fragment counts where it is spread.
Introspection (`__schema`, `__type`) does not count, so GraphiQL's introspection query passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast

from graphql import (
    SKIP,
    ASTValidationRule,
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSyntaxError,
    InlineFragmentNode,
    Node,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VisitorAction,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.extensions import AddValidationRules, ParserCache, SchemaExtension

from usergraph.guards.cost import query_cost
from usergraph.schema.errors import ErrorCode
from usergraph.settings import Settings

if TYPE_CHECKING:
    from strawberry.types import ExecutionContext

INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})
_TOKEN_LIMIT_HIT = re.compile(r"Document contains more than \d+ (tokens|comments)\.")
_NESTED_TOO_DEEPLY = "Document is nested too deeply."


def _default(name: str) -> int:
    default: int = Settings.model_fields[name].default
    return default


@dataclass(frozen=True)
class QueryLimits:
    depth: int = _default("max_query_depth")
    aliases: int = _default("max_query_aliases")
    tokens: int = _default("max_query_tokens")
    directives: int = _default("max_query_directives")
    cost: int = _default("max_query_cost")

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        return cls(**{f.name: getattr(settings, f"max_query_{f.name}") for f in fields(cls)})


def too_complex(
    limit: str,
    maximum: int,
    description: str,
    *,
    actual: int | None = None,
    nodes: Node | list[Node] | None = None,
) -> GraphQLError:
    extensions: dict[str, Any] = {
        "code": ErrorCode.QUERY_TOO_COMPLEX.value,
        "limit": limit,
        "maximum": maximum,
    }
    if actual is not None:
        extensions["actual"] = actual
    return GraphQLError(f"The query is too complex: {description}.", nodes, extensions=extensions)


# --- Validation rules ------------------------------------------------------------------------


class _LimitRule(ValidationRule):
    maximum: ClassVar[int]

    @classmethod
    def bound(cls, maximum: int) -> type[Self]:
        """A subclass with this maximum: made once, at schema build time."""
        return cast("type[Self]", type(cls.__name__, (cls,), {"maximum": maximum}))


class MaxDepthRule(_LimitRule):
    def enter_operation_definition(
        self, node: OperationDefinitionNode, *_args: Any
    ) -> VisitorAction:
        if operation_depth(node.selection_set, self.context, cutoff=self.maximum) > self.maximum:
            self.report_error(
                too_complex(
                    "depth",
                    self.maximum,
                    f"fields nested more than {self.maximum} deep",
                    nodes=node,
                )
            )
        return SKIP

    def enter_fragment_definition(self, *_args: Any) -> VisitorAction:
        return SKIP  # measured where spread


def operation_depth(root: SelectionSetNode, context: ValidationContext, *, cutoff: int) -> int:
    """How deep the fields under root go; counting stops a level past cutoff.

    Iterative, and each fragment is followed at most once per depth: a fragment cycle (which
    validation reports) or a fragment spread many times cannot make this loop or blow up.
    """
    deepest = 0
    followed: set[tuple[str, int]] = set()
    stack: list[tuple[SelectionSetNode, int]] = [(root, 0)]
    while stack:
        selection_set, depth = stack.pop()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.name.value in INTROSPECTION_ROOTS:
                    continue
                deepest = max(deepest, depth)
                if selection.selection_set is not None and depth <= cutoff:
                    stack.append((selection.selection_set, depth + 1))
            elif isinstance(selection, InlineFragmentNode):
                stack.append((selection.selection_set, depth))
            elif isinstance(selection, FragmentSpreadNode):
                key = (selection.name.value, depth)
                fragment = context.get_fragment(key[0])
                if fragment is not None and key not in followed:
                    followed.add(key)
                    stack.append((fragment.selection_set, depth))
    return deepest


class MaxAliasesRule(_LimitRule):
    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self.count = 0

    def enter_field(self, node: FieldNode, *_args: Any) -> None:
        if node.alias is not None:
            self.count += 1

    def leave_document(self, node: DocumentNode, *_args: Any) -> None:
        if self.count > self.maximum:
            self.report_error(
                too_complex(
                    "aliases",
                    self.maximum,
                    f"{self.count} aliases, at most {self.maximum} allowed",
                    actual=self.count,
                )
            )


class MaxDirectivesRule(_LimitRule):
    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self.count = 0

    def enter_directive(self, node: DirectiveNode, *_args: Any) -> None:
        self.count += 1

    def leave_document(self, node: DocumentNode, *_args: Any) -> None:
        if self.count > self.maximum:
            self.report_error(
                too_complex(
                    "directives",
                    self.maximum,
                    f"{self.count} directives, at most {self.maximum} allowed",
                    actual=self.count,
                )
            )


def validation_rules(limits: QueryLimits) -> tuple[type[ASTValidationRule], ...]:
    """The limit rules with their maximums bound; build once per schema, never per request."""
    return (
        MaxDepthRule.bound(limits.depth),
        MaxAliasesRule.bound(limits.aliases),
        MaxDirectivesRule.bound(limits.directives),
    )


# --- Extensions ------------------------------------------------------------------------------


class TokenLimitedParserCache(ParserCache):
    """ParserCache whose parser gives up past max_tokens tokens (or as many comments)."""

    def __init__(self, *, maxsize: int, max_tokens: int, max_depth: int) -> None:
        super().__init__(maxsize=maxsize)
        self.max_tokens = max_tokens
        self.max_depth = max_depth

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        try:
            context.graphql_document = self.cached_parse_document(
                context.query,
                **context.parse_options,
                max_lexical_tokens=self.max_tokens,
                max_comments=self.max_tokens,
            )
        except GraphQLSyntaxError as error:
            limit_error = self._limit_error(error)
            if limit_error is None:
                raise
            raise limit_error from None
        yield

    def _limit_error(self, error: GraphQLSyntaxError) -> GraphQLError | None:
        """QUERY_TOO_COMPLEX for the parser's own limits, not GRAPHQL_PARSE_FAILED."""
        if _TOKEN_LIMIT_HIT.search(error.message):
            return too_complex(
                "tokens", self.max_tokens, f"more than {self.max_tokens} tokens or comments"
            )
        if _NESTED_TOO_DEEPLY in error.message:
            # Nested past Python's recursion limit: far deeper than any depth limit.
            return too_complex("depth", self.max_depth, "nested too deeply to read")
        return None


class QueryCostLimiter(SchemaExtension):
    """Refuses an operation whose cost (usergraph.guards.cost) is over maximum, or whose page
    sizes are out of range, before it runs."""

    def __init__(self, *, maximum: int) -> None:
        self.maximum = maximum

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        error = self.refusal(context)
        if error is not None:
            # A result set here is returned instead of executing the operation.
            context.result = GraphQLExecutionResult(data=None, errors=[error])
        yield

    def refusal(self, context: ExecutionContext) -> GraphQLError | None:
        assert context.graphql_document is not None
        try:
            cost = query_cost(
                context.schema._schema,
                context.graphql_document,
                context.variables,
                context.operation_name,
            )
        except GraphQLError as error:
            return error
        if cost > self.maximum:
            return too_complex(
                "cost",
                self.maximum,
                f"it may resolve {cost} fields, at most {self.maximum} allowed",
                actual=cost,
            )
        return None


def limit_extensions(
    limits: QueryLimits, *, cache_size: int, more_rules: Sequence[type[ASTValidationRule]] = ()
) -> list[Callable[[], SchemaExtension]]:
    """Factories of the extensions enforcing limits (ParserCache included: tokens live there).
    more_rules run after the limits' in the same extension (one extension fewer per request)."""
    rules: list[type[ASTValidationRule]] = [*validation_rules(limits), *more_rules]
    return [
        lambda: TokenLimitedParserCache(
            maxsize=cache_size, max_tokens=limits.tokens, max_depth=limits.depth
        ),
        lambda: AddValidationRules(rules),
        lambda: QueryCostLimiter(maximum=limits.cost),
    ]
