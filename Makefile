# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export HF_HUB_OFFLINE := 1
export UNSLOTH_DISABLE_STATISTICS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install services demo test ui clean

install: $(STAMP)

# torch + torchvision first (the CUDA build; it also runs on a CPU-only machine), then the rest pinned by
# constraints.txt, a freeze of a venv in which the whole stack ran together.
$(STAMP): pyproject.toml constraints.txt
	command -v git-lfs >/dev/null || (apt-get update -qq && apt-get install -y -qq git-lfs)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: foundry_assets/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp foundry_assets/dagster.yaml $@

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/foundry demo

# Debian packages the browser and PostgreSQL tests use (chromium, postgresql), installed where missing.
services:
	bash .ci/services.sh

test: $(STAMP) services
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy foundry_assets
	$(BIN)/python -m pytest

# the sensors are off by default (Dagster's default); the UI of a foundry node watches for drops and approvals
ui: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster sensor start drop_sensor -w foundry_assets/workspace.yaml
	$(BIN)/dagster sensor start release_sensor -w foundry_assets/workspace.yaml
	$(BIN)/dagster dev -w foundry_assets/workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf $(DAGSTER_HOME) .foundry
