"""Selection lookahead: does this field's query ask for a nested field?

Lets a list resolver load a relation for the whole page in one query up front, so the items
resolve it without awaiting. Fragments (inline and named) are looked through; @skip/@include
are not evaluated, so a skipped field is loaded anyway (harmless, only wasted).
"""

from __future__ import annotations

from collections.abc import Iterable

from strawberry import Info
from strawberry.types.nodes import FragmentSpread, InlineFragment, Selection


def selects(info: Info, *path: str) -> bool:
    """Whether the current field's selection reaches path, e.g. ("edges", "node", "roles")."""
    return any(_reaches(field.selections, path) for field in info.selected_fields)


def _reaches(selections: Iterable[Selection], path: tuple[str, ...]) -> bool:
    name, rest = path[0], path[1:]
    for selection in selections:
        if isinstance(selection, FragmentSpread | InlineFragment):
            if _reaches(selection.selections, path):
                return True
        elif selection.name == name and (not rest or _reaches(selection.selections, rest)):
            return True
    return False
