"""GraphiQL with no internet: its page and files come from usergraph itself (issue 11, item 8).

Headless Chromium opens the page with every other host blocked, types a query, runs it and
reads the result.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.system.processes import serve
from tests.system.test_pages import browser_driver  # noqa: F401 (the fixture)
from usergraph import graphiql

pytestmark = pytest.mark.skipif(
    not graphiql.installed(), reason="GraphiQL's files are not installed (make assets)"
)


def run_graphiql(driver: Path, url: str, query: str) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(driver.with_name("graphiql.mjs")), url, query],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_graphiql_renders_and_runs_a_query_with_no_other_host(
    browser_driver: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    with serve(tmp_path) as (base_url, _env):
        seen = run_graphiql(browser_driver, f"{base_url}/graphql", "{ __typename }")
    assert seen["status"] == 200
    assert json.loads(seen["result"]) == {"data": {"__typename": "Query"}}
    assert seen["elsewhere"] == []  # no request to another host, not even an attempt
    assert all(url.startswith(base_url) for url in seen["requests"]), seen["requests"]
    assert any(url.endswith("/graphiql/graphiql.js") for url in seen["requests"])
    assert seen["errors"] == []
    csp = seen["csp"]
    assert "script-src 'self';" in csp and "connect-src 'self'" in csp
    assert not re.search(r"https?://", csp)  # the policy names no other origin


def test_the_page_pins_each_file_by_its_hash(tmp_path: Path) -> None:
    with serve(tmp_path) as (base_url, _env):
        page = httpx.get(f"{base_url}/graphql", headers={"accept": "text/html"}, timeout=10)
        tags = re.findall(r'(?:src|href)="(/graphiql/[^"]+)" integrity="(sha384-[^"]+)"', page.text)
        assert {path for path, _ in tags} == {f"/graphiql/{name}" for name in graphiql.ASSETS}
        for path, integrity in tags:
            body = httpx.get(base_url + path, timeout=10)
            assert body.status_code == 200
            digest = base64.b64encode(hashlib.sha384(body.content).digest()).decode()
            assert integrity == f"sha384-{digest}"
        assert httpx.get(f"{base_url}/graphiql/../pyproject.toml", timeout=10).status_code == 404
        assert httpx.get(f"{base_url}/graphiql/nope.js", timeout=10).status_code == 404
