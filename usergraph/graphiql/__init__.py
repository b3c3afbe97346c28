"""GraphiQL served by usergraph itself: no CDN, so it works on a machine with no internet.

The bundles come from npm at install time (`make assets`: `npm ci` here, against the
committed package-lock.json, whose integrity hashes npm checks), and never from the source
tree. The page names each file with a Subresource Integrity hash of what is served, and its
Content-Security-Policy allows this origin only.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

HERE = Path(__file__).resolve().parent
ASSETS_PATH = "/graphiql"
MODULES = HERE / "node_modules"


@dataclass(frozen=True, slots=True)
class Asset:
    path: Path
    media_type: str


# What the page loads, in order: React, ReactDOM, GraphiQL (UMD builds), then ours.
ASSETS = {
    "react.js": Asset(MODULES / "react/umd/react.production.min.js", "text/javascript"),
    "react-dom.js": Asset(MODULES / "react-dom/umd/react-dom.production.min.js", "text/javascript"),
    "graphiql.js": Asset(MODULES / "graphiql/graphiql.min.js", "text/javascript"),
    "graphiql.css": Asset(MODULES / "graphiql/graphiql.min.css", "text/css"),
    "page.css": Asset(HERE / "page.css", "text/css"),
    "start.js": Asset(HERE / "start.js", "text/javascript"),
}
SCRIPTS = ("react.js", "react-dom.js", "graphiql.js", "start.js")
STYLES = ("graphiql.css", "page.css")
# GraphiQL sets styles on elements; scripts, fetches, fonts and images stay on this origin.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; font-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
MISSING = """<!doctype html><meta charset="utf-8"><title>GraphiQL is not installed</title>
<p>GraphiQL's files are not installed on this server: run <code>make assets</code> (npm ci in
usergraph/graphiql), or use any GraphQL client against this URL.</p>
"""


@functools.cache
def _body(name: str) -> bytes:
    return ASSETS[name].path.read_bytes()


@functools.cache
def _integrity(name: str) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(_body(name)).digest()).decode()


def installed() -> bool:
    return all(asset.path.is_file() for asset in ASSETS.values())


def page() -> Response:
    """The GraphiQL page, or a page saying how to install it."""
    if not installed():
        return HTMLResponse(
            MISSING, status_code=503, headers={"content-security-policy": PAGE_POLICY}
        )
    styles = "".join(
        f'<link rel="stylesheet" href="{ASSETS_PATH}/{name}" integrity="{_integrity(name)}">'
        for name in STYLES
    )
    scripts = "".join(
        f'<script src="{ASSETS_PATH}/{name}" integrity="{_integrity(name)}"></script>'
        for name in SCRIPTS
    )
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>usergraph GraphiQL</title>{styles}</head>"
        f'<body><div id="graphiql">Loading…</div>{scripts}</body></html>'
    )
    return HTMLResponse(html, headers={"content-security-policy": PAGE_POLICY})


async def asset(request: Request) -> Response:
    """One of the files the page loads; they change only with a new install."""
    name = request.path_params["name"]
    if name not in ASSETS or not ASSETS[name].path.is_file():
        return Response(status_code=404)
    return Response(
        _body(name),
        media_type=ASSETS[name].media_type,
        headers={"cache-control": "public, max-age=3600"},
    )
