"""What a document must pass before it runs, and how its errors reach the client.

- limits.py: tokens, depth, aliases, directives and cost (cost.py measures it), each refused
  with QUERY_TOO_COMPLEX before anything runs.
- text.py: text no database takes (NUL) is refused at validation.
- masking.py: every error gets extensions.code; internal faults are logged and masked.
- timing.py: each operation's type, name and duration for the metrics (when they are on).
- documents.py: documents named by hash (automatic persisted queries) and, when configured,
  only the trusted ones; usergraph.http asks it before anything is parsed.

`schema_extensions` hands them to the Schema (usergraph.app builds it), as factories: an
extension instance would be shared by concurrent requests.
"""

from __future__ import annotations

from typing import Any

from strawberry.extensions import ValidationCache

from usergraph.guards.limits import QueryLimits, limit_extensions
from usergraph.guards.text import NoNulCharactersRule
from usergraph.guards.timing import OperationMetrics
from usergraph.settings import Settings

# Parsed and validated documents kept (LRU, shared by every request of the process).
DOCUMENT_CACHE_SIZE = 256


def schema_extensions(settings: Settings | None = None) -> list[Any]:
    """The guards as schema extensions; settings decide the limits (the defaults without)."""
    limits = QueryLimits.from_settings(settings) if settings else QueryLimits()
    # The limit rules inside are made here, once, so ValidationCache hits (see limits.py).
    extensions: list[Any] = [
        *limit_extensions(limits, cache_size=DOCUMENT_CACHE_SIZE, more_rules=[NoNulCharactersRule]),
        lambda: ValidationCache(maxsize=DOCUMENT_CACHE_SIZE),
    ]
    if settings is not None and settings.metrics_enabled:
        extensions.insert(0, OperationMetrics)  # outermost: it times all the others
    return extensions
