"""ASGI middleware: a request id and the client's ip for every request, security headers on
every response. Both ride in the request's state (request.state.request_id, .client_ip)."""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from usergraph.logs import client_ip_var, request_id_var

REQUEST_ID_HEADER = "x-request-id"
# A client-chosen id is kept only if it is short and plain, so it cannot forge log lines.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def ip_or_none(host: str | None) -> str | None:
    """host if it is an ip address: a hop a trusted proxy forwarded may be any text."""
    try:
        return str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        return None


class RequestIdMiddleware:
    """Take a sane X-Request-ID from the client or make one; echo it on the response. Note the
    client's ip, if it is one, for the sessions and the log lines; with tracing, the request's
    span gets the id too (mark)."""

    def __init__(self, app: ASGIApp, *, mark: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.mark = mark

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == REQUEST_ID_HEADER.encode()),
            "",
        )
        request_id = incoming if _SAFE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        # The socket's peer, or the forwarded client when a trusted proxy sent the request
        # (uvicorn's ProxyHeadersMiddleware runs before this one).
        client = scope.get("client")
        client_ip = ip_or_none(client[0] if client else None)
        state = scope.setdefault("state", {})
        state["request_id"], state["client_ip"] = request_id, client_ip
        token = request_id_var.set(request_id)
        ip_token = client_ip_var.set(client_ip or "-")
        if self.mark is not None:
            self.mark(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            client_ip_var.reset(ip_token)
            request_id_var.reset(token)


# JSON answers need nothing from a browser: no scripts, no framing, no referrer.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
HSTS = "max-age=63072000; includeSubDomains"


class SecurityHeadersMiddleware:
    """nosniff, no framing, no referrer and a content security policy on every response;
    HSTS when served over HTTPS (hsts=True). A page brings its own policy (usergraph.pages,
    usergraph.graphiql) and keeps it; anything else gets the API's, which allows nothing."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("x-frame-options", "DENY")
                headers.setdefault("referrer-policy", "no-referrer")
                headers.setdefault("cache-control", "no-store")
                if self.hsts:
                    headers.setdefault("strict-transport-security", HSTS)
                headers.setdefault("content-security-policy", API_POLICY)
            await send(message)

        await self.app(scope, receive, send_with_headers)
