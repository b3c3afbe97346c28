"""User.secondFactors over HTTP: visible to the user and administrators, null for anyone else;
what it says through enrollment, use of recovery codes and turning off; one batch for a page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.client import DEFAULT_PASSWORD, Account, GraphQL, StatementCounter
from tests.helpers import problems
from tests.totp import (
    DISABLE_TOTP,
    REGENERATE_CODES,
    SECOND_FACTORS,
    START_TOTP,
    STEP,
    Clock,
    challenge,
    code,
    enroll,
    verify,
)

BY_ID = """query($id: ID) { user(id: $id) {
  id username secondFactors { totpEnabled totpEnabledAt recoveryCodesRemaining }
} }"""
BY_USERNAME = """query($username: String) { user(username: $username) {
  id secondFactors { totpEnabled recoveryCodesRemaining }
} }"""
PAGE = """query($first: Int) { users(first: $first) {
  edges { node { id username secondFactors { totpEnabled totpEnabledAt recoveryCodesRemaining } } }
} }"""
PAGE_WITHOUT = """query($first: Int) { users(first: $first) {
  edges { node { id username } }
} }"""
NONE = {"totpEnabled": False, "totpEnabledAt": None, "recoveryCodesRemaining": 0}


async def own_factors(gql: GraphQL, account: Account) -> Any:
    return (await gql.ok(SECOND_FACTORS, token=account.access_token))["me"]["secondFactors"]


async def factors_by_id(gql: GraphQL, viewer: Account, target: Account) -> Any:
    data = await gql.ok(BY_ID, {"id": target.id}, token=viewer.access_token)
    assert data["user"]["id"] == target.id
    return data["user"]["secondFactors"]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def sign_in_with(gql: GraphQL, username: str, code_value: str) -> dict[str, Any]:
    login = await challenge(gql, username, DEFAULT_PASSWORD)
    assert login["userErrors"] == [], login
    return await verify(gql, login["secondFactorChallenge"]["token"], code_value)


# --- who sees it --------------------------------------------------------------------------


async def test_the_user_sees_their_factors(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    assert await own_factors(gql, ann) == NONE
    assert await factors_by_id(gql, ann, ann) == NONE

    before = datetime.now(UTC)
    await enroll(gql, ann, unix_time=clock)
    after = datetime.now(UTC)
    factors = await own_factors(gql, ann)
    assert factors["totpEnabled"] is True
    assert factors["recoveryCodesRemaining"] == 10
    enabled_at = parse_time(factors["totpEnabledAt"])
    assert enabled_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= enabled_at <= after + timedelta(seconds=1)
    assert await factors_by_id(gql, ann, ann) == factors


async def test_admins_see_anyones_factors(gql: GraphQL, clock: Clock) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    await enroll(gql, ann, unix_time=clock)
    ann_factors = await factors_by_id(gql, admin, ann)
    assert ann_factors == await own_factors(gql, ann)
    assert ann_factors["totpEnabled"] is True
    assert await factors_by_id(gql, admin, bob) == NONE
    data = await gql.ok(BY_USERNAME, {"username": "ann"}, token=admin.access_token)
    assert data["user"]["secondFactors"] == {"totpEnabled": True, "recoveryCodesRemaining": 10}


async def test_other_users_see_null(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    await enroll(gql, ann, unix_time=clock)
    # Null, without an error (gql.ok checks): whether TOTP is on is the user's business.
    data = await gql.ok(BY_ID, {"id": ann.id}, token=bob.access_token)
    assert data["user"] == {"id": ann.id, "username": "ann", "secondFactors": None}
    data = await gql.ok(BY_USERNAME, {"username": "ann"}, token=bob.access_token)
    assert data["user"]["secondFactors"] is None
    # Nor for a user without factors.
    data = await gql.ok(BY_ID, {"id": bob.id}, token=ann.access_token)
    assert data["user"]["secondFactors"] is None


async def test_one_query_shows_each_viewer_what_they_may_see(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    await enroll(gql, ann, unix_time=clock)
    await enroll(gql, bob, unix_time=clock)
    data = await gql.ok(
        """query($me: ID, $other: ID) {
             mine: user(id: $me) { secondFactors { totpEnabled } }
             theirs: user(id: $other) { secondFactors { totpEnabled } } }""",
        {"me": ann.id, "other": bob.id},
        token=ann.access_token,
    )
    assert data == {
        "mine": {"secondFactors": {"totpEnabled": True}},
        "theirs": {"secondFactors": None},
    }


# --- what it says -------------------------------------------------------------------------


async def test_a_pending_secret_is_not_enabled(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    data = await gql.ok(
        START_TOTP, {"input": {"password": DEFAULT_PASSWORD}}, token=ann.access_token
    )
    assert data["startTotpEnrollment"]["secret"]
    assert await own_factors(gql, ann) == NONE


async def test_recovery_codes_remaining_counts_down(gql: GraphQL, clock: Clock) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    enabled_at = (await own_factors(gql, ann))["totpEnabledAt"]
    for used, value in enumerate(enrolled.recovery_codes, start=1):
        signed_in = await sign_in_with(gql, "ann", value)
        assert signed_in["userErrors"] == [], used
        assert signed_in["user"]["secondFactors"] == {
            "totpEnabled": True,
            "recoveryCodesRemaining": 10 - used,
        }
        if used in (1, 9):
            factors = await own_factors(gql, ann)
            assert factors["recoveryCodesRemaining"] == 10 - used
            assert factors["totpEnabledAt"] == enabled_at
            assert (await factors_by_id(gql, admin, ann))["recoveryCodesRemaining"] == 10 - used
    # None left: TOTP is still on, and login offers TOTP only.
    assert await own_factors(gql, ann) == {
        "totpEnabled": True,
        "totpEnabledAt": enabled_at,
        "recoveryCodesRemaining": 0,
    }
    login = await challenge(gql, "ann", DEFAULT_PASSWORD)
    assert login["secondFactorChallenge"]["methods"] == ["TOTP"]
    # New codes bring it back to 10; TOTP's start time stays.
    clock.advance(STEP)
    data = await gql.ok(
        REGENERATE_CODES,
        {"input": {"password": DEFAULT_PASSWORD, "code": code(enrolled.secret, clock())}},
        token=ann.access_token,
    )
    assert data["regenerateRecoveryCodes"]["userErrors"] == []
    assert await own_factors(gql, ann) == {
        "totpEnabled": True,
        "totpEnabledAt": enabled_at,
        "recoveryCodesRemaining": 10,
    }


async def test_a_totp_sign_in_uses_no_recovery_code(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    clock.advance(STEP)
    signed_in = await sign_in_with(gql, "ann", code(enrolled.secret, clock()))
    assert signed_in["user"]["secondFactors"] == {"totpEnabled": True, "recoveryCodesRemaining": 10}
    # Nor does a wrong recovery code.
    refused = await sign_in_with(gql, "ann", "k7qm-2xfa-a2b3-c4d5")
    assert problems(refused) == [("INVALID_CODE", ["input", "code"])]
    assert (await own_factors(gql, ann))["recoveryCodesRemaining"] == 10


async def test_zero_and_off_after_disable(gql: GraphQL, clock: Clock) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    assert (await sign_in_with(gql, "ann", enrolled.recovery_codes[0]))["userErrors"] == []
    assert (await own_factors(gql, ann))["recoveryCodesRemaining"] == 9
    data = await gql.ok(
        DISABLE_TOTP,
        {"input": {"password": DEFAULT_PASSWORD, "code": enrolled.recovery_codes[1]}},
        token=ann.access_token,
    )
    assert data["disableTotp"]["user"]["secondFactors"] == {
        "totpEnabled": False,
        "recoveryCodesRemaining": 0,
    }
    assert await own_factors(gql, ann) == NONE
    assert await factors_by_id(gql, admin, ann) == NONE


# --- one batch for a page -----------------------------------------------------------------


async def test_a_page_of_users_loads_factors_in_one_batch(
    gql: GraphQL, clock: Clock, sql_counter: StatementCounter
) -> None:
    admin = await gql.admin()
    left: dict[str, int] = {}  # recovery codes left, of those with TOTP on
    for number in range(24):
        account = await gql.register(f"member{number:02d}")
        if number % 2 == 0:
            factors = await enroll(gql, account, unix_time=clock)
            left[account.username] = 10
            if number % 4 == 0:  # a recovery code used: the counts differ between users
                signed_in = await sign_in_with(gql, account.username, factors.recovery_codes[0])
                assert signed_in["userErrors"] == []
                left[account.username] = 9

    counts: dict[tuple[int, bool], int] = {}
    for size in (5, 20):
        for query, selected in ((PAGE, True), (PAGE_WITHOUT, False)):
            sql_counter.reset()
            data = await gql.ok(query, {"first": size}, token=admin.access_token)
            counts[size, selected] = sql_counter.count
            nodes = [edge["node"] for edge in data["users"]["edges"]]
            assert len(nodes) == size
            if not selected:
                continue
            for node in nodes:
                factors = node["secondFactors"]
                on = node["username"] in left
                assert factors["totpEnabled"] is on, node
                assert factors["recoveryCodesRemaining"] == left.get(node["username"], 0)
                assert (factors["totpEnabledAt"] is not None) is on
    print(f"SQL statements by (page size, secondFactors selected): {counts}")
    assert counts[5, True] == counts[20, True], (counts, sql_counter.statements)
    # The factors of a whole page cost a fixed few statements (one read session: its BEGIN
    # on SQLite, the enabled factors, the codes left), not some per user.
    assert counts[20, True] - counts[20, False] <= 3, counts
