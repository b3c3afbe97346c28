# usergraph: build a wheel, install it with its dependencies into a virtualenv, and copy only
# that virtualenv into a slim runtime image that runs as an unprivileged user.
#
#   docker build -t usergraph .
#   docker compose up            (with PostgreSQL and Redis; see docker-compose.yml)
#
# The wheel carries the Alembic scripts (pyproject.toml force-includes alembic/ as
# usergraph/_alembic), so `usergraph migrate` works from the installed package.

ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel is built from: no tests, no local databases, keys or .env.
COPY pyproject.toml README.md ./
COPY alembic ./alembic
COPY usergraph ./usergraph

RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/usergraph-*.whl


FROM ${PYTHON_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed uid/gid, so volume permissions are predictable; /app is the working directory (where
# a development-mode SQLite file or signing key file would be written) and belongs to it.
RUN groupadd --gid 10001 usergraph \
    && useradd --uid 10001 --gid usergraph --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin usergraph \
    && install -d -o usergraph -g usergraph /app

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER usergraph

EXPOSE 8000

# The slim image has no curl: ask /healthz with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["usergraph", "serve", "--host", "0.0.0.0", "--port", "8000"]
