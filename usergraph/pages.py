"""The small pages that email links open by default: /verify-email, /reset-password and
/confirm-email-change. Each completes its flow with one fetch to /graphql.

The token rides in the link's fragment (`#token=...`): browsers send a fragment to no server
and in no Referer, and the page removes it from the address bar at once. The pages load
nothing from anywhere: one inline script and one inline style, allowed by their hashes in a
content security policy that allows nothing else (the page may only fetch its own origin).
A page does nothing until its button is pressed, so a mail scanner that opens links spends no
token.
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

STYLE = """body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem;
line-height:1.5}label{display:block;margin:.5rem 0}input{width:100%;padding:.4rem;
box-sizing:border-box}button{margin-top:1rem;padding:.5rem 1rem}#result{margin-top:1rem}
.error{color:#a00}.ok{color:#060}"""

SCRIPT = """(() => {
  const form = document.getElementById("form");
  const result = document.getElementById("result");
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  history.replaceState(null, "", location.pathname);
  const say = (text, kind) => { result.textContent = text; result.className = kind; };
  if (!token) { say("This link has no token: open the link from the email again.", "error");
    form.hidden = true; return; }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    if ("repeat" in data && data.repeat !== data.newPassword) {
      say("The two passwords differ.", "error"); return; }
    delete data.repeat;
    const field = form.dataset.field;
    const query = `mutation($input: ${form.dataset.input}!) { ${field}(input: $input) {
      userErrors { message code } } }`;
    form.querySelector("button").disabled = true;
    try {
      const response = await fetch("/graphql", { method: "POST", credentials: "omit",
        headers: { "content-type": "application/json", "accept": "application/json" },
        body: JSON.stringify({ query, variables: { input: { ...data, token } } }) });
      const body = await response.json();
      const errors = body.errors || (body.data && body.data[field].userErrors) || [];
      if (errors.length) { say(errors.map((e) => e.message).join(" "), "error");
        form.querySelector("button").disabled = false; return; }
      say(form.dataset.done, "ok"); form.hidden = true;
    } catch (error) {
      say("The server could not be reached; try again.", "error");
      form.querySelector("button").disabled = false;
    }
  });
})();"""


def _source(text: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


POLICY = (
    f"default-src 'none'; script-src {_source(SCRIPT)}; "
    f"style-src {_source(STYLE)}; connect-src 'self'; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True, slots=True)
class Page:
    title: str
    field: str
    input_type: str
    button: str
    done: str
    password: bool = False

    def render(self) -> str:
        fields = (
            '<label>New password <input name="newPassword" type="password" required '
            'minlength="8" autocomplete="new-password"></label>'
            '<label>Repeat it <input name="repeat" type="password" required '
            'autocomplete="new-password"></label>'
            if self.password
            else ""
        )
        e = html.escape
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(self.title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{e(self.title)}</h1>"
            f'<form id="form" data-field="{e(self.field)}" data-input="{e(self.input_type)}" '
            f'data-done="{e(self.done)}">{fields}<button type="submit">{e(self.button)}</button>'
            f'</form><p id="result" role="status"></p><script>{SCRIPT}</script></body></html>'
        )


PAGES = {
    "/verify-email": Page(
        "Verify your email address", "verifyEmail", "VerifyEmailInput",
        "Verify my email address", "Your email address is verified. You can close this page.",
    ),
    "/reset-password": Page(
        "Choose a new password", "resetPassword", "ResetPasswordInput", "Set the new password",
        "Your password is changed; every session was signed out. Sign in with the new one.",
        password=True,
    ),
    "/confirm-email-change": Page(
        "Confirm your new email address", "confirmEmailChange", "ConfirmEmailChangeInput",
        "Use this address", "Your account now uses this email address.",
    ),
}  # fmt: skip
_RENDERED = {path: page.render() for path, page in PAGES.items()}


async def page(request: Request) -> Response:
    return HTMLResponse(_RENDERED[request.url.path], headers={"content-security-policy": POLICY})
