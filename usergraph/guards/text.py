"""Text no database takes: a NUL character (U+0000) in a string literal is refused.

PostgreSQL cannot store NUL in text and fails the statement; no field of ours has a use for it.
Literals are checked here, at validation (cached with the document); JSON variables are
checked when the request body is read (usergraph.http).
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError, StringValueNode, ValidationRule

from usergraph.schema.errors import ErrorCode

NUL_MESSAGE = "Text may not contain the NUL character (U+0000)."


class NoNulCharactersRule(ValidationRule):
    def enter_string_value(self, node: StringValueNode, *_args: Any) -> None:
        if "\x00" in node.value:
            self.report_error(
                GraphQLError(NUL_MESSAGE, node, extensions={"code": ErrorCode.BAD_USER_INPUT.value})
            )
