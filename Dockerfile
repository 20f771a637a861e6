# User-code image: the code location served over gRPC (dagster api grpc).
# Dependencies first (cached layer, frozen lock, no dev group), then the project.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install --no-install-recommends -y git \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir "uv==0.13.8"

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH="/opt/venv/bin:$PATH" \
    DAGSTER_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    DVC_NO_ANALYTICS=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    BENTOML_DO_NOT_TRACK=true \
    EVIDENTLY_DISABLE_TELEMETRY=1 \
    MLOPS_ENV=production \
    MLOPS_STATE_DIR=/app/state

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project

COPY mlops_assets ./mlops_assets
COPY workspace.yaml dagster.yaml ./
RUN uv sync --frozen --no-dev \
    && useradd --create-home --uid 10001 dagster \
    && mkdir -p /app/state \
    && chown -R dagster /app/state

USER dagster
EXPOSE 4000
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "mlops_assets.definitions"]
