"""GraphQL over HTTP: the Strawberry view and how results become responses.

The view follows the GraphQL-over-HTTP spec (graphql.github.io/graphql-over-http):
- The response is application/graphql-response+json or application/json, chosen by the
  Accept header (no header or */* gets application/json); 406 when neither is acceptable.
- A request that fails before execution (a document that does not parse or validate,
  variables that do not coerce) has no `data` entry; with application/graphql-response+json
  it is a 400, with application/json a 200, as older clients expect.
- POST bodies are application/json only, anything else is a 415: an HTML form on another site
  can send text/plain, urlencoded or multipart bodies with the user's cookies but not JSON.
  Mutations are refused over GET with a 405 (Allow: POST). So no cross-site page can mutate.
- Request errors (malformed body or parameters, wrong method or media type) are GraphQL JSON
  with extensions.code BAD_REQUEST, never plain text.
- A document may be named by its SHA-256 instead (automatic persisted queries), and with
  trusted documents only those run (usergraph.guards.documents, asked before parsing).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException, parse_content_type
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, process_result
from strawberry.http.base import BaseRequestProtocol
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from usergraph import graphiql, metrics
from usergraph.context import Context, get_context
from usergraph.db.engine import attempt
from usergraph.guards.documents import DocumentRefused, Documents
from usergraph.guards.masking import UNAVAILABLE_RETRY_AFTER, coded_errors
from usergraph.guards.text import NUL_MESSAGE
from usergraph.schema.errors import ErrorCode

APPLICATION_JSON = "application/json"
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
_QVALUE = re.compile(r"[01](\.\d{0,3})?")


def response_media_type(accept: str | None) -> str | None:
    """The media type to answer in for an Accept header, or None when neither is acceptable.

    The most specific media range decides each type's quality; on a tie application/json wins,
    as it is what `*/*` and clients older than the spec expect.
    """
    if not accept:
        return APPLICATION_JSON
    best, chosen = (0.0, 0), None
    for media_type in (APPLICATION_JSON, GRAPHQL_RESPONSE_JSON):
        rank = _rank(media_type, accept)
        if rank[0] > 0 and rank > best:
            best, chosen = rank, media_type
    return chosen


def _rank(media_type: str, accept: str) -> tuple[float, int]:
    """(quality, specificity) of the Accept range that matches media_type most specifically."""
    main_type = media_type.split("/")[0]
    specific = {"*/*": 1, f"{main_type}/*": 2, media_type: 3}
    rank = (0.0, 0)
    for media_range in accept.split(","):
        name, params = parse_content_type(media_range)
        specificity = specific.get(name, 0)
        if specificity > rank[1]:
            q = params.get("q", "1")
            rank = (min(float(q), 1.0) if _QVALUE.fullmatch(q) else 0.0, specificity)
    return rank


def _is_utf8_json(content_type: str | None) -> bool:
    media_type, params = parse_content_type(content_type or "")
    charset = params.get("charset", "utf-8").lower()
    return media_type == APPLICATION_JSON and charset in ("utf-8", "utf8")


_OBJECT = "an object or null"


def _parameter(params: dict[str, Any], name: str, kind: type, what: str) -> Any:
    value = params.get(name)
    if value is not None and not isinstance(value, kind):
        raise HTTPException(400, f"The `{name}` parameter must be {what}.")
    return value


# JSON may escape UTF-16 surrogates ("\\ud83d\\ude00"); a pair decodes to one character, but a
# lone one becomes a Python string that no UTF-8 codec (database, hasher) accepts. It may also
# escape NUL, which PostgreSQL cannot store (usergraph.guards.text). Only a body holding such an
# escape is walked.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")


def _is_unicode(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _refuse_untextual(value: object) -> None:
    if not _is_unicode(value):
        raise HTTPException(
            400, "The JSON holds a lone UTF-16 surrogate escape, which is not Unicode text."
        )


class BadVariables(HTTPException):
    """Variables no field can take (a NUL character): refused before execution with code
    BAD_USER_INPUT, as the same text in a literal is (usergraph.guards.text), not as a
    malformed request."""


def _refuse_nul(params: dict[str, Any]) -> None:
    if _holds_nul(params.get("variables")):
        raise BadVariables(400, NUL_MESSAGE)
    if any(_holds_nul(params.get(name)) for name in ("query", "operationName", "extensions")):
        raise HTTPException(400, NUL_MESSAGE)


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


class RefusedDocument(HTTPException):
    """A persisted-query hash or a document this server does not run (guards/documents.py)."""

    def __init__(self, refused: DocumentRefused) -> None:
        super().__init__(refused.status, refused.message)
        self.code = refused.code


@dataclass
class NamedRequestData(GraphQLRequestData):
    """A request's data, with the hash to keep its document under once it validated."""

    remember: str | None = None


def failed_before_execution(result: ExecutionResult) -> bool:
    """Parsing, validation or variable coercion failed, and execution never started: no data,
    and no error with a path (errors raised while executing carry their field's)."""
    return (
        result.data is None
        and bool(result.errors)
        and all(error.path is None for error in result.errors or ())
    )


log = logging.getLogger("usergraph.http")


class GraphQLApp(GraphQL[Context, None]):
    def __init__(self, *args: Any, documents: Documents, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.documents = documents

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """Answer the request; once more when a dead pooled connection (the database restarted)
        failed it before any of its writes reached the database. Reads are retried wherever
        they met it; a mutation only if its transaction never began."""
        with attempt() as first:
            response = await super().run(request, context, root_value)
        if not first.worth_retrying:
            return response
        log.info("a dead database connection failed the request before it wrote: retrying")
        with attempt():
            return await super().run(request, context, root_value)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self.run(request)
        except HTTPException as error:  # Strawberry's default answers these in plain text
            response = self.request_error_response(request, error)
        await response(scope, receive, send)

    def request_error_response(self, request: Request, error: HTTPException) -> Response:
        """A request the view refused, as a GraphQL response with code BAD_REQUEST (or
        BAD_USER_INPUT for variables no field takes, with the status of a request error)."""
        status, message, headers = error.status_code, error.reason, {}
        media_type = response_media_type(request.headers.get("accept")) or APPLICATION_JSON
        code = ErrorCode.BAD_REQUEST
        if isinstance(error, BadVariables):
            code = ErrorCode.BAD_USER_INPUT
            status = 400 if media_type == GRAPHQL_RESPONSE_JSON else 200
        elif isinstance(error, RefusedDocument):
            code = error.code
            if code == ErrorCode.PERSISTED_QUERY_NOT_FOUND:
                # Not an answer to keep: the client sends the query next, under the same URL.
                headers["cache-control"] = "private, no-cache, must-revalidate"
                if media_type != GRAPHQL_RESPONSE_JSON:
                    status = 200  # what Apollo's and urql's clients expect
        elif isinstance(error.__cause__, InvalidOperationTypeError):
            # Only a mutation sent with GET: POST allows every operation type.
            status, message = 405, "Mutations must be sent with POST."
            headers["allow"] = "POST"
        elif status == 405:
            headers["allow"] = "GET, POST"
        body = {"errors": [{"message": message, "extensions": {"code": code.value}}]}
        return Response(
            self.encode_json(body), status_code=status, headers=headers, media_type=media_type
        )

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql.page()  # served from this server, with no CDN (usergraph.graphiql)

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        # Without GraphiQL a GET with no query is a request error, not Strawberry's bare 404.
        # A GET that names a persisted query by its hash has extensions and no query: Apollo's
        # client sends it with Accept: */*, and it wants the document's answer, not the page.
        return (
            self.graphql_ide is not None
            and request.query_params.get("extensions") is None
            and super().should_render_graphql_ide(request)
        )

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> GraphQLRequestData:
        if response_media_type(request.headers.get("accept")) is None:
            raise HTTPException(
                406, f"The Accept header must allow {GRAPHQL_RESPONSE_JSON} or {APPLICATION_JSON}."
            )
        params: Any
        if request.method == "GET":
            try:
                params = self.parse_query_params(request.query_params)
            except HTTPException as error:
                raise HTTPException(
                    400, "The `variables` and `extensions` parameters must be JSON."
                ) from error
        else:
            if not _is_utf8_json(request.content_type):
                sent = repr(request.content_type[:100]) if request.content_type else "none"
                raise HTTPException(
                    415,
                    f"The request body must be {APPLICATION_JSON} (UTF-8); Content-Type: {sent}.",
                )
            params = self.parse_json(await request.get_body())
            if not isinstance(params, dict):
                raise HTTPException(400, "The request body must be a JSON object.")
        _refuse_nul(params)
        query = _parameter(params, "query", str, "a string (a GraphQL document)")
        extensions = _parameter(params, "extensions", dict, _OBJECT)
        try:
            named = self.documents.named(query or None, extensions)
        except DocumentRefused as refused:
            raise RefusedDocument(refused) from None
        if named is None:
            raise HTTPException(400, "The `query` parameter (a GraphQL document) is missing.")
        return NamedRequestData(
            query=named.query,
            variables=_parameter(params, "variables", dict, _OBJECT),
            operation_name=_parameter(params, "operationName", str, "a string or null"),
            extensions=extensions,
            remember=named.remember,
        )

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        result = await super().execute_single(
            request, request_adapter, sub_response, context, root_value, request_data
        )
        if (
            isinstance(request_data, NamedRequestData)
            and request_data.remember is not None
            and not failed_before_execution(result)
        ):
            assert request_data.query is not None
            self.documents.remember(request_data.remember, request_data.query)
        return result

    def encode_json(self, data: object) -> str | bytes:
        """Response bodies with orjson (UTF-8, compact, as Strawberry's are compact); what it
        refuses and the standard library takes (a lone surrogate, an integer past 64 bits)
        goes to Strawberry's json.dumps instead."""
        try:
            return orjson.dumps(data)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            return super().encode_json(data)

    def parse_json(self, data: str | bytes) -> Any:
        # Strawberry's turns only JSONDecodeError into a 400; these would be 500s.
        try:
            text = data.decode() if isinstance(data, bytes) else data
            parsed = super().parse_json(text)
            if _SUSPECT_ESCAPE.search(text):
                _refuse_untextual(parsed)
        except UnicodeDecodeError:
            raise HTTPException(400, "The request body is not valid UTF-8.") from None
        except RecursionError:
            raise HTTPException(400, "The JSON is nested too deeply.") from None
        return parsed

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        # create_response is not given the request: the negotiated media type rides along here.
        sub_response.media_type = (
            response_media_type(request.headers.get("accept")) or APPLICATION_JSON
        )
        return sub_response

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        assert isinstance(request, Request) and isinstance(response, Response)
        return get_context(request, response)

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        failed = failed_before_execution(result)
        if result.errors:
            request_id = getattr(request.state, "request_id", None)
            expose = request.app.state.runtime.settings.internal_errors_exposed
            result.errors = coded_errors(result.errors, request_id, expose_internal=expose)
            metrics.count_errors(
                str((error.extensions or {}).get("code")) for error in result.errors
            )
        response = process_result(result)
        if failed:
            del response["data"]
        return response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        media_type = sub_response.media_type or APPLICATION_JSON
        response.headers["content-type"] = media_type
        failed = isinstance(response_data, dict) and "data" not in response_data
        if media_type == GRAPHQL_RESPONSE_JSON and _unavailable(response_data):
            response.status_code = 503
            response.headers["retry-after"] = str(UNAVAILABLE_RETRY_AFTER)
        elif media_type == GRAPHQL_RESPONSE_JSON and failed:
            response.status_code = sub_response.status_code or 400
        return response


def _unavailable(response_data: Any) -> bool:
    """Whether a dependency that is down failed part of the response."""
    errors = response_data.get("errors") if isinstance(response_data, dict) else None
    return any(
        (error.get("extensions") or {}).get("code") == ErrorCode.SERVICE_UNAVAILABLE
        for error in errors or ()
    )
