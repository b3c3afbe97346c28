"""usergraph.mail.messages: every kind of email from its Jinja2 template, and the links.

Each kind renders a one-line subject, a text part and an html part; the link of the flows is in
both parts. The html part is autoescaped even from an override that does not ask for it, the
text part never is. Overrides (USERGRAPH_EMAIL_TEMPLATES_DIR) replace only their own files;
check() refuses a template that lacks a block.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from tests.environment import make_settings
from usergraph.mail.messages import KINDS, Messages, Rendered
from usergraph.runtime import messages as runtime_messages

PUBLIC_URL = "https://id.example/"  # the trailing slash is dropped from links
TOKEN = "tOk3n_-AbC"
CONTEXT = {"username": "ann", "link": "https://id.example/x#token=abc", "hours": 24}
# Every kind with the values the services give it; the flows' kinds carry a link.
CONTEXTS: dict[str, dict[str, object]] = {
    "verify_email": CONTEXT,
    "reset_password": {**CONTEXT, "hours": 1},
    "change_email": CONTEXT,
    "email_change_requested": {"username": "ann", "new_email": "ann.new@example.com"},
    "email_changed": {"username": "ann", "new_email": "ann.new@example.com"},
    "password_changed": {"username": "ann"},
    "account_exists": {"username": "ann"},
    "totp_enabled": {"username": "ann"},
    "totp_disabled": {"username": "ann", "recovery_code_used": True},
    "recovery_codes_regenerated": {"username": "ann", "recovery_code_used": False},
    "recovery_code_used": {"username": "ann", "codes_left": 1},
    "second_factors_reset": {"username": "ann"},
}
SUBJECTS = {
    "verify_email": "Verify your email address for usergraph",
    "reset_password": "Reset your usergraph password",
    "change_email": "Confirm your new email address for usergraph",
    "email_change_requested": "Your usergraph email address is about to change",
    "email_changed": "Your usergraph email address was changed",
    "password_changed": "Your usergraph password was changed",
    "account_exists": "Someone tried to register with your email address at usergraph",
    "totp_enabled": "Two-step sign-in is on for your usergraph account",
    "totp_disabled": "Two-step sign-in is off for your usergraph account",
    "recovery_codes_regenerated": "New recovery codes for your usergraph account",
    "recovery_code_used": "A recovery code was used to sign in to your usergraph account",
    "second_factors_reset": "Two-step sign-in was reset for your usergraph account",
}
LINKED = ("verify_email", "reset_password", "change_email")


def built_in(**links: str | None) -> Messages:
    return Messages(public_url=PUBLIC_URL, links=links)


def write_template(directory: Path, kind: str, subject: str, text: str, html: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{kind}.email"
    path.write_text(
        f"{{% block subject %}}{subject}{{% endblock %}}\n"
        f"{{% block text %}}{text}{{% endblock %}}\n"
        f"{{% block html %}}{html}{{% endblock %}}\n"
    )
    return path


def test_the_kinds_are_the_template_files() -> None:
    shipped = sorted(
        p.stem for p in (Path(__file__).parents[2] / "usergraph/mail/templates").iterdir()
    )
    assert sorted(KINDS) == shipped
    assert set(CONTEXTS) == set(KINDS) == set(SUBJECTS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_a_subject_text_and_html(kind: str) -> None:
    rendered = built_in().render(kind, **CONTEXTS[kind])
    assert isinstance(rendered, Rendered)
    assert rendered.subject == SUBJECTS[kind]
    assert "\n" not in rendered.subject
    assert rendered.text.startswith("Hello ann,\n\n")
    assert rendered.text.endswith(".\n")
    assert not rendered.text.endswith("\n\n")
    assert rendered.html.startswith("<!doctype html>\n<html>")
    assert rendered.html.endswith("</body></html>\n")
    assert "<p>Hello ann,</p>" in rendered.html
    link = "https://id.example/x#token=abc"
    if kind in LINKED:
        assert f"\n\n{link}\n\n" in rendered.text  # on a line of its own, to click or copy
        assert f'<a href="{link}">' in rendered.html
        hours = CONTEXTS[kind]["hours"]
        unit = "hour" if hours == 1 else "hours"
        assert f"expires in {hours} {unit}" in rendered.text
        assert f"expires in {hours} {unit}" in rendered.html
    else:
        assert "token" not in rendered.text
        assert "href" not in rendered.html
    if "new_email" in CONTEXTS[kind]:
        assert "ann.new@example.com" in rendered.text
        assert "<b>ann.new@example.com</b>" in rendered.html


@pytest.mark.parametrize("left", [0, 1, 9])
def test_a_used_recovery_code_says_how_many_are_left(left: int) -> None:
    rendered = built_in().render("recovery_code_used", username="ann", codes_left=left)
    said = f"{left} code is left" if left == 1 else f"{left} codes are left"
    assert said in rendered.text
    assert said in rendered.html


@pytest.mark.parametrize("kind", ["totp_disabled", "recovery_codes_regenerated"])
def test_a_factor_notice_says_whether_a_recovery_code_did_it(kind: str) -> None:
    used = built_in().render(kind, username="ann", recovery_code_used=True)
    not_used = built_in().render(kind, username="ann", recovery_code_used=False)
    assert ", with a recovery code." in used.text and ", with a recovery code." in used.html
    assert "recovery code." not in not_used.text.split("\n\n")[1]


def test_the_product_name_is_in_subject_and_bodies() -> None:
    messages = Messages(public_url=PUBLIC_URL, links={}, product="Acme ID")
    rendered = messages.render("verify_email", **CONTEXT)
    assert rendered.subject == "Verify your email address for Acme ID"
    assert "create an account with Acme ID, ignore" in rendered.text
    assert "create an account with Acme ID, ignore" in rendered.html


def test_a_missing_value_fails_instead_of_rendering_blank() -> None:
    # StrictUndefined: a service that forgets the link must not send a mail without one.
    with pytest.raises(jinja2.UndefinedError, match="'link' is undefined"):
        built_in().render("verify_email", username="ann", hours=24)


def test_html_is_autoescaped_and_text_is_not() -> None:
    rendered = built_in().render(
        "email_changed", username="<b>ann</b> & co", new_email='x"<script>@example.com'
    )
    assert "<p>Hello &lt;b&gt;ann&lt;/b&gt; &amp; co,</p>" in rendered.html
    assert "<b>x&#34;&lt;script&gt;@example.com</b>" in rendered.html
    assert "<script>" not in rendered.html
    assert rendered.text.startswith("Hello <b>ann</b> & co,\n")
    assert 'is now x"<script>@example.com;' in rendered.text


def test_a_link_with_a_query_string_is_escaped_in_html_only() -> None:
    messages = built_in(reset_password="https://app.example/reset?a=1&token={token}")
    link = messages.link("reset_password", TOKEN)
    assert link == f"https://app.example/reset?a=1&token={TOKEN}"
    rendered = messages.render("reset_password", username="ann", link=link, hours=1)
    assert f"\n{link}\n" in rendered.text
    assert f'<a href="https://app.example/reset?a=1&amp;token={TOKEN}">' in rendered.html


def test_an_override_that_forgets_to_escape_is_escaped_anyway(tmp_path: Path) -> None:
    write_template(
        tmp_path / "templates",
        "verify_email",
        subject="Welcome {{ username }}",
        text="Hi {{ username }}: {{ link }}",
        html="<p>Hi {{ username }}</p><a href='{{ link }}'>go</a>",
    )
    messages = Messages(public_url=PUBLIC_URL, links={}, templates_dir=tmp_path / "templates")
    rendered = messages.render(
        "verify_email", username="<b>eve</b>", link="https://x.example/?a=1&b=2", hours=24
    )
    assert rendered.html == (
        "<p>Hi &lt;b&gt;eve&lt;/b&gt;</p><a href='https://x.example/?a=1&amp;b=2'>go</a>\n"
    )
    assert rendered.text == "Hi <b>eve</b>: https://x.example/?a=1&b=2\n"
    assert rendered.subject == "Welcome <b>eve</b>"  # plain text: nothing to escape


def test_an_override_replaces_only_its_own_file(tmp_path: Path) -> None:
    write_template(tmp_path, "reset_password", "Your reset", "Go: {{ link }}", "<a>{{ link }}</a>")
    messages = Messages(public_url=PUBLIC_URL, links={}, templates_dir=tmp_path)
    overridden = messages.render("reset_password", username="ann", link="L", hours=1)
    assert overridden == Rendered(subject="Your reset", text="Go: L\n", html="<a>L</a>\n")
    # Every other kind is still the built-in one.
    for kind in KINDS:
        if kind != "reset_password":
            assert messages.render(kind, **CONTEXTS[kind]) == built_in().render(
                kind, **CONTEXTS[kind]
            )
    messages.check()  # the mix of both is complete


def test_the_subject_is_folded_to_one_line(tmp_path: Path) -> None:
    write_template(
        tmp_path, "password_changed", "\n  Your   password\n\tchanged, {{ username }}  \n", "t", "h"
    )
    messages = Messages(public_url=PUBLIC_URL, links={}, templates_dir=tmp_path)
    assert messages.render("password_changed", username="ann").subject == (
        "Your password changed, ann"
    )
    # A value with a line break cannot start a new header line either.
    assert messages.render("password_changed", username="ann\r\nBcc: x@evil.example").subject == (
        "Your password changed, ann Bcc: x@evil.example"
    )


def test_the_settings_choose_the_templates_directory(tmp_path: Path) -> None:
    write_template(tmp_path / "t", "account_exists", "Again, {{ username }}?", "t", "h")
    settings = make_settings("sqlite+aiosqlite://", tmp_path, email_templates_dir=tmp_path / "t")
    rendered = runtime_messages(settings).render("account_exists", username="ann")
    assert rendered.subject == "Again, ann?"


def test_default_links_carry_the_token_in_the_fragment() -> None:
    messages = built_in()
    assert messages.link("verify_email", TOKEN) == f"https://id.example/verify-email#token={TOKEN}"
    assert messages.link("reset_password", TOKEN) == (
        f"https://id.example/reset-password#token={TOKEN}"
    )
    assert messages.link("change_email", TOKEN) == (
        f"https://id.example/confirm-email-change#token={TOKEN}"
    )


def test_link_templates_replace_each_token_placeholder() -> None:
    messages = built_in(
        verify_email="https://app.example/verify?token={token}",
        reset_password=None,  # unset: the default page
        change_email="myapp://email/{token}/confirm?again={token}",
    )
    assert messages.link("verify_email", TOKEN) == f"https://app.example/verify?token={TOKEN}"
    assert messages.link("reset_password", TOKEN) == (
        f"https://id.example/reset-password#token={TOKEN}"
    )
    assert messages.link("change_email", TOKEN) == (f"myapp://email/{TOKEN}/confirm?again={TOKEN}")
    with pytest.raises(KeyError):
        messages.link("password_changed", TOKEN)  # a notice has no link


def test_the_settings_give_the_links(tmp_path: Path) -> None:
    settings = make_settings(
        "sqlite+aiosqlite://",
        tmp_path,
        public_url="http://127.0.0.1:9000/",
        reset_password_url="https://app.example/r?t={token}",
    )
    messages = runtime_messages(settings)
    assert messages.link("reset_password", "abc") == "https://app.example/r?t=abc"
    assert messages.link("verify_email", "abc") == "http://127.0.0.1:9000/verify-email#token=abc"


def test_check_passes_for_the_built_in_templates() -> None:
    built_in().check()


def test_check_fails_for_a_template_missing_a_block(tmp_path: Path) -> None:
    (tmp_path / "change_email.email").write_text(
        "{% block subject %}Confirm{% endblock %}{% block text %}{{ link }}{% endblock %}"
    )
    messages = Messages(public_url=PUBLIC_URL, links={}, templates_dir=tmp_path)
    with pytest.raises(ValueError, match=r"^email template change_email.email lacks \['html'\]$"):
        messages.check()


@pytest.mark.parametrize(
    ("kind", "variable"),
    [("password_changed", "usernmae"), ("password_changed", "link"), ("verify_email", "new_email")],
)
def test_check_renders_each_kind_with_what_its_service_gives(
    tmp_path: Path, kind: str, variable: str
) -> None:
    # A misspelt name, or one the service does not pass for this kind, would otherwise fail
    # the request that writes the mail; check() runs at start-up.
    (tmp_path / f"{kind}.email").write_text(
        "{% block subject %}S{% endblock %}{% block text %}{{ " + variable + " }}{% endblock %}"
        "{% block html %}H{% endblock %}"
    )
    messages = Messages(public_url=PUBLIC_URL, links={}, templates_dir=tmp_path)
    with pytest.raises(ValueError, match=rf"^email template {kind}.email does not render: "):
        messages.check()


def test_check_fails_for_a_template_that_does_not_parse(tmp_path: Path) -> None:
    (tmp_path / "email_changed.email").write_text("{% block subject %}Changed{% endblock")
    messages = Messages(public_url=PUBLIC_URL, links={}, templates_dir=tmp_path)
    with pytest.raises(jinja2.TemplateSyntaxError):
        messages.check()


def test_an_override_may_set_and_import_outside_its_blocks(tmp_path: Path) -> None:
    # Found as a bug: each block was rendered alone, without the template's top level.
    (tmp_path / "macros.jinja").write_text("{% macro signed(team) %}-- {{ team }}{% endmacro %}")
    (tmp_path / "password_changed.email").write_text(
        '{% import "macros.jinja" as m %}{% set team = "The <Acme> team" %}'
        "{% block subject %}Password changed{% endblock %}"
        "{% block text %}Hello {{ username }}. {{ m.signed(team) }}{% endblock %}"
        "{% block html %}<p>Hello {{ username }}. {{ m.signed(team) }}</p>{% endblock %}"
    )
    messages = Messages(public_url=PUBLIC_URL, links={}, templates_dir=tmp_path)
    messages.check()
    rendered = messages.render("password_changed", username="ann")
    assert rendered == Rendered(
        subject="Password changed",
        text="Hello ann. -- The <Acme> team\n",
        html="<p>Hello ann. -- The &lt;Acme&gt; team</p>\n",
    )
