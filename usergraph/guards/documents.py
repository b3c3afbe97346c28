"""Documents a request names by their hash instead of sending their text.

Automatic persisted queries (Apollo's protocol, also spoken by urql and graphql-request): a
client sends `extensions.persistedQuery = {"version": 1, "sha256Hash": <hex>}` and no query.
A document this process has seen under that hash runs; an unknown hash is answered with
PERSISTED_QUERY_NOT_FOUND, and the client sends it again with the query, which is kept once it
parsed and validated (DocumentCache: least recently used first out, bounded in characters).

Trusted documents (USERGRAPH_TRUSTED_DOCUMENTS): only the documents of a file run, named by
hash or sent as text that hashes to one of them; anything else is refused before parsing. The
file is Apollo's persisted query manifest or a JSON object of id -> document (Relay,
graphql-codegen); each id is the SHA-256 of its document, checked when the file is read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphql import GraphQLError, GraphQLSchema, parse, validate

from usergraph.schema.errors import ErrorCode

_SHA256 = re.compile(r"[0-9a-f]{64}")
NOT_FOUND_MESSAGE = "PersistedQueryNotFound"  # what Apollo's clients look for


class DocumentRefused(Exception):
    """A request's persisted-query parameters that name no document it may run. status is
    the answer's with application/graphql-response+json (usergraph.http: with
    application/json an unknown hash is a 200, as Apollo's clients expect)."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def sha256_of(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Named:
    """What a request asked to run: the document, and its hash when it is one to remember."""

    query: str
    remember: str | None = None


class DocumentCache:
    """The documents automatic persisted queries registered, by hash, in this process."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._documents: OrderedDict[str, str] = OrderedDict()
        self._chars = 0

    def get(self, digest: str) -> str | None:
        document = self._documents.get(digest)
        if document is not None:
            self._documents.move_to_end(digest)
        return document

    def put(self, digest: str, document: str) -> None:
        if digest in self._documents or len(document) > self.max_chars:
            return
        self._documents[digest] = document
        self._chars += len(document)
        while self._chars > self.max_chars:
            _, evicted = self._documents.popitem(last=False)
            self._chars -= len(evicted)

    def __len__(self) -> int:
        return len(self._documents)


class TrustedDocuments:
    """The allow-list: SHA-256 -> document."""

    def __init__(self, documents: dict[str, str]) -> None:
        self.documents = documents

    @classmethod
    def read(cls, path: Path) -> TrustedDocuments:
        """The file's documents; ValueError naming the problem when it is not one we read."""
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"trusted documents {path}: {error}") from error
        if isinstance(content, dict) and content.get("format") == "apollo-persisted-query-manifest":
            operations = content.get("operations")
            if not isinstance(operations, list):
                raise ValueError(f"trusted documents {path}: `operations` is not a list")
            pairs = [(op.get("id"), op.get("body")) for op in operations if isinstance(op, dict)]
            if len(pairs) != len(operations):
                raise ValueError(f"trusted documents {path}: an operation is not an object")
        elif isinstance(content, dict):
            pairs = list(content.items())
        else:
            raise ValueError(
                f"trusted documents {path}: neither an Apollo manifest nor an object of documents"
            )
        documents: dict[str, str] = {}
        for digest, document in pairs:
            if not isinstance(digest, str) or not isinstance(document, str):
                raise ValueError(f"trusted documents {path}: ids and documents must be strings")
            digest = digest.removeprefix("sha256:")
            if digest != sha256_of(document):
                raise ValueError(
                    f"trusted documents {path}: {digest[:80]!r} is not the SHA-256 of its document"
                )
            documents[digest] = document
        return cls(documents)

    def problem(self, schema: GraphQLSchema) -> str | None:
        """What is wrong with the first document that does not parse or validate against
        the schema, checked at start-up: a trusted document that cannot run is a mistake of
        the deployment, not of a client."""
        for digest, document in self.documents.items():
            try:
                errors = validate(schema, parse(document))
            except GraphQLError as error:
                errors = [error]
            if errors:
                return f"the document {digest} does not run here: {errors[0].message}"
        return None


class Documents:
    """How this server finds the document a request asks for (one per process)."""

    def __init__(
        self, *, cache: DocumentCache | None, trusted: TrustedDocuments | None = None
    ) -> None:
        self.cache = cache  # None: automatic persisted queries are off
        self.trusted = trusted

    def named(self, query: str | None, extensions: dict[str, Any] | None) -> Named | None:
        """The document to run, None when the request names none (no query, no hash); raises
        DocumentRefused for a hash it may not use or a document that is not trusted."""
        persisted = (extensions or {}).get("persistedQuery")
        digest = None if persisted is None else _digest(persisted)
        if digest is not None and self.cache is None and self.trusted is None:
            raise DocumentRefused(
                400,
                ErrorCode.PERSISTED_QUERY_NOT_SUPPORTED,
                "Persisted queries are turned off on this server.",
            )
        if self.trusted is not None:
            return self._trusted(query, digest, self.trusted)
        if digest is None:
            return None if query is None else Named(query)
        assert self.cache is not None
        if query is None:
            known = self.cache.get(digest)
            if known is None:
                raise DocumentRefused(404, ErrorCode.PERSISTED_QUERY_NOT_FOUND, NOT_FOUND_MESSAGE)
            return Named(known)
        _check_hash(query, digest)
        return Named(query, remember=digest)

    def remember(self, digest: str, document: str) -> None:
        """Keep a document that parsed and validated, under the hash its request gave."""
        if self.cache is not None:
            self.cache.put(digest, document)

    @staticmethod
    def _trusted(query: str | None, digest: str | None, trusted: TrustedDocuments) -> Named | None:
        if query is not None:
            if digest is not None:
                _check_hash(query, digest)
            if sha256_of(query) not in trusted.documents:
                raise DocumentRefused(
                    403,
                    ErrorCode.DOCUMENT_NOT_TRUSTED,
                    "This server runs only its trusted documents; this one is not among them.",
                )
            return Named(query)
        if digest is None:
            return None
        known = trusted.documents.get(digest)
        if known is None:
            raise DocumentRefused(404, ErrorCode.PERSISTED_QUERY_NOT_FOUND, NOT_FOUND_MESSAGE)
        return Named(known)


def _digest(persisted: object) -> str:
    version = persisted.get("version") if isinstance(persisted, dict) else None
    if not isinstance(persisted, dict) or isinstance(version, bool) or version != 1:
        raise DocumentRefused(
            400,
            ErrorCode.BAD_REQUEST,
            "`extensions.persistedQuery` must be an object with version 1 and a sha256Hash.",
        )
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise DocumentRefused(
            400,
            ErrorCode.BAD_REQUEST,
            "`extensions.persistedQuery.sha256Hash` must be 64 lower-case hexadecimal digits.",
        )
    return digest


def _check_hash(query: str, digest: str) -> None:
    if sha256_of(query) != digest:
        raise DocumentRefused(
            400,
            ErrorCode.BAD_REQUEST,
            "`extensions.persistedQuery.sha256Hash` is not the SHA-256 of the query.",
        )
