"""The ASGI middleware: security headers on every response and the GraphiQL page's content
security policy (SecurityHeadersMiddleware); the request id and the client's ip of every
request (RequestIdMiddleware)."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.client import GraphQL, serving
from tests.helpers import BASE_HEADERS, PROXIES, SAFE_REQUEST_ID, session_ip
from usergraph import graphiql as graphiql_assets

ONE_YEAR = 365 * 24 * 3600


def policy(response: httpx.Response) -> dict[str, list[str]]:
    """The response's Content-Security-Policy: directive -> its sources."""
    header = response.headers.get("content-security-policy")
    assert header, dict(response.headers)
    directives: dict[str, list[str]] = {}
    for part in filter(str.strip, header.split(";")):
        name, *sources = part.split()
        assert name not in directives, f"{name} twice in {header}"
        directives[name.lower()] = sources
    return directives


def sources_for(csp: dict[str, list[str]], directive: str) -> list[str]:
    """The sources that govern directive (falling back to default-src, as browsers do)."""
    return csp.get(directive, csp.get("default-src", []))


def allows(sources: list[str], url: str, page: str = "http://testserver/graphql") -> bool:
    """Whether a CSP source list allows loading url from page (the subset of CSP 3 used here:
    'self', schemes, and host sources with an optional * subdomain and path prefix)."""
    target, origin = urlsplit(url), urlsplit(page)
    if not target.scheme:  # relative: same origin
        target = urlsplit(page)._replace(path=target.path)
    if "'none'" in sources:
        return False
    for source in sources:
        if source == "'self'" and (target.scheme, target.netloc) == (origin.scheme, origin.netloc):
            return True
        if source.endswith(":") and "/" not in source and target.scheme == source[:-1]:
            return True
        if source.startswith("'"):
            continue
        expected = urlsplit(source if "://" in source else f"{target.scheme}://{source}")
        host = expected.hostname or ""
        host_ok = target.hostname == host or (
            host.startswith("*.") and (target.hostname or "").endswith(host[1:])
        )
        if (
            expected.scheme == target.scheme
            and host_ok
            and target.path.startswith(expected.path or "/")
        ):
            return True
    return False


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


class PageResources(HTMLParser):
    """What an HTML page loads or runs: external scripts, inline scripts, stylesheets,
    inline styles, other links (icons)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.scripts: list[dict[str, str | None]] = []
        self.inline_scripts: list[str] = []
        self.stylesheets: list[dict[str, str | None]] = []
        self.inline_styles: list[str] = []
        self.other_links: list[dict[str, str | None]] = []
        self._open: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.scripts.append(attributes)
        elif tag in ("script", "style"):
            self._open, self._text = tag, []
        elif tag == "link":
            rel = (attributes.get("rel") or "").lower().split()
            (self.stylesheets if "stylesheet" in rel else self.other_links).append(attributes)

    def handle_data(self, data: str) -> None:
        if self._open:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            body = "".join(self._text)
            (self.inline_scripts if tag == "script" else self.inline_styles).append(body)
            self._open = None


# --- headers on every response ------------------------------------------------------------


async def responses(client: httpx.AsyncClient) -> dict[str, httpx.Response]:
    return {
        "graphql-post": await client.post("/graphql", json={"query": "{ me { id } }"}),
        "graphql-error": await client.post("/graphql", json={"query": "{ nope }"}),
        "graphql-415": await client.post("/graphql", content=b"{}"),
        "healthz": await client.get("/healthz"),
        "readyz": await client.get("/readyz"),
        "not-found": await client.get("/no-such-page"),
        "method-not-allowed": await client.put("/graphql"),
    }


def assert_security_headers(name: str, response: httpx.Response) -> None:
    for header, value in BASE_HEADERS.items():
        assert response.headers.get_list(header) == [value], (name, header, response.headers)
    csp = policy(response)
    # JSON and error answers need nothing from a browser.
    assert csp["default-src"] == ["'none'"], (name, csp)
    assert csp["frame-ancestors"] == ["'none'"], (name, csp)


async def test_every_response_has_the_security_headers(client: httpx.AsyncClient) -> None:
    answers = await responses(client)
    assert answers["graphql-post"].status_code == 200
    assert answers["not-found"].status_code == 404
    assert answers["method-not-allowed"].status_code == 405
    for name, response in answers.items():
        assert_security_headers(name, response)
        # Plain HTTP in development: HSTS would lock developers out of http://localhost.
        assert "strict-transport-security" not in response.headers, name


@pytest.mark.parametrize(
    "overrides",
    [{"env": "production"}, {"secure_cookies": True}],
    ids=["production", "secure-cookies"],
)
async def test_hsts_when_served_over_https(
    database_url: str, tmp_path: Path, overrides: dict[str, Any]
) -> None:
    async with serving(database_url, tmp_path, **overrides) as gql:
        answers = await responses(gql.client)
    for name, response in answers.items():
        assert_security_headers(name, response)
        [hsts] = response.headers.get_list("strict-transport-security")
        max_age = re.fullmatch(r"max-age=(\d+)(; ?includeSubDomains)?(; ?preload)?", hsts)
        assert max_age and int(max_age.group(1)) >= ONE_YEAR, (name, hsts)


async def test_no_hsts_in_production_when_secure_cookies_are_off(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, env="production", secure_cookies=False) as gql:
        response = await gql.client.get("/healthz")
    assert_security_headers("healthz", response)
    assert "strict-transport-security" not in response.headers


# --- the GraphiQL page ------------------------------------------------------------------------


async def graphiql(client: httpx.AsyncClient) -> tuple[httpx.Response, PageResources]:
    response = await client.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()
    page = PageResources()
    page.feed(response.text)
    page.close()
    return response, page


needs_graphiql = pytest.mark.skipif(
    not graphiql_assets.installed(), reason="GraphiQL's files are not installed (make assets)"
)


@needs_graphiql
async def test_graphiql_page_has_the_security_headers(client: httpx.AsyncClient) -> None:
    response, _ = await graphiql(client)
    for header, value in BASE_HEADERS.items():
        assert response.headers.get_list(header) == [value], header
    [_] = response.headers.get_list("content-security-policy")
    csp = policy(response)
    assert csp["default-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert int(response.headers["content-length"]) == len(response.content)


@needs_graphiql
async def test_graphiql_runs_no_inline_script_and_only_this_origins(
    client: httpx.AsyncClient,
) -> None:
    response, page = await graphiql(client)
    script_src = sources_for(policy(response), "script-src")
    assert page.inline_scripts == []
    assert script_src == ["'self'"]  # no CDN, no hash, no 'unsafe-inline', no 'unsafe-eval'


@needs_graphiql
async def test_graphiql_files_are_this_servers_and_pinned(client: httpx.AsyncClient) -> None:
    response, page = await graphiql(client)
    csp = policy(response)
    assert page.scripts and page.stylesheets
    for script in page.scripts:
        src = script["src"] or ""
        assert src.startswith("/graphiql/") and allows(sources_for(csp, "script-src"), src), src
        assert (script.get("integrity") or "").startswith("sha384-"), src
        served = await client.get(src)
        assert served.status_code == 200 and served.headers["content-type"].startswith(
            "text/javascript"
        )
    for link in page.stylesheets:
        href = link["href"] or ""
        assert href.startswith("/graphiql/") and allows(sources_for(csp, "style-src"), href)
        assert (link.get("integrity") or "").startswith("sha384-"), href
    for directive, sources in csp.items():
        assert not [source for source in sources if "://" in source], directive


@needs_graphiql
async def test_graphiql_may_post_to_its_own_origin(client: httpx.AsyncClient) -> None:
    response, _ = await graphiql(client)
    connect_src = sources_for(policy(response), "connect-src")
    assert "'self'" in connect_src
    assert allows(connect_src, "http://testserver/graphql")
    assert not allows(connect_src, "https://evil.example/graphql")


def test_allows_is_strict_enough() -> None:
    """The test's own CSP matcher refuses what a browser refuses."""
    unpkg = ["https://unpkg.com", "'sha256-x'"]
    assert allows(unpkg, "https://unpkg.com/react@18/react.js")
    assert not allows(unpkg, "http://unpkg.com/react.js")
    assert not allows(unpkg, "https://unpkg.com.evil.example/react.js")
    assert not allows(unpkg, "https://cdn.example/react.js")
    assert not allows(unpkg, "/graphql")
    assert allows(["'self'"], "/graphql")
    assert allows(["data:"], "data:image/svg+xml,<svg/>")
    assert not allows(["'self'"], "data:image/svg+xml,<svg/>")
    assert allows(["https://*.example.com/js/"], "https://cdn.example.com/js/a.js")
    assert not allows(["https://*.example.com/js/"], "https://cdn.example.com/css/a.css")


# --- the request id ---------------------------------------------------------------------------


async def test_a_plain_request_id_is_echoed(gql: GraphQL) -> None:
    response = await gql.post("{ me { id } }", headers={"x-request-id": "abc12345-req"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "abc12345-req"


async def test_a_request_id_is_made_when_none_is_sent(gql: GraphQL) -> None:
    first = await gql.post("{ me { id } }")
    second = await gql.post("{ me { id } }")
    for response in (first, second):
        assert SAFE_REQUEST_ID.fullmatch(response.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize(
    "unsafe",
    ["bad\nid-12345", "bad\r\nSet-Cookie: x=1", "a" * 500, "short", "has space 123", "id;drop-1"],
    ids=["newline", "header-injection", "500-chars", "too-short", "space", "semicolon"],
)
async def test_an_unsafe_request_id_is_replaced(gql: GraphQL, unsafe: str) -> None:
    response = await gql.post("{ me { id } }", headers={"x-request-id": unsafe})
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert request_id != unsafe
    assert SAFE_REQUEST_ID.fullmatch(request_id)
    assert "set-cookie" not in response.headers


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"x-request-id": "client-chosen-id-42"})
    assert echoed.headers["x-request-id"] == "client-chosen-id-42"
    made = await client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
    assert made.headers["x-request-id"] != "bad id\twith spaces"
    assert len(made.headers["x-request-id"]) == 32


# --- the client's ip --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "forwarded_for",
    ["x" * 60, f"{'f' * 60}, 203.0.113.50"],
    ids=["long-garbage", "long-garbage-through-a-proxy"],
)
async def test_a_forwarded_value_that_is_not_an_ip_does_not_break_sign_in(
    database_url: str, tmp_path: Path, forwarded_for: str
) -> None:
    """What a trusted proxy forwards is still text from the network: a value that is not an ip
    (a client inside the trusted network, a proxy passing the header on as it came) must
    neither fail the request nor be recorded as the client's address."""
    async with serving(database_url, tmp_path, trusted_proxies=PROXIES) as gql:
        ip = await session_ip(gql, {"x-forwarded-for": forwarded_for})
    # The session is opened without an address rather than with the forwarded text.
    assert ip is None
