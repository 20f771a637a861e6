#!/bin/sh
# MLflow's databases (tracking store, registry accounts) next to Dagster's (POSTGRES_DB). The
# postgres image runs this once, when the data volume is initialised; a database named later
# (a new MLFLOW_PG_DB or MLFLOW_AUTH_PG_DB) needs a manual CREATE DATABASE.
set -eu
for db in "$MLFLOW_PG_DB" "$MLFLOW_AUTH_PG_DB"; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
done
