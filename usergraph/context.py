"""The per-request context: who is asking, and fresh loaders.

get_context builds it for each request. The bearer token is decoded only when a field needs
it, and the viewer (the signed-in user, checked against their session) is loaded through the
dataloaders at most once per request. The context holds the process's Runtime, never a database
session: sibling fields resolve concurrently.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from usergraph.auth.tokens import AccessClaims, InvalidAccessToken
from usergraph.db.loaders import Loaders
from usergraph.db.models import utcnow
from usergraph.db.records import AnySession, AnyUser
from usergraph.runtime import Runtime
from usergraph.services.access import Actor
from usergraph.services.sessions import ClientInfo

MAX_AUTHORIZATION_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class Viewer(Actor):
    """The signed-in user of a request, in the session their access token names."""

    user: AnyUser
    session_id: uuid.UUID


@dataclass(eq=False)
class Context:
    request: Request
    response: Response
    runtime: Runtime
    loaders: Loaders
    request_id: str
    client: ClientInfo
    bearer_token: str | None
    _claims: AccessClaims | None = field(default=None, init=False)
    _claims_decoded: bool = field(default=False, init=False)
    _viewer: asyncio.Future[Viewer | None] | None = field(default=None, init=False)
    _signed_in_session: uuid.UUID | None = field(default=None, init=False)

    @property
    def claims(self) -> AccessClaims | None:
        """The verified access-token claims, or None when the token is absent or invalid."""
        if not self._claims_decoded:
            self._claims_decoded = True
            if self.bearer_token:
                try:
                    tokens = self.runtime.policy.tokens
                    self._claims = tokens.decode_access_token(self.bearer_token)
                except InvalidAccessToken:
                    self._claims = None
        return self._claims

    async def viewer(self) -> Viewer | None:
        """The signed-in user whose session and account are still live, or None."""
        if self._viewer is None:
            self._viewer = asyncio.ensure_future(self._load_viewer())
        return await asyncio.shield(self._viewer)

    async def _load_viewer(self) -> Viewer | None:
        claims = self.claims
        if claims is None:
            return None
        found = await self.loaders.viewer(claims.user_id, claims.session_id)
        if found is None:
            return None
        user, user_session, roles = found
        if not _is_live(user, user_session):
            return None
        return _viewer(user, claims.session_id, (role.name for role in roles))

    def known_viewer(self) -> tuple[bool, Viewer | None]:
        """(True, the viewer) once it has been loaded; (False, None) before.

        One of the fast paths of usergraph.db.loaders ("Answering without awaiting").
        """
        viewer = self._viewer
        if viewer is None or not viewer.done() or viewer.cancelled() or viewer.exception():
            return False, None
        return True, viewer.result()

    def sign_in(self, user: AnyUser, session_id: uuid.UUID, roles: Sequence[str]) -> None:
        """Make a user who just signed in (register, login, refresh) the viewer for the rest of
        this request, so the payload shows them their own private fields."""
        viewer: asyncio.Future[Viewer | None] = asyncio.get_running_loop().create_future()
        viewer.set_result(_viewer(user, session_id, roles))
        self._viewer = viewer
        self._signed_in_session = session_id

    @property
    def current_session_id(self) -> uuid.UUID | None:
        """The session this request acts in: one it just opened, else its access token's."""
        if self._signed_in_session is not None:
            return self._signed_in_session
        claims = self.claims
        return claims.session_id if claims else None

    def forget_viewer(self) -> None:
        self._viewer = None

    # Cookie mode (USERGRAPH_REFRESH_COOKIE): the refresh token also travels as an HttpOnly
    # cookie that only the GraphQL path receives, so browser code never has to hold it.

    def refresh_token(self, sent: str | None) -> str | None:
        """The refresh token the client sent in the input, else the cookie's (cookie mode)."""
        return sent or self.refresh_token_cookie()

    def refresh_token_cookie(self) -> str | None:
        """The refresh token from the cookie, in cookie mode; else None."""
        settings = self.runtime.settings
        if not settings.refresh_cookie:
            return None
        return self.request.cookies.get(settings.refresh_cookie_name) or None

    def set_refresh_token_cookie(self, token: str, expires_at: datetime) -> None:
        if self.runtime.settings.refresh_cookie:
            max_age = max(0, int((expires_at - utcnow()).total_seconds()))
            self.response.set_cookie(value=token, max_age=max_age, **self._cookie_attributes())

    def clear_refresh_token_cookie(self) -> None:
        # Same name, path and flags as when it was set, or browsers keep the old one.
        if self.runtime.settings.refresh_cookie:
            self.response.delete_cookie(**self._cookie_attributes())

    def _cookie_attributes(self) -> dict[str, Any]:
        settings = self.runtime.settings
        return {
            "key": settings.refresh_cookie_name,
            "path": self.request.url.path,
            "secure": settings.cookies_secure,
            "httponly": True,
            "samesite": "strict",
        }


def _viewer(user: AnyUser, session_id: uuid.UUID, roles: Iterable[str]) -> Viewer:
    return Viewer(user_id=user.id, roles=frozenset(roles), user=user, session_id=session_id)


def _is_live(user: AnyUser | None, user_session: AnySession | None) -> bool:
    return (
        user is not None
        and user.is_active
        and user_session is not None
        and user_session.user_id == user.id
        and user_session.is_open(utcnow())
    )


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if len(header) > MAX_AUTHORIZATION_LENGTH:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def get_context(request: Request, response: Response) -> Context:
    """The context of one request to the GraphQL view (RequestIdMiddleware has run)."""
    runtime: Runtime = request.app.state.runtime
    return Context(
        request=request,
        response=response,
        runtime=runtime,
        loaders=Loaders.create(runtime.db),
        request_id=request.state.request_id,
        client=ClientInfo(
            ip_address=request.state.client_ip, user_agent=request.headers.get("user-agent")
        ),
        bearer_token=bearer_token(request),
    )
