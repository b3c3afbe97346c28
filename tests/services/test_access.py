"""usergraph.services.access: who may act on whose data."""

from __future__ import annotations

import dataclasses

import pytest

from usergraph.db.models import ADMIN_ROLE, DEFAULT_ROLE
from usergraph.services.access import Actor


@pytest.mark.parametrize(
    ("roles", "is_admin"),
    [
        (frozenset(), False),
        (frozenset({DEFAULT_ROLE}), False),
        (frozenset({ADMIN_ROLE}), True),
        (frozenset({ADMIN_ROLE, DEFAULT_ROLE}), True),
        (frozenset({"Admin", "administrator"}), False),  # the role name exactly
    ],
)
def test_is_admin(roles: frozenset[str], is_admin: bool) -> None:
    assert Actor(user_id=1, roles=roles).is_admin is is_admin


def test_a_user_may_act_for_themselves_only() -> None:
    ann = Actor(user_id=7, roles=frozenset({DEFAULT_ROLE}))
    assert ann.may_act_for(7) is True
    assert ann.may_act_for(8) is False
    assert ann.may_act_for(0) is False
    # Without any role, still for themselves.
    assert Actor(user_id=9, roles=frozenset()).may_act_for(9) is True


def test_an_admin_may_act_for_anyone() -> None:
    admin = Actor(user_id=1, roles=frozenset({ADMIN_ROLE, DEFAULT_ROLE}))
    assert [admin.may_act_for(user_id) for user_id in (1, 2, 999_999)] == [True, True, True]


def test_an_actor_is_immutable_and_compares_by_value() -> None:
    ann = Actor(user_id=7, roles=frozenset({DEFAULT_ROLE}))
    assert ann == Actor(user_id=7, roles=frozenset({DEFAULT_ROLE}))
    assert hash(ann) == hash(Actor(user_id=7, roles=frozenset({DEFAULT_ROLE})))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ann.roles = frozenset({ADMIN_ROLE})  # type: ignore[misc]
