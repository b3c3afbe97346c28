// An Apollo Gateway over usergraph and the posts subgraph, for tests/system/test_federation.py.
//
//   GATEWAY_PORT=4000 USERS_URL=http://127.0.0.1:8000/graphql POSTS_URL=http://127.0.0.1:4001/ \
//   SUPERGRAPH_FILE=/tmp/supergraph.graphql node gateway.mjs
//
// IntrospectAndCompose reads each subgraph's `_service { sdl }` and composes the supergraph
// (written to SUPERGRAPH_FILE); a composition error makes the gateway exit non-zero. Each
// subgraph request carries the client's Authorization header. Writes its URL to
// READY_FILE once it listens on 127.0.0.1.
import { writeFileSync } from "node:fs";
import { ApolloGateway, IntrospectAndCompose, RemoteGraphQLDataSource } from "@apollo/gateway";
import { ApolloServer } from "@apollo/server";
import { startStandaloneServer } from "@apollo/server/standalone";

class ForwardAuthorization extends RemoteGraphQLDataSource {
  willSendRequest({ request, context }) {
    if (context.authorization) {
      request.http.headers.set("authorization", context.authorization);
    }
  }
}

const gateway = new ApolloGateway({
  supergraphSdl: new IntrospectAndCompose({
    subgraphs: [
      { name: "users", url: process.env.USERS_URL },
      { name: "posts", url: process.env.POSTS_URL },
    ],
  }),
  buildService: ({ url }) => new ForwardAuthorization({ url }),
});
gateway.onSchemaLoadOrUpdate(({ coreSupergraphSdl }) => {
  writeFileSync(process.env.SUPERGRAPH_FILE, coreSupergraphSdl);
});

const server = new ApolloServer({ gateway });
try {
  const { url } = await startStandaloneServer(server, {
    listen: { host: "127.0.0.1", port: Number(process.env.GATEWAY_PORT) },
    context: async ({ req }) => ({ authorization: req.headers.authorization }),
  });
  writeFileSync(process.env.READY_FILE, url); // written once it listens
} catch (error) {
  console.error(`gateway did not start: ${error.stack ?? error}`);
  process.exit(1);
}
