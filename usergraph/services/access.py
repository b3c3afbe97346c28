"""Who may act on whose data: the rule in one place.

A user's private fields (email, lastLoginAt, sessions) and their sessions are theirs and the
administrators'. The schema's permissions, the node lookup and revokeSession all ask here.
"""

from __future__ import annotations

from dataclasses import dataclass

from usergraph.db.models import ADMIN_ROLE


@dataclass(frozen=True, slots=True)
class Actor:
    """A signed-in user acting: their id and role names."""

    user_id: int
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    def may_act_for(self, user_id: int) -> bool:
        """Whether the actor may see and manage what belongs to the user user_id."""
        return self.is_admin or self.user_id == user_id
