"""The GraphQL-over-HTTP spec audits of graphql-http (`auditServer`) against a real server.

The npm package is pinned by tests/system/graphql_http/package-lock.json and installed there with
`npm ci` when node_modules is missing. Every audit must pass, recommendations (warn) and
optional ones (notice) included. Runs once, on SQLite, not once per database: it checks HTTP.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.system.processes import serve

pytestmark = pytest.mark.slow

AUDIT_DIR = Path(__file__).parent / "graphql_http"


def _install_graphql_http() -> None:
    if (AUDIT_DIR / "node_modules" / "graphql-http").is_dir():
        return
    installed = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=AUDIT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"


def test_graphql_over_http_audits(tmp_path: Path) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not on PATH (graphql-http's audits run on Node.js)")
    _install_graphql_http()

    with serve(tmp_path) as (base_url, _env):
        audited = subprocess.run(
            ["node", "audit.mjs", f"{base_url}/graphql"],
            cwd=AUDIT_DIR,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert audited.returncode == 0, f"the audit script failed:\n{audited.stderr}"
    results = json.loads(audited.stdout)
    counts = Counter(result["status"] for result in results)
    summary = (
        f"{len(results)} audits: {counts['ok']} ok, {counts['notice']} notice, "
        f"{counts['warn']} warn, {counts['error']} error"
    )
    print(summary)
    failing = [
        f"{result['id']} {result['status']}: {result['name']}: {result['reason']}"
        for result in results
        if result["status"] != "ok"
    ]
    assert not failing, "\n".join([summary, *failing])
    # graphql-http 1.23 has 61 server audits; a newer lock may add some, never remove them.
    assert len(results) >= 61, summary
