// Verifies access tokens as another service would, for tests/system/test_jwks.py: jose fetches
// usergraph's JWKS over HTTP (createRemoteJWKSet) and checks each token (jwtVerify) with the
// expected issuer and audience. Input on stdin: JSON {"jwksUrl", "issuer", "audience", "tokens"}.
// Prints one JSON line: [{ok: true, header, payload} | {ok: false, code, message}], in order.
import { readFileSync } from "node:fs";
import { createRemoteJWKSet, jwtVerify } from "jose";

const { jwksUrl, issuer, audience, tokens } = JSON.parse(readFileSync(0, "utf8"));
const jwks = createRemoteJWKSet(new URL(jwksUrl));
const results = [];
for (const token of tokens) {
  try {
    const { protectedHeader, payload } = await jwtVerify(token, jwks, { issuer, audience });
    results.push({ ok: true, header: protectedHeader, payload });
  } catch (error) {
    results.push({ ok: false, code: error.code ?? error.name, message: String(error.message) });
  }
}
console.log(JSON.stringify(results));
