"""usergraph.resolvers.answers: @answers and signed_in_viewer.

The unit is the decorator, not Strawberry: the decorated coroutines are called directly with a
stand-in Info (a `.context` whose `viewer()` is async), and one small schema checks that
Strawberry still sees the wrapped resolver's arguments.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import pytest
import strawberry
from graphql import GraphQLError

from usergraph.resolvers.answers import answers, signed_in_viewer
from usergraph.schema.payloads import LogoutPayload, UserError
from usergraph.services.access import Actor
from usergraph.services.errors import Problem, ProblemCode, Rejected, Throttled


@dataclass
class FakeContext:
    actor: Actor | None

    async def viewer(self) -> Actor | None:
        return self.actor


@dataclass
class FakeInfo:
    context: FakeContext


def info(actor: Actor | None = None) -> Any:
    return FakeInfo(FakeContext(actor))


async def logout_like(
    info: strawberry.Info, session: strawberry.ID, count: int = 1, *, fail: str = ""
) -> LogoutPayload:
    """Answers like a mutation: ends count sessions, or fails as told."""
    if fail == "rejected":
        raise Rejected(
            [
                Problem(ProblemCode.NOT_FOUND, "No such session.", ("input", "sessionId")),
                Problem(ProblemCode.ACCOUNT_LOCKED, "Locked.", retry_after=30),
            ]
        )
    if fail == "throttled":
        raise Throttled(42, "login-ip")
    if fail == "other":
        raise ValueError("a bug")
    return LogoutPayload(revoked_sessions=count)


answering = answers(LogoutPayload)(logout_like)


async def test_a_normal_answer_passes_through() -> None:
    payload = await answering(info(), strawberry.ID("s1"), 3)
    assert payload == LogoutPayload(revoked_sessions=3, user_errors=[])


async def test_rejected_becomes_the_payload_with_its_user_errors() -> None:
    payload = await answering(info(), strawberry.ID("s1"), fail="rejected")
    assert isinstance(payload, LogoutPayload)
    assert payload.revoked_sessions == 0  # the payload's defaults, nothing else
    assert payload.user_errors == [
        UserError(
            field=["input", "sessionId"],
            message="No such session.",
            code=ProblemCode.NOT_FOUND,
            retry_after=None,
        ),
        UserError(field=[], message="Locked.", code=ProblemCode.ACCOUNT_LOCKED, retry_after=30),
    ]


async def test_throttled_becomes_a_rate_limited_error() -> None:
    with pytest.raises(GraphQLError) as caught:
        await answering(info(), strawberry.ID("s1"), fail="throttled")
    error = caught.value
    assert error.extensions == {"code": "RATE_LIMITED", "retryAfter": 42}
    assert error.message == "Too many requests; try again in 42 seconds."
    # `from None`: the service's reason (which names the rule) is not chained to the client.
    assert error.__cause__ is None and error.__suppress_context__ is True


async def test_other_exceptions_are_not_caught() -> None:
    with pytest.raises(ValueError, match="a bug"):
        await answering(info(), strawberry.ID("s1"), fail="other")


def test_the_wrapper_keeps_the_resolvers_signature_and_name() -> None:
    assert inspect.signature(answering) == inspect.signature(logout_like)
    assert list(inspect.signature(answering).parameters) == ["info", "session", "count", "fail"]
    assert answering.__name__ == "logout_like"
    assert answering.__doc__ == logout_like.__doc__
    assert inspect.iscoroutinefunction(answering)


@strawberry.type
class Query:
    @strawberry.field
    def ping(self) -> bool:
        return True


@strawberry.type
class Mutation:
    end_sessions: LogoutPayload = strawberry.field(resolver=answering)


SCHEMA = strawberry.Schema(query=Query, mutation=Mutation)


def test_strawberry_sees_the_wrapped_arguments() -> None:
    printed = str(SCHEMA)
    assert 'endSessions(session: ID!, count: Int! = 1, fail: String! = ""): LogoutPayload!' in (
        printed
    )


async def test_through_strawberry() -> None:
    document = """mutation($fail: String!) { endSessions(session: "s", count: 2, fail: $fail) {
      revokedSessions userErrors { code field message retryAfter } } }"""
    ok = await SCHEMA.execute(document, {"fail": ""})
    assert ok.errors is None
    assert ok.data == {"endSessions": {"revokedSessions": 2, "userErrors": []}}
    rejected = await SCHEMA.execute(document, {"fail": "rejected"})
    assert rejected.errors is None
    assert rejected.data is not None
    assert rejected.data["endSessions"]["userErrors"][1] == {
        "code": "ACCOUNT_LOCKED",
        "field": [],
        "message": "Locked.",
        "retryAfter": 30,
    }
    throttled = await SCHEMA.execute(document, {"fail": "throttled"})
    assert throttled.data is None
    [error] = throttled.errors or []
    assert error.extensions == {"code": "RATE_LIMITED", "retryAfter": 42}


# --- signed_in_viewer ---------------------------------------------------------------------


async def test_signed_in_viewer_returns_the_viewer() -> None:
    ann = Actor(user_id=1, roles=frozenset({"user"}))
    assert await signed_in_viewer(info(ann)) is ann


async def test_signed_in_viewer_without_one_is_unauthenticated() -> None:
    with pytest.raises(GraphQLError) as caught:
        await signed_in_viewer(info(None))
    assert caught.value.extensions == {"code": "UNAUTHENTICATED"}
    assert caught.value.message == "Sign in to do this."
