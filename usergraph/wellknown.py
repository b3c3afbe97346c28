"""What other services fetch to verify usergraph's access tokens: the public keys (JWKS, RFC
7517) and a discovery document that points at them.

Both are public and change only when keys rotate, so caches may keep them a few minutes:
shorter than a retired key stays published (the access-token lifetime), so no verifier misses
a new key for long or drops an old one early.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from usergraph.runtime import Runtime

JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"
CACHE_SECONDS = 300


def _public(body: object) -> Response:
    return JSONResponse(body, headers={"cache-control": f"public, max-age={CACHE_SECONDS}"})


async def jwks(request: Request) -> Response:
    """The public halves of the keys in use (none for HS256: its keys are shared secrets)."""
    runtime: Runtime = request.app.state.runtime
    return _public(runtime.policy.tokens.ring.current.jwks(datetime.now(UTC)))


async def discovery(request: Request) -> Response:
    """Only what is true of usergraph: the issuer of its tokens, where their keys are, which
    algorithms sign them. usergraph is no OpenID provider (no authorization endpoint, no ID
    tokens), so the provider fields are absent, not faked."""
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings
    now = datetime.now(UTC)
    keys = runtime.policy.tokens.ring.current
    # What others can verify: the published keys' algorithms (an HS256 secret kept to
    # verify old tokens inside usergraph is no one else's business), or HS256 alone.
    published = {key.alg for key in keys.verifying(now).values() if key.asymmetric}
    signing = keys.signing(now)
    algorithms = published or ({signing.alg} if signing is not None else set())
    return _public(
        {
            "issuer": settings.jwt_issuer,
            "jwks_uri": settings.public_url.rstrip("/") + JWKS_PATH,
            "access_token_signing_alg_values_supported": sorted(algorithms),
        }
    )
