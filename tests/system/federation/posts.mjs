// A tiny second subgraph for tests/system/test_federation.py: posts whose authors are
// usergraph's users, referred to by their global ids.
//
//   POSTS_PORT=4001 POSTS='[{"title": "...", "author": "<User global id>"}]' node posts.mjs
//
// `User @key(fields: "id")` here adds `User.posts` to usergraph's users; `Post.author` is a
// reference that the gateway resolves through usergraph's `_entities`. Writes its URL to
// READY_FILE once it listens on 127.0.0.1.
import { writeFileSync } from "node:fs";
import { ApolloServer } from "@apollo/server";
import { startStandaloneServer } from "@apollo/server/standalone";
import { buildSubgraphSchema } from "@apollo/subgraph";
import { parse } from "graphql";

const posts = JSON.parse(process.env.POSTS).map((post, index) => ({
  id: `post-${index + 1}`,
  ...post,
}));

const typeDefs = parse(`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key"])

  type Post {
    id: ID!
    title: String!
    author: User!
  }

  type User @key(fields: "id") {
    id: ID!
    posts: [Post!]!
  }

  type Query {
    posts: [Post!]!
  }
`);

const resolvers = {
  Query: {
    posts: () => posts,
  },
  Post: {
    author: (post) => ({ __typename: "User", id: post.author }),
  },
  User: {
    __resolveReference: (reference) => ({ id: reference.id }),
    posts: (user) => posts.filter((post) => post.author === user.id),
  },
};

const server = new ApolloServer({ schema: buildSubgraphSchema({ typeDefs, resolvers }) });
const { url } = await startStandaloneServer(server, {
  listen: { host: "127.0.0.1", port: Number(process.env.POSTS_PORT) },
});
writeFileSync(process.env.READY_FILE, url); // written once it listens
