# syntax=docker/dockerfile:1
# User-code image: the code location served over gRPC (`dagster api grpc`). It is also the
# image of every run (K8sRunLauncher starts run pods from it) and, in deploy/compose.yaml, of
# the Dagster webserver, daemon and MLflow server (it holds dagster-webserver,
# dagster-postgres, mlflow, psycopg2 and boto3 at the locked versions).
#
#   docker build -t mlops-assets:$(git rev-parse --short HEAD) .
#
# Dependencies first (frozen lock, no dev group: a layer cached until uv.lock changes), then
# the project. mlops_assets_tests/deploy/test_container.py replays the COPY and `uv sync` lines
# below in a fresh environment: keep every `uv sync` on a RUN line of its own.
FROM python:3.11.13-slim-bookworm

# uv, pinned; it stays in the image because BentoML calls it to build the serving bundle.
COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /uvx /usr/local/bin/

# git: the DVC data registry is a git repository. libgomp1: LightGBM's OpenMP runtime.
RUN apt-get update \
    && apt-get install --no-install-recommends -y git libgomp1 \
    && rm -rf /var/lib/apt/lists/*

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    MLOPS_ENV=production \
    MLOPS_STATE_DIR=/app/state
# Telemetry off for every process of the image, also those our CLI does not start (`dagster
# api grpc`, run workers, the webserver and daemon in compose): exactly the switches of
# settings.TELEMETRY_OFF, which unit/test_container.py compares with this instruction.
ENV DAGSTER_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    DVC_NO_ANALYTICS=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    BENTOML_DO_NOT_TRACK=true \
    EVIDENTLY_DISABLE_TELEMETRY=1

WORKDIR /app

COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-install-project

COPY README.md ./
COPY mlops_assets ./mlops_assets
# [template:if with_service_delivery]
# The prediction service's Kubernetes base: each release copies it into the deployment repo.
COPY deploy/service/base ./deploy/service/base
# [template:end]
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev

# A fixed numeric user (Kubernetes runAsNonRoot can verify it); it owns only the folders runs
# write to: the state folder (registry work tree, BentoML store) and DAGSTER_HOME with its
# storage/ (compute logs; a volume shared by the compose services, which inherits this owner).
RUN groupadd --gid 10001 dagster \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin dagster \
    && mkdir -p /app/state /opt/dagster/dagster_home/storage \
    && chown -R 10001:10001 /app/state /opt/dagster

USER 10001:10001
EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
# CMD, not ENTRYPOINT: the Helm chart and the K8sRunLauncher pass whole commands as container
# args (`dagster api grpc ...`, `dagster api execute_run ...`), and compose overrides it too.
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "mlops_assets.definitions"]
