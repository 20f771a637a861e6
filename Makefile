# A thin facade over uv. Every target runs inside the locked environment.
UV ?= uv
UV_VERSION ?= 0.13.8
PORT ?= 3000
SERVE_PORT ?= 3001
REPORTS_PORT ?= 8008
# The state folder (MLOPS_STATE_DIR moves it, as for the CLI).
STATE ?= $(or $(MLOPS_STATE_DIR),$(CURDIR)/state)
# Telemetry off for the tools started here without the CLI (bentoml serve, mlflow ui): exactly
# the switches of settings.TELEMETRY_OFF, which unit/test_settings.py compares with this line.
export DAGSTER_DISABLE_TELEMETRY=true DO_NOT_TRACK=true DVC_NO_ANALYTICS=1 \
       MLFLOW_DISABLE_TELEMETRY=true BENTOML_DO_NOT_TRACK=true EVIDENTLY_DISABLE_TELEMETRY=1

.PHONY: setup demo demo-year test test-fast template-check dev serve reports ui-check mlflow-ui lint typecheck \
	check service-image fetch-export bench clean

setup:  ## install uv if missing, then the locked environment (.venv)
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen

demo: setup  ## the main job: the closed loop on 31 days of Jul-Aug 2013: a retraining, a live trial, a promotion
	$(UV) run --frozen mlops-assets demo

demo-year: setup  ## the closed loop on the whole of 2013 (bootstrap on January's first four weeks)
	$(UV) run --frozen mlops-assets demo --start 2013-01-01 --bootstrap-days 28 --days 365

test: setup  ## the whole test suite (unit, assets, end-to-end)
	$(UV) run --frozen pytest

test-fast: setup  ## everything but the end-to-end tests
	$(UV) run --frozen pytest -m "not e2e"

# [template:if template_docs]
template-check: setup  ## render this repository as a project, upgrade one, test a generated one
	$(UV) run --frozen pytest mlops_assets_tests/template
# [template:end]

dev: setup  ## Dagster UI + daemon on the local state (http://127.0.0.1:$(PORT))
	$(UV) run --frozen mlops-assets dev --port $(PORT)

serve: setup  ## the latest bento of the champion on http://127.0.0.1:$(SERVE_PORT)
	BENTOML_HOME="$(STATE)/bentoml" MLOPS_STATE_DIR="$(STATE)" $(UV) run --frozen bentoml serve \
		flight_delay_service:latest --host 127.0.0.1 --port $(SERVE_PORT)

reports: setup  ## serve the drift reports (links in the UI) on http://127.0.0.1:$(REPORTS_PORT)
	mkdir -p "$(STATE)/reports"
	$(UV) run --frozen python -m http.server $(REPORTS_PORT) --bind 127.0.0.1 \
		--directory "$(STATE)/reports"

# [template:if with_observability]
.PHONY: observe
observe: setup  ## Prometheus, Pushgateway, Alertmanager and an alert receiver on 127.0.0.1 (demo timings)
	$(UV) run --frozen mlops-assets observe --service-port $(SERVE_PORT) --timings demo

# [template:end]
# [template:if with_streaming]
.PHONY: stream
STREAM_PORT ?= 4222
# The demo's last day (make demo): its batch predictions and labels are in the graph too.
STREAM_DAY ?= 2013-08-08
STREAM_RATE ?= 100
stream: setup  ## local NATS (JetStream) + the stream scorer, then STREAM_DAY's flights replayed at STREAM_RATE/s; Ctrl-C stops
	MLOPS_STATE_DIR="$(STATE)" $(UV) run --frozen mlops-assets stream-broker --port $(STREAM_PORT) \
		--with-scorer --replay-day $(STREAM_DAY) --rate $(STREAM_RATE)

# [template:end]
ui-check: setup  ## open the lineage graph in headless Chromium, save $(STATE)/ui/lineage.png
	$(UV) run --frozen mlops-assets ui-check --state "$(STATE)"

mlflow-ui: setup  ## MLflow UI on the local tracking store (http://127.0.0.1:5000)
	@# A copied or moved state is re-pointed at its own artifacts first.
	MLOPS_STATE_DIR="$(STATE)" $(UV) run --frozen mlops-assets where >/dev/null
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(UV) run --frozen mlflow ui --host 127.0.0.1 \
		--port 5000 --workers 1 --backend-store-uri "sqlite:///$(STATE)/mlflow/mlflow.db"

lint: setup  ## ruff: lint and formatting
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: setup  ## mypy on the package and the benchmarks
	$(UV) run --frozen mypy

check: lint typecheck  ## lint and type check (CI runs them before the fast tests)

# The service image from a bento (docs/serving.md): BENTO=<name:version> or, by default, the
# newest bento of the service; FROM_EXPORT=<file.bento> imports an exported bento first;
# REPOSITORY (default $$MLOPS_IMAGE_REPOSITORY); PUSH=1 pushes it; DRY_RUN=1 only prints.
service-image: setup  ## build the prediction service's image with bentoml containerize (Docker)
	$(UV) run --frozen mlops-assets service-image $(if $(BENTO),--bento "$(BENTO)") \
		$(if $(FROM_EXPORT),--from-export "$(FROM_EXPORT)") \
		$(if $(REPOSITORY),--repository "$(REPOSITORY)") \
		$(if $(filter 1,$(PUSH)),--push) $(if $(filter 1,$(DRY_RUN)),--dry-run)

# An exported bento from object storage, for FROM_EXPORT=$(EXPORT_FILE) (CI's release image).
# s3:// needs the AWS CLI and credentials. The location reaches the shell as a variable, never
# as recipe text: it may come from a dispatch payload (make exports BENTO_EXPORT, given on the
# command line or in the environment; EXPORT_FILE below).
EXPORT_FILE ?= $(STATE)/downloads/bento-export.bento
fetch-export: export EXPORT_FILE := $(EXPORT_FILE)
fetch-export:  ## copy BENTO_EXPORT (s3://..., https://... or a path) to $(EXPORT_FILE)
	@test -n "$$BENTO_EXPORT" || { echo "set BENTO_EXPORT=<s3://..., https://... or a path>" >&2; \
		exit 2; }
	mkdir -p "$$(dirname "$$EXPORT_FILE")"
	case "$$BENTO_EXPORT" in \
		s3://*) aws s3 cp --only-show-errors "$$BENTO_EXPORT" "$$EXPORT_FILE" ;; \
		http://*|https://*) curl -fsSL --retry 3 -o "$$EXPORT_FILE" "$$BENTO_EXPORT" ;; \
		*) cp -- "$$BENTO_EXPORT" "$$EXPORT_FILE" ;; \
	esac

bench: setup  ## measure load time, one day and serving against their budgets (docs/benchmarks.md)
	$(UV) run --frozen python -m benchmarks.load_time
	$(UV) run --frozen python -m benchmarks.one_day
	$(UV) run --frozen python -m benchmarks.serving

# The state folder as an absolute path without a trailing slash ("/" becomes empty).
STATE_PATH = $(patsubst %/,%,$(abspath $(STATE)))

clean:  ## delete all local state in $(STATE) (Dagster home, landing, lake, registry, remote)
	@case "$(CURDIR)/" in "$(STATE_PATH)/"*) \
		echo "refusing to delete STATE=$(STATE): it is empty, or holds the project" >&2; exit 1;; \
	esac
	@case "$(HOME)/" in "$(STATE_PATH)/"*) \
		echo "refusing to delete STATE=$(STATE): it holds the home folder" >&2; exit 1;; \
	esac
	rm -rf -- "$(STATE_PATH)"
