"""GET /metrics: the Prometheus text of usergraph.metrics, and the mail outbox's backlog.

The outbox's figures are the database's, not a process's: they are read at each scrape, so
every worker (and a scrape of any of them) tells the same. With USERGRAPH_METRICS_TOKEN the
scrape must send it as a bearer token; a wrong or missing one is a 401 that says nothing more.
"""

from __future__ import annotations

import hmac
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from usergraph import metrics
from usergraph.context import bearer_token
from usergraph.db import outbox as outbox_queries
from usergraph.db.engine import unreachable
from usergraph.logs import outages
from usergraph.runtime import Runtime

METRICS_PATH = "/metrics"
log = logging.getLogger("usergraph.metrics")


async def scrape(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    token = runtime.settings.metrics_token
    if token is not None and not hmac.compare_digest(
        (bearer_token(request) or "").encode(), token.get_secret_value().encode()
    ):
        return Response(status_code=401, headers={"www-authenticate": 'Bearer realm="metrics"'})
    return Response(metrics.exposition(await _outbox(runtime)), media_type=CONTENT_TYPE_LATEST)


class _Figures(Collector):
    """Values read at scrape time: collected as they are, never stored per process."""

    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> list[GaugeMetricFamily]:
        return self.families


async def _outbox(runtime: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry()
    family = GaugeMetricFamily(
        "usergraph_mail_outbox_messages",
        "Messages in the mail outbox by status (pending: not sent yet; failed: given up).",
        labels=["status"],
    )
    try:
        async with runtime.db.read_sessionmaker() as s:
            counts = await outbox_queries.count_by_status(s)
    except Exception as error:  # the rest of the scrape is still worth having
        if not unreachable(error):
            raise
        outages.report("database", error)
        return registry
    for status in (outbox_queries.PENDING, outbox_queries.FAILED):
        family.add_metric([status], counts.get(status, 0))
    registry.register(_Figures([family]))
    return registry
