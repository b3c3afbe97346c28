"""GraphQL over HTTP: the Strawberry view, its context and how results become responses."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.types import ExecutionResult

from usergraph.context import Context, bearer_token, client_info
from usergraph.db.loaders import Loaders
from usergraph.runtime import Runtime
from usergraph.schema.extensions import with_code


class GraphQLApp(GraphQL[Context, None]):
    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        assert isinstance(request, Request) and isinstance(response, Response)
        runtime: Runtime = request.app.state.runtime
        return Context(
            request=request,
            response=response,
            settings=runtime.settings,
            db=runtime.db,
            passwords=runtime.passwords,
            policy=runtime.policy,
            loaders=Loaders.create(runtime.db.read_sessionmaker),
            request_id=request.state.request_id,
            client=client_info(request),
            bearer_token=bearer_token(request),
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        if result.errors:
            request_id = getattr(request.state, "request_id", None)
            expose = request.app.state.runtime.settings.internal_errors_exposed
            result.errors = [
                with_code(error, request_id, expose_internal=expose) for error in result.errors
            ]
        return process_result(result)
