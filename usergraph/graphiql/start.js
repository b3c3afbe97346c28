// Starts GraphiQL on usergraph's own GraphQL path, with the bundles usergraph serves itself.
/* global React, ReactDOM, GraphiQL */
(function () {
  const fetcher = GraphiQL.createFetcher({ url: window.location.pathname });
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
      shouldPersistHeaders: false, // a bearer token typed in stays in this tab only
    }),
  );
})();
