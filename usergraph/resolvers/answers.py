"""How a resolver answers: its signed-in viewer, and failures turned into GraphQL.

    @answers(AuthPayload)
    async def login(info, input) -> AuthPayload: ...

A domain rejection (services.errors.Rejected) becomes the payload with its userErrors; a
throttled request (Throttled) fails as a whole with RATE_LIMITED and extensions.retryAfter.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeAlias, TypeVar

import strawberry

from usergraph.schema.errors import rate_limited, unauthenticated
from usergraph.schema.payloads import UserError, user_errors
from usergraph.services.errors import Rejected, Throttled

if TYPE_CHECKING:
    from usergraph.context import Context, Viewer

P = ParamSpec("P")


class Payload(Protocol):
    def __init__(self, *, user_errors: list[UserError]) -> None: ...


PayloadT = TypeVar("PayloadT", bound=Payload)
Resolver: TypeAlias = Callable[P, Awaitable[PayloadT]]


def answers(payload: type[PayloadT]) -> Callable[[Resolver[P, PayloadT]], Resolver[P, PayloadT]]:
    """Rejected -> payload(userErrors); Throttled -> a RATE_LIMITED error."""

    def decorate(resolver: Resolver[P, PayloadT]) -> Resolver[P, PayloadT]:
        @functools.wraps(resolver)
        async def resolve(*args: P.args, **kwargs: P.kwargs) -> PayloadT:
            try:
                return await resolver(*args, **kwargs)
            except Rejected as rejected:
                return payload(user_errors=user_errors(rejected))
            except Throttled as throttled:
                raise rate_limited(throttled.retry_after) from None

        return resolve

    return decorate


async def signed_in_viewer(info: strawberry.Info[Context, None]) -> Viewer:
    """The request's viewer, for a field that requires sign-in (UNAUTHENTICATED without)."""
    viewer = await info.context.viewer()
    if viewer is None:  # the field's permission refused this already; never silently on
        raise unauthenticated()
    return viewer
