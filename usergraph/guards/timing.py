"""Operation metrics (usergraph.metrics): each operation's type, name and duration, and the
database pool's use after it.

A schema extension, so the figures come from the parsed document: a document that does not
parse counts as type "unparsed" with no name, never with a client-chosen label.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from strawberry.extensions import SchemaExtension

from usergraph import metrics


class OperationMetrics(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        started = metrics.now()
        try:
            yield
        finally:
            self._observe(metrics.now() - started)

    def _observe(self, seconds: float) -> None:
        context = self.execution_context
        try:
            operation_type = context.operation_type.value
            name = context.operation_name
        except Exception:  # no document: it did not parse, or no operation was chosen
            operation_type, name = "unparsed", None
        metrics.observe_operation(operation_type, name, seconds)
        _pool_use(context.context)


def _pool_use(request_context: Any) -> None:
    pool = request_context.runtime.db.engine.sync_engine.pool
    if hasattr(pool, "checkedout"):
        in_use = pool.checkedout()
        metrics.pool_use(in_use, in_use + pool.checkedin())
