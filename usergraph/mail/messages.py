"""Email messages from Jinja2 templates, and the links they carry.

One template per kind (templates/<kind>.email) with three blocks: `subject`, `text` and
`html`; the html block is always rendered with autoescaping. A directory of the same file names
(USERGRAPH_EMAIL_TEMPLATES_DIR) overrides the built-in ones, file by file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

BUILT_IN = Path(__file__).with_name("templates")


# What the services give each kind's template, for check() to render with.
_LINK = {"username": "ada", "link": "https://example.com/#token=uge_sample", "hours": 24}
_CHANGE = {"username": "ada", "new_email": "ada@example.com"}
SAMPLES: dict[str, dict[str, Any]] = {
    "verify_email": _LINK,
    "reset_password": _LINK,
    "change_email": _LINK,
    "email_change_requested": _CHANGE,
    "email_changed": _CHANGE,
    "password_changed": {"username": "ada"},
    "account_exists": {"username": "ada"},
    "totp_enabled": {"username": "ada"},
    "totp_disabled": {"username": "ada", "recovery_code_used": False},
    "recovery_codes_regenerated": {"username": "ada", "recovery_code_used": True},
    "recovery_code_used": {"username": "ada", "codes_left": 9},
    "second_factors_reset": {"username": "ada"},
}
KINDS = tuple(SAMPLES)


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


class Messages:
    """Renders each kind of message; builds the links of the flows from URL templates."""

    def __init__(
        self,
        *,
        public_url: str,
        links: dict[str, str | None],
        templates_dir: Path | None = None,
        product: str = "usergraph",
    ) -> None:
        loader = jinja2.FileSystemLoader(
            [*([str(templates_dir)] if templates_dir else []), str(BUILT_IN)]
        )
        options: dict[str, Any] = {"undefined": jinja2.StrictUndefined, "loader": loader}
        # The html block is always rendered autoescaped, even from a template that forgets to
        # ask; subject and text are plain text, where escaping would only garble them.
        self._html = jinja2.Environment(autoescape=True, **options)
        self._plain = jinja2.Environment(autoescape=False, **options)  # noqa: S701 (plain text)
        base = public_url.rstrip("/")
        # The token rides in the fragment: browsers never send it to a server, nor in Referer.
        defaults = {
            "verify_email": f"{base}/verify-email#token={{token}}",
            "reset_password": f"{base}/reset-password#token={{token}}",
            "change_email": f"{base}/confirm-email-change#token={{token}}",
        }
        self._links = {flow: links.get(flow) or default for flow, default in defaults.items()}
        self._product = product

    def link(self, flow: str, token: str) -> str:
        return self._links[flow].replace("{token}", token)

    def render(self, kind: str, **context: Any) -> Rendered:
        values = {"product": self._product, **context}
        name = f"{kind}.email"
        parts = {
            **_blocks(self._plain.get_template(name), ("subject", "text"), values),
            **_blocks(self._html.get_template(name), ("html",), values),
        }
        return Rendered(
            subject=" ".join(parts["subject"].split()),
            text=parts["text"] + "\n",
            html=parts["html"] + "\n",
        )

    def check(self) -> None:
        """Fail at start-up, not at the first email, when a template is missing or broken."""
        for kind in SAMPLES:
            template = self._plain.get_template(f"{kind}.email")
            missing = {"subject", "text", "html"} - set(template.blocks)
            if missing:
                raise ValueError(f"email template {kind}.email lacks {sorted(missing)}")
            try:  # with what the services pass: a misspelt variable fails here, not a request
                self.render(kind, **SAMPLES[kind])
            except jinja2.TemplateError as exc:
                raise ValueError(f"email template {kind}.email does not render: {exc}") from exc


def _blocks(
    template: jinja2.Template, names: tuple[str, ...], values: dict[str, Any]
) -> dict[str, str]:
    context = template.new_context(values)
    # Run the template's top level once first, so what it sets or imports outside its blocks
    # ({% set %}, {% import %}) is defined inside them.
    for _ in template.root_render_func(context):
        pass
    return {name: "".join(template.blocks[name](context)).strip() for name in names}
