"""usergraph: a GraphQL API server for user accounts and sign-in."""

__version__ = "0.1.0"
