#!/bin/sh
# MLflow's database next to Dagster's (POSTGRES_DB). The postgres image runs this once, when the
# data volume is initialised; later changes of MLFLOW_PG_DB need a manual CREATE DATABASE.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v db="$MLFLOW_PG_DB" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
