"""Dataloaders: results in key order, one query per batch, safe on a cold pool."""

from __future__ import annotations

from starlette.applications import Starlette

from tests.client import GraphQL, StatementCounter
from usergraph.db.loaders import Loaders, SessionsPageKey
from usergraph.schema.relay import user_pk


async def test_batches_return_results_in_key_order(gql: GraphQL, app: Starlette) -> None:
    ann, bob = await gql.register("ann"), await gql.register("bob")
    loaders = Loaders.create(app.state.runtime.db)
    ann_id, bob_id = user_pk(ann.id), user_pk(bob.id)
    users = await loaders.user_by_id.load_many([bob_id, 999_999, ann_id])
    assert [u.username if u else None for u in users] == ["bob", None, "ann"]
    roles = await loaders.roles_by_user_id.load_many([999_999, ann_id])
    assert [[r.name for r in rs] for rs in roles] == [[], ["user"]]
    counts = await loaders.open_session_count_by_user_id.load_many([ann_id, 999_999])
    assert counts == [1, 0]


async def test_one_query_per_relation_for_many_keys(
    gql: GraphQL, app: Starlette, sql_counter: StatementCounter
) -> None:
    accounts = [await gql.register(f"user{i}") for i in range(6)]
    ids = [user_pk(a.id) for a in accounts]
    loaders = Loaders.create(app.state.runtime.db)
    sql_counter.reset()
    pages = await loaders.open_sessions_by_user_id.load_many(
        [SessionsPageKey(user_id, 5) for user_id in ids]
    )
    selects = [s for s in sql_counter.statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1
    assert [len(page.items) for page in pages] == [1] * 6
    assert all(page.items[0].user_id == user_id for page, user_id in zip(pages, ids, strict=True))


async def test_many_loaders_at_once_on_a_cold_pool(gql: GraphQL, app: Starlette) -> None:
    admin = await gql.admin()
    for i in range(4):
        await gql.register(f"user{i}")
    # Empty the pool: every loader batch below must open its own connection concurrently.
    await app.state.runtime.db.engine.dispose()
    data = await gql.ok(
        """query($id: ID!) {
             me { id sessions { totalCount edges { node { current user { username } } } } }
             node(id: $id) { id ... on User { roles { name } } }
             users(first: 10) { totalCount edges { node {
               username email roles { name }
               sessions { totalCount edges { node { id user { id } } } }
             } } }
           }""",
        {"id": admin.id},
        token=admin.access_token,
    )
    assert data["me"]["id"] == admin.id
    assert data["me"]["sessions"]["edges"][0]["node"]["current"] is True
    assert {r["name"] for r in data["node"]["roles"]} == {"admin", "user"}
    assert data["users"]["totalCount"] == 5
    for edge in data["users"]["edges"]:
        assert edge["node"]["sessions"]["totalCount"] == 1


async def test_loaded_roles_are_known_until_forgotten(gql: GraphQL, app: Starlette) -> None:
    ann, bob = await gql.register("ann"), await gql.register("bob")
    ann_id, bob_id = user_pk(ann.id), user_pk(bob.id)
    loaders = Loaders.create(app.state.runtime.db)
    assert loaders.roles_by_user_id.known == {}
    await loaders.roles_by_user_id.load_many([ann_id, bob_id])
    known = loaders.roles_by_user_id.known
    assert {key: [r.name for r in roles] for key, roles in known.items()} == {
        ann_id: ["user"],
        bob_id: ["user"],
    }
    loaders.forget_user(ann_id)  # after a write: the next read must go to the database
    assert set(loaders.roles_by_user_id.known) == {bob_id}
    loaders.roles_by_user_id.clear_all()
    assert loaders.roles_by_user_id.known == {}
