"""The pages email links open (usergraph/pages.py), in a real browser: Debian's chromium,
headless, driven by playwright-core (pinned by tests/system/browser/package-lock.json and
installed there with `npm ci` when missing), against a real server."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client import DEFAULT_PASSWORD
from tests.system.processes import migrate, run_servers, server_env

pytestmark = pytest.mark.slow

BROWSER_DIR = Path(__file__).with_name("browser")
CHROMIUM = "/usr/bin/chromium"
REGISTER = (
    """mutation($input: RegisterInput!) { register(input: $input) { userErrors { code } } }"""
)
LOGIN = """mutation($input: LoginInput!) { login(input: $input) { userErrors { code } } }"""


@pytest.fixture(scope="module")
def browser_driver() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not on PATH (playwright-core runs on Node.js)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make test does)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").exists():
        installed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=BROWSER_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"
    return BROWSER_DIR / "pages.mjs"


def open_page(driver: Path, url: str, *password: str) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(driver), url, *password], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def latest_link(database: Path, kind: str) -> str:
    """The link in the newest pending message of kind (the server sends nothing here)."""
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT text_body FROM mail_outbox WHERE kind = ? ORDER BY id DESC LIMIT 1", (kind,)
        ).fetchone()
    assert row is not None, f"no {kind} message"
    match = re.search(r"(http://\S+#token=(uge_[A-Za-z0-9_-]+))", row[0])
    assert match is not None, row[0]
    return match.group(1)


def graphql(base_url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = httpx.post(
        f"{base_url}/graphql", json={"query": query, "variables": variables}, timeout=10
    ).json()
    return body


def test_the_reset_and_verify_pages_complete_their_flows(
    browser_driver: Path, tmp_path: Path
) -> None:
    database = tmp_path / "server.db"
    # The sender stays off: the outbox keeps each message (and its link) for the test to read.
    env = server_env(f"sqlite+aiosqlite:///{database}", USERGRAPH_MAIL_SENDER="false")
    migrate(tmp_path, env)
    with run_servers(tmp_path, env, ["pages"]) as [base_url]:
        account = {"email": "ada@example.com", "username": "ada", "password": DEFAULT_PASSWORD}
        assert graphql(base_url, REGISTER, {"input": account})["data"]["register"] == {
            "userErrors": []
        }
        env_public = env.get("USERGRAPH_PUBLIC_URL", "http://127.0.0.1:8000")
        verify_link = latest_link(database, "verify_email").replace(env_public, base_url)

        verified = open_page(browser_driver, verify_link)
        assert verified["resultClass"] == "ok", verified
        assert "verified" in verified["result"]
        # The fragment is gone from the address bar; the token reached the server only in
        # the POST body, never in a URL or a Referer.
        assert (
            "#" not in verified["addressAfterLoad"] and "uge_" not in verified["addressAfterLoad"]
        )
        token = verify_link.split("#token=")[1]
        for request in verified["requests"]:
            assert token not in request["url"] and token not in (request["referer"] or "")
        [post] = [r for r in verified["requests"] if r["method"] == "POST"]
        assert post["url"] == f"{base_url}/graphql" and token in post["body"]
        assert verified["consoleErrors"] == []  # no CSP violation, no script error
        assert "default-src 'none'" in verified["csp"] and "unsafe-inline" not in verified["csp"]

        # The same link again: the page shows the server's refusal.
        again = open_page(browser_driver, verify_link)
        assert again["resultClass"] == "error" and "not valid" in again["result"]

        graphql(base_url, "mutation($e: String!) { requestPasswordReset(input: {email: $e}) "
                "{ userErrors { code } } }", {"e": "ada@example.com"})  # fmt: skip
        reset_link = latest_link(database, "reset_password").replace(env_public, base_url)
        weak = open_page(browser_driver, reset_link, "password")
        assert weak["resultClass"] == "error" and "common" in weak["result"]
        new_password = "a brand new passphrase 42"
        reset = open_page(browser_driver, reset_link, new_password)
        assert reset["resultClass"] == "ok", reset
        assert reset["consoleErrors"] == []
        signed_in = graphql(base_url, LOGIN, {"input": {"login": "ada", "password": new_password}})
        assert signed_in["data"]["login"]["userErrors"] == []
        old = graphql(base_url, LOGIN, {"input": {"login": "ada", "password": DEFAULT_PASSWORD}})
        assert old["data"]["login"]["userErrors"] == [{"code": "INVALID_CREDENTIALS"}]


def test_a_link_without_a_token_says_so(browser_driver: Path, tmp_path: Path) -> None:
    env = server_env(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}")
    migrate(tmp_path, env)
    with run_servers(tmp_path, env, ["pages"]) as [base_url]:
        done = subprocess.run(
            ["node", "-e", NO_TOKEN_PROBE, f"{base_url}/confirm-email-change"],
            capture_output=True, text=True, timeout=90, cwd=BROWSER_DIR,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"hidden": True, "text": result["text"], "errors": []}
    assert "no token" in result["text"]


NO_TOKEN_PROBE = """
const { chromium } = require("playwright-core");
(async () => {
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"] });
  const page = await browser.newPage();
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(process.argv[1]);
  await page.waitForFunction(() => document.getElementById("result").textContent.length > 0);
  const hidden = await page.evaluate(() => document.getElementById("form").hidden);
  const text = await page.textContent("#result");
  console.log(JSON.stringify({ hidden, text, errors }));
  await browser.close();
})();
"""
