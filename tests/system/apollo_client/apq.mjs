// Apollo Client 3 with createPersistedQueryLink (automatic persisted queries) against a
// usergraph server (tests/system/test_persisted_queries.py). Reads one JSON object on stdin:
//   {"url": ".../graphql", "token": "...", "cases": [{"name", "query", "variables",
//    "mutation": bool, "useGETForHashedQueries": bool, "runs": n}]}
// and prints one JSON line: per case, per run, the operation's data (or error) and the HTTP
// requests that run made, as the fetch wrapper saw them (method, hash, whether the text went).
import { createHash } from "node:crypto";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client/core/index.js";
import { createPersistedQueryLink } from "@apollo/client/link/persisted-queries/index.js";

const sha256 = (text) => createHash("sha256").update(text).digest("hex");

let chunks = "";
for await (const chunk of process.stdin) chunks += chunk;
const request = JSON.parse(chunks);

let requests = [];
async function countingFetch(input, init = {}) {
  const url = new URL(typeof input === "string" ? input : input.url);
  const method = (init.method || "GET").toUpperCase();
  let params;
  if (method === "GET") {
    params = Object.fromEntries(url.searchParams);
    if (params.extensions) params.extensions = JSON.parse(params.extensions);
  } else {
    params = JSON.parse(init.body);
  }
  const response = await fetch(input, init);
  requests.push({
    method,
    query: typeof params.query === "string",
    hash: params.extensions?.persistedQuery?.sha256Hash ?? null,
    status: response.status,
    accept: new Headers(init.headers).get("accept"),
  });
  return response;
}

const results = [];
for (const spec of request.cases) {
  const link = createPersistedQueryLink({
    sha256,
    useGETForHashedQueries: Boolean(spec.useGETForHashedQueries),
  }).concat(
    new HttpLink({
      uri: request.url,
      fetch: countingFetch,
      headers: request.token ? { authorization: `Bearer ${request.token}` } : {},
    }),
  );
  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  const document = gql(spec.query);
  const runs = [];
  for (let i = 0; i < (spec.runs ?? 2); i++) {
    requests = [];
    let outcome;
    try {
      const { data } = spec.mutation
        ? await client.mutate({ mutation: document, variables: spec.variables, fetchPolicy: "no-cache" })
        : await client.query({ query: document, variables: spec.variables, fetchPolicy: "no-cache" });
      outcome = { data };
    } catch (error) {
      outcome = { error: String(error?.message ?? error) };
    }
    runs.push({ ...outcome, requests });
  }
  results.push({ name: spec.name, runs });
}
console.log(JSON.stringify(results));
