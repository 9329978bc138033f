# artifactstore: the server image used by compose.yaml.
FROM python:3.11-slim-bookworm

ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ARTIFACTSTORE_DATA_DIR=/var/lib/artifactstore

RUN pip install --no-cache-dir uv \
    && useradd --system --home-dir /var/lib/artifactstore --create-home artifactstore

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
COPY alembic ./alembic
RUN uv sync --frozen --no-dev --extra server

USER artifactstore
EXPOSE 8080 9000
# External database: migrate first (idempotent, safe with several replicas),
# then serve both listeners on all interfaces (reads then need a token).
CMD ["sh", "-c", "/app/.venv/bin/artifactstore db upgrade && exec /app/.venv/bin/artifactstore serve --host 0.0.0.0"]
